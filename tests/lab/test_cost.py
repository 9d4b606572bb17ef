"""The run view of the panel says what the run cost, as the API computes it, and follows
the run: the cost is read again when its tasks end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab.harness import LOCAL_CONFIG, Lab, LabServer

pytestmark = pytest.mark.slow

PRICED = (
    LOCAL_CONFIG
    + """\
pricing:
  url: http://127.0.0.1:9/instances.json
  prices: {normal: 3600.0}
"""
)


def test_the_run_view_shows_the_run_s_cost(
    lab_factory: Callable[..., LabServer], open_lab: Callable[[LabServer], Lab]
) -> None:
    server = lab_factory("cost", config_text=PRICED)
    lab = open_lab(server)
    lab.open()
    workflow = [
        {"id": "first", "command": "sleep 1"},
        {"id": "then", "command": "sleep 4", "deps": ["first"]},
    ]
    status, run = server.api("POST", "runs", {"workflow": workflow, "backend": "local"})
    assert status == 201, run
    lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="live"]', timeout=20_000)
    lab.run_row(run["id"]).locator('button[data-action="open"]').click()
    cost = lab.page.locator(".jp-ScriptHut-runpanel .jp-ScriptHut-cost")
    cost.wait_for(state="visible")
    assert cost.get_attribute("title") == "offline prices"
    server.wait_run(run["id"], {"completed"})
    _, served = server.api("GET", f"runs/{run['id']}/cost?items=0")
    assert served["total"] > 4 and served["costed"] == 2  # a dollar a second, 5 s of tasks
    # The run's end makes the view read its cost again: the final figure, as served.
    lab.page.wait_for_function(
        "([el, text]) => el.textContent === text",
        arg=[cost.element_handle(), f"Cost: {served['summary']}"],
        timeout=20_000,
    )
    lab.screenshot("run-cost")
