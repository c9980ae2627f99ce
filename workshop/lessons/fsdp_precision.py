"""Lesson 7's answers on precision: FSDP2 FULL_SHARD beside ZeRO-3 on the same data, start and steps, per precision.

In fp32 the two give the same loss curve (only the order of the sums differs). In bf16 both compute in bf16 but
keep and reduce different things in it, and the curves part by more than in fp32:
  * ZeRO-3 (DeepSpeed's bf16) converts the model to bf16: parameters and gradients in bf16, an fp32 master copy of
    the parameters among the optimizer states, gradients reduced in bf16 (the engine's communication_data_type
    defaults to the model's dtype);
  * FSDP2 (workshop/fsdp.py's MixedPrecisionPolicy: param_dtype bf16, reduce_dtype fp32) keeps the sharded
    parameters, which are the master weights, and their gradients in fp32, casts each unit's parameters to bf16 as
    it gathers them for the forward and backward, and upcasts the bf16 gradients to fp32 before reducing them.
The answers measure the difference from the runs' logged losses and show where each keeps what from the bytes per
parameter of their model states (workshop/model_states.py), not from this description.
"""
from pathlib import Path

from workshop.report.cells import manifest_of
from workshop.report.columns import training_losses

# what must be equal for two runs' loss curves to compare: the same model, start, data, batches and schedule
SAME = ("model", "init", "subset_size", "max_length", "per_device_train_batch_size", "gradient_accumulation_steps",
        "learning_rate", "max_steps", "num_train_epochs", "seed", "padding", "data")
KINDS = ("parameters", "gradients", "optimizer")


def _kind(run, zero_of):
    """The run's side of the comparison: its --fsdp mode, or the mode its ZeRO config pairs with (zero_of: ZeRO
    config name -> mode, the lesson's PAIRS), with 'fsdp' or 'zero'; None for any other run."""
    settings = manifest_of(run).get("settings") or {}
    if settings.get("fsdp"):
        return settings["fsdp"], "fsdp"
    config = _config(run)
    return (zero_of[config], "zero") if settings.get("deepspeed") and config in zero_of else None


def _config(run):
    return Path(str((manifest_of(run).get("settings") or {}).get("deepspeed"))).stem


def _key(run):
    manifest = manifest_of(run)
    settings = manifest.get("settings") or {}
    world = (manifest.get("model_states") or {}).get("world_size")
    return (manifest.get("precision"), world, tuple(str(settings.get(name)) for name in SAME))


def pairs(runs, zero_of):
    """{(mode, precision, processes): (the FSDP2 run, the ZeRO run)}, the last of each by name, where the two
    share every setting in SAME and logged losses at the same steps."""
    found = {}
    for run in sorted(runs, key=lambda run: run.name):
        kind = _kind(run, zero_of)
        if kind and run.status == "completed" and training_losses(run):
            found.setdefault((kind[0], *_key(run)), {})[kind[1]] = run
    return {key[:3]: (both["fsdp"], both["zero"]) for key, both in found.items()
            if len(both) == 2 and set(training_losses(both["fsdp"])) == set(training_losses(both["zero"]))}


def largest_difference(fsdp, zero) -> float:
    """The largest relative difference of the two loss curves over their logged steps."""
    a, b = training_losses(fsdp), training_losses(zero)
    return max(abs(a[step] - b[step]) / abs(b[step]) for step in a)


def bytes_per_parameter(run) -> str:
    """'4 + 4 + 8': the bytes a parameter of the run's model states (parameters + gradients + optimizer states)."""
    manifest = manifest_of(run)
    states, count = manifest.get("model_states") or {}, manifest.get("parameters")
    per_process = states.get("bytes_per_process") or {}
    if not count or set(per_process) < set(KINDS):
        return "not recorded"
    world = states.get("world_size") or 1
    return " + ".join(f"{per_process[kind] * world / count:.0f}" for kind in KINDS)


def answers(runs, zero_of) -> list:
    """One answer per pair, precision and process count; bf16's beside fp32's where both were run."""
    found = pairs(runs, zero_of)
    out = []
    for (mode, precision, world), (fsdp, zero) in sorted(found.items(), key=lambda item: str(item[0])):
        difference = largest_difference(fsdp, zero)
        text = (f"{precision}, {world} process(es): FSDP2 {mode} ({fsdp.name}) and ZeRO's {_config(zero)} "
                f"({zero.name}) logged losses that differ by {difference:.1e} (relative) at most over "
                f"{len(training_losses(fsdp))} steps")
        fp32 = found.get((mode, "fp32", world))
        if precision == "bf16" and fp32:
            reference = largest_difference(*fp32)
            times = f"{difference / reference:.0f}x " if reference else ""
            text += f" ({times}the fp32 pair's {reference:.1e})"
        text += (f"; bytes a parameter (parameters + gradients + optimizer states): FSDP2 "
                 f"{bytes_per_parameter(fsdp)}, ZeRO {bytes_per_parameter(zero)}")
        out.append(text)
    return out


NOTE = ("precision answers: in bf16 ZeRO-3 keeps parameters and gradients in bf16 with an fp32 master copy among "
        "its optimizer states and reduces gradients in bf16; FSDP2 keeps the sharded parameters (the master "
        "weights) and gradients in fp32, casts each unit's parameters to bf16 as it gathers them and reduces "
        "gradients in fp32 (workshop/lessons/fsdp_precision.py); both compute in bf16")
