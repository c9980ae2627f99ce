"""The largest micro-batch that fits on this GPU: a bounded search that doubles it until the first CUDA OOM.

    python -m workshop.max_batch [--start 1] [--max 256] [--steps 3] [--out DIR] [train flags]
    python -m workshop.max_batch --model 1b7 --init random --gradient-checkpointing --precision bf16

Each size is one short training (`python -m workshop.train` with the given flags, one micro-batch per optimizer
step, no eval, no checkpoint) in its own process, so an OOM leaves nothing behind for the next size. The search
stops at the first size that runs out of GPU memory (workshop.train's exit status 3), at --max, or at any other
failure (reported as such, not as a fit). Trials are run folders `<out>/mb<N>/` of the lesson
precision_and_checkpointing; `<out>/max_batch.json` holds every trial and the result, rewritten after each one,
so a search that is killed keeps what it found. Without a CUDA GPU there is no OOM to find: it stops at once.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from workshop.config import WorkshopError, parse_args
from workshop.launch import free_port
from workshop.model import resolve_model
from workshop.runlog import default_run_dir, utc_now, write_json

LESSON = "precision_and_checkpointing"
OOM = 3  # workshop.train's exit status for a CUDA out-of-memory
TRIAL_FLAGS = ("--gradient-accumulation-steps", "1", "--eval-strategy", "no", "--save-strategy", "no",
               "--no-save-final", "--logging-steps", "1", "--lesson", LESSON)


def sizes(start: int, bound: int):
    """start, 2*start, 4*start, ... up to bound."""
    size = start
    while size <= bound:
        yield size
        size *= 2


def search(trial, start: int, bound: int) -> dict:
    """Call trial(size) -> "fit" | "oom" | a failure text, doubling from start until the first non-fit or bound."""
    trials, largest = [], None
    for size in sizes(start, bound):
        outcome = trial(size)
        trials.append({"micro_batch": size, "outcome": outcome})
        if outcome != "fit":
            break
        largest = size
    last = trials[-1]["outcome"] if trials else None
    stopped = "bound" if last == "fit" else "oom" if last == "oom" else "failed"
    return {"largest_fit": largest, "first_oom": trials[-1]["micro_batch"] if last == "oom" else None,
            "stopped": stopped, "bound": bound, "trials": trials}


def describe(result: dict) -> str:
    largest = result["largest_fit"]
    if result["stopped"] == "bound":
        return f"every micro-batch up to the bound {result['bound']} fits (largest tried: {largest}; raise --max)"
    if result["stopped"] == "oom":
        fit = f"largest micro-batch that fits: {largest}" if largest else "even the first size ran out of memory"
        return f"{fit}; {result['first_oom']} ran out of GPU memory"
    return (f"stopped: micro-batch {result['trials'][-1]['micro_batch']} failed without an OOM "
            f"({result['trials'][-1]['outcome']}); largest that fit before it: {largest}")


def run_trial(train_args, out: Path, steps: int, size: int, record: dict):
    run_dir = out / f"mb{size}"
    command = [sys.executable, "-m", "workshop.train", *train_args, *TRIAL_FLAGS, "--max-steps", str(steps),
               "--per-device-train-batch-size", str(size), "--run-dir", str(run_dir),
               "--config-name", f"max_batch-mb{size}", "--output-dir", str(out / "outputs" / f"mb{size}")]
    # one process as the launcher starts it: DeepSpeed (--ds-config) needs these; the plain Trainer ignores them
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    print(f"[max_batch] micro-batch {size}: {run_dir}", flush=True)
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    (out / f"mb{size}.out").write_text(done.stdout + done.stderr)
    outcome = "fit" if done.returncode == 0 else "oom" if done.returncode == OOM else \
        f"exit {done.returncode}: " + next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
    print(f"[max_batch] micro-batch {size}: {outcome} ({time.monotonic() - began:.0f} s)", flush=True)
    record.setdefault("runs", {})[str(size)] = str(run_dir)
    return outcome


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.max_batch", description=__doc__.split("\n\n")[0],
                                     epilog="Every other flag goes to workshop.train (see its --help).")
    parser.add_argument("--start", type=int, default=1, help="the first micro-batch tried (default 1)")
    parser.add_argument("--max", type=int, default=256, help="the bound: no larger micro-batch is tried (default 256)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per trial (default 3)")
    parser.add_argument("--out", help="the search's folder (default logs/max_batch-<job id>)")
    args, train_args = parser.parse_known_args(argv)
    try:
        if args.start < 1 or args.max < args.start or args.steps < 1:
            raise WorkshopError(f"need 1 <= --start <= --max and --steps >= 1 (got --start {args.start}, --max "
                                f"{args.max}, --steps {args.steps})")
        cfg = parse_args(train_args, lesson=LESSON)  # the training's flags, checked once before any trial
        if not torch.cuda.is_available():
            raise WorkshopError("no GPU: the micro-batch search needs a CUDA GPU (it doubles the micro-batch until "
                                "the first CUDA out-of-memory; without one there is none to find). Run it on a GPU "
                                "node, e.g. srun --gpus=1 python -m workshop.max_batch ...")
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or default_run_dir("max_batch"))
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": resolve_model(cfg.model), "init": cfg.init, "gradient_checkpointing": cfg.gradient_checkpointing,
              "precision": cfg.precision, "deepspeed": cfg.deepspeed, "max_length": cfg.max_length,
              "argv": train_args, "steps": args.steps, "start_time": utc_now()}

    done = []

    def trial(size):
        outcome = run_trial(train_args, out, args.steps, size, record)
        done.append({"micro_batch": size, "outcome": outcome})
        write_json(out / "max_batch.json", {**record, "trials": done})
        return outcome

    result = search(trial, args.start, args.max)
    write_json(out / "max_batch.json", {**record, **result, "end_time": utc_now()})
    print(f"[max_batch] {cfg.model}, gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}: "
          f"{describe(result)}; {out}/max_batch.json", flush=True)
    return 0 if result["stopped"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
