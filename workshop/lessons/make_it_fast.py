"""Lesson 4, make it fast (notebooks/04, slurm/fast.slurm): the speed table (workshop/speed.py's figures in the
manifest). The handout has no such table, so it has one layout: one row per run. Its benchmark
tables and figures are in make_it_fast_figures.py."""

from workshop.logparse import Missing
from workshop.report.cells import absent, gpu_stat, manifest_of as _manifest, number_or, torch_reserved
from workshop.report.columns import PEAK_GPU, RESERVED
from workshop.report.engine import Table

def changes_of(run):
    """The make-it-fast flags a run used, from its manifest's settings ("seed" when none)."""
    settings = _manifest(run).get("settings", {})
    changes = []
    if settings.get("padding", "max") != "max":
        changes.append(f"padding {settings['padding']}")
    batch, accumulation = settings.get("per_device_train_batch_size"), settings.get("gradient_accumulation_steps")
    if (batch, accumulation) != (4, 4) and batch:
        changes.append(f"micro-batch {batch} x {accumulation}")
    changes += [name for name, on in (("bf16", settings.get("bf16")), ("fused loss", settings.get("fused_loss")),
                                      ("chunked loss", settings.get("chunked_loss")),
                                      ("torch.compile", settings.get("torch_compile")),
                                      ("fewer host syncs", settings.get("fewer_syncs"))) if on]
    if settings.get("optim"):
        changes.append(settings["optim"])
    if settings.get("attention", "eager") != "eager":
        changes.append(f"{settings['attention']} attention")
    return ", ".join(changes) or "seed"


def make_it_fast(run):
    speed = _manifest(run).get("speed") or {}
    row = {"run": run.name, "status": run.status, "changes": changes_of(run)}
    if not speed:
        why = absent(run, "speed figures", source="manifest.json")
    elif "why_no_rates" in speed:
        why = Missing("n/a (too few steps)", speed["why_no_rates"])
    else:
        why = None
    for column, key, scale in (("real tokens/s", "real_tokens_per_s", 1), ("MFU %", "mfu", 100),
                               ("s/step", "step_s", 1), ("start-up s", "startup_s", 1)):
        value = number_or(speed.get(key), None)
        if value is not None:
            row[column] = value * scale
        elif key == "mfu" and why is None:  # rates were measured, so only the GPU's peak was missing
            row[column] = Missing("n/a (no GPU)", "MFU needs a CUDA GPU whose peak workshop/speed.py knows")
        else:
            row[column] = why
    evals = [] if isinstance(run.events, Missing) else [e for e in run.events if "eval_loss" in e]
    row["final eval loss"] = evals[-1]["eval_loss"] if evals else absent(run, "eval loss")
    row[PEAK_GPU] = gpu_stat(run, "max")
    row[RESERVED] = torch_reserved(run)
    return row



TABLES = (Table("make_it_fast", "Make it fast: speed of the steady training steps (workshop/speed.py)", make_it_fast),)
