"""Which runs a comparing table shows: runs grouped by model and data and config, the latest completed of each."""

import re

from workshop.report.cells import manifest_of as _manifest

def config_of(run):
    """The DeepSpeed config a run used: the manifest's config_name, else its run id's prefix (stage2-123)."""
    name = _manifest(run).get("config_name") or run.facts.get("config_name")
    return name if isinstance(name, str) and name else run.name.split("-")[0]


def setup_of(run):
    """(model, init, subset size): runs are only compared with runs of the same model and data."""
    manifest = _manifest(run)
    return tuple(str(manifest.get(key, "unknown")) for key in ("model", "init", "subset_size"))


def setup_label(setup):
    model, init, subset = setup
    return f"{model} ({init}, {subset} samples)"


def run_order(run):
    """When a run started: the manifest's start_time, else the job id ending its name (SLURM counts up)."""
    job = re.search(r"(\d+)$", run.name)
    return str(_manifest(run).get("start_time") or ""), int(job.group(1)) if job else 0, run.name


def latest_runs(runs, order=(), key=config_of):
    """(chosen runs, notes): per (model, init, subset, config) the latest completed run, or the latest run of
    any status when none completed (so a failed or running one still shows); a note says what was ignored.
    `key` names what a run varies within its model and data (default: its config)."""
    groups = {}
    for run in runs:
        groups.setdefault((*setup_of(run), key(run)), []).append(run)
    chosen, notes = [], []
    for (*setup, config), group in groups.items():
        group.sort(key=run_order)
        completed = [run for run in group if run.status == "completed"]
        pick = (completed or group)[-1]
        chosen.append(pick)
        if len(group) > 1:
            which = "latest completed" if completed else "latest (none completed)"
            ignored = ", ".join(run.name for run in group if run is not pick)
            notes.append(f"{pick.name}: the {which} of {len(group)} {config} runs of {setup_label(setup)}; "
                         f"{len(group) - 1} ignored ({ignored})")
    order = {name: i for i, name in enumerate(order)}
    size = model_sizes(chosen)
    chosen.sort(key=lambda run: (size[setup_of(run)[0]], setup_of(run), order.get(key(run), len(order)), key(run)))
    return chosen, notes


def model_sizes(runs):
    """{model: parameter count} from the runs' manifests (the largest any run recorded), so tables list models
    smallest first (560M, 1B7, 3B, 7B1), not by name; a model no run counted sorts last."""
    counts = {}
    for run in runs:
        count = _manifest(run).get("parameters")
        counts.setdefault(setup_of(run)[0], []).extend([count] if isinstance(count, int) and count > 0 else [])
    return {model: max(found, default=float("inf")) for model, found in counts.items()}



def world_of(run):
    value = _manifest(run).get("world_size") or run.facts.get("world_size")
    return value if isinstance(value, int) and value > 0 else 1



def by_setup(rows):
    setups = {}
    for row in rows:
        setups.setdefault((row["model"], row["init"], row["subset"]), []).append(row)
    return setups

