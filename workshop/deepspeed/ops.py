"""Build DeepSpeed's C++/CUDA ops once, before training, into a shared folder.

DeepSpeed compiles an op (fused_adam, cpu_adam, ...) the first time a job uses it: 40-70 s of a
GPU allocation spent compiling. Building them once on the node kind you train on, into a folder
every job reuses, takes that out of the jobs:

    python -m workshop.prebuild_ops                          # the ops this machine's lessons need
    python -m workshop.prebuild_ops --ops cpu_adam --dir /scratch/$USER/torch_extensions

Jobs find the builds through TORCH_EXTENSIONS_DIR; `setup_build_env()` sets it (and fixes
TORCH_CUDA_ARCH_LIST) for the training entry. CPU ops are compiled with -march=native, so build
on the same CPU kind that runs the jobs.
"""

import argparse
import copy
import fcntl
import functools
import hashlib
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from workshop.deepspeed.compiler import compiler, remove_precompiled_headers
from workshop.deepspeed.config import quiet_deepspeed

def extensions_dir() -> Path:
    """The folder DeepSpeed's JIT builds go to (and are loaded from)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):  # the user's (or a parent process's) choice wins
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    base = os.environ.get("WORKSHOP_EXTENSIONS_DIR") or Path.home() / ".cache/workshop/torch_extensions"
    # torch only hashes sources and flags, so a build made against another torch, Python or CUDA
    # would be loaded as if it were current; one subfolder per combination keeps them apart. The
    # environment's path is in the key too: two venvs compile with different include paths, and sharing
    # one folder made each rebuild what the other had just built.
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    torch_version = torch.__version__.split("+")[0]
    env = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
    return Path(base) / f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch_version}_{cuda}_{env}"


def fix_arch_list(env=os.environ):
    """Rewrite TORCH_CUDA_ARCH_LIST into the form DeepSpeed's builder parses; returns the new value.

    DeepSpeed 0.19 reads each entry as int(major).int(minor), so the arch-specific suffixes newer
    CUDA images set (9.0a, 10.0f) fail with "invalid literal for int() with base 10: '0a'".
    "9.0a" -> "9.0"; "+PTX" is understood and kept.
    """
    value = env.get("TORCH_CUDA_ARCH_LIST")
    if value is None:
        return None
    fixed = []
    for entry in re.split(r"[;\s]+", value.strip()):
        match = re.fullmatch(r"(\d+)\.(\d+)[a-zA-Z]*(\+PTX)?", entry)
        if not match:
            if entry:
                fixed.append(entry)  # not ours to judge: leave it for torch to report
            continue
        entry = f"{match[1]}.{match[2]}{match[3] or ''}"
        if entry not in fixed:
            fixed.append(entry)
    env["TORCH_CUDA_ARCH_LIST"] = ";".join(fixed)
    return env["TORCH_CUDA_ARCH_LIST"]


def pin_ninja(env=os.environ):
    """Put this interpreter's bin folder first on PATH when it holds a `ninja` (pip's, a DeepSpeed dependency).

    torch builds with the first ninja on PATH, and a machine often has two: the venv's and the system's
    (/usr/bin/ninja, 1.11 beside pip's 1.13 here). Each reads the other's build log as foreign and compiles every
    object again, so an op built by a process with one PATH was rebuilt by the next process with the other (CI
    compiled fused_adam and the shm collectives three times). With the one ninja, a built op is a load."""
    bin_dir = str(Path(sys.executable).parent)
    if (Path(bin_dir) / "ninja").exists():
        rest = [part for part in env.get("PATH", "").split(os.pathsep) if part and part != bin_dir]
        env["PATH"] = os.pathsep.join([bin_dir, *rest])


def setup_build_env(env=os.environ) -> Path:
    """Point DeepSpeed's JIT builds at the shared folder, build them with one ninja and the workshop's compiler
    script (workshop.deepspeed.compiler), and fix the arch list (call before deepspeed builds)."""
    path = extensions_dir()
    env["TORCH_EXTENSIONS_DIR"] = str(path)
    fix_arch_list(env)
    pin_ninja(env)
    if "CXX" not in env:  # a compiler the user chose stays theirs
        env["CXX"] = str(compiler(path))
    cache_cpu_info(path)
    return path


def cache_cpu_info(folder: Path, described_in=Path("/proc/cpuinfo")):
    """Make py-cpuinfo's get_cpu_info() ask once per CPU kind, not once per call, in this process and the next.

    DeepSpeed asks it twice for every op it loads (-march and the SIMD width) and again in DeepSpeedCPUAdam, and
    each answer comes from a new Python process: 1.1 CPU-s a call here, 4.6 CPU-s for an offload run's three ops
    (2 cores, 2026-12-06). The answer is kept beside the builds under a hash of /proc/cpuinfo (its clock lines
    aside), so another CPU kind sharing the folder asks for its own; without /proc/cpuinfo it is kept in memory."""
    try:
        import cpuinfo
    except ImportError:  # DeepSpeed falls back to lscpu then
        return
    if getattr(cpuinfo.get_cpu_info, "workshop_cached", False):
        return
    ask = cpuinfo.get_cpu_info

    @functools.cache
    def answer():
        try:
            lines = described_in.read_text().splitlines()
        except OSError:
            return ask()
        kind = hashlib.sha1("\n".join(line for line in lines if not line.startswith("cpu MHz")).encode())
        kept = folder / f".cpuinfo-{kind.hexdigest()[:12]}.json"
        try:
            return json.loads(kept.read_text())
        except (OSError, ValueError):
            info = ask()  # lists, not tuples: py-cpuinfo's own answer went through JSON too
        try:  # whole, for the other processes that may read it now
            folder.mkdir(parents=True, exist_ok=True)
            draft = folder / f".cpuinfo.{os.getpid()}"
            draft.write_text(json.dumps(info))
            os.replace(draft, kept)
        except OSError:  # a folder we may not write to: the answer is still kept in memory
            pass
        return info

    def get_cpu_info():
        return copy.deepcopy(answer())  # a new dict each time, as py-cpuinfo gives

    get_cpu_info.workshop_cached = True
    cpuinfo.get_cpu_info = get_cpu_info


def default_ops():
    """The ops the workshop's configs need on this machine's DeepSpeed accelerator.

    The Trainer's AdamW becomes DeepSpeed's FusedAdam (fused_adam) without offload and
    DeepSpeedCPUAdam (cpu_adam) with optimizer offload. On the CPU accelerator DeepSpeed's
    communication backend also JIT-builds its shared-memory collectives (deepspeed_shm_comm)
    inside deepspeed.init_distributed().
    """
    from deepspeed.accelerator import get_accelerator

    ops = ["fused_adam", "cpu_adam"]
    if get_accelerator().device_name() == "cpu" and sys.platform == "linux":
        ops.append("deepspeed_shm_comm")
    return ops


@contextmanager
def build_lock(op_name):
    """Hold one op's build folder for this process alone, and clear the marker a killed build left there.

    torch marks a build in progress with a `lock` file in the op's folder and waits for it to go, forever, on
    every later load; a build killed mid-way (a job's time limit, Ctrl-C, the OOM killer) leaves it, and each
    later job hung at start-up. An flock dies with its holder, so no other workshop load holds that `lock` now; but
    DeepSpeed loads its shared-memory collectives itself (init_distributed, in a one-process run) and takes torch's
    `lock` without this flock, so a `lock` is only removed once nothing in the folder has changed for a while."""
    root = extensions_dir()  # TORCH_EXTENSIONS_DIR when set
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{op_name}.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if this process dies
        stale = root / op_name / "lock"
        if stale.exists() and not released_by_a_live_load(stale):
            print(f"[workshop] removed {stale}: a build of {op_name} was killed before it finished; "
                  "building it again", flush=True)
            stale.unlink(missing_ok=True)
        yield


def released_by_a_live_load(lock: Path) -> bool:
    """Wait while `lock` is there and its folder changed in the last WORKSHOP_STALE_LOCK_S seconds (default 120: a
    live load checks the build in a second; a compile writes an object file every minute or two): True if its holder
    removed it, False if it stayed put that long, as a killed build's does. Removing a live load's `lock` made that
    load fail at its end (FileNotFoundError), and its job with it."""
    quiet_s = float(os.environ.get("WORKSHOP_STALE_LOCK_S", "120"))
    while True:
        try:
            newest = max(path.stat().st_mtime for path in lock.parent.iterdir())
        except (FileNotFoundError, ValueError):  # a file went while we looked: look again
            newest = time.time()
        if not lock.exists():
            return True
        if time.time() - newest > quiet_s:
            return False
        time.sleep(0.2)


def is_prebuilt(op_name) -> bool:
    """Whether loading this op is a load, not a compile: built into DeepSpeed's wheel (DS_BUILD_*), or a build in
    the workshop's folder (extensions_dir)."""
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get(op_name):
        return True
    return any((extensions_dir() / op_name).glob("*.so"))


def build(op_name):
    """JIT-build (or load the cached build of) one op; returns the seconds it took."""
    from deepspeed.ops.op_builder.all_ops import ALL_OPS  # the builders of the current accelerator

    if op_name not in ALL_OPS:
        raise SystemExit(f"unknown op {op_name!r}; this accelerator has: {', '.join(sorted(ALL_OPS))}")
    start = time.perf_counter()
    with build_lock(op_name):
        ALL_OPS[op_name].load(verbose=False)
        remove_precompiled_headers(extensions_dir() / op_name)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", help="op names (default: what this machine's lessons need)")
    parser.add_argument("--dir", help="build folder (default: $TORCH_EXTENSIONS_DIR, else "
                        "$WORKSHOP_EXTENSIONS_DIR/<python_torch_cuda>, else ~/.cache/workshop/torch_extensions/...)")
    args = parser.parse_args(argv)

    if args.dir:
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(args.dir).resolve())
    path = setup_build_env()
    with quiet_deepspeed():  # its "Setting accelerator to CPU" warning: we say it below
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator().device_name()
    ops = args.ops or default_ops()
    if torch.version.cuda and accelerator == "cpu":
        print("warning: CUDA torch but no GPU visible, so these are the CPU builds; "
              "build on a GPU node for GPU jobs", file=sys.stderr)
    print(f"building {', '.join(ops)} for DeepSpeed's {accelerator} accelerator into {path}", flush=True)
    for op_name in ops:
        print(f"  {op_name} ...", end=" ", flush=True)
        seconds = build(op_name)
        print(f"ready in {seconds:.1f} s", flush=True)
    print(f"jobs reuse these builds with: export TORCH_EXTENSIONS_DIR={path}")


if __name__ == "__main__":
    main()
