"""The values a table cell holds, each read from one run: a number, or a `Missing` marker saying why not.

Markers name no column, so one note covers every cell of a run (or of many runs) with the same marker.
"""

import math

import pandas as pd

from workshop.logparse import Missing, final_summary, train_bar_total
from workshop.report.runs import ENDED_EARLY

def absent(run, what, source=None):
    """The marker for a value the logs do not (yet) hold, saying why as precisely as the run allows.
    Details name no column, so one note covers every cell of a run with the same marker."""
    source = source or run.events_file
    if run.status == "running":  # first: a running run's last line is often half-written
        return Missing("not yet (running)", "still running: values appear as it logs them")
    if source in run.damage:
        return Missing(run.damage[source])  # the run's own note explains it
    if run.status.startswith(ENDED_EARLY):
        return Missing(f"missing (run {run.status})", f"the run ended `{run.status}` before logging these values")
    return Missing("missing (not logged)", f"{source} does not hold these values")


def number_or(value, fallback):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return fallback


def manifest_value(run, *keys, what):
    """manifest[k1][k2]..., or the marker saying why not."""
    value = run.manifest
    if isinstance(value, Missing):
        return value
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return number_or(value, None) if value is not None else absent(run, what, "manifest.json")


def gpu_stat(run, stat="max"):
    """nvidia-smi memory.used `stat` (max, mean, min) of the busiest GPU: with several GPUs it sets the limit."""
    if isinstance(run.gpu, Missing):
        return run.gpu
    value = run.gpu.groupby("index")["memory_used_mib"].agg(stat).max()
    return float(value) if pd.notna(value) else \
        Missing("n/a (memory.used [N/A])", "nvidia-smi reported no memory.used values")


def torch_reserved(run):
    """The manifest's torch.cuda.max_memory_reserved in MiB; `n/a (no GPU)` for a run on the CPU."""
    reserved = manifest_value(run, "peak_memory", "cuda_max_reserved_mib", what="peak_memory.cuda_max_reserved_mib")
    device = run.manifest.get("peak_memory") if isinstance(run.manifest, dict) else None
    device = device.get("device") if isinstance(device, dict) else None
    if isinstance(reserved, Missing) and isinstance(device, str) and not device.startswith("cuda"):
        return Missing("n/a (no GPU)", f"the run used device {device}: no CUDA memory to report")
    return reserved


def trained_on_cpu(run):
    """True when the run's manifest says it trained on the CPU (peak_memory.device, as torch_reserved reads it):
    no GPU, so nothing was offloaded from one; False when it used a GPU or did not record its device."""
    device = manifest_of(run).get("peak_memory") if run is not None else None
    device = device.get("device") if isinstance(device, dict) else None
    return isinstance(device, str) and not device.startswith("cuda")


def cpu_peak(run):
    """psrecord's largest Real (MB) sample: host RSS of the training and its children, MiB."""
    return run.cpu if isinstance(run.cpu, Missing) else float(run.cpu["real_mib"].max())


def epoch_label(epoch, position):
    """Evals are labelled by epoch, rounding up within 0.1 (a last eval at 2.93 is epoch 3); an eval without a
    usable epoch is labelled by its position."""
    if not isinstance(epoch, float) or not math.isfinite(epoch):
        return position
    up = math.ceil(epoch - 1e-9)
    return up if up - epoch <= 0.1 + 1e-9 else round(epoch, 2)


def expected_epochs(run):
    settings = run.manifest.get("settings") if isinstance(run.manifest, dict) else None
    planned = settings.get("num_train_epochs") if isinstance(settings, dict) else None
    if isinstance(planned, (int, float)) and 0 < planned <= 100:
        return math.ceil(planned)
    return 3  # the lesson's default; evals at other epochs still get their own columns


def steps_per_epoch(run, summary):
    from_manifest = run.manifest.get("steps_per_epoch") if isinstance(run.manifest, dict) else None
    if isinstance(from_manifest, (int, float)) and not isinstance(from_manifest, bool):
        return from_manifest
    if isinstance(run.events, Missing):
        return run.events
    # log_history events carry the global step: steps per epoch = step / epoch at the furthest event.
    stepped = [e for e in run.events if isinstance(e.get("step"), float) and isinstance(e.get("epoch"), float)
               and math.isfinite(e["step"]) and math.isfinite(e["epoch"]) and e["epoch"] > 0]
    if stepped:
        last = max(stepped, key=lambda e: e["step"])
        return whole_steps(last["step"] / last["epoch"], rounding=1e-9)
    # Stdout has no steps; the training progress bar's total over the final epoch count does.
    final_epoch = summary.get("epoch") if summary else None
    if run.stdout and isinstance(final_epoch, float) and math.isfinite(final_epoch) and final_epoch > 0:
        total = train_bar_total(run.stdout)
        if total:
            return whole_steps(total / final_epoch, rounding=5e-4)  # the epoch printed to 4 significant digits
    return absent(run, "step counts")


def whole_steps(ratio, rounding):
    """Optimizer steps per epoch from steps / epochs. The Trainer's epoch counts batches, so where an epoch's last
    optimizer step gathers fewer batches the ratio falls short of the whole number (45 batches, accumulation 4: 12
    steps; after 4 of them the epoch is 16/45 and the ratio 11.25): the ceiling, unless the ratio is a whole number
    within the epoch's relative `rounding`."""
    nearest = round(ratio)
    return nearest if abs(ratio - nearest) <= rounding * ratio else math.ceil(ratio)



def manifest_of(run):
    """The run's manifest, or {} when it has none."""
    return run.manifest if isinstance(run.manifest, dict) else {}


def train_runtime(run):
    """The Trainer's train_runtime (s) from its final summary event."""
    if isinstance(run.events, Missing):
        return run.events
    summary = final_summary(run.events)
    value = number_or(summary.get("train_runtime") if summary else None, None)
    return value if value is not None else absent(run, "the final train summary")



def is_number(value):
    return isinstance(value, float) and math.isfinite(value)


def change(new, old):
    """'3.2 s longer (+12.6%)': how `new` seconds compare with `old`."""
    word = "longer" if new >= old else "shorter"
    percent = f" ({(new - old) / old * 100:+.1f}%)" if old else ""
    return f"{abs(new - old):.1f} s {word}{percent}"



def gpu_mean_per_gpu(run):
    """nvidia-smi memory.used averaged over each GPU's samples, then over the GPUs (every GPU's rows count)."""
    if isinstance(run.gpu, Missing):
        return run.gpu
    value = run.gpu.groupby("index")["memory_used_mib"].mean().mean()
    return float(value) if pd.notna(value) else \
        Missing("n/a (memory.used [N/A])", "nvidia-smi reported no memory.used values")


def summary_value(run, summary, key, what):
    return number_or(summary.get(key) if summary else None, absent(run, what))



def percent_spread(values):
    return (max(values) - min(values)) / min(values) * 100

