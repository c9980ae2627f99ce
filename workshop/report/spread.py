"""Steady-state timing with its spread, from a run folder's steps.jsonl (one JSON object per optimizer step:
{"step": int, "seconds": wall s since the previous step ended, "samples": int?, "tokens": int?}).

A figure is the median over the steps after warm-up, with a 95% confidence interval of that median from order
statistics (the distribution-free interval: the k-th smallest and k-th largest step times, k from the binomial
distribution with p = 1/2). Why this interval rather than the others the issue names:
  * the interval is of the median, the number the cell states, so two cells whose intervals do not overlap differ
    by more than step-to-step noise; an IQR describes the steps themselves and stays as wide however many steps
    are timed, so it would hide real differences on long runs;
  * unlike a bootstrap it draws no random numbers: the same run folder always gives the same cell, so committed
    tables regenerate identically;
  * it assumes nothing about the shape of the step times (they are skewed: a step that waits on another process
    is slow, none is much faster than the rest).
It treats steps as independent; neighbouring steps are not quite (a busy machine slows several in a row), so the
interval is a lower bound on the uncertainty, and a comparison gated by it errs toward "no difference" only when
the runs are long.
"""

import json
import math
from dataclasses import dataclass
from statistics import median

from workshop.logparse import Missing

STEPS_FILE = "steps.jsonl"
WARMUP_FRACTION = 0.1  # the first steps build caches, allocate, compile: left out of the steady state
MIN_WARMUP = 2
MIN_STEADY = 6  # fewer steady steps than this cannot bound a median at 95% (2 x 0.5^6 = 3%: the widest interval)
LEVEL = 0.95


@dataclass(frozen=True)
class Spread:
    """A steady-state figure: the median, its 95% interval (low, high) and how many steps it rests on.
    The cell displays it as `0.118 s (0.114-0.122)`; json carries every field (see as_json)."""
    value: float
    low: float
    high: float
    steps: int
    unit: str = "s"

    def __str__(self):
        digits = _digits(self.value)  # the interval at the median's precision: 0.118 s (0.114–0.122)
        return f"{self.value:,.{digits}f} {self.unit} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"

    def as_json(self):
        return {"value": self.value, "low": self.low, "high": self.high, "steps": self.steps, "unit": self.unit,
                "display": str(self)}

    def separated_from(self, other):
        """True when the two intervals do not overlap: the medians differ by more than the steps' noise."""
        return self.high < other.low or other.high < self.low


def _digits(value):
    """Decimals for three significant figures, never exponents."""
    if value == 0 or not math.isfinite(value):
        return 3
    return max(0, 3 - 1 - math.floor(math.log10(abs(value))))


def median_interval(values, level=LEVEL):
    """(median, low, high): the order-statistic interval of the median, at least `level` sure to hold it."""
    ordered = sorted(values)
    n = len(ordered)
    # The largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2: [x_(k), x_(n+1-k)] (1-based) covers the median.
    tail, k, cumulative = (1 - level) / 2, 0, 0.0
    while k < n and cumulative + math.comb(n, k) / 2 ** n <= tail:
        cumulative += math.comb(n, k) / 2 ** n
        k += 1
    if k == 0:
        raise ValueError(f"{n} values cannot bound a median at {level:.0%}")
    return median(ordered), ordered[k - 1], ordered[n - k]


def read_steps(path):
    """The step records of a run folder, or a Missing marker saying why there are none."""
    file = path / STEPS_FILE
    if not path.is_dir():
        return Missing("n/a (no per-step times)", f"{path.name} is not a run folder: no {STEPS_FILE}")
    if not file.is_file():
        return Missing("n/a (no per-step times)", f"the run folder has no {STEPS_FILE} (runs before per-step "
                                                  "timing): its figures are single whole-run numbers")
    records, bad = [], 0
    for line in file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1  # a killed run's last line is half-written
            continue
        if isinstance(record, dict) and _number(record.get("seconds")) and record["seconds"] > 0:
            records.append(record)
        else:
            bad += 1
    if not records:
        return Missing("n/a (no timed steps)", f"{STEPS_FILE} holds no step with its seconds"
                       + (f" ({bad} unreadable lines)" if bad else ""))
    return records


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def warmup_of(n):
    return max(MIN_WARMUP, math.ceil(n * WARMUP_FRACTION))


def steady(records, per=None, unit="s"):
    """The steady-state Spread of seconds per step (per=None) or of `per` (a record key: samples, tokens) per
    second, or the marker saying why there is none (too few steps after warm-up, no `per` counts)."""
    if isinstance(records, Missing):
        return records
    kept = records[warmup_of(len(records)):]
    if len(kept) < MIN_STEADY:
        return Missing("n/a (too short for a steady state)",
                       f"{len(records)} timed steps; a steady state needs {MIN_STEADY} after the first "
                       f"{warmup_of(len(records))} (warm-up): run more steps (--max-steps)")
    if per is None:
        values = [record["seconds"] for record in kept]
    else:
        # an epoch's last step, when the epoch is no whole number of steps, counts no samples (step_times.py): it
        # holds fewer rows, so it is left out of the rate rather than making the whole run's rate unknown
        values = [record[per] / record["seconds"] for record in kept if _number(record.get(per))]
        if len(values) < MIN_STEADY:
            return Missing(f"n/a (no {per} per step)", f"{STEPS_FILE} counts the {per} of {len(values)} of the "
                           f"{len(kept)} steady steps; a steady rate needs {MIN_STEADY}")
    value, low, high = median_interval(values)
    return Spread(value, low, high, len(values), unit)


def steady_seconds(run):
    """A run's steady seconds per optimizer step (Spread) or why not."""
    return steady(read_steps(run.path))


def too_few_steps(run):
    """How many steps the run timed when it timed them (steps.jsonl) but too few for a steady state; None when it has
    a steady state or never timed its steps (an older run: its whole-run figures are all there is)."""
    records = read_steps(run.path)
    if isinstance(records, Missing):
        return 0 if records.cell == "n/a (no timed steps)" else None
    return len(records) if len(records) - warmup_of(len(records)) < MIN_STEADY else None


def steady_rate(run, per, unit):
    """A run's steady `per` (samples, tokens) per second (Spread) or why not."""
    return steady(read_steps(run.path), per=per, unit=unit)
