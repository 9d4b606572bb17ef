"""The task drawer's Outputs tab in a real JupyterLab (Chromium): a table as a table, an
image as an image, a task's HTML only sanitised and sandboxed, and the summary text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab.harness import Lab, LabServer, write_workflow
from tests.lab.test_panel import FAST_FALLBACK, wait_live

pytestmark = pytest.mark.slow

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5Er"
    "kJggg=="
)
WRITER = (
    "printf 'alpha,loss\\n0.1,0.25\\n1,0.5\\n' > \"$SCRIPTHUT_OUTPUT_DIR/a.csv\"; "
    f"printf '%s' {PNG_B64} | base64 -d > \"$SCRIPTHUT_OUTPUT_DIR/b.png\"; "
    "printf '<h1>rep</h1><script>window.parent.pwned=1</script>' "
    '> "$SCRIPTHUT_OUTPUT_DIR/c.html"; '
    "echo 'best alpha 0.1' > \"$SCRIPTHUT_RUN_SUMMARY\""
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

    assert drawer.locator(".sh-output-summary").inner_text().strip() == "best alpha 0.1"
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

    view.locator('button[data-action="summary"]').click()
    summary = view.locator(".sh-drawer .sh-run-summary")
    summary.wait_for()
    text = summary.inner_text()
    assert "## fit" in text and "best alpha 0.1" in text and "- `a.csv`" in text
