"""The live view of a run: TensorBoard event files in `<run folder>/tensorboard/`, so that

    tensorboard --logdir logs/

shows every run's loss, learning rate, throughput and memory while it trains. The Trainer writes its own logs
there (`report_to="tensorboard"`); MemorySeries adds the loggers' series beside them at each log event: the
peak `memory.used` of each GPU (nvidia-smi's CSV, gpu_memory.csv) and the peak host RSS of the training and its
children (psrecord's cpu_memory.log) since the previous event. Only new lines of the two files are read each time.
Without the loggers (a plain `python -m workshop.train`) the host series is this process's own RSS.

Without the tensorboard package a run trains as before and says once that there is no live view.
"""
import contextlib
import os
from pathlib import Path

from transformers import TrainerCallback

NOT_INSTALLED = ("[workshop] notice: tensorboard is not installed, so this run writes no live view "
                 "(pip install tensorboard); everything else is logged as usual")


def report_to() -> str:
    """The Trainer's report_to: "tensorboard" where the package is installed, else "none" (said once)."""
    try:
        import tensorboard  # noqa: F401  (a missing or broken install alike: no live view)
    except ImportError:
        if os.environ.get("RANK", "0") == "0":  # once per run, not once per process
            print(NOT_INSTALLED, flush=True)
        return "none"
    return "tensorboard"


@contextlib.contextmanager
def logging_into(run_dir):
    """While the Trainer is built, point its TensorBoard callback (which reads TENSORBOARD_LOGGING_DIR as it is
    made) at the run folder, unless the user chose a folder; then put the variable back, so that neither a second
    training in this process nor a child process inherits this run's folder."""
    chosen = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = chosen or str(Path(run_dir) / "tensorboard")
    try:
        yield
    finally:
        if chosen is None:
            del os.environ["TENSORBOARD_LOGGING_DIR"]


class _Tail:
    """The complete lines a growing file gained since the last read (a half-written last line waits)."""

    def __init__(self, path):
        self.path, self.offset, self.rest = Path(path), 0, b""

    def lines(self):
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        *complete, self.rest = (self.rest + data).split(b"\n")
        return [line.decode(errors="replace") for line in complete]


def _gpu_peaks(lines) -> dict:
    """{GPU index: peak memory.used MiB} of nvidia-smi CSV rows (`timestamp, index, name, memory.used [MiB], ...`)."""
    peaks = {}
    for line in lines:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not fields[1].isdigit() or not fields[3].endswith("MiB"):
            continue  # the header, a `# no GPU` line, an [N/A]
        used = float(fields[3].removesuffix("MiB"))
        peaks[fields[1]] = max(used, peaks.get(fields[1], 0.0))
    return peaks


def _host_peak(lines):
    """Peak `Real (MB)` (MiB, as psrecord counts) of psrecord rows, or None."""
    values = []
    for line in lines:
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#"):
            try:
                values.append(float(fields[2]))
            except ValueError:
                continue
    return max(values, default=None)


class MemorySeries(TrainerCallback):
    """After the Trainer's TensorBoard callback has written a log event, the memory series beside it (rank 0)."""

    def __init__(self, run_dir, trainer):
        self.trainer, self.gpu = trainer, _Tail(Path(run_dir) / "gpu_memory.csv")
        self.host_log = Path(run_dir) / "cpu_memory.log"
        self.host = _Tail(self.host_log)

    def _writer(self):
        from transformers.integrations import TensorBoardCallback

        found = [c for c in self.trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)]
        return found[0].tb_writer if found else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        writer = self._writer() if state.is_world_process_zero else None
        if writer is None:
            return
        for index, peak in _gpu_peaks(self.gpu.lines()).items():
            writer.add_scalar(f"memory/gpu{index}_used_mib", peak, state.global_step)
        host = _host_peak(self.host.lines()) if self.host_log.exists() else _own_rss_mib()
        if host is not None:
            writer.add_scalar("memory/host_rss_mib", host, state.global_step)
        writer.flush()  # a live view: the events are on disk as soon as they happen


def _own_rss_mib():
    import psutil

    return psutil.Process().memory_info().rss / 2**20
