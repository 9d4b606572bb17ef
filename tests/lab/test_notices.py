"""Run and task notifications in the Lab notification centre, shown once with two tabs open,
the panel's Notify button, and the runs' progress in the tab title."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.lab.harness import Lab, LabServer

pytestmark = pytest.mark.slow


def live(lab: Lab) -> None:
    lab.open()
    lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="live"]', timeout=20_000)


def toasts(lab: Lab, text: str) -> int:
    """Toasts whose text starts with `text` (has_text alone matches any substring)."""
    pattern = re.compile("^" + re.escape(text))
    return int(lab.page.locator(".Toastify__toast", has_text=pattern).count())


def test_notices_once_across_tabs_notify_button_and_title_progress(
    lab_factory: Callable[..., LabServer], browser: Any, request: pytest.FixtureRequest
) -> None:
    server = lab_factory("notices")
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # tabs share storage
    try:
        tabs = [Lab(context.new_page(), server, f"{request.node.name}-{i}") for i in (1, 2)]
        for tab in tabs:
            tab.page.set_default_timeout(30_000)
            live(tab)
        doc = {
            "tasks": [
                {"id": "slow", "command": "sleep 6"},
                {"id": "bad", "command": "sleep 2; echo nope >&2; exit 3"},
            ]
        }
        code, run = server.api("POST", "runs", {"workflow": doc, "name": "noisy"})
        assert code == 201, run
        first = tabs[0]
        first.page.wait_for_function("document.title.startsWith('[0/2] ')")
        # the panel's Notify button opts the run in (no channel configured: a warning says so)
        row = first.run_row(run["id"])
        row.locator('button[data-action="notify"]').dispatch_event("click")  # rows re-render live
        first.page.locator(".Toastify__toast", has_text="no email or webhook").wait_for()
        server.wait_run(run["id"], {"failed"}, timeout=60)
        message = f"Run noisy ({run['id']}) failed"
        task = f"Task bad of run noisy ({run['id']}) failed"
        for tab in tabs:
            tab.page.wait_for_function("!document.title.startsWith('[')")
        first.page.wait_for_timeout(1_500)  # both tabs have had the events
        shown = [(toasts(tab, message), toasts(tab, task)) for tab in tabs]
        assert sum(s[0] for s in shown) == 1, shown
        assert sum(s[1] for s in shown) == 1, shown
        for tab in tabs:
            tab.screenshot("notices")
    finally:
        context.close()
