"""Lesson 3's weak-scaling quiz answers: is memory per GPU constant as GPUs are added, and how efficiently does the
time per step hold (deepspeed_multi_gpu.py's weak_handout asks them once per series)."""

from workshop.report.cells import change, is_number, manifest_of, percent_spread, trained_on_cpu
from workshop.report.columns import HOST_PEAK, MODEL_STATES, PEAK_PER_GPU, RUNTIME, STEADY_STEP
from workshop.report.compare import mismatch, refused
from workshop.report.select import world_of
from workshop.report.zero import in_seconds, short_clause, steady_clause


def efficiency_answer(label, group, runs):
    """Weak scaling's efficiency from the fewest to the most GPUs: gated by the steady s/step intervals (ideal weak
    scaling keeps the time per step), else from the whole-run runtimes with a caveat."""
    measured = [(row, run) for row, run in zip(group, runs) if is_number(row[RUNTIME])]
    if len(measured) < 2:
        return ""
    (base, base_run), (last, last_run) = measured[0], measured[-1]
    names = [f"{row['GPUs (processes)']} GPU{'s' if row['GPUs (processes)'] != 1 else ''}" for row in (base, last)]
    differing = mismatch(base_run, last_run, ("processes", "subset_size", "output_dir"))
    if differing:
        return " " + refused("efficiency", names, differing)
    short = short_clause(zip(names, (base_run, last_run)))
    if short:
        return (f" Efficiency: none can be stated: {short}; whole runs {names[1]} {in_seconds(last[RUNTIME])} vs "
                f"{names[0]} {in_seconds(base[RUNTIME])}.")
    measurable, clause = steady_clause((names[0], base), (names[1], last))
    whole = (f"{names[0]} -> {names[1]} took {change(last[RUNTIME], base[RUNTIME])}; efficiency "
             f"{base[RUNTIME] / last[RUNTIME]:.2f}")
    cores = shared_cores_note(base_run, last_run)
    if measurable is None:
        return f" {whole} ({clause}).{cores}"
    if not measurable:
        return f" Efficiency: {clause}: as good as ideal at this size.{cores}"
    steady = base[STEADY_STEP].value / last[STEADY_STEP].value
    return f" {whole}; steady-state efficiency {steady:.2f} ({clause}).{cores}"


def shared_cores_note(base_run, last_run):
    """On a CPU the processes share one machine's cores: n processes doing n times the work take about n times as
    long, so the efficiency there measures the machine, not how ZeRO or the interconnect scale."""
    if not (trained_on_cpu(base_run) and trained_on_cpu(last_run)):
        return ""
    threads = [(world_of(run), manifest_of(run).get("cpu_threads")) for run in (base_run, last_run)]
    shown = ", ".join(f"{n} torch thread(s) a process at {world}" for world, n in threads if n)
    return (" On a CPU the processes share this machine's cores" + (f" ({shown})" if shown else "") +
            ": n processes doing n times the work take about n times as long, so an efficiency near 1/n is what "
            "this machine allows, not a measure of multi-GPU scaling (the GPU reference in notebook 03 is).")


def constant_memory_answer(label, group):
    """The quiz: is peak memory per GPU constant as GPUs are added? Within 5% across the GPU counts counts as yes.
    Without GPU numbers, the engine's model states per process stand in (exact), else host RSS per process
    (psrecord's node total / processes), and the answer says which."""
    column, what, per_process = PEAK_PER_GPU, "peak GPU memory per GPU (nvidia-smi)", False
    if sum(is_number(row[column]) for row in group) < 2:
        column, what, per_process = HOST_PEAK, "host RSS per process (psrecord / processes), as no GPU was measured", \
            True
        if sum(is_number(row.get(MODEL_STATES)) for row in group) >= 2:
            column, what, per_process = MODEL_STATES, "model states per process (engine), as no GPU was measured", \
                False
    points = sorted((row["GPUs (processes)"], row[column] / (row["GPUs (processes)"] if per_process else 1))
                    for row in group if is_number(row[column]))
    if len({gpus for gpus, _ in points}) < 2:
        return (f"{label}: is peak memory per GPU constant as GPUs are added? not answerable yet: measured at "
                f"{', '.join(str(g) for g, _ in points) or 'no'} GPU count(s); run at least two "
                "(bash slurm/submit_weak_scaling.sh).")
    values = [mib for _, mib in points]
    spread = percent_spread(values)
    shown = ", ".join(f"{mib:.0f} MiB at {gpus}" for gpus, mib in points)
    verdict = "yes, about constant" if spread <= 5 else \
        ("no, it grows" if values[-1] > values[0] else "no, it shrinks")
    return f"{label}: is {what} constant as GPUs are added? {verdict} ({shown}; spread {spread:.1f}% of the smallest, 5% counts as constant)."
