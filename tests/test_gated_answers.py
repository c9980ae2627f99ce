"""Comparison answers gated by noise and by the mechanism (workshop/report/compare.py), on run folders built from the
real captured H100 run with known per-step series (steps.jsonl) and model-state records: intervals that separate,
intervals that overlap, a direction that contradicts the mechanism, and a pair that differs in more than the knob.
"""

import json
import random
import shutil
from pathlib import Path

import pytest

from test_fill_tables_multi import lesson3_run, zero_sweep
from workshop.fill_tables import build_tables, render
from workshop.report.spread import median_interval, warmup_of

DATA = Path(__file__).parent / "data" / "logs"
GPU_RUN = DATA / "run_complete" / "baseline-1001"
PART1, PART2 = "deepspeed_single_gpu_part1", "deepspeed_single_gpu_part2"
WEAK, ZERO = "deepspeed_multi_gpu_weak_scaling", "deepspeed_multi_gpu_zero_2gpu"
CHECKPOINTING = "gradient_checkpointing"
MIB = 2 ** 20


def edit_manifest(run, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def settings(run, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    edit_manifest(run, settings={**manifest["settings"], **changes})


def write_steps(run, median, count=40, jitter=0.02, seed=0):
    """`count` steps around `median` s (uniform +-jitter), the first two slow (warm-up); returns the steady values."""
    rng = random.Random(seed)
    seconds = [median * 5, median * 3] + [median * (1 + rng.uniform(-jitter, jitter)) for _ in range(count - 2)]
    (run / "steps.jsonl").write_text("".join(json.dumps({"step": i + 1, "seconds": s, "samples": 16})
                                             + "\n" for i, s in enumerate(seconds)))
    return seconds[warmup_of(count):]


def lesson2_run(dest, config, seconds=None, **changes):
    run = shutil.copytree(GPU_RUN, dest / f"{config}-{len(list(dest.iterdir())) + 500}")
    edit_manifest(run, run_id=run.name, lesson="deepspeed_single_gpu", config_name=config,
                  deepspeed_config=f"deepspeed_single_gpu/configs/{config}.json", **changes)
    if seconds:
        write_steps(run, seconds, seed=len(run.name))
    return run


def no_gpu(run):
    (run / "gpu_memory.csv").write_text("# no GPU: CUDA_VISIBLE_DEVICES is empty\n")
    edit_manifest(run, peak_memory={"device": "cpu", "host_peak_rss_mib": 600.0})


def states(world, stage, parameters, gradients, optimizer, device="cpu"):
    return {"world_size": world, "zero_stage": stage,
            "bytes_per_process": {"parameters": parameters, "gradients": gradients, "optimizer": optimizer},
            "device": {"parameters": device, "gradients": device, "optimizer": device}}


def offload_answer(tables):
    (answer,) = [a for a in tables[PART2].attrs["answers"] if a.startswith("2. ")]
    return answer


# ---------------------------------------------------------------------------------------------- the steady cells

def test_part2_shows_the_steady_time_per_step_with_its_interval(tmp_path):
    plain = lesson2_run(tmp_path, "stage2", seconds=0.1)
    lesson2_run(tmp_path, "stage2_offload")  # an older run: no steps.jsonl, the cell says why
    part2 = build_tables([tmp_path])[PART2]
    cells = dict(zip(part2["DeepSpeed Config"], part2["Steady s/step (median, 95% interval)"]))
    middle, low, high = median_interval(json.loads(line)["seconds"] for line in
                                        (plain / "steps.jsonl").read_text().splitlines()[warmup_of(40):])
    assert str(cells["Stage 2"]) == f"{middle:.3f} s ({low:.3f}–{high:.3f})"
    assert cells["Stage 2 + offload"] == "n/a (no per-step times)"
    assert any("steps.jsonl" in note for note in part2.attrs["notes"])
    as_json = json.loads(render({PART2: part2}, "json"))[PART2]["rows"]
    (steady,) = [row["Steady s/step (median, 95% interval)"] for row in as_json if row["DeepSpeed Config"] == "Stage 2"]
    assert (steady["value"], steady["low"], steady["high"], steady["steps"]) == (middle, low, high, 40 - warmup_of(40))
    assert f"{middle:.3f} s ({low:.3f}–{high:.3f})" in render({PART2: part2}, "csv")


def test_older_runs_have_no_steady_column(tmp_path):
    for config in ("stage2", "stage2_offload"):
        lesson2_run(tmp_path, config)
    assert list(build_tables([tmp_path])[PART2].columns) == ["Model and Data", "DeepSpeed Config",
                                                             "Peak GPU Memory Used (MiB)",
                                                             "Peak CPU Memory Used (MiB)", "Total RunTime"]


# ---------------------------------------------------------------------------------------------- gating

def test_separated_intervals_state_the_difference(tmp_path):
    lesson2_run(tmp_path, "stage2", seconds=0.1)
    lesson2_run(tmp_path, "stage2_offload", seconds=0.2)
    answer = offload_answer(build_tables([tmp_path]))
    assert "no measurable difference" not in answer and "whole runs" in answer
    steady = answer.split(": ", 1)[1]
    percent = float(steady.split(" by ")[1].split("%")[0])
    assert steady.startswith("Stage 2 + offload higher seconds per step than Stage 2") and 90 < percent < 110


def test_overlapping_intervals_state_no_difference(tmp_path):
    lesson2_run(tmp_path, "stage2", seconds=0.1)
    offload = lesson2_run(tmp_path, "stage2_offload", seconds=0.1)
    write_steps(offload, 0.1, seed=99)  # the same distribution, other draws: the medians differ by noise only
    answer = offload_answer(build_tables([tmp_path]))
    assert "no measurable difference at this size (Stage 2 vs Stage 2 + offload" in answer
    assert " took " not in answer  # no stated difference, although the whole-run runtimes are still shown
    pin = lesson2_run(tmp_path, "stage2_offload_nopin", seconds=0.1)
    write_steps(pin, 0.1, seed=7)
    (pin_answer,) = build_tables([tmp_path])[PART1].attrs["answers"]
    assert "no measurable difference at this size (not pinned vs pinned" in pin_answer
    assert ": yes" not in pin_answer and ": no:" not in pin_answer


def test_a_pair_that_differs_in_more_than_the_config_is_refused(tmp_path):
    lesson2_run(tmp_path, "stage2", seconds=0.1)
    offload = lesson2_run(tmp_path, "stage2_offload", seconds=0.2)
    settings(offload, per_device_train_batch_size=8, learning_rate=1e-3)
    answer = offload_answer(build_tables([tmp_path]))
    assert "not compared" in answer and "learning_rate, per_device_train_batch_size" in answer
    assert " took " not in answer


def test_checkpointing_faster_than_without_is_unexpected(tmp_path):
    runs = {}
    for on, step_s in ((False, 0.2), (True, 0.1)):  # with checkpointing faster: against the mechanism
        run = shutil.copytree(GPU_RUN, tmp_path / f"checkpointing-{'on' if on else 'off'}-none-fp32-{int(on)}")
        edit_manifest(run, run_id=run.name, lesson="precision_and_checkpointing", config_name=run.name.split("-")[0],
                      precision="fp32", gradient_checkpointing=on, speed={"step_s": step_s})
        runs[on] = run
    (answer,) = build_tables([tmp_path])[CHECKPOINTING].attrs["answers"]
    assert "unexpected: checkpointing on lower seconds per step than checkpointing off" in answer
    assert "most likely interference from other work on this machine; rerun" in answer
    assert "saved 50" not in answer and "time per step" not in answer.split("unexpected")[0][-30:]
    # with per-step times whose intervals overlap, the same direction is noise: no measurable difference
    for on in (False, True):
        write_steps(runs[on], 0.15, seed=int(on))
    (answer,) = build_tables([tmp_path])[CHECKPOINTING].attrs["answers"]
    assert "no measurable difference at this size (checkpointing off vs checkpointing on" in answer
    assert "unexpected" not in answer


def test_checkpointing_saves_activations_on_a_cpu(tmp_path):
    """With no GPU peak, checkpointing's saving is the activations a micro-batch keeps for the backward pass, exact
    (workshop/activations.py); more of them with checkpointing would contradict the mechanism."""
    runs = {}
    for on, kept in ((False, 12 * MIB), (True, 5 * MIB)):
        run = shutil.copytree(GPU_RUN, tmp_path / f"checkpointing-{'on' if on else 'off'}-none-fp32-{int(on)}")
        edit_manifest(run, run_id=run.name, lesson="precision_and_checkpointing", config_name=run.name.split("-")[0],
                      precision="fp32", gradient_checkpointing=on, activation_peak_bytes=kept)
        no_gpu(run)
        write_steps(run, 0.1 * (1 + on), seed=int(on))
        runs[on] = run
    tables = build_tables([tmp_path])
    (row,) = tables[CHECKPOINTING].to_dict("records")
    assert row["activations saved MiB"] == 7.0 and row["memory saved MiB"] == "n/a (no GPU)"
    (answer,) = tables[CHECKPOINTING].attrs["answers"]
    assert ("gradient checkpointing saved 7 MiB of the activations a micro-batch keeps for the backward pass "
            "(58%: 5 vs 12 MiB, counted by autograd; no GPU memory measured)") in answer
    edit_manifest(runs[True], activation_peak_bytes=13 * MIB)  # more kept with checkpointing: against the mechanism
    (answer,) = build_tables([tmp_path])[CHECKPOINTING].attrs["answers"]
    assert "unexpected: checkpointing on higher activations kept for the backward pass" in answer
    edit_manifest(runs[True], activation_peak_bytes=None)  # an older run: the cell says why, the answer too
    tables = build_tables([tmp_path])
    assert tables[CHECKPOINTING]["activations saved MiB"][0] == "n/a (not recorded)"
    assert "memory saved: n/a (no GPU)" in tables[CHECKPOINTING].attrs["answers"][0]


def test_more_gpu_memory_with_offload_is_unexpected(tmp_path):
    runs = zero_sweep(tmp_path)
    shutil.rmtree(runs["stage1_offload"])
    lesson3_run(tmp_path, "stage1_offload_2gpu-300", "stage1_offload", 2, memory_scale=1.4)  # offload uses MORE
    answers = build_tables([tmp_path])[ZERO].attrs["answers"]
    (stage1,) = [a for a in answers if ", stage 1:" in a]
    assert "unexpected: Stage 1 + offload higher peak GPU memory per GPU than Stage 1" in stage1
    (stage2,) = [a for a in answers if ", stage 2:" in a]
    assert "unexpected" not in stage2 and "peak GPU memory by -40.0%" in stage2


# ---------------------------------------------------------------------------------------------- memory on a CPU

def test_model_states_stand_in_for_gpu_memory_on_a_cpu(tmp_path):
    """Two processes under ZeRO 0 and ZeRO 3 of the same model: ZeRO 3's model states per process are half."""
    total = 3 * MIB
    for config, stage, share in (("stage0", 0, 1.0), ("stage3", 3, 0.5)):
        run = lesson2_run(tmp_path, config)
        no_gpu(run)
        edit_manifest(run, world_size=2, model_states=states(2, stage, int(total * share), int(total * share),
                                                             int(2 * total * share)))
    part2 = build_tables([tmp_path])[PART2]
    cells = dict(zip(part2["DeepSpeed Config"], part2["Model States per Process (MiB, engine)"]))
    assert cells == {"Stage 0": pytest.approx(12.0), "Stage 3": pytest.approx(6.0)}
    assert set(part2["Peak GPU Memory Used (MiB)"]) == {"n/a (no GPU)"}
    lowest = part2.attrs["answers"][0]
    assert "lowest model states per process (engine; no GPU was measured): Stage 3 at 6 MiB (highest: Stage 0 at 12 MiB)" in lowest
    assert not [a for a in part2.attrs["answers"] if "unexpected" in a]


def test_more_model_states_under_zero3_than_zero1_is_unexpected(tmp_path):
    for config, stage, size in (("stage1", 1, MIB), ("stage3", 3, 2 * MIB)):
        run = lesson2_run(tmp_path, config)
        no_gpu(run)
        edit_manifest(run, model_states=states(1, stage, size, size, 2 * size))
    answers = build_tables([tmp_path])[PART2].attrs["answers"]
    (unexpected,) = [a for a in answers if "unexpected" in a]
    assert "Stage 3 higher model states per process than Stage 1" in unexpected and "partitions" in unexpected


def test_zero3_above_zero0_on_one_process_is_the_fp32_master_not_unexpected(tmp_path):
    """Real engines on one process: ZeRO 0 in fp32 holds 16 bytes a parameter, ZeRO 1-3 20 (their fp32 master)."""
    parameters = MIB // 4
    for config, stage, per_parameter in (("stage0", 0, (4, 4, 8)), ("stage3", 3, (4, 4, 12))):
        run = lesson2_run(tmp_path, config)
        no_gpu(run)
        edit_manifest(run, model_states=states(1, stage, *(parameters * n for n in per_parameter)))
    answers = build_tables([tmp_path])[PART2].attrs["answers"]
    assert not [a for a in answers if "unexpected" in a]


# ---------------------------------------------------------------------------------------------- weak scaling

def test_weak_scaling_with_one_and_two_processes(tmp_path):
    from matplotlib.figure import Figure

    from workshop import plots

    one = lesson3_run(tmp_path, "weak_scaling_1gpu-1", "stage0", 1)
    two = lesson3_run(tmp_path, "weak_scaling_2gpu-2", "stage0", 2)
    write_steps(one, 0.1, seed=1)
    write_steps(two, 0.1, seed=2)  # ideal weak scaling: the same time per step
    table = build_tables([tmp_path])[WEAK]
    assert list(table.columns[:3]) == ["Metric", "1 GPU", "2 GPUs"]
    (answer,) = table.attrs["answers"]
    assert "no measurable difference at this size (1 GPU vs 2 GPUs" in answer and "as good as ideal" in answer
    write_steps(two, 0.2, seed=2)
    (answer,) = build_tables([tmp_path])[WEAK].attrs["answers"]
    assert "steady-state efficiency 0.5" in answer and "On a CPU" not in answer  # GPUs: a device each
    for run, threads in ((one, 2), (two, 1)):  # the same on a CPU: both processes shared its cores
        no_gpu(run)
        edit_manifest(run, cpu_threads=threads)
    (answer,) = build_tables([tmp_path])[WEAK].attrs["answers"]
    assert "steady-state efficiency 0.5" in answer
    assert ("On a CPU the processes share this machine's cores (2 torch thread(s) a process at 1, 1 torch thread(s) "
            "a process at 2): n processes doing n times the work take about n times as long") in answer
    by_run = build_tables([tmp_path], by_run=True)[WEAK]
    for fig in (plots.scaling_throughput(by_run), plots.memory_per_gpu(by_run)):
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert list(ax.get_xticks()) == [1, 2] and ax.get_xlim() == (0.5, 2.5)


def test_the_offload_runtime_cell_gives_a_percentage_only_where_the_intervals_separate(tmp_path):
    """Lesson 3's savings table: Runtime Δ (%) is the whole runs' percentage where the pair's steady s/step
    intervals separate, and `n/a (within noise)` with a note where they overlap, as the answer above it says."""
    runs = zero_sweep(tmp_path)
    for config, seconds in (("stage1", 0.1), ("stage1_offload", 0.1), ("stage2", 0.1), ("stage2_offload", 0.2)):
        write_steps(runs[config], seconds, seed=len(config))
    savings = build_tables([tmp_path])["deepspeed_multi_gpu_zero_savings"]
    cells = dict(zip(savings["Stage"], savings["Runtime Δ (%)"]))
    assert cells["Stage 1"] == "n/a (within noise)"
    assert cells["Stage 2"] == pytest.approx(50.0, abs=0.1)  # zero_sweep's offload runs take 1.5x as long
    assert any(note.startswith("`n/a (within noise)`: the pair's steady seconds per step") for note in
               savings.attrs["notes"])
    (stage1,) = [answer for answer in build_tables([tmp_path])[ZERO].attrs["answers"] if ", stage 1: " in answer]
    assert "no measurable difference at this size" in stage1


def test_objective_1_shows_the_steady_training_speed_beside_the_trainers_figure(tmp_path):
    """The Trainer's samples/s is one whole-run number; a run that timed its steps also gets the steady rate with its
    interval, as its own row under the handout's. Older runs (no steps.jsonl) keep the handout's rows alone."""
    run = shutil.copytree(GPU_RUN, tmp_path / GPU_RUN.name)
    rows = build_tables([tmp_path])["baseline_objective_1"]["Metric"]
    assert not any(label.startswith("Steady") for label in rows)
    steady_seconds = write_steps(run, 0.1, seed=3)  # 16 samples a step
    table = build_tables([tmp_path])["baseline_objective_1"]
    cells = dict(zip(table["Metric"], table["Your Value"]))
    shown = cells["Steady Training Speed (samples/sec, median, 95% interval)"]
    expected = median_interval([16 / s for s in steady_seconds])
    assert (shown.value, shown.low, shown.high) == pytest.approx(expected)


def test_a_precision_difference_on_a_cpu_says_it_is_the_cpus(tmp_path):
    """bf16 against fp32 on a CPU: a difference there is the CPU's arithmetic, not the tensor cores the lesson is
    about, and the answer says so (on a GPU it does not)."""
    runs = {}
    for precision, seconds in (("fp32", 0.1), ("bf16", 0.2)):
        run = shutil.copytree(GPU_RUN, tmp_path / f"precision-none-{precision}-1")
        edit_manifest(run, run_id=run.name, lesson="precision_and_checkpointing", config_name="precision",
                      precision=precision, gradient_checkpointing=False,
                      speed={"real_tokens_per_s": 1000 / seconds, "step_s": seconds})
        runs[precision] = run
    (on_gpu, *_) = build_tables([tmp_path])["precision"].attrs["answers"]
    assert "bf16 is not faster than fp32" in on_gpu and "On a CPU" not in on_gpu
    for run in runs.values():
        no_gpu(run)
    (on_cpu, *_) = build_tables([tmp_path])["precision"].attrs["answers"]
    assert "bf16 is not faster than fp32" in on_cpu
    assert on_cpu.endswith("says nothing of a GPU's tensor cores, where bf16 and fp16 pay off (the GPU reference in "
                           "notebook 05 measures them).")
