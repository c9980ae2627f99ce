"""The walk-through's printed answers, on its real run folders (tests/data/logs/walkthrough_cpu: nine runs of a fresh
clone's `bash scripts/run_workshop.sh` on the 2-core CPU machine, copied as they were left; 230 KB).

Each case is an answer a hand-check found misleading (issue 23): the lowest memory won by a bf16 run among fp32 ones,
one config named out of a tie, "lower ... by -15.1%" from an offload pair that on a CPU compares optimizers,
percentages from two-step runs, and a "time lost %" cell beside an answer that says there is no difference.
Expected figures are read from the runs' own files (manifest, steps.jsonl, log_history), never typed in.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from test_gated_answers import edit_manifest, write_steps
from test_smoke import is_figure
from workshop.fill_tables import build_tables
from workshop.logparse import final_summary, read_log_history
from workshop.report.spread import MIN_STEADY, steady_seconds
from workshop.report.runs import load_runs
from workshop.lessons import LESSONS

WALK = Path(__file__).parent / "data" / "logs" / "walkthrough_cpu"
PART2, ZERO, SAVINGS = "deepspeed_single_gpu_part2", "deepspeed_multi_gpu_zero_2gpu", "deepspeed_multi_gpu_zero_savings"
CHECKPOINTING = "gradient_checkpointing"


def run_dir(prefix, root=WALK):
    (path,) = [p for p in root.iterdir() if p.name.startswith(prefix + "-")]
    return path


def manifest(prefix, root=WALK):
    return json.loads((run_dir(prefix, root) / "manifest.json").read_text())


def states_mib(prefix):
    """The engine's model-state bytes per process, MiB, as the walk-through's run recorded them."""
    return sum(manifest(prefix)["model_states"]["bytes_per_process"].values()) / 2 ** 20


def shown(mib):
    return f"{mib:.3g}"


def steady(prefix, root=WALK):
    (run,) = [run for run in load_runs([root], LESSONS) if run.path == run_dir(prefix, root)]
    return steady_seconds(run)


@pytest.fixture(scope="module")
def tables():
    return build_tables([WALK])


def answers_with(table, text):
    return [answer for answer in table.attrs["answers"] if text in answer]


def test_lowest_memory_ranks_only_runs_that_differ_in_the_zero_setting(tables):
    """ZenFlow's run is bf16 and the others fp32: its smaller model states are the precision's, not ZeRO's."""
    assert manifest("stage2_zenflow")["precision"] == "bf16" and manifest("stage0")["precision"] == "fp32"
    assert states_mib("stage2_zenflow") < states_mib("stage0") < states_mib("stage2")  # the trap is really there
    (lowest,) = answers_with(tables[PART2], " lowest ")
    assert (f"lowest model states per process (engine; no GPU was measured): Stage 0 at "
            f"{shown(states_mib('stage0'))} MiB") in lowest
    assert "left out, as it differs in more than the ZeRO setting: Stage 2 + offload with ZenFlow (bf16, fp16, " \
           "precision)" in lowest
    assert f"Stage 2 + offload with ZenFlow at {shown(states_mib('stage2_zenflow'))}" not in lowest
    # the lesson the numbers teach on one process: ZeRO 1-3's fp32 master copy (tests/test_model_states.py)
    assert (f"On one process every Stage 1-3 run holds more than Stage 0 ({shown(states_mib('stage2'))} vs "
            f"{shown(states_mib('stage0'))} MiB): under ZeRO 1-3 DeepSpeed keeps an fp32 master copy") in lowest


def test_configs_with_the_same_memory_are_named_as_a_tie(tables):
    assert states_mib("stage2") == states_mib("stage2_offload")  # the engine counts the same bytes wherever they live
    (one_process,) = answers_with(tables[PART2], " lowest ")
    assert f"(highest: Stage 2 at {shown(states_mib('stage2'))} MiB, tied with 1 other config: Stage 2 + offload)" \
        in one_process
    assert states_mib("stage1_2gpu") == states_mib("stage1_offload_2gpu") > states_mib("stage2_2gpu")
    (two_processes,) = answers_with(tables[ZERO], " lowest ")
    assert (f"lowest model states per process (engine; no GPU was measured): Stage 2 at "
            f"{shown(states_mib('stage2_2gpu'))} MiB (highest: Stage 1 at {shown(states_mib('stage1_2gpu'))} MiB, "
            "tied with 1 other config: Stage 1 + offload)") in two_processes


def test_offload_on_a_cpu_compares_the_optimizers_without_a_double_sign(tables, tmp_path):
    plain, offload = steady("stage2"), steady("stage2_offload")
    assert offload.separated_from(plain) and offload.value < plain.value  # a measured difference to state
    (answer,) = answers_with(tables[PART2], "2. Bloom Tiny, 200 subset: Stage 2 + offload ")
    assert f"Stage 2 + offload lower seconds per step than Stage 2 by " \
           f"{(plain.value - offload.value) / plain.value * 100:.1f}% (" in answer
    double_sign = re.compile(r"(lower|higher) .* by -")
    assert not [a for table in tables.values() for a in table.attrs["answers"] if double_sign.search(a)]
    assert "compares the optimizer implementation (DeepSpeedCPUAdam with offload, FusedAdam without), " \
           "not offloading" in answer
    # the same pair on a GPU: offloading is what differs there, so no such note
    for prefix in ("stage2", "stage2_offload"):
        run = shutil.copytree(run_dir(prefix), tmp_path / run_dir(prefix).name)
        edit_manifest(run, peak_memory={**manifest(prefix)["peak_memory"], "device": "cuda:0"})
    (on_gpu,) = answers_with(build_tables([tmp_path])[PART2], "2. Bloom Tiny, 200 subset: Stage 2 + offload ")
    assert "lower seconds per step than Stage 2 by" in on_gpu and "DeepSpeedCPUAdam" not in on_gpu


def test_two_step_runs_state_no_offload_percentage(tables):
    """Lesson 3's 2-process runs time two steps each: no steady state, so no percentage, in the answer or the cell;
    the cells keep the runtimes as measured, and every row still holds a figure (tests/test_smoke.py's rule)."""
    timed = [len((run_dir(p) / "steps.jsonl").read_text().splitlines())
             for p in ("stage1_2gpu", "stage1_offload_2gpu")]
    assert max(timed) < MIN_STEADY
    (answer,) = answers_with(tables[ZERO], ", stage 1: ")
    assert (f"offloading: no measurable difference in time can be stated: not enough timed steps to compare "
            f"(Stage 1: {timed[0]}, Stage 1 + offload: {timed[1]} timed steps") in answer
    assert "changed train runtime" not in answer and not re.search(r"[+-]\d+\.\d%", answer)
    runtimes = [final_summary(read_log_history(run_dir(p) / "log_history.jsonl").data)["train_runtime"]
                for p in ("stage1_2gpu", "stage1_offload_2gpu")]
    (row,) = [row for row in tables[SAVINGS].to_dict("records") if row["Stage"] == "Stage 1"]
    assert (row["Train Runtime (No Offload)"], row["Train Runtime (Offload)"]) == pytest.approx(runtimes)
    assert row["Runtime Δ (%)"] == "n/a (too few timed steps)"
    assert any(note.startswith("`n/a (too few timed steps)`") for note in tables[SAVINGS].attrs["notes"])
    by_run = build_tables([WALK], by_run=True)
    savings = by_run[SAVINGS].set_index("stage")
    assert savings.loc["stage1", "runtime change % (train_runtime)"] == "n/a (too few timed steps)"
    for key, df in by_run.items():
        for record in df.to_dict("records"):
            assert any(is_figure(value) for value in record.values()), (key, record)


def test_checkpointing_cell_is_gated_like_its_answer(tables, tmp_path):
    without, with_ = steady("precision-none-fp32"), steady("checkpointing-on-none-fp32")
    assert not without.separated_from(with_)  # the walk-through's pair: within noise
    (row,) = tables[CHECKPOINTING].to_dict("records")
    (answer,) = tables[CHECKPOINTING].attrs["answers"]
    assert "no measurable difference at this size (checkpointing off vs checkpointing on" in answer
    assert row["time lost %"] == "n/a (no measurable difference)"
    notes = tables[CHECKPOINTING].attrs["notes"]
    assert any("`n/a (no measurable difference)` — the 95% intervals" in note for note in notes)
    # intervals that separate: the cell is the percentage of the two medians, as the answer states it
    for prefix in ("precision-none-fp32", "checkpointing-on-none-fp32"):
        shutil.copytree(run_dir(prefix), tmp_path / run_dir(prefix).name)
    write_steps(run_dir("precision-none-fp32", tmp_path), 0.1, seed=1)
    write_steps(run_dir("checkpointing-on-none-fp32", tmp_path), 0.13, seed=2)
    without, with_ = steady("precision-none-fp32", tmp_path), steady("checkpointing-on-none-fp32", tmp_path)
    table = build_tables([tmp_path])[CHECKPOINTING]
    (row,) = table.to_dict("records")
    assert row["time lost %"] == pytest.approx((with_.value - without.value) / without.value * 100)
    assert f"cost {row['time lost %']:.1f}% time per step" in table.attrs["answers"][0]


def test_lesson2_runs_with_too_few_timed_steps_state_no_difference(tmp_path):
    """The same gate on one process: Part 2's offload pair and Part 1's pin pair, each run cut to its first 3 timed
    steps (a run stopped early with --max-steps 3 times no more), give no verdict and no percentage."""
    for prefix, name in (("stage2", None), ("stage2_offload", None), ("stage2_offload", "stage2_offload_nopin-9")):
        run = shutil.copytree(run_dir(prefix), tmp_path / (name or run_dir(prefix).name))
        steps = (run / "steps.jsonl").read_text().splitlines(keepends=True)
        (run / "steps.jsonl").write_text("".join(steps[:3]))
        if name:
            edit_manifest(run, run_id=name, config_name="stage2_offload_nopin")
    tables = build_tables([tmp_path])
    # + offload only: "+ offload (no pin)" differs from Stage 2 in pinning too (Part 1 compares the pin pair)
    offload = answers_with(tables[PART2], "2. Bloom Tiny, 200 subset: ")
    assert len(offload) == 1 and all(" by " not in answer and "%" not in answer for answer in offload)
    assert "no measurable difference can be stated: not enough timed steps to compare (Stage 2: 3, Stage 2 + " \
           "offload: 3 timed steps" in offload[0]
    (pin,) = tables["deepspeed_single_gpu_part1"].attrs["answers"]
    # a CPU run: no verdict on pinning at all, and the measurement shown is the short runs' own gate
    assert "Stage 2 + offload? not on a CPU: " in pin
    assert "; measured: no measurable difference can be stated: not enough timed steps" in pin
    assert "yes" not in pin and "%" not in pin
