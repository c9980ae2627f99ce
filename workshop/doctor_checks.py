"""The doctor's checks of what a lesson needs from this node: memory (the preflight's figures for every config of
the lesson against MemTotal, the memory cgroup and SLURM's --mem), the NVMe path, the offline cache, /dev/shm and
free disk. Each check returns Check rows; workshop/doctor.py runs them and prints the table."""
import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 2**30
NVME_GBS_PER_GPU = 3.0  # what NVMe offload wants per GPU (ZeRO-Infinity's paper: a few GB/s per GPU)
SHM_PER_PROCESS_MIB = 66  # DeepSpeed's CPU all-reduce buffer per process (README, "When a job fails")


@dataclass
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""

    def record(self) -> dict:
        return asdict(self)


def lesson_runs(lessons):
    """(lesson name, config name or None, DeepSpeed JSON path or None, processes) for every config of the lessons,
    as each lesson runs it."""
    from workshop.config import REPO

    runs = []
    for lesson in lessons:
        processes = 2 if lesson.multi_process else 1
        if not lesson.configs or lesson.name == "precision_and_checkpointing":  # runs without DeepSpeed too
            runs.append((lesson.name, None, None, processes))
        runs += [(lesson.name, name, REPO / "deepspeed_single_gpu" / "configs" / f"{name}.json", processes)
                 for name in lesson.configs]
    return runs


def preflight_needs(lessons, model, gpu_gib, scratch):
    """[(lesson, config, record, script)] of the preflight's record (gpu_gib, host_gib, ...) for every config, or a
    Check saying why there is no estimate. The preflight's own lines are kept out of the doctor's table."""
    from workshop.config import parse_args
    from workshop.deepspeed.config import load_ds_config
    from workshop.deepspeed.preflight import preflight

    needs = []
    for lesson, config, path, processes in lesson_runs(lessons):
        argv = ["--model", model] if model else []
        cfg = parse_args(argv + (["--ds-config", str(path)] if path else []), lesson=lesson)
        try:
            ds_config = load_ds_config(path) if path else None
        except ImportError as err:  # read with DeepSpeed's own config models
            return [], Check("memory estimate", "WARN", f"no preflight estimate without DeepSpeed ({err})",
                             "pip install -e .")
        for section in (ds_config or {}).get("zero_optimization", {}).values():
            if isinstance(section, dict) and section.get("device") == "nvme":
                section["nvme_path"] = scratch  # the real path is the NVMe check's: here only the figures
        with contextlib.redirect_stdout(io.StringIO()):
            record, _ = preflight(cfg, ds_config, gpu_gib, gpus=processes,
                                  precision="fp16" if gpu_gib else "fp32")
        if record is None:
            return [], Check("memory estimate", "WARN", f"no preflight estimate for {cfg.model}",
                             f"python -m workshop.prefetch --model {cfg.model}")
        needs.append((lesson, config or "(no DeepSpeed)", record, _script(lesson, config)))
    return needs, None


def _script(lesson, config):
    """The slurm/ script that runs this config, for the fix's sbatch line."""
    from workshop.lessons import BY_NAME

    scripts = BY_NAME[lesson].scripts
    return f"slurm/{config}.slurm" if f"slurm/{config}.slurm" in scripts else scripts[0]


def _largest(needs, key):
    lesson, config, record, script = max(needs, key=lambda need: need[2][key])
    return record[key], f"{lesson}/{config}", script


def memory_checks(needs) -> list:
    """MemTotal, the memory cgroup and SLURM's --mem, each against the largest host need of the lesson's configs."""
    from workshop.deepspeed.preflight import _cgroup_limit_bytes

    need, which, script = _largest(needs, "host_gib")
    mem = f"{max(1, round(need + 0.5))}G"
    limits = [("host memory (MemTotal)", _memtotal_gib(), "use a node with more memory, or a smaller --model"),
              ("memory cgroup", (_cgroup_limit_bytes() or 0) / GIB or None, f"sbatch --mem={mem} {script}"),
              ("SLURM --mem", int(os.environ["SLURM_MEM_PER_NODE"]) / 1024 if os.environ.get("SLURM_MEM_PER_NODE")
               else None, f"sbatch --mem={mem} {script}")]
    checks = []
    for name, limit, fix in limits:
        if limit is None:
            checks.append(Check(name, "OK", f"no limit set; the lesson needs about {need:.1f} GiB ({which})"))
        elif limit < need:
            checks.append(Check(name, "FAIL", f"{limit:.1f} GiB < about {need:.1f} GiB that {which} needs "
                                "(preflight)", fix))
        else:
            checks.append(Check(name, "OK", f"{limit:.1f} GiB >= about {need:.1f} GiB ({which}, preflight)"))
    return checks


def _memtotal_gib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return None


def gpu_memory_check(needs, gpus) -> Check:
    need, which, _ = _largest(needs, "gpu_gib")
    if not gpus:
        return Check("GPU memory", "WARN", f"no GPU to compare with: {which} needs about {need:.1f} GiB per GPU",
                     "sbatch slurm/doctor.slurm")
    smallest = min(total for _, total in gpus)
    if smallest < need:
        return Check("GPU memory", "WARN", f"{smallest:.1f} GiB < about {need:.1f} GiB that {which} needs per "
                     "GPU: expect out-of-memory in that config (lesson 2 shows it on purpose)",
                     "pick a bigger card (sbatch --gres=gpu:<type>:1) or a smaller --model")
    return Check("GPU memory", "OK", f"{smallest:.1f} GiB per GPU >= about {need:.1f} GiB ({which}, preflight)")


def nvme_check(path, gpus, test_mib) -> Check:
    """A writable --nvme-path and its sequential write/read GB/s: a bounded test (test_mib, at most ~2 s each way),
    the page cache dropped for the file before it is read back."""
    fix = "sbatch slurm/stage3_offload_nvme.slurm --nvme-path /local/nvme/$USER   (a writable local NVMe folder)"
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".doctor-", dir=path)
    except OSError as err:
        return Check("NVMe path", "FAIL", f"{path} is not writable ({type(err).__name__}: {err.strerror})", fix)
    block = os.urandom(2**20)
    try:
        write_s, written = _timed(lambda: os.write(handle, block), test_mib, lambda: os.fsync(handle))
        os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(handle, 0, os.SEEK_SET)
        read_s, read = _timed(lambda: len(os.read(handle, 2**20)), written // 2**20, lambda: None)
    finally:
        os.close(handle)
        os.unlink(name)
    write_gbs, read_gbs = written / write_s / 1e9, read / read_s / 1e9
    want = NVME_GBS_PER_GPU * max(1, len(gpus))
    detail = (f"{path}: wrote {written / 2**20:.0f} MiB at {write_gbs:.2f} GB/s, read at {read_gbs:.2f} GB/s "
              f"(one short run); NVMe offload wants about {want:g} GB/s")
    slow = min(write_gbs, read_gbs) < want
    return Check("NVMe path", "WARN" if slow else "OK", detail + (": expect slow stage3_offload_nvme steps" if slow
                                                                  else ""), fix if slow else "")


def _timed(step, mib, finish, limit_s=2.0):
    start, done = time.perf_counter(), 0
    for _ in range(max(1, mib)):
        done += step()
        if time.perf_counter() - start > limit_s:
            break
    finish()
    return max(time.perf_counter() - start, 1e-9), done


def cache_checks(model) -> list:
    """The chosen model's config and tokenizer, and SQuAD, in the offline cache (what a compute node reads)."""
    from huggingface_hub import try_to_load_from_cache
    from workshop.model import is_tiny
    from workshop.names import resolve_model

    model_id = resolve_model(model)
    if is_tiny(model_id) or Path(model_id).is_dir():
        return [Check("offline cache", "OK", f"{model_id} and its data are embedded (or a local folder): nothing "
                      "to download")]
    missing = [f for f in ("config.json", "tokenizer_config.json") if not isinstance(
        try_to_load_from_cache(model_id, f), str)]
    checks = [Check("model in cache", "FAIL", f"{model_id}: {', '.join(missing)} not in the Hugging Face cache "
                    f"({_hf_home()}); a compute node without internet cannot load it",
                    f"python -m workshop.prefetch --model {model_id}") if missing
              else Check("model in cache", "OK", f"{model_id} (config, tokenizer) in {_hf_home()}")]
    squad = _squad_cached()
    checks.append(Check("SQuAD in cache", "OK", f"in {squad}") if squad else Check(
        "SQuAD in cache", "FAIL", f"the squad dataset is not in {_hf_home()}",
        f"python -m workshop.prefetch --model {model_id}"))
    return checks


def _hf_home():
    return os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")


def _squad_cached():
    datasets = Path(os.environ.get("HF_DATASETS_CACHE") or Path(_hf_home()) / "datasets")
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(_hf_home()) / "hub")
    found = [*datasets.glob("*squad*"), *hub.glob("datasets--*squad")] if datasets.parent.exists() else []
    return found[0] if found else None


def shm_check(processes) -> Check:
    usage = shutil.disk_usage("/dev/shm")
    free_mib, need = usage.free / 2**20, SHM_PER_PROCESS_MIB * processes
    fix = "docker/podman run --shm-size=8g, or mount -o remount,size=8G /dev/shm"
    if free_mib < need:
        return Check("/dev/shm", "FAIL", f"{free_mib:.0f} MiB free < {need} MiB DeepSpeed's CPU buffers need", fix)
    if usage.total < GIB:  # a container's 64 MiB default: NCCL and DataLoader workers use /dev/shm too
        return Check("/dev/shm", "WARN", f"{usage.total / 2**20:.0f} MiB in all (NCCL and DataLoader workers use "
                     "it too)", fix)
    return Check("/dev/shm", "OK", f"{free_mib / 1024:.1f} GiB free")


def disk_check(folder, params) -> Check:
    """Free disk under outputs/ for a checkpoint: fp32 weights and Adam's two moments (16 bytes a parameter)."""
    where = Path(folder)
    while not where.exists():
        where = where.parent
    free, need = shutil.disk_usage(where).free / GIB, params * 16 / GIB
    if free < need:
        return Check("disk for checkpoints", "FAIL", f"{free:.1f} GiB free under {where} < about {need:.1f} GiB "
                     "a checkpoint takes", "--output-dir on a file system with more space (or --save-strategy no)")
    size = f"{need:.1f} GiB" if need >= 1 else f"{need * 1024:.0f} MiB"
    return Check("disk for checkpoints", "OK", f"{free:.1f} GiB free under {where} (a checkpoint: about {size})")


def measured_build_seconds(logs="logs", newest=200):
    """(seconds, run) of the longest DeepSpeed op window that compiled, among the newest run folders under logs/
    (the manifests' excluded_windows, workshop/windows.py), or None where no run here compiled one."""
    import json

    manifests = sorted(Path(logs).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)[-newest:]
    found = []
    for path in manifests:
        try:
            windows = json.loads(path.read_text()).get("excluded_windows") or []
        except (OSError, ValueError, AttributeError):
            continue
        found += [(w["seconds"], path.parent.name) for w in windows if isinstance(w, dict) and
                  w.get("what") == "deepspeed_ops" and w.get("compiled") and isinstance(w.get("seconds"), (int, float))]
    return max(found, default=None)

