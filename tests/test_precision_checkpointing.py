"""Lesson 5 on the tiny model: `--precision` (one flag for the Trainer's and DeepSpeed's fp16/bf16), gradient
checkpointing, and the lesson's tables filled from real CPU runs. On a CPU bf16 trains for real (autocast under the
plain Trainer, bf16 weights under DeepSpeed); fp16 needs a CUDA GPU and says so."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import made_once, walkthrough_logs
from safetensors import safe_open
from transformers import BloomConfig, BloomForCausalLM

from workshop import generate, max_batch
from workshop.config import WorkshopError, parse_args, resolve_precision
from workshop.fill_tables import build_tables, main as fill_tables_main
from workshop.report.speed_cells import STEADY_TOKENS
from workshop.report.spread import Spread
from workshop.logparse import read_answer_quality
from workshop.deepspeed.config import load_ds_config, match_precision
from workshop.deepspeed.plan import prepare
from workshop.train import main, training_arguments

REPO = Path(__file__).resolve().parents[1]
LESSON = "precision_and_checkpointing"
STAGE2 = "deepspeed_single_gpu/configs/stage2.json"
SHORT = ["--profile", "tiny", "--max-steps", "10", "--save-strategy", "no"]  # one eval, at the end
NO_GPU = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
# Several plain-Trainer runs in one process (each start-up of Python, torch and transformers costs seconds);
# DeepSpeed runs one per process, as its global state does not reset.
DRIVER = ("import shlex, sys\nfrom workshop.train import main\n"
          f"for argv in sys.argv[1:]:\n    main(shlex.split(argv), lesson={LESSON!r})\n")


def flags(logs, name, *extra, save=False, config=None):
    """A plain-Trainer run into logs/<name>, named `config` (as slurm/precision.slurm would name it) or `name`."""
    return [*SHORT, *extra, *([] if save else ["--no-save-final"]), "--run-dir", str(logs / name),
            "--config-name", config or name, "--output-dir", str(logs.parent / "outputs" / name)]


def run(command, env=None):
    result = subprocess.run(command, cwd=REPO, env={**os.environ, **NO_GPU, **(env or {})}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def walked_run(tmp_path_factory, logs, *entry):
    """The lesson's tiny walk-through run of `entry` (a .slurm file run with bash: common.sh's loggers, the
    deepspeed launcher; `--max-steps 10`, made once per session by conftest.py's walkthrough_logs), copied into
    `logs`, its outputs (the final model) beside it as the plain runs leave theirs; returns its run folder's name."""
    walked = walkthrough_logs(tmp_path_factory, LESSON, entry)
    [run_dir] = walked.glob("-".join(Path(part).stem for part in entry) + "-local*")
    shutil.copytree(run_dir, logs / run_dir.name)
    shutil.copytree(walked.parent / "outputs" / run_dir.name, logs.parent / "outputs" / run_dir.name)
    return run_dir.name


def lesson5_logs(tmp_path_factory):
    """The lesson's runs on the tiny model (made once per session, shared with tests/test_notebooks.py): fp32 and
    bf16, plain Trainer and ZeRO 2, and checkpointing on; the ZeRO runs are the walk-through's, through the
    lesson's .slurm files; the plain ones named as slurm/precision.slurm and slurm/checkpointing.slurm name theirs
    (what notebook 05 looks for). Returns the logs folder and {short name: run folder name}."""
    def make(folder):
        logs = folder / "logs"
        plain = [flags(logs, "plain-fp32", "--precision", "fp32", save=True, config="precision-none-fp32"),
                 flags(logs, "plain-bf16", "--precision", "bf16", config="precision-none-bf16"),
                 flags(logs, "plain-fp32-gc", "--precision", "fp32", "--gradient-checkpointing",
                       config="checkpointing-on-none-fp32"),
                 # the answer-quality table filled at the end of the run: forced on, on a few held-out examples
                 flags(logs, "baseline-scored", "--lesson", "baseline", "--score-answers", "--score-limit", "4",
                       save=True)]
        run([sys.executable, "-c", DRIVER, *(" ".join(argv) for argv in plain)])
        names = {name: name for name in ("plain-fp32", "plain-bf16", "plain-fp32-gc", "baseline-scored")}
        names["stage2-fp32"] = walked_run(tmp_path_factory, logs, "slurm/precision.slurm", "stage2", "fp32")
        names["stage2-bf16"] = walked_run(tmp_path_factory, logs, "slurm/precision.slurm", "stage2", "bf16")
        names["stage2-fp32-gc"] = walked_run(tmp_path_factory, logs, "slurm/checkpointing.slurm", "on", "stage2",
                                             "fp32")
        (folder / "names.json").write_text(json.dumps(names))

    folder = made_once(tmp_path_factory, "lesson5", make)
    return folder / "logs", json.loads((folder / "names.json").read_text())


@pytest.fixture(scope="module")
def lesson_logs(tmp_path_factory):
    return lesson5_logs(tmp_path_factory)


def manifest(logs, name):
    if isinstance(logs, tuple):  # the fixture's (logs, names)
        logs, name = logs[0], logs[1][name]
    return json.loads((logs / name / "manifest.json").read_text())


def losses(lesson, name):
    logs, names = lesson
    events = [json.loads(line) for line in (logs / names[name] / "log_history.jsonl").open()]
    return [event["loss"] for event in events if "loss" in event]


# ------------------------------------------------------------------------------------------------ --precision
@pytest.mark.parametrize("argv, fp16, bf16", [
    (["--precision", "fp32"], False, False), (["--precision", "fp16"], True, False),
    (["--precision", "bf16"], False, True), (["--bf16"], False, True), (["--no-fp16"], False, False),
    (["--precision", "bf16", "--bf16"], False, True), (["--precision", "fp32", "--no-fp16"], False, False),
])
def test_precision_sets_fp16_and_bf16_together(argv, fp16, bf16):
    cfg = parse_args(argv)
    assert cfg.bf16 == bf16 and cfg.fp16 in (fp16, None)  # None: fp16 unless bf16 (the lesson's default)
    assert resolve_precision(cfg, has_cuda=True, bf16_supported=True) == (fp16, bf16)


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp32", "--fp16"], "--precision fp32 contradicts --fp16"),
    (["--precision", "fp16", "--bf16"], "--precision fp16 contradicts --bf16"),
    (["--precision", "bf16", "--no-bf16"], "--precision bf16 contradicts --no-bf16"),
])
def test_conflicting_precision_flags_are_one_error(argv, message, capsys):
    with pytest.raises(WorkshopError, match=message):
        parse_args(argv)
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "tiny", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error: ") == 1 and err.startswith(f"error: {message}")
    with pytest.raises(SystemExit):
        parse_args(["--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_fp16_on_a_cpu_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "tiny", "--precision", "fp16", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: --precision fp16 needs a CUDA GPU and none is visible here") and "bf16" in err
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_and_deepspeed_config_agree(precision, tmp_path):
    # What this CPU can build for real: the TrainingArguments, with the DeepSpeed config the Trainer resolves.
    cfg = parse_args(["--profile", "tiny", "--precision", precision, "--ds-config", STAGE2,
                      "--output-dir", str(tmp_path)])
    args = training_arguments(cfg, prepare(cfg))
    resolved = args.hf_deepspeed_config.config
    assert (args.fp16, args.bf16) == (False, precision == "bf16")
    assert (resolved["fp16"]["enabled"], resolved["bf16"]["enabled"]) == (False, precision == "bf16")
    plain_cfg = parse_args(["--profile", "tiny", "--precision", precision, "--output-dir", str(tmp_path)])
    plain = training_arguments(plain_cfg, prepare(plain_cfg))
    assert (plain.fp16, plain.bf16, plain.use_cpu) == (False, precision == "bf16", precision == "bf16")


def test_deepspeed_sections_follow_the_precision():
    config = {k: v for k, v in load_ds_config(REPO / STAGE2).items() if k not in ("fp16", "bf16")}
    match_precision("x.json", config, fp16=True, bf16=False)  # fp16 on a GPU: the sections the Trainer fills
    assert config["fp16"] == config["bf16"] == {"enabled": "auto"}
    match_precision("x.json", {"fp16": {"enabled": True}}, fp16=True, bf16=False)
    with pytest.raises(WorkshopError, match=r'x.json: fp16.enabled is true but this run trains in bf16: set it to '
                                            r'"auto" .* or use --precision fp16'):
        match_precision("x.json", {"fp16": {"enabled": True}}, fp16=False, bf16=True)
    with pytest.raises(WorkshopError, match="bfloat16.enabled is false but this run trains in bf16"):
        match_precision("x.json", {"bfloat16": {"enabled": False}}, fp16=False, bf16=True)


@pytest.mark.slow
def test_bf16_trains_on_a_cpu_under_the_trainer_and_zero_2(lesson_logs):
    runs = {name: manifest(lesson_logs, name) for name in ("plain-fp32", "plain-bf16", "stage2-fp32", "stage2-bf16")}
    for name, record in runs.items():
        assert record["status"] == "completed", (name, record.get("error"))
        assert record["precision"] == name.split("-")[1] and record["steps_done"] == 10
    assert runs["plain-bf16"]["settings"]["precision"] == "bf16" and runs["stage2-bf16"]["settings"]["bf16"]
    # bf16 rounding changes the numbers: the same seed and data give another loss than fp32
    for stage in ("plain", "stage2"):
        fp32, bf16 = losses(lesson_logs, f"{stage}-fp32"), losses(lesson_logs, f"{stage}-bf16")
        assert len(bf16) == 5 and all(math.isfinite(x) for x in bf16) and fp32 != bf16
    # DeepSpeed keeps the model itself in bf16 (fp32 master weights in its optimizer); the Trainer's autocast does not
    for name, dtype in (("stage2-bf16", "BF16"), ("plain-fp32", "F32")):
        outputs = lesson_logs[0].parent / "outputs" / lesson_logs[1][name]
        with safe_open(outputs / "final" / "model.safetensors", "pt") as weights:
            assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {dtype}, name


@pytest.mark.slow
def test_one_lessons_tables_take_only_that_lessons_runs(lesson_logs):
    """The notebook builds lesson 5's tables alone; the fp32 Trainer run of its precision row must still be the
    lesson's own, not the baseline lesson's fp32 run lying beside it (baseline-scored)."""
    from workshop.lessons import LESSONS

    [lesson] = [lesson for lesson in LESSONS if lesson.name == "precision_and_checkpointing"]
    alone, whole = build_tables([lesson_logs[0]], [lesson]), build_tables([lesson_logs[0]])
    for key, df in alone.items():
        assert df.attrs["answers"] == whole[key].attrs["answers"] and df.equals(whole[key]), key
    assert not any("baseline-scored" in str(cell) for cell in alone["precision"]["run"])


# ------------------------------------------------------------------------------------------------ checkpointing
@pytest.mark.slow
def test_gradient_checkpointing_is_applied_and_changes_no_number(lesson_logs):
    for stage in ("plain", "stage2"):
        without, with_ = manifest(lesson_logs, f"{stage}-fp32"), manifest(lesson_logs, f"{stage}-fp32-gc")
        assert with_["status"] == "completed" and with_["settings"]["gradient_checkpointing"]
        # the manifest says what the model really did, read from its layers after training (under ZeRO too)
        assert (without["gradient_checkpointing"], with_["gradient_checkpointing"]) == (False, True)
        # recomputing the activations in the backward pass gives the same gradients: the same losses in fp32
        plain, recomputed = losses(lesson_logs, f"{stage}-fp32"), losses(lesson_logs, f"{stage}-fp32-gc")
        assert len(plain) == 5 and plain == pytest.approx(recomputed, rel=1e-4)
        # and keeps fewer activations for the backward pass, counted exactly from autograd's saved tensors: the two
        # blocks keep only their inputs; the logits and the loss's fp32 copies (most of what is left) stay
        assert 0 < with_["activation_peak_bytes"] < 0.6 * without["activation_peak_bytes"]


def test_micro_batch_search_doubles_to_the_first_oom_and_no_further():
    tried = []

    def fits_up_to(limit):
        def trial(size):
            tried.append(size)
            return "fit" if size <= limit else "oom"
        return trial

    result = max_batch.search(fits_up_to(12), start=1, bound=256)
    assert tried == [1, 2, 4, 8, 16] and (result["largest_fit"], result["first_oom"]) == (8, 16)
    assert result["stopped"] == "oom" and "largest micro-batch that fits: 8; 16 ran out" in max_batch.describe(result)
    tried.clear()
    result = max_batch.search(fits_up_to(1000), start=3, bound=20)
    assert tried == [3, 6, 12] and result["stopped"] == "bound" and "raise --max" in max_batch.describe(result)
    result = max_batch.search(lambda size: "exit 1: boom" if size == 4 else "fit", start=1, bound=64)
    assert (result["largest_fit"], result["stopped"]) == (2, "failed")
    assert "without an OOM" in max_batch.describe(result)


def test_micro_batch_search_without_a_gpu_says_so(tmp_path, capsys):
    assert max_batch.main(["--profile", "tiny", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no GPU: the micro-batch search needs a CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "s").exists()
    assert max_batch.main(["--start", "8", "--max", "4"]) == 2
    assert "need 1 <= --start <= --max" in capsys.readouterr().err
    assert max_batch.main(["--precision", "fp32", "--fp16"]) == 2  # the training's flags are checked first
    assert "contradicts --fp16" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (deselected without one)")
def test_micro_batch_search_finds_the_first_oom_on_a_gpu(tmp_path):
    # bloom-560m (random weights) under a 6 GiB cap: fits at small micro-batches, runs out well before 256
    out = tmp_path / "search"
    result = subprocess.run([sys.executable, "-m", "workshop.max_batch", "--out", str(out), "--model", "560m",
                             "--init", "random", "--data", "embedded", "--gpu-memory-limit", "6", "--steps", "2"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "max_batch.json").read_text())
    assert record["stopped"] == "oom" and record["largest_fit"] >= 1
    assert record["first_oom"] == 2 * record["largest_fit"]
    assert manifest(out, f"mb{record['first_oom']}")["status"] == "oom"


# ------------------------------------------------------------------------------------------------ the tables
@pytest.mark.slow
def test_precision_table_fills_from_the_runs_and_answers_from_its_cells(lesson_logs):
    logs, names = lesson_logs
    table = build_tables([logs])["precision"]
    rows = {row["stage"]: row for row in table.to_dict("records")}
    assert list(rows) == ["plain Trainer", "ZeRO 2"]  # checkpointing runs are the other table's
    for stage, prefix in (("plain Trainer", "plain"), ("ZeRO 2", "stage2")):
        row = rows[stage]
        assert set(row["run"].split(", ")) == {names[f"{prefix}-fp32"], names[f"{prefix}-bf16"]}
        for precision in ("fp32", "bf16"):
            speed = manifest(lesson_logs, f"{prefix}-{precision}")["speed"]
            assert row[f"{precision} real tokens/s"] == pytest.approx(speed["real_tokens_per_s"])
            assert row[f"{precision} peak GPU MiB"] == "n/a (no GPU)"
            assert isinstance(row[f"{precision} final eval loss"], float)
        assert row["fp16 real tokens/s"] == "not run yet"  # fp16 needs a GPU: the note says how to run it
        ratio = row["bf16 real tokens/s"] / row["fp32 real tokens/s"]
        verdict = "faster" if ratio > 1 else "not faster"
        answers = " ".join(table.attrs["answers"])
        if f"fp32 {STEADY_TOKENS}" in row and f"bf16 {STEADY_TOKENS}" in row:  # per-step times: gated by them
            assert (f"{stage}: no measurable difference at this size (fp32 vs bf16" in answers
                    or f"{stage}: bf16 is {verdict} than fp32: bf16 " in answers)
        else:
            assert f"{stage}: bf16 is {verdict} than fp32: {ratio:.2f}x" in answers
    assert any("not answerable yet" in answer and "ZeRO 0, 1, 2 and 3" in answer for answer in table.attrs["answers"])
    assert any("slurm/precision.slurm stage2 fp16 on a CUDA GPU" in note for note in table.attrs["notes"])


@pytest.mark.slow
def test_checkpointing_table_compares_each_pair(lesson_logs):
    logs, names = lesson_logs
    table = build_tables([logs])["gradient_checkpointing"]
    rows = {row["stage"]: row for row in table.to_dict("records")}
    assert list(rows) == ["plain Trainer", "ZeRO 2"] and {row["precision"] for row in rows.values()} == {"fp32"}
    for stage, prefix in (("plain Trainer", "plain"), ("ZeRO 2", "stage2")):
        row = rows[stage]
        steady = [row[f"s/step {w}"] for w in ("without", "with")]
        if all(isinstance(cell, Spread) for cell in steady):  # per-step times: the steady medians compare
            without, with_ = (cell.value for cell in steady)
        else:
            without, with_ = (manifest(lesson_logs, f"{prefix}-fp32{gc}")["speed"]["step_s"] for gc in ("", "-gc"))
            assert (row["s/step without"], row["s/step with"]) == pytest.approx((without, with_))
        if all(isinstance(cell, Spread) for cell in steady) and not steady[0].separated_from(steady[1]):
            assert row["time lost %"] == "n/a (no measurable difference)"  # gated as the answer is: no percentage
        else:
            assert row["time lost %"] == pytest.approx((with_ - without) / without * 100)
        assert row["memory saved MiB"] == row["peak GPU MiB with"] == "n/a (no GPU)"
        assert row["largest micro-batch without"] == row["largest micro-batch with"] == "n/a (no GPU)"
        # no GPU peak, but the activations kept for the backward pass, counted exactly, show the saving
        kept = [manifest(lesson_logs, f"{prefix}-fp32{gc}")["activation_peak_bytes"] / 2 ** 20 for gc in ("", "-gc")]
        assert kept[0] > kept[1] > 0 and row["activations saved MiB"] == pytest.approx(kept[0] - kept[1])
        assert f"saved {kept[0] - kept[1]:.3g} MiB of the activations a micro-batch keeps" in " ".join(
            table.attrs["answers"])
        # CPU step times are noisy: either sign is possible here; checkpointing measured faster (it does more work)
        # is flagged, never stated as a saving; overlapping intervals state no difference
        lost, answers = (with_ - without) / without * 100, " ".join(table.attrs["answers"])
        stated = f"cost {abs(lost):.1f}% time per step" in answers if lost >= 0 else \
            "unexpected: checkpointing on lower seconds per step than checkpointing off" in answers
        overlap = "no measurable difference at this size (checkpointing off vs checkpointing on" in answers
        assert stated or (overlap and all(isinstance(cell, Spread) for cell in steady))
    assert any("python -m workshop.max_batch --model bloom-tiny --gradient-checkpointing" in note
               for note in table.attrs["notes"])


@pytest.mark.slow
def test_a_search_record_fills_the_largest_micro_batch(lesson_logs, tmp_path):
    # A search's trial run folder beside its max_batch.json, as workshop.max_batch leaves them (the trial is a real
    # tiny run: the CPU run above, copied; the record says what a GPU search found)
    import shutil
    logs, names = lesson_logs
    search = tmp_path / "max_batch-local1"
    shutil.copytree(logs / names["plain-fp32-gc"], search / "mb4")
    trial = json.loads((search / "mb4" / "manifest.json").read_text())
    trial["config_name"] = "max_batch-mb4"
    (search / "mb4" / "manifest.json").write_text(json.dumps(trial))
    (search / "max_batch.json").write_text(json.dumps(
        {"model": "bloom-tiny", "gradient_checkpointing": True, "stopped": "oom", "largest_fit": 4, "first_oom": 8,
         "trials": [{"micro_batch": 4, "outcome": "fit"}, {"micro_batch": 8, "outcome": "oom"}]}))
    table = build_tables([logs, tmp_path])["gradient_checkpointing"]
    row = table.to_dict("records")[0]
    assert row["largest micro-batch with"] == 4.0 and row["largest micro-batch without"] == "n/a (no GPU)"
    assert "largest micro-batch n/a (no GPU) without, 4 with" in table.attrs["answers"][0]
    assert search.name + "/mb4" not in row["run"]  # trials are not training runs of the table


@pytest.mark.slow
def test_fill_tables_prints_the_lesson(lesson_logs, capsys):
    assert fill_tables_main([str(lesson_logs[0])]) == 0
    out = capsys.readouterr().out
    assert "Precision: fp32 vs fp16 vs bf16 per ZeRO stage" in out and "Gradient checkpointing" in out


# ------------------------------------------------------------------------------------------------ using the model
@pytest.mark.slow
def test_score_answers_fills_the_answer_quality_cells(lesson_logs):
    logs, names = lesson_logs
    scored = json.loads((logs / "baseline-scored" / "answer_quality.json").read_text())
    assert manifest(lesson_logs, "baseline-scored")["score_answers"] is True and scored["after"]["n"] == 4
    [row] = build_tables([logs], by_run=True)["baseline_objective_1"].to_dict("records")
    assert (row["run"], row["EM"], row["F1"]) == ("baseline-scored", scored["after"]["exact_match"],
                                                  scored["after"]["f1"])
    # off by default on a CPU (the tiny profile): not scored, and the cell says so
    assert manifest(lesson_logs, "plain-fp32")["score_answers"] is False
    assert not (logs / "plain-fp32" / "answer_quality.json").exists()
    assert read_answer_quality(logs / "plain-fp32").cell == "n/a (not scored)"


@pytest.mark.slow
def test_generate_answers_with_the_saved_model(lesson_logs, capsys):
    logs, _ = lesson_logs
    run_dir = logs / "baseline-scored"
    assert generate.main(["--run-dir", str(run_dir), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    answers = re.findall(r"^\d\. Q: .*\n   A: (.*) \(reference: .*\)\n   (\d+) tokens in \d+ ms: ([\d.]+) tokens/s$",
                         out, re.M)
    assert len(answers) == 2 and all(int(tokens) >= 1 and float(rate) > 0 for _, tokens, rate in answers), out
    assert "mean latency" in out and "tokens/s overall" in out
    # the same answers as the scoring gave the same examples (greedy, one prompt at a time or batched)
    scored = json.loads((run_dir / "answer_quality.json").read_text())["after"]["examples"]
    assert [a for a, _, _ in answers] == [repr(e["prediction"]) for e in scored[:2]]
    assert generate.main(["--run-dir", str(run_dir), "--question", "Who wrote it?", "--context", "Ada wrote it."]) == 0
    assert "1. Q: Who wrote it?" in capsys.readouterr().out


@pytest.mark.slow
def test_generate_fixed_length_answers_take_every_token(lesson_logs, capsys):
    run_dir = lesson_logs[0] / "baseline-scored"
    pattern = r"^   (\d+) tokens in \d+ ms"
    assert generate.main(["--run-dir", str(run_dir), "--limit", "3", "--max-new-tokens", "12"]) == 0
    stopping = [int(n) for n in re.findall(pattern, capsys.readouterr().out, re.M)]
    assert generate.main(["--run-dir", str(run_dir), "--limit", "3", "--max-new-tokens", "12", "--fixed-length"]) == 0
    fixed = [int(n) for n in re.findall(pattern, capsys.readouterr().out, re.M)]
    assert fixed == [12, 12, 12] and len(stopping) == 3 and all(1 <= n <= 12 for n in stopping)


def test_deepspeed_refusing_kernel_injection_is_one_clear_error():
    # DeepSpeed's own refusal (BLOOM after transformers 4.43.4), reached on its CPU accelerator with a tiny BLOOM
    model = BloomForCausalLM(BloomConfig(n_layer=1, hidden_size=32, n_head=4, vocab_size=64))
    with pytest.raises(WorkshopError, match=r"cannot inject its kernels into BloomForCausalLM here: .*"
                                            r"Use --no-kernel-inject"):
        generate.deepspeed_inference(model, kernel_inject=True)


@pytest.mark.parametrize("argv, message", [
    (["--engine", "deepspeed"], "--engine deepspeed needs a CUDA GPU"),
    (["--question", "Who?"], "--question and --context go together"),
])
@pytest.mark.slow
def test_generate_refuses_with_one_error_line(lesson_logs, argv, message, capsys):
    assert generate.main(["--run-dir", str(lesson_logs[0] / "baseline-scored"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_the_knobs_are_in_help_and_checked(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for knob in ("--precision {fp32,fp16,bf16} fp32, fp16 or bf16 for the Trainer and the DeepSpeed config",
                 "--gradient-checkpointing, --no-gradient-checkpointing recompute activations",
                 "--score-answers, --no-score-answers EM/F1", "--score-limit SCORE_LIMIT"):
        assert knob in shown
    with pytest.raises(WorkshopError, match="--score-limit must be at least 1"):
        parse_args(["--score-limit", "0"])


@pytest.mark.slow
def test_a_runs_train_out_alone_gives_its_folders_steps_per_epoch(tmp_path_factory, tmp_path):
    """The walk-through's --max-steps 10 run: its epoch's batches are no multiple of the accumulation, so its last
    optimizer step is a partial one, and after 10 steps the Trainer's epoch (counted in batches) makes steps / epoch
    fall short of a whole number. Its train.out read alone, as the handout's SLURM .out, gives the run folder's
    steps/epoch, as the folder itself does (issue 24: they said 11 and 12)."""
    from workshop.lessons import LESSONS
    from workshop.logparse import final_summary
    from workshop.report.cells import steps_per_epoch
    from workshop.report.runs import load_bare_out, load_run_dir

    walked = walkthrough_logs(tmp_path_factory, LESSON, ("slurm/precision.slurm", "stage2", "fp32"))
    [run_dir] = walked.glob("precision-stage2-fp32-local*")
    expected = json.loads((run_dir / "manifest.json").read_text())["steps_per_epoch"]
    shutil.copy(run_dir / "train.out", tmp_path / "stage2-4242.out")
    bare = load_bare_out(tmp_path / "stage2-4242.out", LESSONS)
    summary = final_summary(bare.events)
    assert (10 / summary["epoch"]) % 1 > 0.01, summary  # the case in question: no whole ratio
    assert steps_per_epoch(bare, summary) == expected
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name)  # the folder without the manifest's own figure
    kept = {key: value for key, value in json.loads((copy / "manifest.json").read_text()).items()
            if key != "steps_per_epoch"}
    (copy / "manifest.json").write_text(json.dumps(kept))
    folder = load_run_dir(copy, LESSONS)
    assert steps_per_epoch(folder, final_summary(folder.events)) == expected
