"""Writing the run folder's files so that neither a kill nor a full disk leaves half of one (docs/DESIGN.md, "The run
folder"): a JSON file is replaced whole, a log line is appended whole or not at all, and a write that fails for want
of space stops the training as `disk full` (exit 6): its logs are what the run is for.
"""
import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from workshop.errors import WorkshopError
from workshop.guards import RunStopped
from workshop.redact import redact

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota


def is_no_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in NO_SPACE


class RunFolderFull(RunStopped):
    """A write into the run folder failed for want of space."""

    def __init__(self, path: Path, err: OSError):
        folder = Path(path).parent
        free = shutil.disk_usage(folder).free / 2**20 if folder.is_dir() else float("nan")
        super().__init__("disk full", 6, f"the disk under the run folder {folder} is full ({free:.0f} MiB free) "
                         f"while writing {Path(path).name} ({err.strerror}): the training stopped, as it could no "
                         "longer keep its logs. Free space (or give --run-dir on a larger disk) and resubmit: it "
                         "resumes from the last whole checkpoint")


def write_json(path: Path, data: dict, last: bool = False):
    """Write atomically: a reader (or a kill) never sees half a file. Tokens never reach the disk. On a full disk
    the last whole file stays, with no empty .tmp beside it, and RunFolderFull is raised; with `last` (the run's
    end record) the old file is overwritten in place instead where the new text fits in its blocks."""
    data = redact(json.loads(json.dumps(data, default=str)))
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if not is_no_space(err):
            raise
        if last and overwrite_in_place(path, (json.dumps(data, separators=(",", ":")) + "\n").encode()):
            return  # unindented: a third smaller, so it fits where the indented text did
        raise RunFolderFull(path, err) from err
    os.replace(tmp, path)


def overwrite_in_place(path: Path, data: bytes) -> bool:
    """The atomic write needs room for a second copy, which a full disk lacks; the old file's own blocks hold the
    new text when it is no longer than they are. False (and the old file left as it was) when it is not."""
    try:
        if not path.is_file() or len(data) > path.stat().st_blocks * 512:
            return False
        with open(path, "r+b") as f:
            f.write(data)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False


def append_line(path: Path, line: str):
    """Append one line whole or not at all: a write cut short by a full disk is cut back, so no half line is left
    for the next attempt to append after (a reader would take it, and all after it, for damage)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start, data = os.fstat(fd).st_size, (line + "\n").encode()
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as err:
            os.ftruncate(fd, start)
            if is_no_space(err):
                raise RunFolderFull(path, err) from err
            raise
    finally:
        os.close(fd)


def hold_run_folder(run_dir: Path):
    """Lock `run_dir` for this process's life (the kernel lets go when it exits, however it exits), or raise
    WorkshopError when another training holds it: two runs in one folder would resume from each other's live
    checkpoints, write the same files and mix their log histories. Returns the open lock file (keep it)."""
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise WorkshopError(f"the run folder {run_dir} is in use by a running training ({owner}): give this run "
                            "another --run-dir, or wait for that one to end") from None
    except OSError as err:  # a file system without locks (some parallel file systems): run, unguarded
        print(f"[workshop] notice: cannot lock {run_dir} ({err.strerror}); two runs into it would not be "
              "refused", flush=True)
        return handle
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle
