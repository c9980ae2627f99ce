"""--fsdp (lesson 7, issue 26): PyTorch's FSDP2 through the workshop's Trainer, on real tiny runs over gloo.

What is checked is what the manifest says happened (`wrapping`: the wrapper, DTensor parameters, this process's
share), not the flag: one process holds all of each shard, two hold half each. FULL_SHARD and ZeRO-3 on the same
data and seed give the same fp32 loss curve; an FSDP2 checkpoint (DCP) exports through workshop.export and resumes
on another number of processes.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import made_once, walkthrough_logs
from test_export import OFFLINE, STEPS, export, losses, probe, train_one_process
from workshop.errors import WorkshopError
from workshop.fsdp import check_wrapping
from workshop.launch import free_port
from workshop.model import load_model, load_saved, save_model

REPO = Path(__file__).resolve().parents[1]
# the fp32 curves of FULL_SHARD and ZeRO-3 agree to this relative difference per logged step (measured on 4 steps
# of the tiny model from the same start weights, 2026-12-06: at most 1.8e-6 (step 4: 7.424150 vs 7.424163);
# only the order of the sums differs)
EQUIVALENCE_RTOL = 1e-4


def train(folder, mode, processes=1, *args):
    """baseline/train.py with --fsdp MODE: one plain process, or `processes` under torchrun."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                str(free_port(seed=os.getpid() + processes))] if processes > 1 else [sys.executable]
    done = subprocess.run([*launcher, "baseline/train.py", "--fsdp", mode, "--output-dir", str(folder / "outputs"),
                           "--run-dir", str(folder / "run"), *args], cwd=REPO, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=600)
    return done


def made(folder, mode, processes, *args):
    done = train(folder, mode, processes, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def walkthrough_runs(tmp_path_factory):
    """The lesson's walk-through runs (slurm/fsdp.slurm, two processes, ten steps; made once per session, also read by
    tests/test_smoke.py): tests/test_notebooks.py executes notebook 07 on them, whose own runs are the same two."""
    return walkthrough_logs(tmp_path_factory, "fsdp")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """The tiny model's seeded weights in a folder: ZeRO-3 builds a random model partitioned (zero.Init), which
    draws other random numbers than a whole model does, so both runs load these instead (--model FOLDER)."""
    return made_once(tmp_path_factory, "fsdp-start-weights",
                     lambda folder: save_model(*load_model("bloom-tiny", seed=42), folder / "model")) / "model"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, start):
    """FULL_SHARD on one process."""
    return made_once(tmp_path_factory, "fsdp-full-shard-1",
                     lambda folder: made(folder, "full_shard", 1, *STEPS, "--subset-size", "40",
                                         "--model", str(start))) / "run"


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, start):
    """ZeRO-3 on one process, the same start, data, batch and steps."""
    return made_once(tmp_path_factory, "fsdp-zero3-same-start",
                     lambda folder: train_one_process(folder, "stage3", *STEPS, "--subset-size", "40", "--model",
                                                      str(start), port=29633)) / "run"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, start):
    """FULL_SHARD on two processes, the same global batch (1 row each)."""
    return made_once(tmp_path_factory, "fsdp-full-shard-2",
                     lambda folder: made(folder, "full_shard", 2, *STEPS, "--per-device-train-batch-size", "1",
                                         "--subset-size", "40", "--model", str(start))) / "run"


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory, start):
    """FULL_SHARD and ZeRO-3 in bf16, otherwise as one_process and zero3 (no checkpoints: not needed here)."""
    same = (*STEPS, "--subset-size", "40", "--model", str(start), "--precision", "bf16", "--save-strategy", "no",
            "--no-save-final")
    fsdp = made_once(tmp_path_factory, "fsdp-full-shard-bf16", lambda folder: made(folder, "full_shard", 1, *same))
    zero = made_once(tmp_path_factory, "fsdp-zero3-bf16",
                     lambda folder: train_one_process(folder, "stage3", *same, port=29635))
    return fsdp / "run", zero / "run"


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.slow
def test_fsdp_shards_each_parameter_across_the_processes(one_process, two_processes):
    alone, pair = manifest(one_process), manifest(two_processes)
    for record, world, share in ((alone, 1, 1.0), (pair, 2, 0.5)):
        assert record["status"] == "completed"
        wrapping = record["wrapping"]
        assert wrapping["world_size"] == world and wrapping["wrapper"].startswith("FSDP")
        assert wrapping["dtensor_parameters"] == wrapping["parameters"] > 0  # every parameter a DTensor
        assert wrapping["placements"] == ["(Shard(dim=0),)"]
        assert wrapping["fsdp_units"] == 1 + 2  # the tiny BLOOM's 2 decoder layers, then the model
        assert wrapping["unit_classes"] == ["BloomBlock"]  # the family's decoder layer, by default
        assert wrapping["local_share"] == pytest.approx(share, abs=0.01)
    # the model states each process holds halve with the second process
    for kind in ("parameters", "gradients", "optimizer"):
        assert pair["model_states"]["bytes_per_process"][kind] == pytest.approx(
            alone["model_states"]["bytes_per_process"][kind] / 2, rel=0.02)
    # one global batch, one loss: the Trainer averages the two processes' losses
    one, two = losses(one_process), losses(two_processes)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=EQUIVALENCE_RTOL)


@pytest.mark.slow
def test_full_shard_and_zero3_give_the_same_fp32_loss_curve(one_process, zero3):
    assert manifest(zero3)["zero_stage"] == 3 and manifest(zero3)["precision"] == "fp32"
    assert manifest(one_process)["precision"] == "fp32"
    fsdp, zero = losses(one_process), losses(zero3)
    assert sorted(fsdp) == sorted(zero) == [1, 2, 3, 4]
    assert fsdp[4] < fsdp[1]  # it learned: a curve, not four copies of one number
    for step in fsdp:
        assert fsdp[step] == pytest.approx(zero[step], rel=EQUIVALENCE_RTOL), (step, fsdp, zero)


@pytest.mark.slow
def test_fsdp_checkpoint_exports_from_its_sharded_state(two_processes, tmp_path):
    """The 2-process run's last checkpoint, read from its DCP shards, is the model the Trainer saved as final/."""
    done = export("--run-dir", str(two_processes), "--out", str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "model" / "export.json").read_text())
    assert record["format"] == "dcp" and record["step"] == 4
    final = Path(manifest(two_processes)["settings"]["output_dir"]) / "final"
    torch.testing.assert_close(probe(load_saved(tmp_path / "model")[0]), probe(load_saved(final)[0]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_run_that_asked_for_fsdp_and_got_anything_else_is_stopped(zero3):
    """The ZeRO-3 run's own record (DeepSpeed's engine, no DTensor) is what an FSDP run must never train."""
    record = manifest(zero3)["wrapping"]
    assert record["wrapper"] == "DeepSpeedEngine" and record["dtensor_parameters"] == 0
    check_wrapping(record, None)  # a run that did not ask for FSDP: recorded, nothing to stop
    with pytest.raises(WorkshopError, match="--fsdp full_shard asked for FSDP2, but the Trainer trained "
                                            "DeepSpeedEngine with 0 of"):
        check_wrapping(record, "full_shard")


def test_fsdp_with_deepspeed_is_refused_in_one_line(tmp_path):
    done = train(tmp_path, "full_shard", 1, "--profile", "tiny", "--deepspeed",
                 "deepspeed_single_gpu/configs/stage3.json")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: choose one of --fsdp full_shard (PyTorch's FSDP2) and --deepspeed")
    assert not (tmp_path / "run").exists()  # refused before any run folder or model


def test_an_unknown_wrap_class_is_refused_in_one_line(tmp_path, capsys):
    """Through the entry in this process (torch is loaded already; a subprocess would spend 5 s loading it)."""
    from workshop.entry import main

    with pytest.raises(SystemExit) as stop:
        main(["--profile", "tiny", "--fsdp", "full_shard", "--fsdp-wrap-class", "BloomLayer", "--run-dir",
              str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1, error
    assert error.startswith("error: --fsdp-wrap-class: bloom-tiny has no module class 'BloomLayer'; its classes: "
                            "BloomAttention, BloomBlock, BloomGelu, BloomMLP,")
    assert "(default: the decoder layer, BloomBlock)" in error
    assert not (tmp_path / "run").exists()  # refused before any run folder or model


@pytest.mark.slow
@pytest.mark.parametrize("mode, wrap_class", [("shard_grad_op", "BloomMLP"), ("full_shard_offload", None)])
def test_other_modes_train_sharded(mode, wrap_class, tmp_path):
    """The other modes; and --fsdp-wrap-class, which makes another class the unit FSDP2 wraps."""
    made(tmp_path, mode, 1, "--profile", "tiny", "--subset-size", "20", "--max-steps", "2", "--logging-steps", "1",
         "--save-strategy", "no", "--eval-strategy", "no", "--no-save-final",
         *(("--fsdp-wrap-class", wrap_class) if wrap_class else ()))
    record = manifest(tmp_path / "run")
    assert record["settings"]["fsdp"] == mode and record["wrapping"]["dtensor_parameters"] > 0
    assert record["wrapping"]["unit_classes"] == [wrap_class or "BloomBlock"]
    assert sorted(losses(tmp_path / "run")) == [1, 2]


@pytest.mark.slow
def test_an_fsdp_run_resumes_from_its_sharded_state_on_another_number_of_processes(one_process, two_processes,
                                                                                  start, tmp_path):
    """The 2-process run's checkpoint-2 (DCP: each process's half of the weights and Adam states), resumed on one
    process with the same global batch, goes on with the losses the uninterrupted runs logged at steps 3 and 4
    (measured 2026-12-06: equal to 1e-7; the same process count resumed equal to the bit)."""
    checkpoint = Path(manifest(two_processes)["settings"]["output_dir"]) / "checkpoint-2"
    assert not (checkpoint / "optimizer.pt").exists()  # rank 0's shards alone: not saved, the DCP state has all
    made(tmp_path, "full_shard", 1, *STEPS, "--subset-size", "40", "--model", str(start), "--resume", str(checkpoint))
    record = manifest(tmp_path / "run")
    assert record["resumed_from"] == str(checkpoint) and record["wrapping"]["world_size"] == 1
    resumed, alone, pair = losses(tmp_path / "run"), losses(one_process), losses(two_processes)
    assert sorted(resumed) == [3, 4]  # went on from step 2: did not start again
    for step in resumed:
        assert resumed[step] == pytest.approx(alone[step], rel=EQUIVALENCE_RTOL) == pytest.approx(pair[step],
                                                                                                  rel=EQUIVALENCE_RTOL)


@pytest.mark.slow
def test_resuming_fsdp_from_a_checkpoint_without_sharded_state_is_refused_in_one_line(zero3, tmp_path):
    """A ZeRO-3 checkpoint has no fsdp_dcp/: the Trainer's own resume would read it into DTensors, or fail."""
    checkpoint = Path(manifest(zero3)["settings"]["output_dir"]) / "checkpoint-2"
    done = train(tmp_path, "full_shard", 1, *STEPS, "--subset-size", "40", "--resume", str(checkpoint))
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: --fsdp cannot resume from {checkpoint}: it has no sharded FSDP2 state")
    assert manifest(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_the_measured_table_has_checkpoint_size_save_time_and_tokens_per_second(one_process, two_processes, zero3):
    """Lesson 7's measured cells of the module's runs: each checkpoint timed and sized as it was saved (the
    manifest's checkpoint_saves), and tokens/s marked, with the reason, where 4 steps make no steady state."""
    from workshop.fill_tables import load_runs
    from workshop.lessons.fsdp import measured
    from workshop.logparse import Missing
    from workshop.save_times import folder_bytes

    runs = load_runs([one_process, two_processes, zero3])
    assert len(runs) == 3
    for run in runs:
        saves, row = run.manifest["checkpoint_saves"], measured(run)
        assert [save["step"] for save in saves] == [2, 4] and all(save["seconds"] > 0 for save in saves)
        last = Path(run.manifest["settings"]["output_dir"]) / "checkpoint-4"
        assert row["checkpoint MiB"] == folder_bytes(last) / 2**20 > 1  # the tiny model's weights and Adam states
        assert row["save s"] == pytest.approx((saves[0]["seconds"] + saves[1]["seconds"]) / 2)
        tokens = row["steady real tokens/s (median, 95% interval)"]
        assert isinstance(tokens, Missing) and tokens.cell == "n/a (too short for a steady state)"


@pytest.mark.slow
def test_bf16_shows_where_fsdp_and_zero3_differ(one_process, zero3, bf16_pair):
    """The lesson's answers from the runs: in bf16 the two curves part by more than in fp32 (ZeRO computes from
    bf16 parameters and reduces bf16 gradients; FSDP2 keeps both in fp32 and casts per unit), and the bytes each
    keeps a parameter show it: FSDP2 4 + 4 + 8 (fp32 parameters and gradients, Adam's two states), ZeRO-3 2 + 2 +
    12 (bf16 parameters and gradients; an fp32 master copy among the optimizer states). Measured 2026-12-06 on
    these 4 steps: bf16 2.0e-5 at most, fp32 1.8e-6."""
    from workshop.fill_tables import load_runs
    from workshop.lessons.fsdp import PAIRS, measured_table
    from workshop.lessons.fsdp_precision import bytes_per_parameter, largest_difference, pairs

    runs = load_runs([one_process, zero3, *bf16_pair])
    found = pairs(runs, {zero: mode for zero, mode in PAIRS})
    assert sorted(found) == [("full_shard", "bf16", 1), ("full_shard", "fp32", 1)]
    bf16, fp32 = (largest_difference(*found[("full_shard", precision, 1)]) for precision in ("bf16", "fp32"))
    assert fp32 < bf16 < 1e-3  # apart by more than fp32's sums, still within bf16's own rounding (2**-8)
    fsdp, zero = found[("full_shard", "bf16", 1)]
    assert (bytes_per_parameter(fsdp), bytes_per_parameter(zero)) == ("4 + 4 + 8", "2 + 2 + 12")
    _, answers, notes = measured_table(runs)
    [answer] = [text for text in answers if text.startswith("bf16, 1 process(es): FSDP2 full_shard")]
    assert f"differ by {bf16:.1e} (relative)" in answer and f"the fp32 pair's {fp32:.1e}" in answer
    assert any(note.startswith("precision answers: in bf16 ZeRO-3 keeps parameters and gradients in bf16")
               for note in notes)
