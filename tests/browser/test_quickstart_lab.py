"""The widgets in a real JupyterLab, in Chromium: a run moves to completed while the kernel
is busy, a task's log opens on a click (and follows it while it runs), the jobs are listed
and the user filter toggle (settings.filter_user) reaches the kernel.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM_ARGS, Lab

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).with_name("widgets_quickstart.ipynb")
TASKS = {"prepare", "square.1", "square.2", "square.3", "total"}
KERNEL_STATUS = "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status"
NODE_STATES = """() => Object.fromEntries(
  Array.from(document.querySelectorAll('.sh-runview .sh-node[data-task-id]'))
    .map((n) => [n.dataset.taskId, n.dataset.state]))"""


@pytest.fixture
def page(chromium: Path, artifacts: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            browser.close()


def poll(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def test_quickstart_widgets_in_jupyterlab(jupyter_lab: Lab, page: Any, artifacts: Path) -> None:
    shutil.copy(NOTEBOOK, jupyter_lab.root / NOTEBOOK.name)
    page.goto(f"{jupyter_lab.url}lab/tree/{NOTEBOOK.name}?reset&token={jupyter_lab.token}")
    run_the_quickstart(page, artifacts / "lab")


def test_quickstart_widgets_in_notebook7(jupyter_notebook: Lab, page: Any, artifacts: Path) -> None:
    shutil.copy(NOTEBOOK, jupyter_notebook.root / NOTEBOOK.name)
    page.goto(f"{jupyter_notebook.url}notebooks/{NOTEBOOK.name}?token={jupyter_notebook.token}")
    run_the_quickstart(page, artifacts / "notebook7")


def run_the_quickstart(page: Any, artifacts: Path) -> None:
    """Run every cell, then check each widget (screenshots into `artifacts`)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    page.wait_for_function(f"() => window.jupyterapp && {KERNEL_STATUS} === 'idle'", timeout=90_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_selector(".sh-runview .sh-node[data-task-id]", timeout=60_000)

    # Follow the run: states must move while the last cell keeps the kernel busy.
    history: list[tuple[str, dict[str, str]]] = []
    followed = False

    def watch() -> bool:
        nonlocal followed
        states = page.evaluate(NODE_STATES)
        kernel = page.evaluate(f"() => {KERNEL_STATUS}")
        if not history or history[-1][1] != states:
            history.append((kernel, states))
        if not followed and states.get("square.1") == "running":
            page.click('.sh-node[data-task-id="square.1"]')
            followed = True
        return set(states) == TASKS and set(states.values()) == {"completed"}

    poll(watch, timeout=120, what="every task completed in the RunView")
    page.screenshot(path=str(artifacts / "runview-completed.png"), full_page=True)

    seen = {state for _, states in history for state in states.values()}
    assert "running" in seen, history
    busy_changes = [states for kernel, states in history[1:] if kernel == "busy"]
    assert busy_changes, f"no update arrived while the kernel was busy: {history}"
    assert page.get_attribute(".sh-runview", "data-state") == "completed"
    legend = page.inner_text(".sh-runview .sh-legend")
    assert "5 / 5 done" in legend

    # The log of the task clicked while it ran was followed to its end, from the browser.
    assert followed, "square.1 was never seen running"
    log = page.locator(".sh-drawer:not([hidden]) pre.sh-log")
    poll(lambda: "square 1 step 4" in log.inner_text(), 30, "the followed log's last line")
    assert log.inner_text().splitlines()[:1] == ["square 1 step 1"]
    assert log.get_attribute("data-source") == "rest"  # fetched while the kernel was busy
    page.screenshot(path=str(artifacts / "runview-log-followed.png"), full_page=True)

    # Another task: its log, its script and its env (with provenance).
    page.click('.sh-node[data-task-id="prepare"]')
    poll(lambda: log.inner_text() == "preparing\n" or log.inner_text() == "preparing", 30, "log")
    page.click('.sh-drawer .sh-tab[data-tab="script"]')
    poll(lambda: "echo preparing" in page.inner_text(".sh-drawer pre.sh-script"), 30, "the script")
    page.click('.sh-drawer .sh-tab[data-tab="env"]')
    poll(lambda: "SCRIPTHUT_RUN_ID" in page.inner_text(".sh-drawer table.sh-env"), 30, "the env")
    page.screenshot(path=str(artifacts / "runview-env.png"), full_page=True)

    # The job table lists the run's jobs.
    table = page.locator(".sh-jobtable").first
    table.scroll_into_view_if_needed()
    shown = f"{len(TASKS)} of "  # the run's five; the table also holds the nap run's job
    poll(lambda: shown in table.locator(".sh-count").inner_text(), 30, "five jobs listed")
    text = table.inner_text()
    for task in TASKS:
        assert task in text
    assert "completed" in text and "nap" not in text
    page.screenshot(path=str(artifacts / "jobtable.png"), full_page=True)

    # settings.filter_user is set: the toggle says whose other jobs are listed; a click
    # sets the all_users trait and the kernel reads every user's jobs (meta user_filter).
    users = table.locator('button[data-filter="users"]')
    assert users.inner_text() == "only tester's jobs"
    assert table.get_attribute("data-user-filter") == "tester"
    users.click()
    poll(lambda: table.get_attribute("data-user-filter") == "", 30, "every user's jobs read")
    assert users.inner_text() == "all users"
    assert users.get_attribute("aria-pressed") == "true"

    # After the run: its timeline and its cost.
    timeline = page.locator(".sh-timeline")
    timeline.scroll_into_view_if_needed()
    poll(lambda: timeline.get_attribute("data-bars") == str(len(TASKS)), 30, "five bars")
    assert "5 tasks on 1 backend" in timeline.inner_text()
    cost = page.locator(".sh-cost")
    poll(lambda: "5 of 5 tasks costed" in cost.inner_text(), 30, "the run's cost")
    assert "Estimated cost <$0.01" in cost.inner_text()  # seconds at $0.50 an hour
    cost.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "timeline-cost.png"), full_page=True)
    # A job cancelled from its row, through the REST API (POST with the XSRF token).
    naps = page.locator(".sh-jobtable").nth(1)
    naps.scroll_into_view_if_needed()
    cancel = naps.locator("button.sh-cancel")
    cancel.wait_for(timeout=30_000)
    cancel.click()
    poll(lambda: cancel.inner_text() == "confirm?", 10, "the confirm step")
    cancel.click()
    poll(lambda: "cancelled" in naps.inner_text(), 60, "the nap job cancelled")
    assert naps.get_attribute("data-cancelled-via") == "rest"
    page.screenshot(path=str(artifacts / "jobtable-cancelled.png"), full_page=True)
    ours = [e for e in page.errors if "sh-" in e or "scripthut" in e.lower()]
    assert not ours, page.errors
