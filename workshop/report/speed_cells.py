"""The speed figures of one run, as lesson 4 (make it fast) shows them and lesson 5 compares them: workshop/speed.py's
figures from the manifest, the run's changes from the seed, and its steady figures with their spread."""

from workshop.logparse import Missing
from workshop.report.cells import absent, gpu_stat, manifest_of as _manifest, number_or, torch_reserved
from workshop.report.columns import PEAK_GPU, RESERVED, STEADY_STEP
from workshop.report.spread import STEPS_FILE, steady_rate, steady_seconds

STEADY_TOKENS = "steady real tokens/s (median, 95% interval)"


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


def speed_row(run):
    """make it fast's figures of one run (the manifest's `speed`, workshop/speed.py), beside its steady step time
    and tokens/s with their intervals where the run folder timed every step (steps.jsonl)."""
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
    if run.path.is_dir() and (run.path / STEPS_FILE).is_file():  # older runs: no column, rather than a marker each
        row[STEADY_STEP] = steady_seconds(run)
        row[STEADY_TOKENS] = steady_rate(run, "tokens", "tokens/s")
    return row
