"""workshop.reference: the committed GPU runs of docs/results/ beside a student's runs, through fill_tables."""

import json
import shutil
from pathlib import Path

import pytest

from workshop import reference
from workshop.fill_tables import build_tables

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "docs" / "results" / "h100-2026-11-25"
LOCAL = Path(__file__).parent / "data" / "logs" / "run_complete"  # one student's run (baseline-1001)


def test_committed_references_name_device_date_command_and_runs():
    (baseline,) = reference.find("baseline")
    assert baseline.folder == H100 and baseline.device.startswith("NVIDIA H100 80GB HBM3") and baseline.date == "2026-11-25"
    assert baseline.command.startswith("bash slurm/baseline.slurm") and [run.name for run in baseline.runs] == [
        "baseline-local20261125-125516-611"]
    mb64, zenflow, offload, h200, zero = reference.find("deepspeed_single_gpu")  # the newest first
    assert mb64.folder.name == "issue28_h100-2026-12-06-c" and sorted(run.name.split("-")[0] for run in mb64.runs) == [
        "stage2", "stage2", "stage2_offload", "stage2_offload"]  # offload at micro-batch 32 and 64 beside stage2
    assert zenflow.date == "2026-12-06" and sorted(run.name.split("-")[0] for run in zenflow.runs) == [
        "stage2", "stage2_offload", "stage2_zenflow"]
    assert len(zero.runs) == 9 and all(run.name.startswith("stage") for run in zero.runs)
    assert offload.date == "2026-12-05" and offload.device.startswith("NVIDIA H100") and len(offload.runs) == 15
    assert h200.date == "2026-12-01" and h200.device.startswith("NVIDIA H200") and len(h200.runs) == 14
    ladder64, flex, fast = reference.find("make_it_fast")
    assert ladder64.folder == mb64.folder and len(ladder64.runs) == 3  # flex at 64 and 32, sdpa at 64
    assert {run.name.split("-")[1] for run in flex.runs} == {"flex_attention", "reference_loop__flex_attention_",
                                                             "micro_batch_32"}
    assert {run.name.split("-")[1] for run in fast.runs} == {"no_loggers", "fused_AdamW", "torch_compile", "fused_loss"}
    assert reference.find("deepspeed_multi_gpu") == []  # no lesson-3 GPU run committed yet
    for ref in (baseline, zero, h200, offload, zenflow, fast, flex, mb64, ladder64):
        assert ref.about and (REPO / ref.about).is_file(), ref.about


def test_beside_puts_the_reference_rows_under_the_students_through_fill_tables():
    mine = build_tables([LOCAL], by_run=True)
    combined = reference.beside(mine, "baseline", by_run=True)
    assert set(combined) == {"baseline_objective_1", "baseline_objective_2"}
    (ref,) = reference.find("baseline")
    theirs = build_tables(ref.runs, by_run=True)
    for key, table in combined.items():
        assert list(table["source"]) == [reference.YOURS, ref.label]
        assert table.attrs["title"].endswith(": yours beside the GPU reference")
        # The rows are fill_tables' own rows, unchanged: the reference's numbers are never re-derived here.
        for column in theirs[key].columns:
            assert table.iloc[1][column] == theirs[key].iloc[0][column], column
            assert table.iloc[0][column] == mine[key].iloc[0][column], column
    assert combined["baseline_objective_2"].iloc[1]["GPU MiB peak"] == 20855  # the H100 run's nvidia-smi peak
    notes = combined["baseline_objective_1"].attrs["notes"]
    assert any(note.startswith(f"{ref.label}: baseline-local20261125-125516-611: `n/a (not scored)`") for note in notes)


def test_lesson_2_reference_keeps_its_quiz_answers_and_says_when_the_student_has_no_run():
    combined = reference.beside({}, "deepspeed_single_gpu")
    part2 = combined["deepspeed_single_gpu_part2"]
    h100 = [ref for ref in reference.find("deepspeed_single_gpu") if ref.date == "2026-11-25"][0]
    assert list(part2["source"]).count(h100.label) == 9  # its nine configs, in the handout's Part 2 columns
    assert part2.attrs["notes"][0].startswith("no run of yours in this table yet")
    assert any("lowest peak GPU memory" in answer for answer in part2.attrs["answers"])


def test_handout_metric_tables_get_one_column_per_reference():
    """`| Metric | Your Value |` tables (the handout's Objective 1 and 2): the reference is a column beside yours."""
    mine = build_tables([LOCAL])
    (ref,) = reference.find("baseline")
    theirs = build_tables(ref.runs)
    memory = reference.beside(mine, "baseline")["baseline_objective_2"]
    assert list(memory.columns) == ["Metric", "Your Value (MiB)", ref.label]
    assert list(memory["Metric"]) == list(theirs["baseline_objective_2"]["Metric"])
    assert list(memory[ref.label]) == list(theirs["baseline_objective_2"]["Your Value (MiB)"])
    assert memory.iloc[0][ref.label] == 20855  # the H100 run's nvidia-smi peak
    assert list(memory["Your Value (MiB)"]) == list(mine["baseline_objective_2"]["Your Value (MiB)"])
    alone = reference.beside({}, "baseline")["baseline_objective_1"]
    assert list(alone.columns) == ["Metric", ref.label]
    assert alone.attrs["notes"][0].startswith("no run of yours in this table yet")


def write_reference(folder, **spec):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reference.json").write_text(json.dumps(spec))


def copy_run(src, dest):
    shutil.copytree(src, dest)
    return dest


def test_a_new_results_folder_is_found_by_its_reference_json_newest_first(tmp_path):
    copy_run(H100 / "logs" / "baseline-local20261125-125516-611", tmp_path / "h100" / "logs" / "baseline-1")
    write_reference(tmp_path / "h100", device="NVIDIA H100 80GB HBM3", date="2026-11-25",
                    lessons={"baseline": {"runs": ["logs/*"], "command": "bash slurm/baseline.slurm"}})
    run = copy_run(H100 / "logs" / "baseline-local20261125-125516-611", tmp_path / "h200" / "baseline-2")
    (run / "gpu_memory.csv").unlink()  # a reference run without its nvidia-smi log
    write_reference(tmp_path / "h200", device="NVIDIA H200 (143771 MiB)", date="2026-12-01",
                    lessons={"baseline": {"runs": ["baseline-*"], "command": "bash slurm/baseline.slurm --model 560m"}})
    copy_run(H100 / "logs" / "baseline-local20261125-125516-611", tmp_path / "no_index" / "baseline-3")

    refs = reference.find("baseline", tmp_path)
    assert [ref.label for ref in refs] == ["NVIDIA H200, 2026-12-01", "NVIDIA H100 80GB HBM3, 2026-11-25"]
    assert refs[1].versions == "not recorded"  # said, not invented
    memory = reference.beside(build_tables([LOCAL], by_run=True), "baseline", tmp_path,
                              by_run=True)["baseline_objective_2"]
    assert list(memory["source"]) == [reference.YOURS, *[ref.label for ref in refs]]
    h200 = memory.iloc[1]
    assert h200["GPU MiB peak"] == "missing (gpu_memory.csv absent)"  # the missing field is a marker, not a number
    assert any(note.startswith("NVIDIA H200, 2026-12-01: ") and "`missing (gpu_memory.csv absent)`" in note
               for note in memory.attrs["notes"])
    assert memory.iloc[2]["GPU MiB peak"] == 20855


def test_a_column_only_the_student_has_is_marked_in_the_reference_rows(tmp_path):
    run = copy_run(LOCAL / "baseline-1001", tmp_path / "mine" / "baseline-1001")
    events = [json.loads(line) for line in (run / "log_history.jsonl").read_text().splitlines()]
    fourth = {**[e for e in events if "eval_loss" in e][-1], "epoch": 4.0}  # one more epoch than the reference
    (run / "log_history.jsonl").write_text("\n".join(json.dumps(e) for e in [*events, fourth]) + "\n")
    table = reference.beside(build_tables([tmp_path / "mine"], by_run=True), "baseline",
                             by_run=True)["baseline_objective_1"]
    assert "eval loss (epoch 4)" in table.columns
    assert table.iloc[1]["eval loss (epoch 4)"] == reference.NOT_IN_REFERENCE


@pytest.mark.parametrize("spec, problem", [
    ({"date": "2026-12-01", "lessons": {"baseline": {"runs": ["*"], "command": "x"}}}, "device must be"),
    ({"device": "H200", "date": "2026-12-01", "lessons": {"lesson9": {"runs": ["*"], "command": "x"}}},
     "lessons.lesson9 is not a lesson"),
    ({"device": "H200", "date": "2026-12-01", "lessons": {"baseline": {"runs": "logs/*", "command": "x"}}},
     "lessons.baseline.runs must be a list"),
    ({"device": "H200", "date": "2026-12-01", "lessons": {"baseline": {"runs": ["*"]}}},
     "lessons.baseline.command must be"),
    ({"device": "H200", "date": "2026-12-01"}, "lessons must map"),
])
def test_a_malformed_reference_json_names_the_file_and_key(tmp_path, spec, problem):
    write_reference(tmp_path / "bad", **spec)
    with pytest.raises(ValueError, match=problem) as error:
        reference.find("baseline", tmp_path)
    assert str(tmp_path / "bad" / "reference.json") in str(error.value)


def shown_by(monkeypatch, tables, lesson):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects: shown.extend(objects))
    reference.show(tables, lesson)
    return shown


def test_show_labels_the_reference_then_shows_each_table(monkeypatch):
    shown = shown_by(monkeypatch, build_tables([LOCAL]), "baseline")
    (ref,) = reference.find("baseline")
    assert shown[0].data.startswith(f"**GPU reference: {ref.device}, {ref.date}**") and ref.command in shown[0].data
    tables = [item.data for item in shown[1:] if item.data.startswith("#### ")]  # lesson tables, as Markdown
    headers = [next(line for line in table.splitlines() if line.startswith("|")) for table in tables]
    # the handout's layout, as shown: the reference's column last
    assert [header.strip().strip("|").split("|")[-1].strip() for header in headers] == [ref.label] * 2


def test_show_says_when_a_lesson_has_no_reference(monkeypatch):
    (message,) = shown_by(monkeypatch, {}, "deepspeed_multi_gpu")
    assert "No GPU reference for `deepspeed_multi_gpu` in `docs/results/` yet" in message.data
