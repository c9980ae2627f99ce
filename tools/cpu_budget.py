"""Where a test run's CPU time went, from Linux process accounting: compiles, DeepSpeed's launcher, SLURM jobs, the
rest by process name. On the 2-core CI machine the suite keeps both cores busy, so its wall time is its CPU time
over two: this says what there is to cut.

    apt-get install acct; touch /tmp/pacct; accton /tmp/pacct    # every process that ends is recorded
    CI=true bash .ci/run
    accton off; python tools/cpu_budget.py /tmp/pacct

A process is counted when it ends, under the name of its last thread (a training that imported pyarrow often ends
as `jemalloc_bg_thd`, a distributed one as `pt_gloo_runloop`). Daemons still running (slurmd, munged) are not in it.
"""

import argparse
import collections
import subprocess

COMPILE = {"cc1plus", "cc1", "as", "ld", "collect2", "c++", "gcc", "ninja"}
TRAINING = {"python", "jemalloc_bg_thd", "pt_gloo_runloop", "pt_tcpstore_uv", "gloo_tcp_loop"}


def read(path):
    """{pid: (name, CPU seconds, parent pid)} from `dump-acct` (acct's v3 records: user and system time in ticks)."""
    processes = {}
    for line in subprocess.run(["dump-acct", path], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = [field.strip() for field in line.split("|")]
        processes[int(fields[9])] = (fields[0], (float(fields[2]) + float(fields[3])) / 100, int(fields[10]))
    return processes


def ancestors(processes, pid):
    seen = []
    while pid in processes and len(seen) < 64:
        seen.append(pid)
        pid = processes[pid][2]
    return seen


def category(processes, children, pid):
    name, _, parent = processes[pid]
    if name in COMPILE:
        return "compiling (C++ ops, torch.compile's kernels)"
    if any(processes[p][0] == "slurmstepd" for p in ancestors(processes, pid)[1:]):
        return "SLURM jobs (everything under slurmstepd)"
    # DeepSpeed's launcher is two Pythons, runner then launch, above the training processes: a python whose parent
    # or child is the other half, and whose other side is a training
    if name == "python":
        up = processes.get(parent, ("",))[0] == "python" and any(processes[c][0] in TRAINING for c in children[pid])
        down = [c for c in children[pid] if processes[c][0] == "python" and children[c]
                and all(processes[g][0] in TRAINING for g in children[c])]
        if (up or down) and processes[pid][1] < 5:  # a launcher imports torch and waits: seconds, not minutes
            return "DeepSpeed's launcher (runner and launch, above each DeepSpeed run)"
    if name in TRAINING:
        return ("Python, 5 CPU-s or more (trainings, pytest's workers, kernels, servers)" if processes[pid][1] >= 5
                else "Python, under 5 CPU-s (tools, helpers, quick checks)")
    return f"other: {name}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pacct", help="the accounting file accton wrote")
    args = parser.parse_args(argv)
    processes = read(args.pacct)
    children = collections.defaultdict(list)
    for pid, (_, _, parent) in processes.items():
        children[parent].append(pid)
    seconds, count = collections.Counter(), collections.Counter()
    for pid, (_, cpu, _) in processes.items():
        where = category(processes, children, pid)
        seconds[where] += cpu
        count[where] += 1
    total = sum(seconds.values())
    print(f"{total:,.0f} CPU-s in {len(processes):,} processes")
    for where, cpu in seconds.most_common(15):
        print(f"{cpu:8,.0f} CPU-s {cpu / total:6.1%} {count[where]:6,} processes  {where}")


if __name__ == "__main__":
    main()
