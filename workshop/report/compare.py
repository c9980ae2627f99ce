"""Comparison answers a student can trust: like with like, a difference only where the noise allows one, and a
direction that contradicts the mechanism never given as the lesson's conclusion.

    verdict = compare(Side("stage2", spread_a), Side("stage2_offload", spread_b), what="s/step",
                      expect=SLOWER_OR_SAME, why="offloading moves the optimizer step to the CPU")

A side's figure is a Spread (steady median with its 95% interval; workshop/report/spread.py), a plain number
(a single whole-run figure: older runs, handout logs) or exact (model-state bytes: no noise at all).
"""

from dataclasses import dataclass

from workshop.report.spread import Spread

# Settings that name where a run wrote or how it was labelled, not what it computed: never a mismatch.
NOT_COMPARED = {"output_dir", "run_dir", "config_name", "lesson", "save_steps", "save_strategy", "save_final",
                "score_answers", "score_limit", "logging_steps", "dist_timeout", "diverge_patience", "nvme_path",
                "profile"}

LOWER_OR_SAME, HIGHER_OR_SAME = "lower or the same", "higher or the same"
RERUN = "rerun both on an otherwise idle machine (or with more steps: --max-steps)"


@dataclass(frozen=True)
class Side:
    name: str
    figure: object  # Spread, float, or a Missing marker
    exact: bool = False  # counted, not timed: any difference is real (model-state bytes)


def mismatch(run_a, run_b, compared=()):
    """The settings (manifest 'settings', steps done, processes) in which two runs differ besides `compared`:
    [] when they pair like with like. Runs without settings (handout logs) cannot be checked: []."""
    from workshop.report.cells import manifest_of

    a, b = manifest_of(run_a), manifest_of(run_b)
    if not a or not b:
        return []
    flat_a = {**(a.get("settings") or {}), "steps done": a.get("steps_done"), "processes": a.get("world_size")}
    flat_b = {**(b.get("settings") or {}), "steps done": b.get("steps_done"), "processes": b.get("world_size")}
    skip = NOT_COMPARED | set(compared)
    return sorted(key for key in flat_a.keys() | flat_b.keys()
                  if key not in skip and flat_a.get(key) != flat_b.get(key))


def refused(label, names, differing):
    return (f"{label}: not compared: {' and '.join(names)} differ in more than the compared setting "
            f"({', '.join(differing)}); rerun them with the same flags.")


def _value(figure):
    return figure.value if isinstance(figure, Spread) else figure


def _number(figure):
    return isinstance(figure, Spread) or (isinstance(figure, (int, float)) and not isinstance(figure, bool))


def compare(a, b, what, expect=None, why="", rerun=RERUN):
    """How b's `what` compares with a's, as a clause: a stated difference, 'no measurable difference at this size
    (a vs b)', or 'unexpected: ...' when the direction contradicts `expect` (b's value LOWER_OR_SAME or
    HIGHER_OR_SAME than a's, as the mechanism `why` demands). None when a side has no number."""
    if not (_number(a.figure) and _number(b.figure)):
        return None
    va, vb = _value(a.figure), _value(b.figure)
    shown = f"{b.name} {_show(b.figure)} vs {a.name} {_show(a.figure)}"
    spreads = isinstance(a.figure, Spread) and isinstance(b.figure, Spread)
    if spreads and not a.figure.separated_from(b.figure):
        return f"no measurable difference at this size ({a.name} vs {b.name}: {shown}; the 95% intervals overlap)"
    if (a.exact and b.exact) and va == vb:
        return f"no difference ({shown})"
    contradicts = (expect == LOWER_OR_SAME and vb > va) or (expect == HIGHER_OR_SAME and vb < va)
    change = f"{(vb - va) / va * 100:+.1f}%" if va else "from zero"
    if contradicts:
        return (f"unexpected: {b.name} {'higher' if vb > va else 'lower'} {what} than {a.name} ({shown}, {change}), "
                f"although {why}; most likely interference from other work on this machine; {rerun}")
    basis = "" if spreads or (a.exact and b.exact) else \
        "; single whole-run figures without per-step times, so no spread to judge this difference against"
    by = f"{abs(vb - va) / va * 100:.1f}%" if va else "from zero"  # the word says the direction: no sign
    return f"{b.name} {'higher' if vb > va else 'lower'} {what} than {a.name} by {by} ({shown}{basis})"


def _show(figure):
    if isinstance(figure, Spread):
        return str(figure)
    return f"{figure:,.0f}" if abs(figure) >= 100 else f"{figure:.3g}"
