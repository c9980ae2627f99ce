"""The run folder's excluded windows: an op build (a new shared library in DeepSpeed's build folder) is told apart
from a load of a built op, and each window is recorded in the manifest as it closes."""
import json

from workshop.runlog import RunLog
from workshop.windows import excluded_window


def test_a_window_says_whether_an_op_was_compiled_in_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ops"))
    monkeypatch.delenv("RANK", raising=False)
    run = RunLog(tmp_path / "run", {})
    with excluded_window(run, "deepspeed_ops", "set-up"):
        (tmp_path / "ops" / "cpu_adam").mkdir(parents=True)
        (tmp_path / "ops" / "cpu_adam" / "cpu_adam.so").write_bytes(b"\0")  # what a compile leaves
    with excluded_window(run, "deepspeed_ops", "set-up"):
        pass  # a load of the built op
    windows = json.loads((tmp_path / "run" / "manifest.json").read_text())["excluded_windows"]
    assert [window["compiled"] for window in windows] == [True, False]
    assert all(w["start"] <= w["end"] and w["what"] == "deepspeed_ops" for w in windows)
    assert windows[0]["end"] <= windows[1]["start"]
