"""The speed figures of one run, as lesson 4 (make it fast) shows them and lesson 5 compares them: workshop/speed.py's
figures from the manifest, the run's changes from the seed, and its steady figures with their spread."""

from workshop.logparse import Missing
from workshop.report.cells import absent, manifest_of as _manifest, number_or
from workshop.report.columns import PEAK_GPU_COL, RESERVED_COL, RUN_COL, STATUS_COL, STEADY_STEP, Column, row_of
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


def _speed_figure(key, scale=1):
    """A reader of workshop/speed.py's figure `key` from the manifest, or why the run has none."""
    def read(run):
        speed = _manifest(run).get("speed") or {}
        value = number_or(speed.get(key), None)
        if value is not None:
            return value * scale
        if not speed:
            return absent(run, "speed figures", source="manifest.json")
        if "why_no_rates" in speed:
            return Missing("n/a (too few steps)", speed["why_no_rates"])
        if key == "mfu":  # rates were measured, so only the GPU's peak was missing
            return Missing("n/a (no GPU)", "MFU needs a CUDA GPU whose peak workshop/speed.py knows")
        return None  # the Column's fallback
    return read


def _final_eval_loss(run):
    evals = [] if isinstance(run.events, Missing) else [e for e in run.events if "eval_loss" in e]
    return evals[-1]["eval_loss"] if evals else absent(run, "eval loss")


def timed_steps(run):
    """Whether the run folder timed every step (steps.jsonl): older runs did not."""
    return run.path.is_dir() and (run.path / STEPS_FILE).is_file()


SPEED_COLUMNS = (
    RUN_COL, STATUS_COL,
    Column("changes", "", "the make-it-fast flags the run used (seed: none)", changes_of),
    Column("real tokens/s", "tokens/s", "speed.py's steady real (unpadded) tokens per second",
           _speed_figure("real_tokens_per_s")),
    Column("MFU %", "%", "model FLOPs utilisation of the GPU's peak", _speed_figure("mfu", 100)),
    Column("s/step", "s", "speed.py's steady seconds per optimizer step", _speed_figure("step_s")),
    Column("start-up s", "s", "launch to the first optimizer step", _speed_figure("startup_s")),
    Column("final eval loss", "", "the last evaluation's loss", _final_eval_loss),
    PEAK_GPU_COL, RESERVED_COL,
    # older runs have no steps.jsonl: no column, rather than a marker in every row
    Column(STEADY_STEP, "s", "median s/step after warm-up with its 95% interval (steps.jsonl)", steady_seconds),
    Column(STEADY_TOKENS, "tokens/s", "median real tokens/s after warm-up with its 95% interval (steps.jsonl)",
           lambda run: steady_rate(run, "tokens", "tokens/s")),
)


def speed_row(run):
    """make it fast's figures of one run (the manifest's `speed`, workshop/speed.py), beside its steady step time
    and tokens/s with their intervals where the run folder timed every step (steps.jsonl)."""
    return row_of(run, SPEED_COLUMNS if timed_steps(run) else SPEED_COLUMNS[:-2])
