"""The preflight's estimate beside what each run measured, as a markdown table (for docs/results READMEs).

    python tools/estimate_vs_measured.py docs/results/zero_single_gpu_h200-2026-12-01/runs

GPU measured: nvidia-smi's peak (gpu_memory.csv; CUDA context and allocator slack included) and PyTorch's
max reserved (manifest). Host measured: psrecord's peak RSS of the launcher and its children (cpu_memory.log).
Error = (estimate - measured) / measured, against nvidia-smi's and psrecord's peaks, for completed runs only.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workshop.logparse import Parsed, read_manifest  # noqa: E402
from workshop.monitor_logs import read_gpu_csv, read_psrecord  # noqa: E402


def peak(parsed, column):
    return parsed.data[column].max() if isinstance(parsed, Parsed) and len(parsed.data) else None


def error(estimate, measured):
    return "" if not estimate or not measured else f"{100 * (estimate - measured) / measured:+.0f}%"


def row(run_dir: Path) -> dict:
    m = read_manifest(run_dir)
    m = getattr(m, "data", m)
    pre = m.get("preflight") or {}
    gpu_mib = peak(read_gpu_csv(run_dir / "gpu_memory.csv"), "memory_used_mib")
    host_mib = peak(read_psrecord(run_dir / "cpu_memory.log"), "real_mib")
    reserved = (m.get("peak_memory") or {}).get("cuda_max_reserved_mib")
    gib = lambda mib: None if mib is None else mib / 1024  # noqa: E731
    cap = m.get("gpu_memory_limit")
    argv = " ".join(m.get("argv") or [])
    micro = m["settings"]["per_device_train_batch_size"]
    speed = m.get("speed") or {}
    why = m.get("error") or ""
    done = m["status"] == "completed"  # a refused or failed run measured something else than the estimate
    return {
        "model": m["model"].removeprefix("bigscience/"),
        "config": m["config_name"] + (f" (cap {cap['gib']:g} GiB = {cap['emulates']})" if cap else "")
        + (f", micro-batch {micro}" if micro != 4 else ""),
        "status": m["status"],
        "steps": f"{m.get('steps_done')} of {m.get('steps_planned'):,}" if m.get("steps_planned") else "-",
        "s/step": f"{speed['step_s']:.2f}" if speed.get("step_s") else "-",
        "GPU est GiB": pre.get("gpu_gib"),
        "GPU nvidia-smi GiB": gib(gpu_mib),
        "torch reserved GiB": gib(reserved),
        "GPU err": error(pre.get("gpu_gib"), gib(gpu_mib)) if done else "-",
        "host est GiB": pre.get("host_gib"),
        "host psrecord GiB": gib(host_mib),
        "host err": error(pre.get("host_gib"), gib(host_mib)) if done else "-",
        "note": why.split(". ")[0][:160] if m["status"] != "completed" else "",
        "argv": argv,
    }


def main(argv=None):
    root = Path((argv or sys.argv[1:])[0])
    rows = [row(d) for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()]
    order = {"bloom-560m": 0, "bloom-1b7": 1, "bloom-3b": 2, "bloom-7b1": 3}
    rows.sort(key=lambda r: (order.get(r["model"], 9), r["config"]))
    columns = [c for c in rows[0] if c != "argv"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        cells = [f"{r[c]:.1f}" if isinstance(r[c], float) else ("-" if r[c] is None else str(r[c])) for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
