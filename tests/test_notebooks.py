"""Every lesson's notebook, executed for real (nbclient), and workshop.plots on real run folders.

The notebooks are parametrized by the registry (workshop.lessons.LESSONS). One tiny training of their own: the
baseline notebook, pointed at an empty WORKSHOP_LOGS, trains the tiny baseline itself through slurm/baseline.slurm
(the plots tests then read that run folder); the other notebooks read the runs other modules make once per session
with the notebooks' own flags (MADE_ONCE). tests/test_notebooks_browser.py opens each notebook in JupyterLab.
"""

import ast
import functools
import importlib
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from matplotlib.figure import Figure
from nbclient import NotebookClient

from workshop import plots
from workshop.config import RunConfig
from workshop.estimate import BLOOM_VOCAB
from workshop.fill_tables import build_tables, find_runs
from workshop.lessons import BY_NAME, LESSONS
from workshop.monitor_logs import read_gpu_csv, read_psrecord
from workshop.reference import find as find_references

from conftest import made_once

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
DATA = Path(__file__).parent / "data" / "logs"
GPU_RUN = DATA / "run_complete" / "baseline-1001"  # a real run on an H100: nvidia-smi samples of one GPU


def kernel_python():
    """The interpreter the python3 kernelspec starts (jupyter_client runs a bare `python` as sys.executable)."""
    argv = KernelSpecManager().get_kernel_spec("python3").argv
    bare = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return sys.executable if argv[0] in bare else argv[0]


@pytest.fixture(scope="module")
def python3_kernel():
    """A python3 kernel on this venv's interpreter; a clean venv without the kernelspec gets it installed."""
    try:
        found = kernel_python()
    except NoSuchKernel:
        found = None
    if found != sys.executable:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                       capture_output=True)
        found = kernel_python()
    assert found == sys.executable, f"kernel python3 starts {found}, not this venv's {sys.executable}"
    return "python3"


# Where a lesson's runs come from: the runs another module makes once per session with the notebook's own flags
# (module, function), so no training is run twice; a lesson not listed starts from an empty classroom and its
# notebook trains what it needs itself (every notebook's RUN_IF_MISSING). A new lesson is tested by being declared
# in workshop.lessons.LESSONS.
MADE_ONCE = {"deepspeed_single_gpu": ("test_fill_tables_zero", "part1_logs"),
             "deepspeed_multi_gpu": ("test_multi_gpu", "two_process_logs"),
             "make_it_fast": ("test_fast", "made_fast_logs"),
             "precision_and_checkpointing": ("test_precision_checkpointing", "lesson5_logs"),
             "lora": ("test_lora", "lora_logs"),
             "fsdp": ("test_fsdp", "walkthrough_runs")}
# The lessons whose notebook is executed on the walk-through's own runs: their notebooks make those same runs
READ_FROM_WALKTHROUGH = ("deepspeed_multi_gpu", "lora", "fsdp")
# What a lesson's output must not show: a machine's absolute paths, a Python identifier as a header or legend
# entry (stage2_offload, command_started), a number with more digits than the CLI prints.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|work|home|root|usr|var|opt|scratch)/")
IDENTIFIER = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
TOO_PRECISE = re.compile(r"(?<![\w.])\d+\.\d{5,}(?![\w.])")
PROBE = "# layout probe (tests/test_notebooks.py)"


def lesson_params(browser=False):
    """One parameter per lesson of the registry. Slow, every one: a notebook reads real runs, made for it (MADE_ONCE)
    or by it, and each lesson's runs take from half a minute to minutes on 2 cores."""
    marks = [pytest.mark.slow, *([pytest.mark.browser] if browser else [])]
    return [pytest.param(lesson, id=lesson.name, marks=marks) for lesson in LESSONS]


def figure_problems(fig):
    """Where a figure breaks the page's rules: text outside the figure, an annotation (a bar's label) outside its
    axes' frame, a legend entry or tick label that is an identifier. Runs inside the notebook's kernel (PROBE)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.text import Annotation, Text

    width, height = fig.get_size_inches() * fig.dpi
    renderer, problems = RendererAgg(width, height, fig.dpi), []
    fig.draw(renderer)  # lays it out as the notebook's PNG will be
    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels(which="both")}
    for text in fig.findobj(Text):  # tick labels are the layout engine's (and those out of view keep stale places)
        if not text.get_visible() or not text.get_text().strip() or id(text) in ticks:
            continue
        box = text.get_window_extent(renderer)
        if not (fig.bbox.padded(2).contains(*box.p0) and fig.bbox.padded(2).contains(*box.p1)):
            problems.append(f"outside the figure: {text.get_text()!r}")
        frame = text.axes.bbox.padded(0.5) if isinstance(text, Annotation) and text.axes else None  # not on it
        if frame is not None and not (frame.contains(*box.p0) and frame.contains(*box.p1)):
            problems.append(f"outside its axes' frame: {text.get_text()!r}")
    labels = [t.get_text() for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend
              for t in legend.get_texts()]
    labels += [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
    problems += [f"identifier in a legend or tick label: {label!r}" for label in labels if IDENTIFIER.search(label)]
    return problems


def probe_cells():
    """Two cells around a notebook: the first checks every figure the notebook draws as a PNG (figure_problems),
    the last prints what it found, on a line of its own."""
    import inspect

    first = (f"{PROBE}\nimport json, re\nfrom matplotlib.backend_bases import FigureCanvasBase\n"
             f"IDENTIFIER = re.compile({IDENTIFIER.pattern!r})\n{inspect.getsource(figure_problems)}\n"
             "_problems, _print = [], FigureCanvasBase.print_figure\n"
             "def _checked(canvas, *args, **kwargs):\n"
             "    _problems.extend(figure_problems(canvas.figure))\n"
             "    return _print(canvas, *args, **kwargs)\n"
             "FigureCanvasBase.print_figure = _checked")
    last = f"{PROBE}\nprint('figure problems: ' + json.dumps(_problems))"
    return nbformat.v4.new_code_cell(first), nbformat.v4.new_code_cell(last)


def execute(name, logs, kernel, probe=False):
    """Run notebooks/<name> from notebooks/ (as Jupyter would) with WORKSHOP_LOGS=logs; errors stay in outputs.
    With `probe`, every figure shown is checked (probe_cells) and nb.metadata["figure_problems"] lists what was
    found; the probe's cells are taken out again."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if probe:
        first, last = probe_cells()
        nb.cells = [first, *nb.cells, last]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORKSHOP_LOGS", str(logs))  # the kernel inherits this process's environment
        NotebookClient(nb, kernel_name=kernel, timeout=600, allow_errors=True,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    if probe:
        first, *nb.cells, last = nb.cells
        shown = "".join(o.get("text", "") for o in last.outputs) + "".join(
            o.get("evalue", "") for o in [*first.outputs, *last.outputs] if o.output_type == "error")
        found = re.search(r"^figure problems: (.*)$", shown, re.MULTILINE)
        assert found, f"the layout probe did not report: {shown[-2000:]}"
        nb.metadata["figure_problems"] = json.loads(found.group(1))
    return nb


def listing(logs):
    return sorted(path.name for path in logs.iterdir()) if logs.is_dir() else []


def executed_lesson(tmp_path_factory, name, kernel):
    """(its notebook executed with the layout probe, its logs dir, the run folders there before), made once per
    session: the nbclient tests here and the browser tests (tests/test_notebooks_browser.py, which xdist may run
    on another worker) share one execution and one set of runs."""
    def make(folder):
        if name in MADE_ONCE:
            module, function = MADE_ONCE[name]
            logs = getattr(importlib.import_module(module), function)(tmp_path_factory)
            logs = logs[0] if isinstance(logs, tuple) else logs
        else:
            logs = folder / "classroom" / "logs"
        before = listing(logs)
        nbformat.write(execute(BY_NAME[name].notebook, logs, kernel, probe=True), folder / "executed.ipynb")
        (folder / "facts.json").write_text(json.dumps({"logs": str(logs), "before": before}))

    folder = made_once(tmp_path_factory, f"notebook-{name}", make)
    facts = json.loads((folder / "facts.json").read_text())
    return nbformat.read(folder / "executed.ipynb", as_version=4), Path(facts["logs"]), facts["before"]


@pytest.fixture(scope="module")
def lessons(tmp_path_factory, python3_kernel):
    """lesson name -> executed_lesson(...) of it."""
    return functools.partial(executed_lesson, tmp_path_factory, kernel=python3_kernel)


@pytest.fixture(scope="module")
def baseline(lessons):
    """(executed notebook, logs dir): the notebook found no run under an absent logs dir and trained one."""
    return lessons("baseline")[:2]


@pytest.fixture(scope="module")
def run_dir(baseline):
    run_dirs, _ = find_runs([baseline[1]])
    assert len(run_dirs) == 1, f"expected the notebook's one run under {baseline[1]}, found {run_dirs}"
    return run_dirs[0]


def outputs(nb):
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def output_text(nb):
    parts = []
    for output in outputs(nb):
        parts.append(output.get("text", ""))
        for mime in ("text/plain", "text/markdown", "text/html"):
            parts.append(output.get("data", {}).get(mime, ""))
    return "\n".join(parts)


def markdown_tables(text):
    """(header cells, body rows of cells) of every Markdown table in `text`."""
    lines, tables = text.splitlines(), []
    for i, line in enumerate(lines[1:], 1):
        if re.fullmatch(r"\|(?::?-+:?\|)+", line.strip()):
            cells = lambda row: [cell.strip() for cell in row.strip().strip("|").split("|")]  # noqa: E731
            body = [cells(row) for row in itertools.takewhile(lambda row: row.startswith("|"), lines[i + 1:])]
            tables.append((cells(lines[i - 1]), body))
    return tables


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks, "no notebooks in notebooks/"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, cell in enumerate(nb.cells)
                 if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
        assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("name", READ_FROM_WALKTHROUGH)
def test_a_notebook_tested_on_the_walkthrough_makes_the_walkthroughs_runs(name):
    """Its RUN_ARGS are the walk-through's (scripts/run_workshop.sh's) arguments: the runs the notebook is tested on
    are the ones a student's notebook makes, with as many steps (notebook 07 made 4, the walk-through 10)."""
    lesson = BY_NAME[name]
    [line] = [line for cell in nbformat.read(NOTEBOOKS / lesson.notebook, as_version=4).cells
              for line in cell.source.splitlines() if line.startswith("RUN_ARGS = ")]
    run_args = ast.literal_eval(line.removeprefix("RUN_ARGS = ").split("  #")[0])
    assert run_args == ["--profile", lesson.walkthrough_profile, *lesson.walkthrough_args]
    assert MADE_ONCE[name][1] in ("two_process_logs", "lora_logs", "walkthrough_runs")


@pytest.mark.parametrize("lesson", lesson_params())
def test_a_lessons_notebook_executes_and_reads_like_the_lesson(lesson, lessons):
    """Every lesson's notebook runs without an error on real runs and shows only lesson tables: its tables' titles
    and answers, Markdown tables with headers in words and the CLI's rounding (no DataFrame dump), no stderr box,
    no absolute path, and figures whose labels sit inside their frames with legends in words."""
    nb, logs, before = lessons(lesson.name)
    errors = [f"{o.ename}: {o.evalue}\n" + "\n".join(o.traceback) for o in outputs(nb) if o.output_type == "error"]
    assert not errors, errors[0]
    if lesson.name in MADE_ONCE:
        assert listing(logs) == before  # the runs were there: the notebook trained none
    stderr = [o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"a stderr box: {stderr[0][:1000]}"
    dumps = [o.data["text/html"][:300] for o in outputs(nb) if "text/html" in o.get("data", {})]
    assert not dumps, f"a DataFrame's own display instead of a lesson table: {dumps[0]}"

    text = output_text(nb)
    for shown in (ABSOLUTE_PATH.search(text), str(REPO) in text, str(logs) in text):
        assert not shown, f"an absolute path is shown: {text[max(0, text.find('/') - 200):][:400]}"
    tables = build_tables([logs], tables=[lesson])
    assert tables, f"no table of {lesson.name} from its runs"
    for key, df in tables.items():
        assert df.attrs["title"] in text, f"table {key} not shown"
        for answer in df.attrs.get("answers", []):  # a numbered answer's dot is escaped: no list inside the list
            assert answer in text.replace("\\.", "."), f"answer not shown: {answer}"
    shown_tables = markdown_tables(text)
    assert len(shown_tables) >= len(tables)
    for headers, body in shown_tables:
        assert not [h for h in headers if IDENTIFIER.fullmatch(h)], f"headers not in words: {headers}"
        precise = [cell for row in body for cell in row if TOO_PRECISE.search(cell)]
        assert not precise, f"more digits than the CLI prints: {precise[:5]} in {headers}"
    assert nb.metadata["figure_problems"] == []
    assert any("image/png" in o.get("data", {}) for o in outputs(nb)), "the notebook drew no figure"


def test_baseline_notebook_trains_itself_and_shows_tables_and_plots(baseline, run_dir):
    nb, logs = baseline
    # It trained the tiny baseline itself, and its run folder ended up under WORKSHOP_LOGS, not the repo's logs/.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["profile"] == "tiny"
    assert not (REPO / "logs" / run_dir.name).exists()
    assert (logs.parent / "outputs" / "baseline").is_dir()  # checkpoints beside the tmp logs, not in the repo
    text = output_text(nb)
    assert "running:\n  bash slurm/baseline.slurm --profile tiny" in text and "training exited with status 0" in text
    assert "Train Loss (Final)" in text and "Peak GPU Memory Usage" in text  # the handout's row labels
    assert run_dir.name in text  # the notes say which run filled the cells
    pngs = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, f"expected the loss curve and the memory timeline, got {len(pngs)} images"


@pytest.mark.slow
def test_zero_notebook_shows_both_configs_answers_and_the_logits(lessons):
    nb, logs, _ = lessons("deepspeed_single_gpu")
    run_dirs, _ = find_runs([logs])
    manifests = [json.loads((run / "manifest.json").read_text()) for run in run_dirs]
    assert sorted(m["config_name"] for m in manifests) == ["stage2_offload", "stage2_offload_nopin"]
    text = output_text(nb)
    defaults = RunConfig()  # the logits cell computes its figure from the lesson's settings
    logits_gib = defaults.per_device_train_batch_size * defaults.max_length * BLOOM_VOCAB * 4 / 2**30
    assert f"{logits_gib:.2f} GiB per copy of the logits" in text
    assert "DeepSpeed's estimate of the model states: bloom-560m, one GPU" in text
    pngs = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, f"expected the memory timelines and the peak bars, got {len(pngs)} images"


@pytest.mark.slow
def test_multi_gpu_notebook_fills_its_tables_answers_and_figures(lessons):
    """Lesson 3's notebook on the real 2-process CPU runs tests/test_multi_gpu.py makes (made once, shared)."""
    nb, logs, _ = lessons("deepspeed_multi_gpu")
    text = output_text(nb)
    assert "constant as GPUs are added?" in text  # the quiz, answered (or said why not) from the numbers
    assert "No GPU reference for `deepspeed_multi_gpu`" in text  # none measured yet: said, not left blank
    zero = build_tables([logs], by_run=True)["deepspeed_multi_gpu_zero_2gpu"]
    for run in zero["run"]:
        assert run in text  # the notes name every run behind the cells
    # the per-run view is turned on its side: a column per configuration, in words, as wide as the handout's
    [turned] = [(headers, body) for headers, body in markdown_tables(text) if headers[0] == "Measurement"]
    assert len(turned[0]) == len(zero) + 1 and "Stage 1 + offload" in turned[0]
    pngs = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(pngs) == 3, f"expected throughput, memory per GPU and the ZeRO trade-off, got {len(pngs)} images"


@pytest.mark.slow
def test_make_it_fast_notebook_shows_its_runs_the_benchmarks_and_the_reference(lessons):
    nb, _, _ = lessons("make_it_fast")
    text = output_text(nb)
    assert "padding packed" in text and "torch.compile" in text  # your run and the committed H100 rows
    assert "GPU reference: NVIDIA H100 80GB HBM3" in text and "yours beside the GPU reference" in text
    headers = [h for h, _ in markdown_tables(text)]
    assert ["change", "real tokens/s", "MFU %", "s/step", "timed steps", "start-up s", "torch max reserved MiB",
            "final eval loss"] in headers  # the benchmark rows as a lesson table, MFU in percent
    assert re.search(r"\| Steps per Epoch +\| \d+ +\|", text)  # the seed's table: a count, as the CLI prints it
    # the H100 ladder, both H200 ladders and the H200's start-up breakdown
    assert sum("image/png" in o.get("data", {}) for o in outputs(nb)) >= 4


@pytest.mark.slow
def test_precision_notebook_shows_both_tables_and_the_reference(lessons):
    """Lesson 5's notebook on the real tiny runs tests/test_precision_checkpointing.py makes (made once, shared):
    both tables, their answers, the H200's tables under them and two figures."""
    nb, logs, _ = lessons("precision_and_checkpointing")
    text, tables = output_text(nb), build_tables([logs])
    (reference, *_) = find_references("precision_and_checkpointing")
    assert f"GPU reference: {reference.device}, {reference.date}" in text and reference.command in text
    for key in ("precision", "gradient_checkpointing"):
        assert f"{tables[key].attrs['title']}: yours beside the GPU reference" in text
    # the reference's ZeRO 3 fp32 run differs from its fp16 run in --fewer-syncs: the pair is refused, not compared
    assert (f"{reference.label}: bigscience/bloom-560m (random, 10000 samples), ZeRO 3: not compared: fp32 and fp16 "
            "differ in more than the compared setting (fewer_syncs)") in text
    assert f"{reference.label}: bigscience/bloom-1b7 (random, 10000 samples), plain Trainer, bf16: gradient " \
           "checkpointing saved" in text
    pngs = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(pngs) == 2, f"expected the precision bars and the checkpointing bars, got {len(pngs)} images"


def figures_module(lesson):
    """The module a lesson's figures live in: its tables module, or <name>_figures beside it where one exists."""
    import importlib.util

    figures = f"workshop.lessons.{lesson.name}_figures"
    return figures if importlib.util.find_spec(figures) else f"workshop.lessons.{lesson.name}"


@pytest.mark.parametrize("notebook, module", [(lesson.notebook, figures_module(lesson).rpartition(".")[2])
                                              for lesson in LESSONS], ids=[lesson.name for lesson in LESSONS])
def test_each_notebook_draws_from_its_own_lesson_module(notebook, module):
    """Changing a lesson's figures means reading that lesson's module: the notebook names it, and each figure it
    draws is defined there (not in another lesson's module, nor in the workshop.plots re-export)."""
    import importlib
    import re

    code = "".join("".join(cell.source) for cell in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells
                   if cell.cell_type == "code")
    assert f"from workshop.lessons import {module} as lesson" in code and "workshop import plots" not in code
    lesson = importlib.import_module(f"workshop.lessons.{module}")
    drawn = set(re.findall(r"\blesson\.(\w+)\(", code))
    assert drawn, "the notebook draws no figure of its lesson"
    for name in drawn:
        assert getattr(lesson, name).__module__ == lesson.__name__, name


# ---------------------------------------------------------------------------------------------- in JupyterLab

def test_setup_registered_the_workshop_kernel():
    """scripts/setup.sh registers the kernel the notebooks name, inside the venv, on the venv's interpreter."""
    spec = KernelSpecManager().get_kernel_spec("deepspeed-workshop")  # NoSuchKernel: scripts/setup.sh did not run
    assert spec.argv[0] == sys.executable and spec.display_name == "Python (deepspeed-workshop)"
    assert Path(spec.resource_dir).is_relative_to(sys.prefix)
    for path in NOTEBOOKS.glob("*.ipynb"):
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "deepspeed-workshop", path.name


def test_ensure_configs_without_permission_to_run(tmp_path, capsys):
    assert plots.ensure_configs(tmp_path / "logs", ["stage2_offload"], ["--profile", "tiny"], run=False) == []
    assert "bash slurm/stage2_offload.slurm --profile tiny" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


def test_ensure_run_without_permission_to_run(tmp_path, capsys):
    assert plots.ensure_run(tmp_path / "logs", "baseline", "slurm/baseline.slurm", ["--profile", "tiny"],
                            run=False) == []
    assert "bash slurm/baseline.slurm --profile tiny" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


# ---------------------------------------------------------------------------------------------- plots

PLOTS = [plots.loss_curves, plots.gpu_memory_timeline, plots.cpu_memory_timeline]


def data_lines(fig):
    return [line for ax in fig.axes for line in ax.lines if len(line.get_xdata())]


def legend_text(fig):
    return " ".join(text.get_text() for legend in fig.legends for text in legend.get_texts())


def check_figure(fig, tmp_path):
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "figure.png")  # renders every artist: bad text or data fails here, not in class
    return fig


@pytest.mark.parametrize("plot", PLOTS, ids=lambda f: f.__name__)
def test_plot_of_the_notebook_run(plot, run_dir, tmp_path):
    fig = check_figure(plot([run_dir]), tmp_path)
    assert data_lines(fig), f"{plot.__name__} drew no line for {run_dir}"
    assert run_dir.name in legend_text(fig)


def test_loss_curves_follow_log_history(run_dir, tmp_path):
    events = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    train, evals = data_lines(check_figure(plots.loss_curves(run_dir), tmp_path))
    assert list(train.get_xdata()) == [e["step"] for e in events if "loss" in e]
    assert list(train.get_ydata()) == [e["loss"] for e in events if "loss" in e]
    assert list(evals.get_ydata()) == [e["eval_loss"] for e in events if "eval_loss" in e]
    assert evals.get_color() == train.get_color()  # one colour per run


def test_memory_timeline_without_gpu_shows_host_rss_and_why(run_dir, tmp_path):
    first_line = (run_dir / "gpu_memory.csv").read_text().split("\n")[0]
    if not first_line.startswith("# no GPU:"):
        pytest.skip("this machine has a GPU: the no-GPU fallback is covered by test_plots_on_a_no_gpu_run")
    check_no_gpu_fallback(run_dir, first_line, tmp_path)


def check_no_gpu_fallback(run_dir, first_line, tmp_path):
    fig = check_figure(plots.gpu_memory_timeline([run_dir]), tmp_path)
    (line,) = data_lines(fig)
    rss = read_psrecord(run_dir / "cpu_memory.log").data
    assert list(line.get_ydata()) == list(rss["real_mib"])
    reason = first_line.partition(":")[2].strip()
    assert " ".join(reason.split()) in " ".join(fig.axes[0].get_title().split())


def copy_gpu_run(dest, name):
    """The real H100 run folder under another run id (the manifest's run_id names a run)."""
    run = shutil.copytree(GPU_RUN, dest / name)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "run_id": name}))
    return run


def test_plots_on_a_no_gpu_run(tmp_path):
    run = copy_gpu_run(tmp_path, "baseline-2002")
    (run / "gpu_memory.csv").write_text("# no GPU: CUDA_VISIBLE_DEVICES is empty\n")
    check_no_gpu_fallback(run, "# no GPU: CUDA_VISIBLE_DEVICES is empty", tmp_path)


def test_gpu_timeline_one_line_per_gpu(tmp_path):
    one = copy_gpu_run(tmp_path, "baseline-1001")
    two = copy_gpu_run(tmp_path, "baseline-1002")
    shutil.copy(DATA / "gpu" / "two_gpus_handwritten.csv", two / "gpu_memory.csv")
    fig = check_figure(plots.gpu_memory_timeline([tmp_path]), tmp_path)
    expected = []
    for run in (one, two):
        gpu = read_gpu_csv(run / "gpu_memory.csv").data
        expected += [list(samples["memory_used_mib"].dropna()) for _, samples in gpu.groupby("index")]
    assert sorted(list(line.get_ydata()) for line in data_lines(fig)) == sorted(expected)
    assert min(min(line.get_xdata()) for line in data_lines(fig)) == 0  # seconds since each run's first sample


def test_plots_on_damaged_runs_never_raise(tmp_path):
    # Cut a third into a line halfway down, as a run killed while writing leaves its files.
    cut = copy_gpu_run(tmp_path, "baseline-cut")
    for name in ("gpu_memory.csv", "log_history.jsonl", "cpu_memory.log"):
        lines = (cut / name).read_text().split("\n")
        half = len(lines) // 2
        (cut / name).write_text("\n".join(lines[:half] + [lines[half].strip()[: len(lines[half].strip()) // 3]]))
    # Nothing but a manifest; and every log file garbage.
    bare = copy_gpu_run(tmp_path, "baseline-bare")
    for path in bare.iterdir():
        if path.name != "manifest.json":
            path.unlink()
    junk = copy_gpu_run(tmp_path, "baseline-junk")
    for name in ("gpu_memory.csv", "cpu_memory.log", "log_history.jsonl"):
        (junk / name).write_bytes(b"\x00\xff not, a, log\n{{{\n")

    for plot in PLOTS:
        fig = check_figure(plot([tmp_path]), tmp_path)
        assert data_lines(fig), f"{plot.__name__}: the truncated run's first half should still be drawn"
        legend = legend_text(fig)
        assert "baseline-cut" in legend and "baseline-bare" in legend and "baseline-junk" in legend
        assert "(some lines unreadable)" in legend  # the truncated last line is said, not hidden


@pytest.mark.parametrize("plot", PLOTS, ids=lambda f: f.__name__)
def test_plots_with_no_runs(plot, tmp_path):
    fig = check_figure(plot([tmp_path / "nothing here"]), tmp_path)
    assert not data_lines(fig)
    assert any("no runs" in text.get_text() for text in fig.axes[0].texts)
