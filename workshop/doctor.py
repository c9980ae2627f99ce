"""Is this node ready for class? One table of checks, each OK, WARN or FAIL with the one command that fixes it.

    python -m workshop.doctor [--lesson NAME] [--model SIZE] [--nvme-path DIR] [--json]
    sbatch slurm/doctor.slurm [same flags]          # the same on a compute node, where the jobs will run

Run it on the login node and through sbatch before class. It checks Python, torch's CUDA build against the driver,
the GPUs and their memory against the preflight's figures for every config of the lesson, DeepSpeed and which of
its ops are prebuilt (else each compiles inside the first job that uses it), libaio and the NVMe path's measured
GB/s, the offline cache, /dev/shm, host memory, the memory cgroup and SLURM's --mem, SLURM itself, the Jupyter
kernel and free disk. Exit status 0 when nothing fails, 1 otherwise, 2 for a bad flag.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version

from workshop.doctor_checks import (Check, cache_checks, disk_check, gpu_memory_check, measured_build_seconds,
                                    memory_checks, nvme_check, preflight_needs, shm_check)
from workshop.errors import WorkshopError

KERNEL = "deepspeed-workshop"
KERNEL_FIX = (f"python -m ipykernel install --sys-prefix --name {KERNEL} --display-name "
              f"'Python ({KERNEL})'   (for a JupyterHub: --user instead of --sys-prefix)")


def python_torch_check(gpus) -> Check:
    import torch

    built = torch.version.cuda
    driver = _driver_cuda()
    detail = f"Python {platform.python_version()}, torch {torch.__version__}"
    if sys.version_info < (3, 10):
        return Check("Python and torch", "FAIL", detail + ": the workshop needs Python 3.10+", "bash scripts/setup.sh")
    if driver and not built:
        return Check("Python and torch", "FAIL", detail + f" is a CPU build but this node has a CUDA {driver} "
                     "driver", "WORKSHOP_TORCH='torch --index-url https://download.pytorch.org/whl/cu126' "
                     "bash scripts/setup.sh")
    if driver and _version(built) > _version(driver):
        return Check("Python and torch", "FAIL", detail + f" was built for CUDA {built}, newer than the driver's "
                     f"CUDA {driver}", f"install a torch built for CUDA <= {driver} (pip install torch "
                     "--index-url https://download.pytorch.org/whl/cu<NN>)")
    if built and not gpus:
        return Check("Python and torch", "WARN", detail + f" (CUDA {built}), but no GPU is visible here (a login "
                     "node?)", "sbatch slurm/doctor.slurm")
    return Check("Python and torch", "OK", detail + (f", CUDA {built}, driver's CUDA {driver}" if built
                                                     else ", CPU build, no GPU driver"))


def _version(text):
    return tuple(int(part) for part in text.split(".")[:2])


def _driver_cuda():
    """The CUDA version the driver supports ("12.4"), or None without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        found = pynvml.nvmlSystemGetCudaDriverVersion()
        return f"{found // 1000}.{found % 1000 // 10}"
    except Exception:  # no library, no driver, no device: all mean "no GPU driver here"
        return None


def visible_gpus():
    """[(name, GiB)] of the GPUs torch sees."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / 2**30)
            for i in range(torch.cuda.device_count())]


def deepspeed_checks(ops, nvme) -> list:
    """DeepSpeed's version, each op the lesson loads (prebuilt into DeepSpeed, built in the workshop's folder, or
    to be compiled inside a job), and libaio where NVMe offload is used."""
    try:
        ds_version = version("deepspeed")
    except PackageNotFoundError:
        return [Check("DeepSpeed", "FAIL", "not installed", "pip install -e .")]
    from workshop.deepspeed.config import quiet_deepspeed
    from workshop.deepspeed.ops import extensions_dir, is_prebuilt

    with quiet_deepspeed():
        missing = [op for op in ops if not is_prebuilt(op)]
    folder = extensions_dir()
    checks = [Check("DeepSpeed", "OK", f"{ds_version}")]
    measured = measured_build_seconds()
    cost = (f"{measured[0]:.0f} s in {measured[1]}, the longest build measured under logs/" if measured
            else "no build measured under logs/ yet")
    if missing:
        checks.append(Check("DeepSpeed ops", "WARN", f"{', '.join(missing)} not prebuilt: each compiles inside the "
                            f"first job that loads it ({cost}); build folder {folder}",
                            f"python -m workshop.prebuild_ops --ops {' '.join(missing)}"))
    else:
        checks.append(Check("DeepSpeed ops", "OK", f"{', '.join(ops)} prebuilt (DeepSpeed's wheel or {folder})"))
    if nvme:
        from workshop.deepspeed.preflight import check_async_io

        lacking = check_async_io()
        checks.append(Check("libaio (NVMe offload)", "FAIL", lacking, "apt-get install libaio-dev (or "
                            "CFLAGS=-I<prefix>/include LDFLAGS=-L<prefix>/lib)") if lacking
                      else Check("libaio (NVMe offload)", "OK", "DeepSpeed's async_io op can be built here"))
    return checks


def slurm_check() -> Check:
    if not shutil.which("sinfo"):
        return Check("SLURM", "WARN", "no sinfo here: a workstation (every .slurm file also runs with bash)",
                     "run the doctor on the cluster's login node")
    try:
        found = subprocess.run(["sinfo", "-h", "-o", "%P %a %G"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        found = None
    if found is None or found.returncode != 0:
        why = "timed out" if found is None else (found.stderr.strip().splitlines() or ["failed"])[-1]
        return Check("SLURM", "WARN", f"sinfo: {why}", "scontrol ping   (is slurmctld up?)")
    partitions = "; ".join(" ".join(line.split()) for line in found.stdout.splitlines()[:6])
    return Check("SLURM", "OK", f"partitions (name state GRES): {partitions or 'none listed'}")


def kernel_check() -> Check:
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return Check("Jupyter kernel", "FAIL", "jupyter_core is not installed", "pip install -e .[notebook]")
    for folder in jupyter_path("kernels"):
        spec = os.path.join(folder, KERNEL, "kernel.json")
        if os.path.isfile(spec):
            python = json.load(open(spec))["argv"][0]
            if not shutil.which(python):
                return Check("Jupyter kernel", "FAIL", f"{spec} starts {python}, which is gone", KERNEL_FIX)
            return Check("Jupyter kernel", "OK", f"{KERNEL} in {os.path.dirname(spec)}")
    return Check("Jupyter kernel", "FAIL", f"{KERNEL} is not registered (the notebooks ask for it by name)",
                 KERNEL_FIX)


def run_checks(args) -> list:
    from workshop.deepspeed.config import load_ds_config, needed_ops
    from workshop.deepspeed.estimate import param_counts
    from workshop.lessons import BY_NAME, LESSONS

    lessons = [BY_NAME[args.lesson]] if args.lesson else list(LESSONS)
    gpus = visible_gpus()
    checks = [python_torch_check(gpus), Check("GPUs", "OK" if gpus else "WARN", ", ".join(
        f"{name} {gib:.0f} GiB" for name, gib in gpus) or "none visible", "" if gpus else "sbatch slurm/doctor.slurm")]
    with tempfile.TemporaryDirectory() as scratch:
        needs, failed = preflight_needs(lessons, args.model, gpus[0][1] if gpus else None, scratch)
    processes = max(1, len(gpus), *(2 for lesson in lessons if lesson.multi_process))
    checks += [failed] if failed else [gpu_memory_check(needs, gpus), *memory_checks(needs)]
    configs = {config for lesson in lessons for config in lesson.configs}
    from workshop.config import REPO

    paths = [REPO / "deepspeed_single_gpu" / "configs" / f"{c}.json" for c in sorted(configs)]
    try:
        ops = sorted({op for path in paths for op in needed_ops(load_ds_config(path))})
    except ImportError as err:  # the configs are read with DeepSpeed's own models
        ops = []
        checks.append(Check("DeepSpeed", "FAIL", f"cannot be imported ({err})", "pip install -e ."))
    nvme = "async_io" in ops
    if ops:
        checks += deepspeed_checks(ops, nvme)
    if nvme or args.nvme_path:
        checks.append(nvme_check(args.nvme_path or "/tmp/workshop_nvme", gpus, args.nvme_test_mib))
    checks += cache_checks(args.model or "bloom-560m")
    checks += [shm_check(processes), slurm_check(), kernel_check()]
    try:
        checks.append(disk_check(args.output_dir, param_counts(args.model or "bloom-560m")[0]))
    except (WorkshopError, OSError) as err:  # a Hub id neither cached nor reachable: the cache check said so
        checks.append(Check("disk for checkpoints", "WARN", f"no parameter count to size a checkpoint ({err})",
                            f"python -m workshop.prefetch --model {args.model}"))
    return checks


def render(checks) -> str:
    from tabulate import tabulate

    rows = [[c.name, c.status, c.detail, c.fix] for c in checks]
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    return (tabulate(rows, headers=["check", "status", "detail", "fix"], tablefmt="github") +
            f"\n\n{failed} failed, {warned} warning(s), {len(checks) - failed - warned} OK")


def main(argv=None):
    from workshop.lessons import BY_NAME

    parser = argparse.ArgumentParser(prog="python -m workshop.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--lesson", choices=list(BY_NAME), help="check for one lesson (default: every lesson)")
    parser.add_argument("--model", help="the model the class will train (default: each lesson's, bloom-560m)")
    parser.add_argument("--nvme-path", help="NVMe offload's folder to test (default: the config's /tmp/workshop_nvme)")
    parser.add_argument("--nvme-test-mib", type=int, default=256, help="MiB the NVMe test writes (default 256)")
    parser.add_argument("--output-dir", default="outputs", help="where checkpoints go (default: outputs)")
    parser.add_argument("--json", action="store_true", help="the checks as a JSON list")
    args = parser.parse_args(argv)
    try:
        checks = run_checks(args)
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps([c.record() for c in checks], indent=1) if args.json else render(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
