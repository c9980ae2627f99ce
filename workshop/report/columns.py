"""Column definitions: a name (the by-run header), a unit, a description (the notes say it once under a table)
and a fallback marker for a run the column cannot be read from. Lessons look columns up by constant, not text.
"""

from dataclasses import dataclass
from typing import Callable

from workshop.logparse import Missing
from workshop.report.cells import cpu_peak, gpu_stat, is_number, manifest_of, number_or


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    description: str
    read: Callable  # run -> value or Missing
    fallback: Missing = Missing("n/a")

    def value(self, run):
        value = self.read(run)
        return self.fallback if value is None else value


def _estimate_vs_measured(run, estimate_key, measured):
    """'1.20 GiB est. vs 1.40 GiB measured (-14.3%)': the preflight estimate beside the measured peak."""
    preflight = manifest_of(run).get("preflight")
    if not isinstance(preflight, dict):
        return None
    estimate, peak = number_or(preflight.get(estimate_key), None), measured(run)
    if not is_number(estimate):
        return Missing("n/a (no estimate)", f"the preflight record has no {estimate_key}")
    if isinstance(peak, Missing):
        return peak
    gib = peak / 1024
    error = f" ({(estimate - gib) / gib * 100:+.1f}%)" if gib else ""
    return f"{estimate:.2f} GiB est. vs {gib:.2f} GiB measured{error}"


NO_PREFLIGHT = Missing("n/a (no preflight)", "the run's manifest holds no preflight memory estimate")
ESTIMATE_GPU = Column(
    "GPU GiB: estimate vs measured", "GiB",
    "the preflight estimate per GPU beside nvidia-smi's peak of the busiest GPU; % = (estimate - measured) / measured",
    lambda run: _estimate_vs_measured(run, "gpu_gib", lambda r: gpu_stat(r, "max")), NO_PREFLIGHT)
ESTIMATE_HOST = Column(
    "host GiB: estimate vs measured", "GiB",
    "the preflight estimate per node beside psrecord's peak RSS; % = (estimate - measured) / measured",
    lambda run: _estimate_vs_measured(run, "host_gib", cpu_peak), NO_PREFLIGHT)


def memory_limit_note(run):
    """A run on a GPU whose memory was capped to emulate a smaller one says so (the manifest's gpu_memory_limit)."""
    limit = manifest_of(run).get("gpu_memory_limit")
    if isinstance(limit, dict) and is_number(number_or(limit.get("gib"), None)):
        return (f"{run.name}: GPU memory capped at {limit['gib']:g} GiB"
                + (f", emulating {limit['emulates']}" if limit.get("emulates") else ""))
    return None


# The by-run headers the lessons share, by constant: tables, answers and figures look them up by these names.
PEAK_GPU = "peak GPU MiB (nvidia-smi)"
RESERVED = "torch max reserved MiB"
HOST_PEAK = "peak CPU MiB (psrecord)"
HOST_MEAN = "mean CPU MiB (psrecord)"
RUNTIME = "total runtime s (train_runtime)"
PEAK_PER_GPU = "peak GPU MiB per GPU (nvidia-smi)"
MEAN_PER_GPU = "mean GPU MiB per GPU (nvidia-smi)"
TRAIN_RATE = "train samples/s"
