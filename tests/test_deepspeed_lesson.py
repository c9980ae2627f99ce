"""Lesson 2 for real on CPU: every DeepSpeed config trains the tiny model through its .slurm file, and the engine
each config builds really is what the file says (ZeRO stage, CPU Adam, where the optimizer state lives).

DeepSpeed picks its CPU accelerator here, and the lesson's fp16 falls back to fp32 with a notice. What the CPU
cannot show: with no device memory, "offloaded to CPU" and "kept on the device" are the same place, and
DeepSpeed's CPU accelerator never page-locks memory, so pin_memory true/false is visible only in the engine's
and the ZeRO optimizer's settings, not in the tensors (`is_pinned()` is False either way; asserted below).

The ops (fused_adam, cpu_adam, deepspeed_shm_comm) come from the shared build folder of
`python -m workshop.prebuild_ops`, which the training loads before its clock starts; the first build on a clean
machine takes minutes, later runs load them in seconds.

Run as a script (`python tests/test_deepspeed_lesson.py OUT_DIR CONFIG...`) this file is the engine probe: the
configs' trainings one after another in one process, each into OUT_DIR/CONFIG/. One process for all ten: each
config's facts were the same, key for key, as a process of its own gave (2026-12-06), and it saves nine
interpreters' imports (119 -> 30 CPU-s).
"""

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from test_slurm import check_loggers_stopped, deepspeed_shm_buffers, job_env, training_started
from workshop.launch import free_port
from workshop.lessons import ZERO_WALKTHROUGH
from workshop.logparse import is_summary

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "deepspeed_single_gpu" / "configs"
NAMES = sorted(path.stem for path in CONFIGS.glob("*.json"))
LESSON_FILES = ("slurm/", "deepspeed_single_gpu/", "workshop/")  # what a .slurm run of lesson 2 reads
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def zero_section(name):
    return json.loads((CONFIGS / f"{name}.json").read_text())["zero_optimization"]


def copy_lesson(copy, prefixes=LESSON_FILES):
    """Copy the lesson's files (tracked and untracked, not ignored) to `copy`, so logs/ and outputs/ land there."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in files:
        if name.startswith(prefixes) and (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def lesson_copy(tmp_path_factory):
    return copy_lesson(tmp_path_factory.mktemp("lesson2") / "repo")


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]


def check_deepspeed_run(run_dir, name):
    """A complete lesson-2 run folder of config `name` that trained for real (shared with test_slurm_zero.py)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["exit_code"] == 0, manifest["error"]
    assert manifest["lesson"] == "deepspeed_single_gpu"
    assert manifest["config_name"] == name and manifest["run_id"] == run_dir.name
    assert manifest["deepspeed_config"] == f"deepspeed_single_gpu/configs/{name}.json"

    events = read_events(run_dir)
    losses = [e["loss"] for e in events if "loss" in e]
    assert len(losses) >= 2 and losses[-1] < losses[0], f"training loss did not fall: {losses}"
    assert any("eval_loss" in e for e in events)
    [summary] = [e for e in events if is_summary(e)]
    assert summary["train_runtime"] > 0

    cpu_rows = [line.split() for line in (run_dir / "cpu_memory.log").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert cpu_rows and max(float(row[2]) for row in cpu_rows) > 0  # psrecord's "Real (MB)" column

    record = check_loggers_stopped(run_dir)  # both loggers stopped, nothing of the run left running
    assert record["training"]["exit_status"] == 0
    check_evidence(run_dir, manifest)
    return manifest


def check_evidence(run_dir, manifest):
    """steps.jsonl times every step; the ops were loaded (or built) in an excluded window before the training began;
    the engine's model states: one process holds every parameter (4 bytes each in fp32, 2 in bf16)."""
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [step["step"] for step in steps] == list(range(1, manifest["steps_done"] + 1))
    [ops] = [window for window in manifest["excluded_windows"] if window["what"] == "deepspeed_ops"]
    assert ops["start"] <= ops["end"] <= manifest["training_window"]["start"] < manifest["training_window"]["end"]
    states = manifest["model_states"]
    assert (states["world_size"], states["zero_stage"]) == (1, manifest["zero_stage"])
    element = 2 if manifest["precision"] == "bf16" else 4
    assert states["bytes_per_process"]["parameters"] == element * manifest["parameters"]
    nvme = "nvme" in manifest["config_name"]
    assert states["device"]["optimizer"] == ("nvme" if nvme else "cpu")


# ---------------------------------------------------------------------------------- every config, end to end

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_config_trains_tiny_through_its_slurm_file(lesson_copy, lesson_logs, name):
    """Each config's run of the lesson's tiny walk-through (`bash slurm/<config>.slurm --profile tiny`, made once
    per session: conftest.py's lesson_logs); the NVMe config, which the walk-through leaves out, runs here."""
    if name in ZERO_WALKTHROUGH:
        [run_dir] = lesson_logs("deepspeed_single_gpu").glob(f"{name}-local*")
    else:
        from workshop.deepspeed.preflight import check_async_io
        if check_async_io():  # no libaio here: the run would stop with this line (tests/test_preflight.py)
            pytest.skip(check_async_io())
        env = {**job_env(), **OFFLINE}
        run = subprocess.run(["bash", f"slurm/{name}.slurm", "--profile", "tiny", "--num-train-epochs", "1"],
                             cwd=lesson_copy, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        [run_dir] = (lesson_copy / "logs").glob(f"{name}-local*")
    check_deepspeed_run(run_dir, name)
    train_out = (run_dir / "train.out").read_text()
    if name == "stage2_zenflow":  # its script asks for bf16 (ZenFlow's loss was NaN from step 2 in fp16 on an H100)
        assert json.loads((run_dir / "manifest.json").read_text())["precision"] == "bf16"
    else:
        assert "fp16 needs a CUDA GPU" in train_out  # the lesson asks for fp16; the CPU run says it uses fp32


@pytest.mark.slow
def test_a_killed_training_leaves_no_shared_memory(lesson_copy):
    """DeepSpeed's CPU backend puts a 66 MiB buffer per rank in /dev/shm (RAM) and never removes it; a training
    that exits removes its own, and common.sh removes those of one the kernel killed (SIGKILL: no handler runs)."""
    script = subprocess.Popen(["bash", "slurm/stage0.slurm", "--profile", "tiny", "--num-train-epochs", "30",
                               "--logging-steps", "1", "--eval-strategy", "no"],
                              cwd=lesson_copy, env={**job_env(), **OFFLINE}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    pid, command = training_started(script)
    deadline = time.monotonic() + 300
    while not deepspeed_shm_buffers(command):  # created when the Trainer sets up DeepSpeed's communication
        assert time.monotonic() < deadline and script.poll() is None, "DeepSpeed made no /dev/shm buffer"
        time.sleep(0.2)
    [rank] = [child for child in psutil.Process(pid).children(recursive=True) if "--local_rank=0" in child.cmdline()]
    rank.kill()
    output = script.communicate(timeout=120)[0]
    assert script.returncode != 0, output
    assert deepspeed_shm_buffers(command) == [], output


def test_both_launch_paths_and_their_startup(lesson_copy, lesson_logs):
    """`--launcher python` starts the one process itself (no launcher interpreters importing deepspeed); the
    default stays the `deepspeed` launcher the lesson teaches. The manifest's start-up says which, and where the
    time went (workshop/startup.py). The default's run is the walk-through's stage0 run (made once per session:
    `bash slurm/stage0.slurm --profile tiny`, no --launcher flag)."""
    gaps = {}
    for launcher in ("deepspeed", "python"):
        if launcher == "deepspeed":
            [run_dir] = lesson_logs("deepspeed_single_gpu", ("slurm/stage0.slurm",)).glob("stage0-local*")
        else:
            run = subprocess.run(["bash", "slurm/stage0.slurm", "--launcher", launcher, "--profile", "tiny",
                                  "--max-steps", "3", "--eval-strategy", "no", "--save-strategy", "no",
                                  "--no-save-final"],
                                 cwd=lesson_copy, env={**job_env(), **OFFLINE}, capture_output=True, text=True,
                                 timeout=900)
            assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
            run_dir = max((lesson_copy / "logs").glob("stage0-local*"), key=lambda p: p.stat().st_mtime)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["world_size"] == 1
        startup = manifest["startup"]
        assert startup["launcher"] == launcher and startup["origin"] == "launched"
        assert {"ops_loaded", "engine_ready", "first_step_done"} <= set(startup["marks_s"])
        gaps[launcher] = startup["marks_s"]["process_start"] - startup["marks_s"]["command_started"]
        check_evidence(run_dir, manifest)
    # The launcher's interpreters start before the training's: seconds, where plain python starts at once.
    assert gaps["python"] < 0.5 < gaps["deepspeed"], gaps


def test_bad_launcher_is_one_clear_line(lesson_copy):
    run = subprocess.run(["bash", "slurm/stage0.slurm", "--launcher", "torchrun", "--profile", "tiny"],
                         cwd=lesson_copy, env={**job_env(), **OFFLINE}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert error_lines(run) == ["error: --launcher must be deepspeed or python (got 'torchrun')"]


def test_the_lesson_has_the_eleven_configs_each_with_a_slurm_file():
    assert NAMES == sorted(["stage0", "stage1", "stage1_offload", "stage2", "stage2_offload", "stage2_offload_nopin",
                            "stage2_zenflow", "stage3", "stage3_offload", "stage3_offload_nopin",
                            "stage3_offload_nvme"])
    for name in NAMES:
        assert f"workshop_deepspeed {name} " in (REPO / "slurm" / f"{name}.slurm").read_text()


# ---------------------------------------------------------------------------------- the engine, in-process

def probe_engine(name, out):
    """Train 2 steps of config `name` the way workshop.train does and write what its DeepSpeed engine holds."""
    from workshop.config import parse_args
    from workshop.runlog import RunLog
    from workshop.train import train

    work = Path(out).parent
    cfg = parse_args(["--ds-config", str(CONFIGS / f"{name}.json"), "--profile", "tiny", "--max-steps", "2",
                      "--eval-strategy", "no", "--save-strategy", "no", "--output-dir", str(work / "out")],
                     lesson="deepspeed_single_gpu", require_deepspeed=True)
    trainer = train(cfg, RunLog(work / "run", {"config_name": name}))

    from deepspeed.accelerator import get_accelerator

    engine = trainer.model_wrapped
    stage = engine.zero_optimization_stage()
    zero, adam = engine.optimizer, engine.basic_optimizer  # ZeRO's wrapper (stages 1-3) and the Adam inside it
    # The fp32 master weights Adam updates: ZeRO keeps them as flat partitions; stage 0 (fp32) updates the model's own.
    masters = {0: lambda: [p for group in adam.param_groups for p in group["params"]],
               1: lambda: zero.single_partition_of_fp32_groups, 2: lambda: zero.single_partition_of_fp32_groups,
               3: lambda: zero.fp32_partitioned_groups_flat}[stage]()
    # ZenFlow (overlap_step) keeps the Adam moments in its optimizer process: none in this one's state
    moments = [adam.state[m][key] for m in masters if adam.state[m] for key in ("exp_avg", "exp_avg_sq")]
    if stage == 3:  # what ZeRO-3's optimizer acts on
        pins = {"optimizer": zero.offload_optimizer_pin_memory if zero.offload_optimizer else None,
                "param": zero.offload_param_pin_memory if zero.offload_param else None}
    elif stage in (1, 2):
        pins = {"optimizer": zero.cpu_offload_pin_memory if zero.cpu_offload else None, "param": None}
    else:
        pins = {"optimizer": None, "param": None}
    device = lambda o: getattr(o.device, "value", o.device)  # noqa: E731 - an enum or its value, depending on the section
    offload = lambda o: None if o is None else {"device": device(o), "pin_memory": o.pin_memory}  # noqa: E731
    params = list(engine.module.parameters())
    facts = {
        "accelerator": get_accelerator().device_name(),
        "global_step": trainer.state.global_step,
        "stage": stage,
        "offload_optimizer": offload(engine.zero_offload_optimizer()),
        "offload_param": offload(engine.zero_offload_param()),
        "optimizer": type(adam).__name__,
        "zero_optimizer": type(zero).__name__,
        "zero_pins": pins,
        "master_devices": sorted({t.device.type for t in masters}),
        "moment_devices": sorted({t.device.type for t in moments}),
        "master_or_moment_pinned": any(t.is_pinned() for t in masters + moments),
        # ZeRO-3 keeps each parameter's partition in ds_tensor and empties the module's own tensor between
        # uses, except parameters below stage3_param_persistence_threshold, which it keeps whole (ds_persist).
        "partition_devices": sorted({p.ds_tensor.device.type for p in params if hasattr(p, "ds_tensor")}),
        "emptied_params": sum(p.numel() == 0 for p in params),
        "whole_params_not_persistent": sum(p.numel() > 0 and not getattr(p, "ds_persist", False) for p in params),
    }
    Path(out).write_text(json.dumps(facts, indent=1))


ENGINE_NAMES = [n for n in NAMES if n != "stage3_offload_nvme"]  # NVMe: tests/test_preflight.py


@pytest.fixture(scope="module")
def engine_facts(tmp_path_factory):
    """name -> what that config's engine holds, from one probe process for all of them."""
    work = tmp_path_factory.mktemp("engines")
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO),  # what torchrun would set for one process
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    result = subprocess.run([sys.executable, __file__, str(work), *ENGINE_NAMES], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return {name: json.loads((work / name / "facts.json").read_text()) for name in ENGINE_NAMES}


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_engine_matches_the_config(engine_facts, name):
    zero = zero_section(name)
    facts = engine_facts[name]
    here = facts["accelerator"]  # "cpu" on this machine: offloaded and on-device state are then the same place
    assert facts["global_step"] == 2
    assert facts["stage"] == zero["stage"]

    optimizer_offload = zero.get("offload_optimizer")
    if optimizer_offload:
        pin = optimizer_offload["pin_memory"]
        assert facts["offload_optimizer"] == {"device": "cpu", "pin_memory": pin}
        assert facts["zero_pins"]["optimizer"] is pin  # the ZeRO optimizer itself was built with this choice
        # the Adam step runs on the CPU (the cpu_adam op); ZenFlow's subclass of it steps in its own process,
        # overlapped with the next step (overlap_step: the Parallel optimizer)
        assert facts["optimizer"] == ("ZenFlowCPUAdam" if "zenflow" in zero else "DeepSpeedCPUAdam")
        assert (facts["zero_optimizer"] == "ZenFlowZeroOptimizerParallel") == ("zenflow" in zero)
        assert facts["master_devices"] == ["cpu"]
        assert facts["moment_devices"] == ([] if "zenflow" in zero else ["cpu"])
    else:
        assert facts["offload_optimizer"] is None and facts["zero_pins"]["optimizer"] is None
        assert facts["optimizer"] == "FusedAdam"
        assert facts["master_devices"] == facts["moment_devices"] == [here]

    param_offload = zero.get("offload_param")
    if param_offload:
        pin = param_offload["pin_memory"]
        assert facts["offload_param"] == {"device": "cpu", "pin_memory": pin}
        assert facts["zero_pins"]["param"] is pin
        assert facts["partition_devices"] == ["cpu"]
    else:
        assert facts["offload_param"] is None and facts["zero_pins"]["param"] is None
    if zero["stage"] == 3:
        # partitioned: a layer's parameters are gathered only while it runs (small ones persist by design)
        assert facts["emptied_params"] > 0 and facts["whole_params_not_persistent"] == 0
        assert facts["partition_devices"] == ["cpu" if param_offload else here]
    else:
        assert facts["emptied_params"] == 0 and facts["partition_devices"] == []

    if here == "cpu":
        # DeepSpeed's CPU accelerator makes pinning a no-op, so pin_memory true and false look alike in the tensors.
        assert not facts["master_or_moment_pinned"]


# ---------------------------------------------------------------------------------- bad inputs

def run_lesson(*flags, cwd, launcher=False):
    entry = [str(REPO / "deepspeed_single_gpu" / "train.py"), *flags]
    if launcher:  # the way the lesson starts it: the deepspeed launcher, one process
        entry = ["-m", "deepspeed.launcher.runner", "--num_gpus=1", f"--master_port={free_port()}", *entry]
    return subprocess.run([sys.executable, *entry], cwd=cwd, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=300)


def error_lines(result):
    return [line for line in (result.stdout + result.stderr).splitlines() if re.match(r"error\b", line)]


def test_typo_in_deepspeed_json_is_one_line_naming_file_and_key(tmp_path):
    bad = tmp_path / "typo.json"
    bad.write_text((CONFIGS / "stage2.json").read_text().replace('"zero_optimization"', '"zero_optimisation"'))
    result = run_lesson("--ds-config", str(bad), "--profile", "tiny", "--run-dir", str(tmp_path / "run"),
                        cwd=tmp_path, launcher=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert error_lines(result) == [f"error: {bad}: zero_optimisation: unknown key "
                                   f"(did you mean 'zero_optimization'?)"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "zero_optimisation" in manifest["error"]


@pytest.mark.parametrize("flags, message", [
    ([], "error: the deepspeed_single_gpu lesson needs a DeepSpeed config: --ds-config "
         "deepspeed_single_gpu/configs/<stage>.json"),
    (["--ds-config", "deepspeed_single_gpu/configs/stage9.json"],
     "error: --deepspeed: no such file 'deepspeed_single_gpu/configs/stage9.json'"),
    (["--ds-config", str(CONFIGS / "stage2.json"), "--model", "9b"], "error: unknown model '9b'"),
], ids=["missing-ds-config", "no-such-ds-config", "unknown-model"])
def test_bad_flags_are_one_clear_line(tmp_path, flags, message):
    result = run_lesson(*flags, "--profile", "tiny", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    assert line.startswith(message), line
    assert not (tmp_path / "run").exists()  # refused before anything started


if __name__ == "__main__":  # the guard matters: ZenFlow's optimizer process re-imports this file
    for config in sys.argv[2:]:
        (Path(sys.argv[1]) / config).mkdir()  # a run folder each: the lock of one is held until its process ends
        probe_engine(config, Path(sys.argv[1]) / config / "facts.json")
        gc.collect()  # the last Trainer, and transformers' weak reference to its ZeRO config, go before the next
