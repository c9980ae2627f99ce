"""Where the processes of a multi-GPU run go: GPU count, node names, DeepSpeed hostfile, a free port.

    python -m workshop.launch gpus [--want N]        GPUs to use on this node (fails if N > visible GPUs)
    python -m workshop.launch nodes                   the allocation's node names, one a line
    python -m workshop.launch hostfile [--slots G]    a DeepSpeed hostfile for the SLURM allocation
    python -m workshop.launch check-hostfile FILE     every node in FILE belongs to the allocation
    python -m workshop.launch port                    a TCP port nothing listens on, below the ephemeral range

The slurm/multi_*.slurm scripts call these; each failure is one line on stderr and exit status 2.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys

from workshop.errors import WorkshopError


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact node list to names: 'node[01-04]', 'a[1-2],b3', 'gpu[1,3-4]', 'x,y'.

    A plain-Python stand-in for `scontrol show hostnames`, for machines without SLURM's tools.
    Zero padding is kept ('node[08-10]' gives node08 node09 node10).
    """
    names = []
    # top-level commas separate entries; commas inside [...] separate ranges
    for prefix, ranges, suffix in re.findall(r"([^,\[\]]*)(?:\[([^\]]*)\])?([^,\[\]]*)", nodelist):
        if not (prefix or ranges or suffix):
            continue
        if not ranges:
            names.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not first.isdigit() or (last and not last.isdigit()):
                raise WorkshopError(f"cannot read node list {nodelist!r} (range {part!r})")
            width = len(first)
            for number in range(int(first), int(last or first) + 1):
                names.append(f"{prefix}{number:0{width}d}{suffix}")
    if not names:
        raise WorkshopError(f"empty node list {nodelist!r}")
    return names


def allocation_nodes(nodelist: str | None = None) -> list[str]:
    """The allocation's node names: `scontrol show hostnames` where SLURM is installed, else expand_nodelist."""
    nodelist = nodelist or os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return [socket.gethostname().split(".")[0]]  # off-cluster: this machine only
    if shutil.which("scontrol"):
        shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if shown.returncode == 0 and shown.stdout.split():
            return shown.stdout.split()
    return expand_nodelist(nodelist)


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES where set (SLURM sets it), else nvidia-smi's count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if listed.returncode == 0:
            return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())
    return 0


def gpus_per_node(want: int | None = None) -> int:
    """How many processes per node: `want` (GPUS=N), else SLURM's GPUs on this node, else the visible GPUs, else 1.

    Asking for more GPUs than are visible is an error. With no GPU at all (a laptop, CI) the run goes on with
    `want` CPU processes, so the multi-process recipe can be tried without GPUs.
    """
    visible = visible_gpus()
    slurm = os.environ.get("SLURM_GPUS_ON_NODE")
    count = want or (int(slurm) if slurm and slurm.isdigit() else 0) or visible or 1
    if count < 1:
        raise WorkshopError(f"GPUS must be at least 1 (got {count})")
    if 0 < visible < count:
        raise WorkshopError(f"{count} GPUs requested but only {visible} visible on {socket.gethostname()} "
                            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return count


def hostfile(nodes: list[str], slots: int) -> str:
    """DeepSpeed's hostfile: one `name slots=G` line per node."""
    return "".join(f"{node} slots={slots}\n" for node in nodes)


def check_hostfile(text: str, allocation: list[str]) -> list[str]:
    """The node names of a hostfile, after checking each is in the allocation (a typo fails here, not in ssh)."""
    nodes = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(\S+)\s+slots=(\d+)", line)
        if not match:
            raise WorkshopError(f"hostfile line {number}: expected 'NODE slots=N', got {line!r}")
        if match.group(1) not in allocation:
            raise WorkshopError(f"hostfile line {number}: node {match.group(1)!r} is not in this allocation "
                                f"({', '.join(allocation)})")
        nodes.append(match.group(1))
    if not nodes:
        raise WorkshopError("hostfile names no node")
    return nodes


LOWEST_PORT = 20000  # above the well-known and most registered service ports


def ephemeral_ports(path="/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default 32768-60999)."""
    try:
        low, high = (int(n) for n in open(path).read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(seed: int | None = None) -> int:
    """A TCP port nothing listens on now, for a rendezvous (MASTER_PORT) that binds it seconds later.

    A port the kernel hands out (bind to 0) lies in the ephemeral range, where any outgoing connection made in
    between (srun's, NCCL's) can take it first: the TCPStore then fails with EADDRINUSE. So the port comes from
    below that range, as torchrun's 29500 does, starting at a place derived from `seed` (the SLURM job id, else
    this process), so jobs sharing a node start apart, and the first one free to bind wins."""
    low = LOWEST_PORT
    high = max(ephemeral_ports()[0], low + 1000)  # a machine whose range starts low still gets 1000 candidates
    span = high - low
    if seed is None:
        seed = int(os.environ.get("SLURM_JOB_ID") or os.getpid())
    for step in range(span):
        port = low + (seed + step * 7919) % span  # a prime stride: neighbouring seeds do not probe the same ports
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise WorkshopError(f"no free TCP port between {low} and {high}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.launch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gpus = sub.add_parser("gpus", help="GPUs (processes) per node")
    gpus.add_argument("--want", type=int, default=None, help="requested count (default: SLURM's, else visible)")
    made = sub.add_parser("hostfile", help="print a DeepSpeed hostfile for the allocation")
    made.add_argument("--nodelist", default=None, help="default: $SLURM_JOB_NODELIST")
    made.add_argument("--slots", type=int, default=None, help="GPUs per node (default: as `gpus`)")
    checked = sub.add_parser("check-hostfile", help="check that a hostfile names only allocated nodes")
    checked.add_argument("file")
    checked.add_argument("--nodelist", default=None)
    listed = sub.add_parser("nodes", help="print the allocation's node names, one a line")
    listed.add_argument("--nodelist", default=None, help="default: $SLURM_JOB_NODELIST")
    sub.add_parser("port", help="print a free TCP port")
    args = parser.parse_args(argv)
    try:
        if args.command == "gpus":
            print(gpus_per_node(args.want))
        elif args.command == "nodes":
            print("\n".join(allocation_nodes(args.nodelist)))
        elif args.command == "hostfile":
            print(hostfile(allocation_nodes(args.nodelist), args.slots or gpus_per_node()), end="")
        elif args.command == "check-hostfile":
            with open(args.file) as f:
                print(" ".join(check_hostfile(f.read(), allocation_nodes(args.nodelist))))
        else:
            print(free_port())
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
