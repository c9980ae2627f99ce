"""What the plain baseline imports: a real tiny run in its own process, then its sys.modules.

`python -X importtime -c "import workshop.train"` (docs/results/startup_imports-2026-12-06/) puts nearly all of
the start-up's imports in torch and in what transformers imports itself (its model-loading and fp8 modules,
its dependency check, and peft, scikit-learn and scipy where installed); accelerate imports DeepSpeed when the
Trainer is built if it is installed. Those are theirs. These tests keep ours out: the modules that only other
runs use are imported where they are used.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# module -> the run that uses it; all installed in CI (liger_kernel only on GPU machines)
UNUSED_BY_BASELINE = {
    "evaluate": "--score-answers",
    "workshop.answer_quality": "--score-answers",
    "liger_kernel": "--fused-loss",
    "matplotlib": "the notebooks' plots",
    "workshop.report": "fill_tables and the notebooks",
    "workshop.lessons.baseline": "the notebooks' tables and plots",
}
RUN = """
import atexit, gc, json, sys
from workshop.entry import main  # what a lesson's train.py imports: light, the training comes in main()
found, sys.argv[1:] = sys.argv[1], sys.argv[2:]  # main() reads the command line, as a lesson's train.py does
atexit.register(lambda: json.dump({"modules": sorted(sys.modules), "frozen": gc.get_freeze_count(),
                                   "unfrozen": len(gc.get_objects()), "collecting": gc.isenabled(),
                                   "full_collections": gc.get_stats()[2]["collections"]}, open(found, "w")))
main()
"""


@pytest.fixture(scope="module")
def plain_baseline(tmp_path_factory):
    """A tiny plain baseline, started the way a lesson's train.py starts one: (its run folder, what its process held
    at exit)."""
    tmp_path = tmp_path_factory.mktemp("plain_baseline")
    found = tmp_path / "found.json"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(found), "--profile", "tiny", "--max-steps", "1", "--save-strategy",
         "no", "--no-save-final", "--eval-strategy", "no", "--no-score-answers", "--run-dir", str(tmp_path / "run"),
         "--output-dir", str(tmp_path / "out")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "run", json.loads(found.read_text())


def test_a_training_process_spares_its_imports_and_its_exit_the_garbage_collector(plain_baseline):
    """workshop.entry.one_training_process: torch's and transformers' million objects are made with the collector
    off and frozen, and so is everything at the end, which makes a tiny training 2-4 CPU-s cheaper (of 7-15). Full
    collections: 8 in a 12-step baseline and 6 more in a ZeRO-2 run without it; 1-2 with it."""
    _, found = plain_baseline
    assert found["collecting"] and found["full_collections"] <= 3, found["full_collections"]
    assert found["frozen"] > 100 * found["unfrozen"], (found["frozen"], found["unfrozen"])  # no walk left at exit


def test_a_callers_process_keeps_its_garbage_collector(monkeypatch):
    """main(argv) in a process that goes on (a test's, a notebook's) neither freezes nor stops its collector."""
    import gc

    from workshop import entry

    monkeypatch.setattr(entry, "run_training", lambda cfg: None)
    frozen = gc.get_freeze_count()  # conftest.py froze what collecting the tests made
    entry.main(["--profile", "tiny"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_the_plain_baseline_imports_no_module_only_other_runs_use(plain_baseline):
    run_dir, found = plain_baseline
    modules = set(found["modules"])
    assert {"workshop.train", "transformers.trainer", "workshop.data"} <= modules  # it did run the lesson
    imported = {name: why for name, why in UNUSED_BY_BASELINE.items() if name in modules}
    assert not imported, f"the plain baseline imported modules only other runs use: {imported}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["versions"]["deepspeed"]


PREPARE = """
import json, sys
from workshop.config import parse_args
from workshop.deepspeed.preflight import preflight
from workshop.runlog import RunLog
cfg = parse_args(sys.argv[2:])
run = RunLog(cfg.run_dir, {"config_name": "imports"})  # records the versions, DeepSpeed's too
preflight(cfg, None)
before = "deepspeed" in sys.modules
from workshop.deepspeed.setup import load_deepspeed_config
preflight(cfg, load_deepspeed_config(cfg) or {"zero_optimization": {"stage": 2}})
json.dump({"before": before, "after": "deepspeed" in sys.modules, "versions": run.manifest["versions"]},
          open(sys.argv[1], "w"))
"""


def test_deepspeed_is_imported_only_by_what_uses_it(tmp_path):
    """Our code up to the Trainer (arguments, the run log, the preflight of a run without ZeRO 2-3) imports no
    DeepSpeed, which costs 1.6-2.0 s on the CI machine: a plain PyTorch loop (benchmarks/reference_loop.py) that
    builds no Trainer never pays it. A ZeRO-2 preflight does import it (DeepSpeed's own estimator)."""
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, "-c", PREPARE, str(out), "--profile", "tiny", "--run-dir", str(tmp_path / "run")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["before"] is False, "DeepSpeed was imported before a ZeRO 2-3 config asked for it"
    assert found["after"] is True  # the check sees an import
    assert found["versions"]["deepspeed"]  # read from the installed package's metadata


REPORT = """
import json, sys
from workshop.fill_tables import main
main(sys.argv[2:])
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""


def test_fill_tables_imports_neither_torch_nor_transformers(tmp_path):
    """Reporting reads files: a fill_tables command over every lesson's tables stays about a second (lesson 7's
    table once imported the training's FSDP code, torch and transformers with it: 6.1 s a command)."""
    modules_file = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", REPORT, str(modules_file), str(REPO / "tests/data/logs/run_complete")],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    modules = set(json.loads(modules_file.read_text()))
    assert "workshop.lessons.fsdp" in modules and "workshop.fill_tables" in modules  # every lesson's tables loaded
    assert not {"torch", "transformers"} & modules, {"torch", "transformers"} & modules


RUN_TOOLS = """
import contextlib, io, json, sys
from workshop import answer_quality, export, merge
said = {}
for tool in (answer_quality, export, merge):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = tool.main(["--run-dir", sys.argv[2]])
        except SystemExit as exit:
            code = exit.code
    said[tool.__name__] = [code, err.getvalue()]
json.dump({"said": said, "torch": "torch" in sys.modules}, open(sys.argv[1], "w"))
"""


def test_the_run_folder_tools_refuse_a_wrong_folder_before_torch_loads(tmp_path):
    """answer_quality, export and merge read the run folder first: a wrong one is an `error:` line in a tenth of a
    second, where importing torch and transformers first took 7.5 CPU-s (answer_quality, 2026-12-07)."""
    out = tmp_path / "out.json"
    result = subprocess.run([sys.executable, "-c", RUN_TOOLS, str(out), str(tmp_path / "no-such-run")],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    for tool, (code, stderr) in found["said"].items():
        assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, (tool, stderr)
    assert found["torch"] is False

