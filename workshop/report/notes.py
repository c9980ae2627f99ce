"""Notes a person reads: one line per cause, naming every run it covers.

Notes arrive as `<run>: <cause>` (a cell's marker and why, a run's damaged file, ...). The same cause in many
runs and many columns is one line, `<cause> (runs: a, b, c)`; a note without a run prefix stays as it is.
"""

import re

_RUN_NOTE = re.compile(r"^(?P<run>[^\s:`]+): (?P<cause>.+)$", re.S)


def merge_notes(notes):
    """The notes, each cause once, in order of first appearance, with the runs that share it."""
    causes = {}  # cause -> runs (a dict keeps order and drops repeats)
    for note in notes:
        found = _RUN_NOTE.match(note)
        run, cause = (found["run"], found["cause"]) if found else (None, note)
        causes.setdefault(cause, {})
        if run:
            causes[cause][run] = None
    lines = []
    for cause, runs in causes.items():
        if not runs:
            lines.append(cause)
        elif len(runs) == 1:
            lines.append(f"{next(iter(runs))}: {cause}")
        else:
            lines.append(f"{cause} (runs: {', '.join(runs)})")
    return lines
