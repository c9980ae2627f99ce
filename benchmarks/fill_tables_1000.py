"""How long fill_tables takes on 1,000 run folders (issue 5's target: 2 s). A benchmark, not a test.

    python benchmarks/fill_tables_1000.py [--source logs/<run folder>] [--runs 1000] [--repeat 3]

The run folders are copies of a real run (a tiny baseline run made here first through slurm/baseline.slurm, or
--source; then, again, the real H100 run in tests/data, whose nvidia-smi samples a CPU run lacks) filed under every
lesson's tables: baseline, lesson 2's configs, lesson 3's weak-scaling GPU
counts and 2-GPU ZeRO configs, each copy with its own run id, start time and runtime. It times
`python -m workshop.fill_tables <dir>` as a student runs it (interpreter start and imports included) and the
in-process `build_tables` + `render`, best of --repeat, and writes docs/results/fill_tables_1000.md.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workshop import plots  # noqa: E402
from workshop.fill_tables import ZERO_2GPU, ZERO_CONFIGS, build_tables, render  # noqa: E402

TARGET_S = 2.0
RESULT = REPO / "docs" / "results" / "fill_tables_1000.md"
H100_RUN = REPO / "tests" / "data" / "logs" / "run_complete" / "baseline-1001"
# (lesson, config, world size) of each kind of copy; the copies cycle through them.
KINDS = ([("baseline", "baseline", 1)] + [("deepspeed_single_gpu", config, 1) for config in ZERO_CONFIGS]
         + [("deepspeed_multi_gpu", "stage0", n) for n in (2, 4, 6, 8)]
         + [("deepspeed_multi_gpu", config, 2) for config in ZERO_2GPU])


def real_run(logs):
    """A real tiny baseline run (two optimizer steps), made under `logs`."""
    runs = plots.ensure_run(logs, "baseline", "slurm/baseline.slurm",
                            ["--profile", "tiny", "--num-train-epochs", "1", "--max-steps", "2"])
    if not runs or runs[0].status != "completed":
        sys.exit(f"error: the tiny run under {logs} did not complete")
    return runs[0].path


def generate(source, dest, count, kinds=KINDS):
    """`count` copies of the run folder `source` under dest/, each a different lesson-kind, run id and runtime."""
    manifest = json.loads((source / "manifest.json").read_text())
    events = (source / "log_history.jsonl").read_text().splitlines()
    for i in range(count):
        lesson, config, world = kinds[i % len(kinds)]
        prefix = {"baseline": "baseline", "deepspeed_single_gpu": config}.get(lesson) or \
            (f"weak_scaling_{world}gpu" if config == "stage0" else f"{config}_2gpu")
        name = f"{prefix}-{100000 + i}"
        run = dest / name
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoint-*"))
        (run / "manifest.json").write_text(json.dumps({
            **manifest, "run_id": name, "lesson": lesson, "config_name": config, "world_size": world,
            "subset_size": 20 * world, "start_time": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}))
        slower = 1 + (i % 7) / 10  # every copy its own runtime, so comparisons have something to compare
        lines = [json.dumps({**e, "train_runtime": e["train_runtime"] * slower}) if "train_runtime" in e else json.dumps(e)
                 for e in map(json.loads, events)]
        (run / "log_history.jsonl").write_text("\n".join(lines) + "\n")


def best_of(repeat, action):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times), times


def versions():
    import pandas
    import torch
    import transformers
    return {"python": platform.python_version(), "pandas": pandas.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPU cores ({cpu}), load average " \
           f"{os.getloadavg()[0]:.2f} at start"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="a real run folder to copy (default: make a tiny run first)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path, default=RESULT, help="the markdown result (default: %(default)s)")
    args = parser.parse_args()
    where = machine()
    with tempfile.TemporaryDirectory() as tmp:
        made = args.source or real_run(Path(tmp) / "source" / "logs")
        no_gpu = (made / "gpu_memory.csv").read_text().startswith("# no GPU")
        sources = [(f"{'given' if args.source else 'tiny run made here'}{' (no GPU samples)' if no_gpu else ''}", made),
                   ("H100 run in tests/data (nvidia-smi samples)", H100_RUN)]
        timings = []
        for label, source in sources:
            logs, no_lesson2 = Path(tmp) / f"logs-{source.name}", Path(tmp) / f"no_lesson2-{source.name}"
            generate(source, logs, args.runs)
            # Lesson 2's Part 2 table imports DeepSpeed for its model-state estimates; the same count without it
            # shows what that import costs.
            generate(source, no_lesson2, args.runs, [kind for kind in KINDS if kind[0] != "deepspeed_single_gpu"])
            for what, folder in (("all lessons", logs), ("lessons 1 and 3 only (no DeepSpeed import)", no_lesson2)):
                command = [sys.executable, "-m", "workshop.fill_tables", str(folder)]
                timings.append((label, what, "`python -m workshop.fill_tables <dir>`", *best_of(
                    args.repeat, lambda: subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL))))
                timings.append((label, what, "in-process `render(build_tables([dir]))`, warm", *best_of(
                    args.repeat, lambda: render(build_tables([folder]), "markdown"))))
        tables = build_tables([logs])
    shown = " ".join(arg for arg in sys.argv[1:] if arg)
    lines = [
        f"# fill_tables on {args.runs:,} run folders",
        "",
        f"Command: `python benchmarks/fill_tables_1000.py{' ' + shown if shown else ''}` (written by that script; "
        "do not edit by hand)",
        f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"Machine: {where}",
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions().items())}",
        f"Each source run copied {args.runs:,} times over {len(KINDS)} lesson kinds (baseline, lesson 2's configs, "
        f"lesson 3's GPU counts and ZeRO configs): {sum(len(df) for df in tables.values())} table rows in "
        f"{len(tables)} tables",
        "",
        "| source run | lessons | how | best of " + str(args.repeat) + " (s) | every try (s) | target (s) | met |",
        "|---|---|---|---|---|---|---|",
        *[f"| {source} | {lessons} | {how} | {best:.2f} | {', '.join(f'{t:.2f}' for t in every)} | {TARGET_S} | "
          f"{'yes' if best <= TARGET_S else 'no'} |" for source, lessons, how, best, every in timings],
        "",
        "The command-line times include the interpreter's start and its imports (pandas; DeepSpeed and torch when "
        "lesson-2 runs are present); the in-process times are a notebook's second call.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(text)
    print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
