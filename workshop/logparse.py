"""Readers for everything a run leaves behind (see docs/DESIGN.md, "The run folder").

Each reader takes a path and never raises on bad input. It returns either
  * `Parsed(data, bad_lines)`: the data it could read (a list of dicts or a DataFrame) and the 1-based numbers
    of the lines it had to skip, or
  * `Missing(cell, detail)`: why there is nothing to read; `cell` is the short marker a table shows
    (`missing (gpu_memory.csv absent)`, `n/a (no GPU)`, ...), `detail` the sentence for the notes under it.
A truncated last line (a run killed mid-write, or still writing) is just a bad line: everything before it counts.
"""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class Missing:
    cell: str
    detail: str = ""

    def __str__(self):
        return self.cell


class Parsed(NamedTuple):
    data: object  # list[dict] or pandas.DataFrame
    bad_lines: list


def read_text(path):
    """The file's text (undecodable bytes replaced), or Missing when absent, unreadable or empty."""
    path = Path(path)
    try:
        if not path.is_file():
            return Missing(f"missing ({path.name} absent)", f"{path} does not exist")
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:  # not this user's to read (is_file too raises, in a folder it may not enter)
        return Missing(f"missing ({path.name} unreadable)", f"{path}: {e}")
    if not text.strip():
        return Missing(f"empty ({path.name})", f"{path} is empty")
    return text


def read_manifest(run_dir):
    """manifest.json as a dict, or Missing."""
    path = Path(run_dir) / "manifest.json"
    text = read_text(path)
    if isinstance(text, Missing):
        return text
    try:
        manifest = json.loads(text)
    except ValueError as e:
        return Missing("damaged (manifest.json unreadable)", f"{path}: {e}")
    if not isinstance(manifest, dict):
        return Missing("damaged (manifest.json not an object)", f"{path} holds a {type(manifest).__name__}")
    return manifest


def read_log_history(path):
    """log_history.jsonl: Parsed(list of event dicts, bad_lines), or Missing."""
    text = read_text(path)
    if isinstance(text, Missing):
        return text
    events, bad = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)  # json accepts the NaN / Infinity that json.dumps writes for a diverged loss
        except ValueError:
            bad.append(number)
            continue
        if isinstance(event, dict):
            events.append(_as_numbers(event))
        else:
            bad.append(number)
    return Parsed(events, bad)


# A Trainer log dict inside a line: flat, so no nested braces. tqdm redraws with \r and moves the cursor with
# ANSI escapes, so a dict often shares its \n-line with progress-bar debris.
_DICT = re.compile(r"\{'[^{}\r\n]*\}")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# transformers 4.x prints a diverged loss as a bare nan / inf, which is not a Python literal.
_BARE_NONFINITE = re.compile(r"(?<=[:\s])(-?(?:nan|inf))(?=\s*[,}])")


def _stdout_events(text):
    events, bad = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        for candidate in _DICT.findall(_ANSI.sub("", line)):
            try:
                value = ast.literal_eval(_BARE_NONFINITE.sub(r"'\1'", candidate))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                bad.append(number)
                continue
            if isinstance(value, dict) and value:
                events.append(_as_numbers(value))
    return events, bad


def parse_trainer_stdout(text):
    """The log dicts the Trainer printed, in order, numbers as float.

    Reads both dialects: transformers 4.x ({'loss': 2.3456, 'epoch': 0.32}) and 5.x, which prints rounded
    strings ({'loss': '2.346', 'epoch': '0.32'}). Everything else in the text (tqdm bars, warnings) is ignored.
    """
    return _stdout_events(text)[0]


def read_trainer_out(path):
    """A Trainer stdout file (train.out, a SLURM .out): Parsed(list of event dicts, bad_lines), or Missing."""
    text = read_text(path)
    if isinstance(text, Missing):
        return text
    return Parsed(*_stdout_events(text))


def _as_numbers(event):
    """Numeric values (and 5.x's numeric strings) as float; other values unchanged."""
    out = {}
    for key, value in event.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        out[str(key)] = value
    return out


def line_spans(numbers):
    """[3, 4, 5, 9] -> '3-5, 9': line lists stay short in notes."""
    spans, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            spans.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(spans)


def describe_bad_lines(filename, bad_lines):
    """The cell marker for skipped lines: 'damaged (line 7 unreadable)'."""
    word = "line" if len(bad_lines) == 1 else "lines"
    return f"damaged ({filename} {word} {line_spans(bad_lines)} unreadable)"


def is_summary(event) -> bool:
    """The Trainer's end-of-training summary. Loss events may carry train_runtime too (transformers 5 adds it, and
    train_tokens_per_second, when it counts input tokens), so the summary is the one without a loss."""
    return "train_runtime" in event and "loss" not in event


def final_summary(events):
    """The last summary event, or None."""
    return next((e for e in reversed(events) if is_summary(e)), None)


_TRAIN_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*\d+/(\d+) \[")  # tqdm's bar with no description: the train loop


def train_bar_total(text):
    """The step total of the training's tqdm bar in a Trainer stdout (`  5%|▌   | 3/60 [00:01<...`), or None.
    Evaluation bars are shorter and come after the first train bar segment, so the first match is the train loop."""
    for segment in re.split(r"[\r\n]", text):
        bar = _TRAIN_BAR.match(_ANSI.sub("", segment))
        if bar:
            return int(bar.group(1))
    return None


def read_loggers(run_dir):
    """The `training` record of common.sh's loggers.json (exit_status, ended, oom_kills, ...), or Missing."""
    text = read_text(Path(run_dir) / "loggers.json")
    if isinstance(text, Missing):
        return text
    try:
        training = json.loads(text)["training"]
    except (ValueError, KeyError, TypeError):
        return Missing("damaged (loggers.json)", f"{run_dir}/loggers.json has no training record")
    return training if isinstance(training, dict) else Missing("damaged (loggers.json)", "training is not an object")


def read_answer_quality(run_dir):
    """{"EM": %, "F1": %} after fine-tuning, from answer_quality.json (python -m workshop.answer_quality), or
    Missing (not scored yet, or damaged)."""
    path = Path(run_dir) / "answer_quality.json"
    text = read_text(path)
    if isinstance(text, Missing):
        return Missing("n/a (not scored)",
                       f"score its answers with `python -m workshop.answer_quality --run-dir {run_dir}`")
    try:
        after = json.loads(text)["after"]
        scores = {"EM": after["exact_match"], "F1": after["f1"]}
    except (ValueError, KeyError, TypeError):
        scores = {}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()) or not scores:
        return Missing("damaged (answer_quality.json)", f"{path} has no after scores")
    return {k: float(v) for k, v in scores.items()}
