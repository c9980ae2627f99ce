"""The handout's own logs: a SLURM `.out` per job, with the nvidia-smi CSV (`baseline-single-gpu_memory_log.csv`)
and the psrecord log (`deepspeed-cpu-offloading-data-finetune<job id>.txt`) its scripts write beside it.

Files pair by job id (the digits ending the name), else by name (the name without id and `_memory_log`), else,
in a folder with one `.out` and one log of a kind, with each other (a note says so). A memory log nothing pairs
with is a run of its own: Objective 2 from the nvidia-smi CSV alone. A bare DeepSpeed `.out` says which lesson-2
configuration it ran through the configuration DeepSpeed prints at start-up (`zero_config .... stage=2 ...`).
"""

import re
from pathlib import Path

from workshop.logparse import Missing, read_text
from workshop.report.same_ids import shared_job_ids

_HEAD_BYTES = 4096


def sniff(path):
    """'gpu' for an nvidia-smi CSV (or the monitor's `# no GPU` file), 'cpu' for a psrecord log, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    first = next((line.strip() for line in head.split("\n") if line.strip()), "")
    if "memory.used" in first or first.startswith("# no GPU"):
        return "gpu"
    if (first.startswith("#") and "Elapsed" in first) or first.startswith("elapsed_time,"):
        return "cpu"
    return None


def no_log_beside(out, kind, what):
    """The marker for a .out no memory log of `kind` paired with. A file beside it with its job id and that log's
    suffix, which is no such log (a CSV of other columns), is named: the log is there but unread, not absent."""
    suffixes, starts = {"gpu": ((".csv",), "a header naming memory.used"),
                        "cpu": ((".txt", ".log"), "psrecord's `# Elapsed time` header")}[kind]
    try:
        near = sorted(path for path in out.parent.iterdir() if path.suffix in suffixes and job_id(out)
                      and job_id(path) == job_id(out) and sniff(path) is None)
    except OSError:  # a folder this user may not list: as if none
        near = []
    if not near:
        return Missing(f"n/a (no {what})", f"{out.name} has no {what} beside it with its job id or name (the "
                                           "handout's scripts write one)")
    first = next(iter(out_text(near[0]).splitlines()), "")[:120]
    return Missing("damaged (other columns)", f"{near[0].name} beside {out.name} has its job id, but "
                   f"is no {what}: it starts `{first}`, not with {starts}")


def job_id(path):
    found = re.search(r"(\d+)$", Path(path).stem)
    return found.group(1) if found else None


def base_name(path):
    """`baseline-single-gpu_memory_log123` -> `baseline-single-gpu`; `baseline-1234.out` -> `baseline`."""
    stem = re.sub(r"[-_.]?\d+$", "", Path(path).stem)
    return re.sub(r"[-_.]?memory_log$", "", stem) or stem


def pair(outs, logs):
    """({.out: {"gpu": path, "cpu": path}}, [(log, kind) nothing paired with], notes)."""
    pairs, notes = {out: {} for out in outs}, []
    free = list(logs)  # (path, kind)
    shared = shared_job_ids(outs)
    for rule in ("job id", "name", "only ones in the folder"):
        for out in outs:
            for kind in ("gpu", "cpu"):
                if kind in pairs[out]:
                    continue
                here = [log for log in free if log[1] == kind and log[0].parent == out.parent]
                if rule == "job id":
                    crowded = out in shared and "no memory log" in shared[out]  # whose log it is, unknown
                    match = [] if crowded else [log for log in here if job_id(out) and job_id(log[0]) == job_id(out)]
                elif rule == "name":
                    match = [log for log in here if not job_id(log[0]) and base_name(log[0]) == base_name(out)]
                else:
                    alone = [o for o in outs if o.parent == out.parent and kind not in pairs[o]]
                    match = here if len(here) == 1 and alone == [out] else []
                if len(match) == 1:
                    pairs[out][kind] = match[0][0]
                    free.remove(match[0])
                    if rule != "job id":
                        notes.append(f"{out.stem}: {match[0][0].name} paired with {out.name} by {rule}")
    return pairs, free, notes


# What DeepSpeed's engine prints at start-up (rank 0, INFO): one line per setting of its configuration.
_STAGE = re.compile(r"zero_config \.+ stage=(\d)|zero_optimization_stage \.+ (\d)")
_OFFLOAD = re.compile(r"offload_(optimizer|param)=DeepSpeedZeroOffload\w+Config\(device=[^,]*?'?(cpu|nvme|none)'?[>,)]"
                      r"[^)]*?pin_memory=(True|False)")
_WORLD = re.compile(r"dist_world_size=(\d+)")  # the deepspeed launcher's line


def deepspeed_facts(text):
    """{"config_name": "stage2_offload_nopin", "world_size": 2} from the start-up print of a DeepSpeed .out;
    {} when the text has none (a baseline run, or DeepSpeed's INFO lines were off)."""
    stage = _STAGE.search(text)
    if not stage:
        return {}
    facts = {"config_name": f"stage{stage.group(1) or stage.group(2)}"}
    offloads = [(device, pin) for _, device, pin in _OFFLOAD.findall(text) if device in ("cpu", "nvme")]
    if offloads:
        facts["config_name"] += "_offload" + ("" if all(pin == "True" for _, pin in offloads) else "_nopin")
    world = _WORLD.search(text)
    if world:
        facts["world_size"] = int(world.group(1))
    return facts


def out_text(path):
    text = read_text(path)
    return text if isinstance(text, str) else ""
