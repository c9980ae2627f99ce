"""The smoke test over the lesson registry: every lesson's tiny walk-through (its scripts with the arguments the
registry declares, `--profile tiny`, as scripts/run_workshop.sh runs them) completes, and fill_tables fills that
lesson's tables from those runs alone. A lesson is tested here by being declared in workshop/lessons/__init__.py.

The walk-through runs are made once per session (conftest.py's `lesson_logs`); other modules read the same runs
instead of training their own copies (tests/test_deepspeed_lesson.py, test_fill_tables_zero.py, test_multi_gpu.py).
"""

import math
import numbers
import re

import pytest

from workshop.fill_tables import LESSONS, build_tables, load_runs
from workshop.report.spread import Spread

# A cell that says the run's own files were absent, empty or damaged: the run did not leave what the table reads.
BROKEN = re.compile(r"(missing|empty|damaged|unreadable)\b")


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_figure(value):
    """A measured figure: a number, or a steady median with its 95% interval (a Spread). A percentage made of two
    such medians is a marker where their intervals overlap (no measurable difference): the medians are the row's
    figures then."""
    return is_number(value) or isinstance(value, Spread)


def cells(df):
    return [value for row in df.to_dict("records") for value in row.values()]


def check_no_broken_cell(key, df):
    broken = [value for value in cells(df) if isinstance(value, str) and BROKEN.match(value)]
    assert not broken, f"{key}: {broken}"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.name for lesson in LESSONS])
def test_walkthrough_completes_and_fills_the_lessons_tables(lesson_logs, lesson):
    logs = lesson_logs(lesson.name)
    runs = load_runs([logs])
    # one completed run per walk-through command, each filed under this lesson
    assert len(runs) == len(lesson.walkthrough_commands()), sorted(run.name for run in runs)
    assert [(run.name, run.lesson, run.status) for run in runs if (run.lesson, run.status) !=
            (lesson.name, "completed")] == []

    # One row per run (or per comparison of runs): each has a measured figure, and no cell blames the run's files.
    keys = [table.key for table in lesson.table_defs()]
    by_run = build_tables([logs], by_run=True)
    assert sorted(by_run) == sorted(keys)  # every table of the lesson, and no other lesson's
    for key in keys:
        df = by_run[key]
        assert len(df) > 0, f"{key}: no rows"
        for row in df.to_dict("records"):
            assert any(is_figure(value) for value in row.values()), f"{key}: a row without a figure: {row}"
        check_no_broken_cell(key, df)
        if "run" in df:  # the runs behind each row (a comparison's row names several) are the walk-through's
            named = {name for cell in df["run"] for name in re.split(r", | vs ", str(cell))}
            assert named <= {run.name for run in runs}, (key, named)

    # The handout's layout, as the notebook and fill_tables print it: a cell may say why it is empty (a GPU
    # figure on this CPU), but the lesson's tables hold figures, and none blames the run's files.
    handout = build_tables([logs], [lesson])
    assert handout, f"{lesson.name}: no table in the handout's layout"
    for key, df in handout.items():
        assert len(df) > 0 and df.attrs["title"], key
        check_no_broken_cell(key, df)
    assert any(is_number(value) for df in handout.values() for value in cells(df)), lesson.name
