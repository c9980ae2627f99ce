"""Each lesson's train.py is the baseline's entry plus the lines it marks as new (as accelerate checks its examples):
a student diffing the two sees only what the lesson teaches, and a change to the baseline reaches every lesson."""

import ast
import difflib
from pathlib import Path

import pytest

from workshop.lessons import LESSONS

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "baseline" / "train.py"
NEW, END = "# New Code #", "# End New Code #"


def code_lines(path):
    """The file's lines after its module docstring (which is each lesson's own text), blank lines dropped."""
    text = path.read_text()
    docstring = ast.parse(text).body[0]
    return [line for line in text.splitlines()[docstring.end_lineno:] if line.strip()]


def marked(lines):
    """Indexes of the lines inside marked blocks: `# New Code #` up to `# End New Code #`, or, when another
    marker comes first, the comment and the one line after it."""
    inside, i = set(), 0
    while i < len(lines):
        if not lines[i].strip().startswith(NEW):
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith((NEW, END))), None)
        if end is not None and lines[end].strip().startswith(END):
            inside.update(range(i, end + 1))
            i = end + 1
        else:
            inside.update((i, i + 1))
            i += 2
    return inside


@pytest.mark.parametrize("lesson", [lesson for lesson in LESSONS if lesson.folder != "baseline"], ids=lambda l: l.name)
def test_lesson_entry_is_the_baseline_plus_marked_lines(lesson):
    base, ours = code_lines(BASELINE), code_lines(REPO / lesson.folder / "train.py")
    new = marked(ours)
    assert new, f"{lesson.folder}/train.py marks no new lines"
    for tag, b0, b1, o0, o1 in difflib.SequenceMatcher(a=base, b=ours, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        unmarked = [ours[i] for i in range(o0, o1) if i not in new]
        assert not unmarked, f"{lesson.folder}/train.py differs from baseline/train.py in unmarked lines: {unmarked}"
        assert o1 > o0, f"{lesson.folder}/train.py drops baseline lines without a marked replacement: {base[b0:b1]}"


def test_the_check_sees_an_unmarked_change(tmp_path):
    # The same check on a copy of lesson 2 with one unmarked extra line must fail.
    copy = tmp_path / "train.py"
    copy.write_text((REPO / "deepspeed_single_gpu" / "train.py").read_text() + "print('unmarked')\n")
    base, ours = code_lines(BASELINE), code_lines(copy)
    new = marked(ours)
    extra = [ours[i] for tag, _, _, o0, o1 in difflib.SequenceMatcher(a=base, b=ours, autojunk=False).get_opcodes()
             if tag != "equal" for i in range(o0, o1) if i not in new]
    assert extra == ["print('unmarked')"]
