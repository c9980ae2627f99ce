"""Benchmark lesson configurations for a fixed number of optimizer steps (a benchmark, not a test).

    python benchmarks/bench.py benchmarks/make_it_fast.toml --out docs/results/make_it_fast_h100
    python benchmarks/bench.py benchmarks/make_it_fast.toml --only seed,packed --steps 12   # a quick subset

The TOML file lists the variants (see make_it_fast.toml). Each variant runs as its own process, either directly
(`python -m workshop.train`) or through its lesson script with plain bash (`script = "slurm/stage2.slurm"`: the
deepspeed launcher and both loggers, as a student runs it), or through the plain PyTorch loop
(`runner = "reference"`: benchmarks/reference_loop.py, the yardstick, no Trainer). Variants run `--repeats`
times (default: the file's `repeats`, else 1), alternating: the file's order, then reversed (A B, B A, A B, ...),
so neither slow drift of the machine nor running second favours a variant. The table gives medians over
repeats and, with more than one, the range of real tokens/s; a variant with `versus = "<other variant>"` gets
x_versus, its tokens/s over the other's in the same repeat: median and min-max over the repeats (the figure
for an overhead, e.g. benchmarks/logger_overhead.toml).

Per variant: samples (rows)/s, real (unpadded) tokens/s and MFU (workshop/speed.py states the formula), time per
step with warm-up excluded, start-up to the first step (from this script's launch, so imports, model build and
DeepSpeed's set-up all count), peak GPU memory three ways (torch max reserved from the run's manifest; NVML
sampled every 50 ms here; the lesson's nvidia-smi CSV when the loggers ran), peak host RSS (50 ms, process
tree), and the final eval loss. Results: OUT.json (everything) and OUT.md (the table, with command, device,
versions and date), both written by this script.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workshop.logparse import Parsed, read_log_history  # noqa: E402
from workshop.monitor_logs import read_gpu_csv  # noqa: E402
from workshop.runlog import versions  # noqa: E402


class Sampler(threading.Thread):
    """Peak GPU memory used (NVML, every GPU, no CUDA context of its own) and peak RSS of a process tree."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.gpu_peak_mib = None
        self.rss_peak_mib = 0.0
        self.done = threading.Event()

    def run(self):
        handles = _nvml_handles()
        root = psutil.Process(self.pid)
        while not self.done.is_set():
            if handles:
                import pynvml
                used = max(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles) / 2**20
                self.gpu_peak_mib = max(self.gpu_peak_mib or 0.0, used)
            self.rss_peak_mib = max(self.rss_peak_mib, _tree_rss_mib(root))
            time.sleep(self.interval)


def _nvml_handles():
    try:
        import pynvml
        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no driver / no GPU: GPU columns stay empty
        return []


def nvml_device_name() -> str:
    """The first GPU's name from NVML: runs too short for speed figures (start-up only) record no device."""
    handles = _nvml_handles()
    if not handles:
        return "no CUDA device"
    import pynvml
    return pynvml.nvmlDeviceGetName(handles[0])


def _tree_rss_mib(root) -> float:
    total = 0
    try:
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total / 2**20


def command_for(variant: dict, flags: list[str], run_dir: Path) -> list[str]:
    if "script" in variant:  # common.sh names the run folder itself, inside WORKSHOP_LOGS_ROOT (see run_variant)
        return ["bash", str(ROOT / variant["script"]), *flags]
    # `runner = "reference"`: the plain PyTorch loop (benchmarks/reference_loop.py), same flags, same run folder
    entry = [str(ROOT / "benchmarks" / "reference_loop.py")] if variant.get("runner") == "reference" else \
        ["-m", "workshop.train"]
    return [sys.executable, *entry, *flags, "--run-dir", str(run_dir), "--output-dir", str(run_dir / "outputs")]


def run_variant(variant: dict, flags: list[str], run_dir: Path, log) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
           "WORKSHOP_PYTHON": sys.executable,
           "WORKSHOP_LOGS_ROOT": str(run_dir), "WORKSHOP_OUTPUTS_ROOT": str(run_dir / "outputs")}
    cmd = command_for(variant, flags, run_dir)
    print(f"[bench] {variant['name']}: {shlex.join(cmd)}", flush=True)
    launched = time.time()
    env["WORKSHOP_LAUNCHED_AT"] = repr(launched)  # workshop/startup.py counts the run's start-up from here
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.done.set()
        sampler.join()
    if "script" in variant:  # the one run folder common.sh made inside run_dir
        run_dir = next((p.parent for p in run_dir.glob("*/manifest.json")), run_dir)
    return summarise(variant, run_dir, launched, code, sampler)


def summarise(variant, run_dir: Path, launched: float, code: int, sampler: Sampler) -> dict:
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    speed = manifest.get("speed", {})
    peaks = manifest.get("peak_memory", {})
    events = read_log_history(run_dir / "log_history.jsonl")
    events = events.data if isinstance(events, Parsed) else []
    evals = [e["eval_loss"] for e in events if "eval_loss" in e]
    smi = read_gpu_csv(run_dir / "gpu_memory.csv")  # only when the loggers ran (a `script` variant)
    smi_peak = float(smi.data["memory_used_mib"].max()) if isinstance(smi, Parsed) else None
    first_step = speed.get("first_step_at")
    return {
        "variant": variant["name"], "exit": code, "status": manifest.get("status", "no manifest"),
        "rows_per_s": speed.get("rows_per_s"), "real_tokens_per_s": speed.get("real_tokens_per_s"),
        "mfu": speed.get("mfu"), "step_s": speed.get("step_s"), "timed_steps": speed.get("timed_steps"),
        "startup_s": round(first_step - launched, 1) if first_step else None,
        "gpu_peak_nvml_50ms_mib": round(sampler.gpu_peak_mib, 0) if sampler.gpu_peak_mib else None,
        "gpu_peak_nvidia_smi_mib": smi_peak,
        "torch_max_reserved_mib": peaks.get("cuda_max_reserved_mib"),
        "host_peak_rss_mib": round(sampler.rss_peak_mib, 0),
        "final_eval_loss": evals[-1] if evals else None,
        "loss_curve": [[e.get("step"), e["loss"]] for e in events if "loss" in e],  # [optimizer step, loss]
        "tokens_seen": speed.get("tokens_seen"),
        "device": speed.get("device"),
        "startup_phases_s": manifest.get("startup", {}).get("phases_s"),  # workshop/startup.py
    }


def expand(spec: dict) -> list[dict]:
    """Variants with their full flag lists: `adds` builds on the variant before it, `flags` stands alone."""
    variants, previous = [], []
    for variant in spec["variant"]:
        own = variant.get("flags")
        flags = list(own) if own is not None else previous + list(variant.get("adds", []))
        variants.append({**variant, "all_flags": flags})
        previous = flags
    return variants


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="TOML file of variants")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: the file's `steps`)")
    parser.add_argument("--repeats", type=int, help="runs of each variant (default: the file's `repeats`, else 1)")
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--common", default=None, help="replaces the file's common flags (one string)")
    parser.add_argument("--out", type=Path, default=None, help="results prefix (default: bench-results/<spec>)")
    parser.add_argument("--work", type=Path, default=Path("bench-runs"), help="where run folders go")
    args = parser.parse_args(argv)

    spec = tomllib.loads(args.spec.read_text())
    variants = expand(spec)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",")]
        unknown = set(wanted) - {v["name"] for v in variants}
        if unknown:
            parser.error(f"unknown variant(s) {sorted(unknown)}; the file has {[v['name'] for v in variants]}")
        variants = [v for v in variants if v["name"] in wanted]
    common = shlex.split(args.common) if args.common is not None else list(spec.get("common", []))
    steps = args.steps or spec.get("steps", 30)
    fixed = [*common, "--logging-steps", str(spec.get("logging_steps", 5)),
             "--save-strategy", "no", "--no-save-final", "--no-score-answers"]  # timed runs write no model
    out = args.out or Path("bench-results") / args.spec.stem
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")

    rows = []
    for repeat in range(args.repeats or spec.get("repeats", 1)):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            slug = "".join(c if c.isalnum() else "_" for c in variant["name"])
            run_dir = (args.work / f"{stamp}-{slug}-r{repeat}").resolve()
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            flags = [*fixed, "--max-steps", str(variant.get("steps", steps)), *variant["all_flags"]]
            row = run_variant(variant, flags, run_dir, run_dir.parent / f"{run_dir.name}.log")
            row.update(repeat=repeat, steps=int(variant.get("steps", steps)), flags=shlex.join(variant["all_flags"]),
                       versus=variant.get("versus"))
            print("[bench] " + json.dumps(row), flush=True)
            rows.append(row)
            write_results(out, rows, argv, spec, steps)
    print(table(rows).to_markdown(index=False))
    print(f"[bench] results: {out}.md, {out}.json")


COLUMNS = ["variant", "status", "real_tokens_per_s", "x_first_row", "mfu", "rows_per_s", "step_s", "startup_s",
           "gpu_peak_nvml_50ms_mib", "gpu_peak_nvidia_smi_mib", "torch_max_reserved_mib", "host_peak_rss_mib",
           "final_eval_loss", "tokens_seen"]


def table(rows) -> pd.DataFrame:
    """One row per variant: medians over repeats; x_first_row = real tokens/s relative to the first variant."""
    frame = pd.DataFrame(rows)
    numeric = [c for c in COLUMNS[2:] if c in frame and c != "x_first_row"]
    medians = frame.groupby("variant", sort=False)[numeric].median()
    result = frame.groupby("variant", sort=False)[["status"]].first().join(medians).reset_index()
    result["x_first_row"] = (result["real_tokens_per_s"] / result["real_tokens_per_s"].iloc[0]).round(2)
    extra = []
    if frame["repeat"].nunique() > 1:
        spread = frame.groupby("variant", sort=False)["real_tokens_per_s"].agg(["min", "max"])
        result["tokens_per_s_range"] = [f"{spread.loc[v, 'min']:.1f}-{spread.loc[v, 'max']:.1f}"
                                        for v in result["variant"]]
        extra.append("tokens_per_s_range")
    if frame.get("versus") is not None and frame["versus"].notna().any():
        result["x_versus"] = [paired_ratio(frame, v) for v in result["variant"]]
        extra.append("x_versus")
    return result[COLUMNS[:4] + extra + COLUMNS[4:]]


def paired_ratio(frame, variant) -> str | None:
    """`variant`'s real tokens/s over its `versus` variant's, repeat by repeat: "median (min-max, n) vs NAME"."""
    versus = frame.loc[frame["variant"] == variant, "versus"].iloc[0]
    if not isinstance(versus, str):
        return None
    by_repeat = frame.pivot_table(index="repeat", columns="variant", values="real_tokens_per_s")
    if variant not in by_repeat or versus not in by_repeat:
        return f"n/a ({versus} has no tokens/s)"
    ratio = (by_repeat[variant] / by_repeat[versus]).dropna()
    return f"{ratio.median():.3f} ({ratio.min():.3f}-{ratio.max():.3f}, n={len(ratio)}) vs {versus}"


def startup_table(rows) -> pd.DataFrame | None:
    """Seconds per start-up phase (workshop/startup.py), one row per variant: medians over repeats."""
    phases = [{"variant": r["variant"], **r["startup_phases_s"]} for r in rows if r.get("startup_phases_s")]
    if not phases:
        return None
    frame = pd.DataFrame(phases)
    return frame.groupby("variant", sort=False).median().reset_index()


def write_results(out: Path, rows, argv, spec, steps):
    info = {"command": shlex.join([sys.executable, "benchmarks/bench.py", *(argv or sys.argv[1:])]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": next((r["device"] for r in rows if r.get("device")), None) or nvml_device_name(),
            "versions": versions(), "steps": steps, "spec": spec}
    Path(f"{out}.json").write_text(json.dumps({"info": info, "runs": rows}, indent=2, default=str) + "\n")
    summary = table(rows)
    # A variant's own `steps` wins over the file's (the packed logger pair runs 80 steps, not 40).
    run_steps = " or ".join(str(n) for n in sorted({r["steps"] for r in rows}))
    text = [f"# {spec.get('title', out.name)}", "",
            f"- command: `{info['command']}`", f"- date: {info['date']}", f"- device: {info['device']}",
            f"- versions: {json.dumps(info['versions'])}",
            f"- {run_steps} optimizer steps per run; "
            f"medians over {summary.shape[0] and len(rows) // summary.shape[0]} repeat(s); raw rows in "
            f"{Path(out).name}.json", "", summary.to_markdown(index=False), ""]
    phases = startup_table(rows)
    if phases is not None:
        text += ["## Start-up, seconds per phase (workshop/startup.py: each phase ends at the mark it names)", "",
                 phases.to_markdown(index=False), ""]
    if spec.get("notes"):
        text += ["", spec["notes"].strip(), ""]
    Path(f"{out}.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
