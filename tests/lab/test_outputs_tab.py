"""The task drawer's Outputs tab in a real JupyterLab (Chromium): a table as a table, an
image as an image, a task's HTML only sanitised and sandboxed, Markdown (a hostile file, the
summary text and the run summary) rendered and sanitised: nothing in it runs."""

from __future__ import annotations

import json
import shlex
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab.harness import Lab, LabServer, newest_run, write_workflow
from tests.lab.test_panel import FAST_FALLBACK, wait_live

pytestmark = pytest.mark.slow

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5Er"
    "kJggg=="
)
HOSTILE_MD = """# Report **bold**

<script>window.parent.pwnedScript = 1; window.pwnedScript = 1</script>
<img src=x onerror="window.pwnedImg = 1">

[click me](javascript:window.pwnedLink=1) and <a href="javascript:window.pwnedRaw=1">raw</a>

| alpha | loss |
|---|---|
| 0.1 | 0.25 |
"""
HOSTILE_SUMMARY = "**best** alpha 0.1 <img src=x onerror='window.pwnedSummary=1'>\n"
PWNED = "() => ['pwnedScript', 'pwnedImg', 'pwnedLink', 'pwnedRaw', 'pwnedSummary']"
PWNED += ".filter(name => window[name] !== undefined)"
WRITER = (
    "printf 'alpha,loss\\n0.1,0.25\\n1,0.5\\n' > \"$SCRIPTHUT_OUTPUT_DIR/a.csv\"; "
    f"printf '%s' {PNG_B64} | base64 -d > \"$SCRIPTHUT_OUTPUT_DIR/b.png\"; "
    "printf '<h1>rep</h1><script>window.parent.pwned=1</script>' "
    '> "$SCRIPTHUT_OUTPUT_DIR/c.html"; '
    f"printf '%s' {shlex.quote(HOSTILE_MD)} > \"$SCRIPTHUT_OUTPUT_DIR/d.md\"; "
    f"printf '%s' {shlex.quote(HOSTILE_SUMMARY)} > \"$SCRIPTHUT_RUN_SUMMARY\""
)


@pytest.fixture(scope="module")
def server(lab_factory: Callable[..., LabServer]) -> LabServer:
    return lab_factory("outputs", lab_settings=FAST_FALLBACK)


def test_drawer_outputs_tab_previews_each_kind(
    server: LabServer, open_lab: Callable[[LabServer], Lab]
) -> None:
    write_workflow(server, "flows/out.json", [{"id": "fit", "command": WRITER}])
    status, run = server.api("POST", "runs", {"path": "flows/out.json", "backend": "local"})
    assert status == 201, run
    server.wait_run(run["id"], {"completed"})
    lab = open_lab(server)
    lab.open()
    wait_live(lab)
    lab.run_row(run["id"]).locator('button[data-action="open"]').click()
    view = lab.page.locator(".jp-ScriptHut-runpanel")
    view.locator('.sh-graph svg g[data-task-id="fit"]').click()
    drawer = view.locator('.sh-drawer[data-task="fit"]')
    drawer.locator('.sh-tab[data-tab="outputs"]').click()

    summary_md = drawer.locator(".sh-output-summary")
    assert summary_md.inner_text().strip() == "best alpha 0.1"
    assert summary_md.locator("strong").inner_text() == "best"  # rendered, not shown as text
    assert summary_md.locator("[onerror], script").count() == 0
    cells = drawer.locator(".sh-output-preview table td")
    cells.first.wait_for()
    assert cells.all_inner_texts() == ["0.1", "0.25", "1", "0.5"]

    drawer.locator('a[data-output="b.png"]').click()
    image = drawer.locator(".sh-output-preview img.sh-output-image")
    image.wait_for()
    lab.page.wait_for_function(
        "img => img.complete && img.naturalWidth === 1", arg=image.element_handle()
    )

    drawer.locator('a[data-output="c.html"]').click()
    frame = drawer.locator(".sh-output-preview iframe.sh-output-html")
    frame.wait_for()
    assert frame.get_attribute("sandbox") == ""
    assert frame.get_attribute("srcdoc") == "<h1>rep</h1>"
    assert lab.page.evaluate("() => window.pwned === undefined")
    lab.screenshot("outputs-tab")

    drawer.locator('a[data-output="d.md"]').click()
    markdown = drawer.locator(".sh-output-preview .sh-markdown")
    markdown.locator("h1").wait_for()
    assert markdown.locator("h1").inner_text() == "Report bold"
    assert markdown.locator("h1 strong").inner_text() == "bold"
    assert markdown.locator("table td").all_inner_texts() == ["0.1", "0.25"]
    assert markdown.locator("script, iframe, [onerror], [onclick]").count() == 0
    assert [a.get_attribute("href") for a in markdown.locator("a").all()] == [None, None]
    assert "<script>" not in markdown.inner_html() and "javascript:" not in markdown.inner_html()
    markdown.locator("a", has_text="click me").click()
    markdown.locator("a", has_text="raw").click()
    assert lab.page.evaluate(PWNED) == []
    lab.screenshot("outputs-markdown")

    view.locator('button[data-action="summary"]').click()
    summary = view.locator(".sh-drawer .sh-run-summary")
    summary.wait_for()
    text = summary.inner_text()
    assert "best alpha 0.1" in text and "##" not in text
    assert summary.locator("h2", has_text="fit").count() == 1
    assert summary.locator("li code", has_text="a.csv").count() == 1
    assert summary.locator("strong").first.inner_text() == "best"
    assert summary.locator("[onerror], script").count() == 0
    assert lab.page.evaluate(PWNED) == []


def write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.5  # learning rate\nlabel = 'base'\nfast = True")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(label, alpha, fast)")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_run_a_notebook_with_parameters_and_a_grid(
    server: LabServer, open_lab: Callable[[LabServer], Lab]
) -> None:
    write_notebook(server.root / "nbs" / "fit.ipynb")
    lab = open_lab(server)
    lab.open()
    page = lab.page
    wait_live(lab)
    page.click('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]')
    listing = page.locator("#filebrowser .jp-DirListing-content")
    listing.wait_for(state="visible")
    listing.locator(".jp-DirListing-item", has_text="nbs").first.dblclick()
    item = listing.locator('.jp-DirListing-item[data-file-type="notebook"]:has-text("fit.ipynb")')
    item.click(button="right")
    page.locator('.lm-Menu-item[data-command="scripthut:run-notebook"]').click()
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.locator('select[name="backend"]').select_option("local")
    except Exception:
        lab.screenshot("notebook-dialog-missing")
        raise
    assert dialog.locator('input[name="param-alpha"]').input_value() == "0.5"
    assert dialog.locator('input[name="param-label"]').input_value() == "'base'"
    dialog.locator('input[name="param-label"]').fill("'tuned'")
    dialog.locator('input[name="grid-alpha"]').fill("0.1, 1")
    lab.screenshot("notebook-dialog")
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached")

    run = newest_run(server, "fit.ipynb")
    status, detail = server.api("GET", f"runs/{run['id']}")
    assert status == 200
    assert [t["id"] for t in detail["tasks"]] == ["fit.0", "fit.1"]
    status, task = server.api("GET", f"runs/{run['id']}/tasks/fit.1")
    spec = task["spec"]
    assert spec["notebook"] == "fit.ipynb"
    assert spec["parameters"] == {"alpha": 1, "label": "tuned", "fast": True}
    assert spec["working_dir"] == "nbs"  # under the server's root, where the run starts
    server.wait_run(run["id"], {"completed", "failed"}, timeout=120)
    request = urllib.request.Request(
        f"{server.url}scripthut/api/runs/{run['id']}/tasks/fit.1/script",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        script = reply.read().decode()
    assert f"cd -- '{server.root / 'nbs'}'" in script, script


NOTEBOOK_JSON = json.dumps(
    {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "c1",
                "metadata": {},
                "execution_count": 1,
                "source": "print('executed-cell')",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "executed-cell\n"}],
            }
        ],
    }
)


def test_an_executed_notebook_opens_in_a_read_only_tab(
    server: LabServer, open_lab: Callable[[LabServer], Lab]
) -> None:
    cmd = f"printf '%s' {shlex.quote(NOTEBOOK_JSON)} > \"$SCRIPTHUT_OUTPUT_DIR/fit.ipynb\""
    write_workflow(server, "flows/nb.json", [{"id": "nbtask", "command": cmd}])
    status, run = server.api("POST", "runs", {"path": "flows/nb.json", "backend": "local"})
    assert status == 201, run
    server.wait_run(run["id"], {"completed"})
    lab = open_lab(server)
    lab.open()
    wait_live(lab)
    lab.run_row(run["id"]).locator('button[data-action="open"]').click()
    view = lab.page.locator(".jp-ScriptHut-runpanel")
    view.locator('.sh-graph svg g[data-task-id="nbtask"]').click()
    drawer = view.locator('.sh-drawer[data-task="nbtask"]')
    drawer.locator('.sh-tab[data-tab="outputs"]').click()
    assert "executed-cell" in drawer.locator(".sh-notebook").inner_text()
    drawer.locator('button[data-open="fit.ipynb"]').click()
    panel = lab.page.locator(".jp-NotebookPanel").last
    panel.locator(".jp-OutputArea-output", has_text="executed-cell").wait_for(timeout=30_000)
    tab = lab.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    assert tab.inner_text().strip() == "fit.ipynb"
    lab.screenshot("executed-notebook")
