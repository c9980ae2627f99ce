"""`python -m workshop.fill_tables --class DIR`: a class of students' folders, each a copy of the real tiny run of
tests/data (baseline-1001), each student's speed scaled a little as runs on shared machines differ, one student's
run made four times slower (their log_history.jsonl's final summary edited, as tests/test_fill_tables.py edits
runs), and one student with no run at all. Expected figures are read from the fixture, never typed in."""
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from workshop.report.classroom import ClassCell, far_students

DATA = Path(__file__).parent / "data" / "logs"
COMPLETE = DATA / "run_complete" / "baseline-1001"
REPO = Path(__file__).parent.parent
SPEED = {"alice": 1.0, "bob": 0.95, "carol": 1.05, "dave": 0.25}  # dave's run had a problem worth a look


def summary_of(run_dir):
    return json.loads((run_dir / "log_history.jsonl").read_text().splitlines()[-1])


def make_class(root):
    for student, factor in SPEED.items():
        run = root / student / "logs" / COMPLETE.name
        shutil.copytree(COMPLETE, run)
        lines = (run / "log_history.jsonl").read_text().splitlines()
        final = json.loads(lines[-1])
        final["train_samples_per_second"] *= factor
        final["train_runtime"] /= factor
        (run / "log_history.jsonl").write_text("\n".join([*lines[:-1], json.dumps(final)]) + "\n")
    (root / "erin" / "logs").mkdir(parents=True)  # submitted nothing yet
    return root


def fill(*argv):
    return subprocess.run([sys.executable, "-m", "workshop.fill_tables", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_the_class_table_gives_median_range_count_and_names_the_slow_student(tmp_path):
    root = make_class(tmp_path / "class")
    speeds = {s: summary_of(root / s / "logs" / COMPLETE.name)["train_samples_per_second"] for s in SPEED}
    run = fill("--class", str(root), "--format", "json")
    assert run.returncode == 0, run.stderr
    table = json.loads(run.stdout)["baseline_objective_1"]
    rows = {row["Metric"]: row["Class"] for row in table["rows"]}
    speed = rows["Training Speed (samples/sec)"]
    assert speed["n"] == 4 and speed["figures"] == speeds
    assert speed["median"] == statistics.median(speeds.values())
    assert (speed["min"], speed["max"]) == (speeds["dave"], speeds["carol"])
    assert speed["far"] == ["dave"]
    loss = rows["Train Loss (Final)"]  # the same run copied: no spread, nobody far
    assert loss["n"] == 4 and loss["min"] == loss["max"] == summary_of(COMPLETE)["train_loss"] and loss["far"] == []
    assert (f"dave: Training Speed (samples/sec) {speeds['dave']:.4g} against the class's median "
            f"{speed['median']:.4g}: far from the rest, worth a look") in table["notes"]
    assert "4 of 5 students have this table: alice, bob, carol, dave" in table["notes"]

    markdown = fill("--class", str(root))
    assert markdown.returncode == 0, markdown.stderr
    assert "| Metric " in markdown.stdout and "| Class " in markdown.stdout
    median = statistics.median(speeds.values())
    assert f"{median:.4g} ({speeds['dave']:.4g}–{speeds['carol']:.4g}), n=4" in markdown.stdout
    assert "far from the rest, worth a look" in markdown.stdout
    csv = fill("--class", str(root), "--format", "csv")
    assert csv.returncode == 0 and "# baseline_objective_1\nMetric,Class\n" in csv.stdout


def test_class_errors_and_the_far_rule():
    assert fill("--class", "no-such-folder").stderr.startswith("error: no-such-folder holds no student folders")
    assert fill("--class", str(DATA), "--by-run").returncode == 2
    # two students: no rest to be far from; identical figures and one 10% off: within the tiny runs' noise
    assert far_students({"a": 1.0, "b": 10.0}) == []
    assert far_students({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.1}) == []
    assert far_students({"a": 1.0, "b": 1.0, "c": 1.0, "d": 2.0}) == ["d"]
    assert str(ClassCell(missing="n/a (no GPU)")) == "n/a (no GPU)"
