"""Runs that carry the same id: a run folder copied (its manifest keeps its run id), two `.out` files of one name in
two folders, two `.out` files of one SLURM job id. Each stays a run and a row of its own, and a note names the paths,
so that neither is taken for the other, nor the two for one run (a table keyed by run id would merge them)."""

import re


def tell_apart(runs):
    """Rename the second and later runs of one id `<id>#2`, `<id>#3`, ... (in the order given: by path) and note
    on each which paths carry that id."""
    groups = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    for name, group in groups.items():
        if len(group) < 2:
            continue
        for number, run in enumerate(group[1:], 2):
            run.name = f"{name}#{number}"
        starts = {run.manifest.get("start_time") if isinstance(run.manifest, dict) else None for run in group}
        what = ("one run copied (one start time): count it once" if len(starts) == 1 and None not in starts else
                "different runs, or copies")
        cause = (f"`same run id` — {' and '.join(str(run.path) for run in group)} all carry run id {name}, "
                 f"{what}; each is a row of its own: {', '.join(run.name for run in group)}")
        for run in group:
            run.notes.append(f"{run.name}: {cause}")


def slurm_job_id(path):
    """The SLURM job id ending a .out's name (`baseline-1234.out`; an array task's `baseline-1234_7.out`), or None."""
    found = re.search(r"(?:^|[^\d_])(\d+(?:_\d+)?)$", path.stem)
    return found.group(1) if found else None


def shared_job_ids(outs):
    """{.out path: note} for the .out files whose name ends in a job id another .out's name ends in too. In one
    folder, which of them a memory log of that id belongs to is unknown: handout_logs.pair pairs it with neither."""
    groups = {}
    for out in outs:
        if slurm_job_id(out):
            groups.setdefault(slurm_job_id(out), []).append(out)
    notes = {}
    for job, group in groups.items():
        if len(group) > 1:
            for out in group:
                crowded = any(other.parent == out.parent for other in group if other is not out)
                notes[out] = (f"`same job id` — {' and '.join(map(str, group))} all end in SLURM job id {job}: each "
                              "is read as a run of its own" + (", and no memory log beside them is paired with "
                                                               "either by that id" if crowded else ""))
    return notes
