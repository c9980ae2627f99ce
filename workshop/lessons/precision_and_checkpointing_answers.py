"""Lesson 5's gradient-checkpointing answers: memory saved (the GPU's peak, or on a CPU the activations a
micro-batch keeps for the backward pass) and time lost per step, each gated by the mechanism and by noise."""

from workshop.logparse import Missing
from workshop.report.cells import is_number
from workshop.report.compare import HIGHER_OR_SAME, LOWER_OR_SAME, Side, compare, refused
from workshop.report.spread import Spread

RECOMPUTES = "checkpointing recomputes the forward pass during the backward pass"
KEEPS_LESS = "checkpointing keeps fewer activations for the backward pass"
SINGLE = " (whole-run figures without per-step times: no spread to judge the difference against)"


def _checkpointing_time(row):
    """The time clause: 'cost 38.1% time per step', 'no measurable difference ...', or 'unexpected: ...' when the
    run with checkpointing was faster (it does more work: the mechanism cannot make it faster)."""
    without, with_, lost = row["s/step without"], row["s/step with"], row["time lost %"]
    clause = compare(Side("checkpointing off", without), Side("checkpointing on", with_), "seconds per step",
                     expect=HIGHER_OR_SAME, why=RECOMPUTES)
    if clause is None:
        return f"time lost: {lost.cell}"
    if clause.startswith(("unexpected", "no measurable")):
        return clause
    return f"{'cost' if lost >= 0 else 'saved'} {abs(lost):.1f}% time per step" + \
        ("" if isinstance(with_, Spread) else SINGLE)


def _checkpointing_memory(row, activations):
    saved, without = row["memory saved MiB"], row["peak GPU MiB without"]
    if not is_number(saved) and all(map(is_number, activations)):
        return _activations_clause(*activations)
    if not is_number(saved):
        return f"memory saved: {saved.cell}"
    clause = compare(Side("checkpointing off", without), Side("checkpointing on", row["peak GPU MiB with"]),
                     "peak GPU memory", expect=LOWER_OR_SAME, why=KEEPS_LESS)
    return clause if clause.startswith("unexpected") else \
        f"saved {saved:,.0f} MiB of peak GPU memory ({saved / without * 100:.0f}%)"


def _activations_clause(without, with_):
    """Where no GPU peak was measured: the activations kept for the backward pass (exact, counted by autograd)."""
    clause = compare(Side("checkpointing off", without, exact=True), Side("checkpointing on", with_, exact=True),
                     "activations kept for the backward pass", expect=LOWER_OR_SAME, why=KEEPS_LESS)
    if clause.startswith(("unexpected", "no difference")):
        return clause
    return (f"saved {without - with_:.3g} MiB of the activations a micro-batch keeps for the backward pass "
            f"({(without - with_) / without * 100:.0f}%: {with_:.3g} vs {without:.3g} MiB, counted by autograd; "
            "no GPU memory measured)")


def checkpointing_answers(rows, differing, activations):
    answers = []
    for row, flags, pair in zip(rows, differing, activations):
        where = f"{row['model']}, {row['stage']}, {row['precision']}"
        if flags:
            answers.append(refused(where, ("checkpointing off", "checkpointing on"), flags))
            continue
        batches = [row[f"largest micro-batch {w}"] for w in ("without", "with")]
        shown = [b.cell if isinstance(b, Missing) else f"{b:.0f}" if is_number(b) else b for b in batches]
        batch = f"; largest micro-batch {shown[0]} without, {shown[1]} with" if \
            any(not isinstance(b, Missing) for b in batches) else ""
        memory, time = _checkpointing_memory(row, pair), _checkpointing_time(row)
        answers.append(f"{where}: gradient checkpointing {memory} and {time}{batch}.")
    return answers
