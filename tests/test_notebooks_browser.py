"""Every lesson's notebook in JupyterLab, driven by headless Chromium (tests/lab_browser.py): Run > Run All Cells
on the runs tests/test_notebooks.py executed the notebook on (made once per session: no training again here), then
what the page shows is checked as a reader sees it. A module of its own so that pytest-xdist can run it beside
tests/test_notebooks.py."""

import hashlib
import time

import nbformat
import pytest

import lab_browser
from test_notebooks import ABSOLUTE_PATH, IDENTIFIER, NOTEBOOKS, executed_lesson, lesson_params, outputs
from test_notebooks import python3_kernel  # noqa: F401 (a fixture)
from workshop.fill_tables import build_tables, find_runs
from workshop.reference import find as find_references


@pytest.fixture(scope="module")
def lessons(tmp_path_factory, python3_kernel):  # noqa: F811 (the fixture, asked for by name)
    return lambda name: executed_lesson(tmp_path_factory, name, python3_kernel)


def run_in_jupyterlab(name, logs, tmp_path):
    """Open notebooks/<name> in JupyterLab in headless Chromium, Run > Run All Cells, and return what the page
    shows; a screenshot of the page is kept in test-artifacts/. The committed notebook must stay as it was."""
    lab_browser.require_browser()
    before = hashlib.sha256((NOTEBOOKS / name).read_bytes()).hexdigest()
    stem = name.removesuffix(".ipynb")
    with lab_browser.lab_server(NOTEBOOKS, {"WORKSHOP_LOGS": str(logs)}, tmp_path) as (base, token, log):
        try:
            with lab_browser.chromium() as driver:
                lab_browser.open_notebook(driver, base, token, name)
                try:
                    lab_browser.run_all_cells(driver, timeout=600)
                except AssertionError as stuck:  # CI keeps no screenshot for us: say what the page and server said
                    shown = lab_browser.page_report(driver)["text"][-2000:]
                    raise AssertionError(f"{stuck}\n--- the page's outputs (end):\n{shown}\n--- jupyter lab's log "
                                         f"(end):\n{log.read_text()[-3000:]}") from None
                finally:
                    lab_browser.screenshot(driver, f"jupyterlab-{stem}")
                report = lab_browser.page_report(driver)
        finally:
            lab_browser.copy_log(log, f"jupyterlab-{stem}")
    assert hashlib.sha256((NOTEBOOKS / name).read_bytes()).hexdigest() == before, f"{name} was written to"
    tracebacks = [text for text in report["stderr"] if "Traceback" in text or "Error" in text]
    assert not tracebacks, tracebacks[0][-3000:]
    return report


@pytest.mark.browser
def test_a_failing_cell_ends_run_all_at_once_and_is_reported(tmp_path):
    """JupyterLab stops Run All at the first failing cell and leaves the later prompts empty: the browser tests must
    see that at once and show the traceback, not wait out their timeout for prompts that never fill."""
    lab_browser.require_browser()
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
                                         nbformat.v4.new_code_cell("print('never runs')")])
    nb.metadata.kernelspec = {"name": "deepspeed-workshop", "display_name": "Python (deepspeed-workshop)",
                              "language": "python"}
    nbformat.write(nb, folder / "broken.ipynb")
    with lab_browser.lab_server(folder, {}, tmp_path) as (base, token, log):
        with lab_browser.chromium() as driver:
            lab_browser.open_notebook(driver, base, token, "broken.ipynb")
            started = time.monotonic()
            state = lab_browser.run_all_cells(driver, timeout=300)
            took = time.monotonic() - started
            report = lab_browser.page_report(driver)
    assert state["errors"] == 1 and state["prompts"][0] == "[1]:" and state["prompts"][2] == "[ ]:", state
    assert any("broken on purpose" in text for text in report["stderr"])
    assert took < 120, f"Run All took {took:.0f} s: it waited for the timeout, not for the failed cell"


def check_reference_shown(report, lesson):
    references = find_references(lesson)
    if not references:
        assert f"No GPU reference for {lesson} in docs/results/ yet" in report["text"]  # said, not left blank
        return
    reference = references[0]
    assert f"GPU reference: {reference.device}, {reference.date}" in report["text"]
    assert reference.command in report["text"]
    assert any(reference.label in table for table in report["tables"]), "no reference row in any table"


def check_baseline_page(report, logs):
    (run_dir,) = find_runs([logs])[0]
    (reference, *_) = find_references("baseline")
    shown = [table for table in report["tables"] if "Train Loss (Final)" in table or "Peak GPU Memory Usage" in table]
    assert len(shown) == 4, f"both Objective tables, yours and beside the reference: {shown}"
    assert sum(reference.label in table for table in shown) == 2  # the reference is a column of the two beside
    assert run_dir.name in report["text"]  # the notes say which run filled the cells


def check_zero_page(report, logs):
    for run in find_runs([logs])[0]:
        assert run.name in report["text"], f"no note names {run.name}, whose values fill the cells"
    # the references' Part 2 rows: the H100's nine bloom-560m configs, the H200's bloom-7b1 ones
    assert "Stage 3 + offload (no pin)" in "\n".join(report["tables"])
    assert "Bloom 7B1 (random init), 10000 subset" in "\n".join(report["tables"])


PAGE_CHECKS = {"baseline": check_baseline_page, "deepspeed_single_gpu": check_zero_page}  # beyond every lesson's


@pytest.mark.parametrize("lesson", lesson_params(browser=True))
def test_a_lessons_notebook_in_jupyterlab(lesson, lessons, tmp_path):
    """Run All in JupyterLab on the runs the nbclient test used (no training again): each table's title shown,
    nothing wider than the notebook panel, no stderr box, no absolute path, headers in words, every figure drawn
    and the GPU reference (or the line saying there is none)."""
    nb, logs, _ = lessons(lesson.name)
    report = run_in_jupyterlab(lesson.notebook, logs, tmp_path)
    for key, df in build_tables([logs], tables=[lesson]).items():
        title = df.attrs["title"].replace("`", "")  # Markdown's code marks render as code, not text
        assert title in report["headings"], f"table title {title!r} not shown"
    assert not report["wide"], f"wider than the notebook panel: {report['wide'][:5]}"
    assert not report["stderr"], f"a stderr box: {report['stderr'][0][:1000]}"
    assert not ABSOLUTE_PATH.search(report["text"]) and str(logs) not in report["text"]
    for headers in report["headers"]:
        assert not [h for h in headers if IDENTIFIER.fullmatch(h)], f"headers not in words: {headers}"
    pngs = sum("image/png" in o.get("data", {}) for o in outputs(nb))
    drawn = [image for image in report["images"] if image["png"] and image["width"] > 100 and image["height"] > 100]
    assert len(drawn) == pngs, f"expected the {pngs} figures nbclient drew, got {report['images']}"
    check_reference_shown(report, lesson.name)
    PAGE_CHECKS.get(lesson.name, lambda *_: None)(report, logs)
