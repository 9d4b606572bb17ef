"""The ScriptHut side panel in a real JupyterLab (Chromium), against a real server and engine.

One server for the module (a local backend, a JupyterHub-like base_url, the panel's
fallback refresh at 2 s so a poll would show quickly); a fresh page per test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.lab.harness import Lab, LabServer, newest_run, write_workflow

pytestmark = pytest.mark.slow

FAST_FALLBACK = {"scripthut:plugin": {"refreshInterval": 2, "maxRefreshInterval": 10}}


@pytest.fixture(scope="module")
def server(lab_factory: Callable[..., LabServer]) -> LabServer:
    return lab_factory("panel", lab_settings=FAST_FALLBACK)


@pytest.fixture
def lab(server: LabServer, open_lab: Callable[[LabServer], Lab]) -> Lab:
    lab = open_lab(server)
    lab.open()
    return lab


def wait_live(lab: Lab) -> Any:
    panel = lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="live"]', timeout=20_000)
    return panel


def start_from_context_menu(lab: Lab, folder: str, filename: str, backend: str) -> None:
    """File browser: open the folder, right-click the file, Run with ScriptHut, pick the backend."""
    page = lab.page
    page.click('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]')
    listing = page.locator("#filebrowser .jp-DirListing-content")
    listing.wait_for(state="visible")
    folder_item = listing.locator(".jp-DirListing-item", has_text=folder).first
    folder_item.dblclick()
    item = listing.locator(f'.jp-DirListing-item[data-file-type="json"]:has-text("{filename}")')
    item.wait_for(state="visible")
    item.click(button="right")
    page.locator('.lm-Menu-item[data-command="scripthut:run-file"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('select[name="backend"]').select_option(backend)
    lab.screenshot("backend-dialog")
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached")


def test_panel_opens_live_and_shows_backends(lab: Lab) -> None:
    panel = wait_live(lab)
    backend = panel.locator('.jp-ScriptHut-backend[data-backend="local"]')
    backend.wait_for()
    assert backend.get_attribute("data-status") == "ok"
    assert "CPUs" in backend.inner_text()
    assert panel.locator(".jp-ScriptHut-banner").is_hidden()
    lab.screenshot("panel")

    # Live: the stream is open, so no request on a timer (the fallback would tick every 2 s).
    before = list(lab.api_requests)
    lab.page.wait_for_timeout(6_000)
    extra = lab.api_requests[len(before) :]
    assert extra == [], f"requests while the stream was up: {extra}"
    # The refresh button still refreshes (backends' cluster info included).
    panel.locator('button[data-action="refresh"]').click()
    lab.page.wait_for_timeout(1_000)
    asked = {r.split("?")[0] for r in lab.api_requests[len(before) :]}
    assert {"health", "runs", "jobs", "backends"} <= asked, asked


def test_run_from_file_browser_context_menu_completes(lab: Lab, server: LabServer) -> None:
    write_workflow(
        server,
        "flows/hello.json",
        [
            {"id": "a", "command": "echo hello-from-a"},
            {"id": "b", "command": "echo hello-from-b", "deps": ["a"]},
        ],
    )
    wait_live(lab)
    start_from_context_menu(lab, "flows", "hello.json", "local")
    run = newest_run(server, "hello")
    assert run["backend"] == "local"

    lab.open_panel()
    row = lab.run_row(run["id"])
    row.wait_for()
    lab.page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="completed"]', timeout=60_000
    )
    assert "2 / 2 done" in row.inner_text()
    # The run's jobs came by events and stay listed once they end.
    jobs = lab.page.locator(f'#scripthut-panel .jp-ScriptHut-job[data-run-id="{run["id"]}"]')
    jobs.first.wait_for()
    assert jobs.count() == 2
    lab.screenshot("completed")
    assert server.wait_run(run["id"], {"completed"}, timeout=5)["state"] == "completed"


def test_cancel_a_running_run(lab: Lab, server: LabServer) -> None:
    write_workflow(server, "slow/sleepy.json", [{"id": "nap", "command": "sleep 60"}])
    wait_live(lab)
    # Through the command palette this time: it asks for the path, then the backend.
    page = lab.page
    page.click("#jp-main-dock-panel")
    page.keyboard.press("Control+Shift+C")
    palette = page.locator(".lm-CommandPalette-input")
    palette.fill("Run with ScriptHut")
    page.locator('.lm-CommandPalette-item[data-command="scripthut:run-file"]').click()
    page.locator(".jp-Dialog input").fill("slow/sleepy.json")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('select[name="backend"]').wait_for()
    dialog.locator(".jp-mod-accept").click()
    run = newest_run(server, "sleepy")

    lab.open_panel()
    page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="running"]', timeout=30_000
    )
    job = page.locator(f'.jp-ScriptHut-job[data-run-id="{run["id"]}"][data-state="running"]')
    job.wait_for()
    lab.screenshot("running")
    lab.run_row(run["id"]).locator('button[data-action="cancel"]').click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="cancelled"]', timeout=30_000
    )
    lab.screenshot("cancelled")
    final = server.wait_run(run["id"], {"cancelled"}, timeout=10)
    assert {t["state"] for t in final["tasks"]} == {"cancelled"}
    page.wait_for_selector(
        f'.jp-ScriptHut-job[data-run-id="{run["id"]}"][data-state="cancelled"]', timeout=15_000
    )

    # Rerun: the cancelled task gets a new attempt (a new job), and runs again.
    lab.run_row(run["id"]).locator('button[data-action="rerun"]').click()
    page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="running"]', timeout=30_000
    )
    page.wait_for_selector(
        f'.jp-ScriptHut-job[data-run-id="{run["id"]}"][data-state="running"]', timeout=30_000
    )
    lab.screenshot("rerun")
    status, _ = server.api("POST", f"runs/{run['id']}/cancel")
    assert status == 200
    page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="cancelled"]', timeout=30_000
    )


def test_run_opens_in_main_area_with_dag_and_logs(lab: Lab, server: LabServer) -> None:
    write_workflow(
        server,
        "flows/view.json",
        [
            {"id": "prep", "command": "echo preparing; echo prep-log-line"},
            {"id": "sim.1", "command": "echo sim one", "deps": ["prep"]},
            {"id": "sim.2", "command": "echo sim two", "deps": ["prep"]},
            {"id": "report", "command": "echo report-done", "deps": ["sim.*"]},
        ],
    )
    status, run = server.api("POST", "runs", {"path": "flows/view.json", "backend": "local"})
    assert status == 201, run
    server.wait_run(run["id"], {"completed"})
    wait_live(lab)
    row = lab.run_row(run["id"])
    row.locator('button[data-action="open"]').click()

    view = lab.page.locator(".jp-ScriptHut-runpanel")
    view.wait_for()
    node = view.locator('.sh-graph svg g[data-task-id="prep"]')
    node.wait_for()
    assert view.locator(".sh-graph svg g[data-unit]").count() >= 3
    assert view.locator(".sh-edge").count() >= 2
    assert view.locator(".sh-runview").get_attribute("data-state") == "completed"
    assert view.locator(".sh-timeline canvas").count() == 1
    node.click()
    drawer = view.locator('.sh-drawer[data-task="prep"]')
    drawer.wait_for()
    log = drawer.locator(".sh-log")
    log.wait_for()
    lab.page.wait_for_function(
        "el => el.textContent.includes('prep-log-line')", arg=log.element_handle(), timeout=15_000
    )
    tab = lab.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    assert tab.inner_text().strip() == "view"
    lab.screenshot("run-view")

    # The layout restorer brings it back on reload (the workspace is saved shortly after).
    lab.page.wait_for_timeout(2_000)
    lab.page.goto(f"{server.url}lab")
    restored = lab.page.locator('.jp-ScriptHut-runpanel .sh-graph svg g[data-task-id="report"]')
    restored.wait_for(timeout=30_000)


def test_fallback_polling_when_the_stream_is_blocked(
    server: LabServer, open_lab: Callable[[LabServer], Lab]
) -> None:
    lab = open_lab(server)
    lab.page.route("**/scripthut/api/events*", lambda route: route.abort())
    lab.open()
    lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="polling"]', timeout=20_000)
    # The interval is the one set in the settings (refreshInterval: 2).
    lab.page.wait_for_selector(".jp-ScriptHut-connection:has-text('polling (2 s)')")
    # The fallback refreshes on its timer (2 s here) and still shows new runs.
    status, run = server.api(
        "POST", "runs", {"workflow": [{"id": "x", "command": "true"}], "name": "polled"}
    )
    assert status == 201, run
    lab.page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="completed"]', timeout=30_000
    )
    start = len(lab.api_requests)
    lab.page.wait_for_timeout(5_000)
    ticks = [r for r in lab.api_requests[start:] if r.startswith("runs?")]
    assert 1 <= len(ticks) <= 4, lab.api_requests[start:]
    lab.screenshot("polling")


def test_quiet_while_hidden(lab: Lab) -> None:
    wait_live(lab)
    lab.page.click('.jp-SideBar .lm-TabBar-tab[data-id="scripthut-panel"]')  # collapse it
    lab.page.locator("#scripthut-panel").wait_for(state="hidden")
    lab.page.wait_for_selector('#scripthut-panel[data-connection="paused"]', state="attached")
    before = len(lab.api_requests)
    lab.page.wait_for_timeout(5_000)
    assert lab.api_requests[before:] == []
    # Shown again: it catches up and goes live.
    wait_live(lab)


def test_cookie_auth_as_under_jupyterhub(
    server: LabServer, open_lab: Callable[[LabServer], Lab]
) -> None:
    """JupyterHub pages carry no token: requests go with the login cookie and, for POST, the
    `_xsrf` cookie's value in X-XSRFToken. The event stream and "Run with ScriptHut" work so."""
    lab = open_lab(server)

    def without_token(route: Any) -> None:
        reply = route.fetch()
        body = re.sub(r'"token": "[^"]*"', '"token": ""', reply.text())
        route.fulfill(response=reply, body=body)

    lab.page.route(re.compile(r".*/lab(\?.*)?$"), without_token)
    lab.page.on("request", lambda r: lab.console.append(r.headers.get("authorization", "")))
    lab.open()
    config = lab.page.evaluate(
        "JSON.parse(document.getElementById('jupyter-config-data').textContent).token"
    )
    assert config == ""
    write_workflow(server, "hub/cookie.json", [{"id": "c", "command": "echo via-cookie"}])
    wait_live(lab)
    start_from_context_menu(lab, "hub", "cookie.json", "local")
    run = newest_run(server, "cookie")
    lab.open_panel()
    lab.page.wait_for_selector(
        f'.jp-ScriptHut-run[data-run-id="{run["id"]}"][data-state="completed"]', timeout=60_000
    )
    sent = [h for h in lab.console if h.startswith("token ")]
    assert sent == [], "a token was sent although the page had none"


def test_external_jobs_toggle_is_a_setting(lab: Lab, server: LabServer) -> None:
    panel = wait_live(lab)
    toggle = panel.locator('input[data-filter="external"]')
    assert toggle.is_checked()
    toggle.uncheck()

    def saved() -> Any:
        reply = lab.page.request.get(
            f"{server.url}lab/api/settings/scripthut:plugin",
            headers={"Authorization": f"token {server.token}"},
        )
        return reply.json()["settings"].get("showExternalJobs")

    deadline = 50
    while saved() is not False and deadline:
        lab.page.wait_for_timeout(100)
        deadline -= 1
    assert saved() is False
    toggle.check()
    lab.page.wait_for_timeout(500)
    assert saved() is True


def test_job_table_in_main_area(lab: Lab, server: LabServer) -> None:
    """The full job table is the notebook widgets' JobTable, on the panel's job list."""
    wait_live(lab)
    status, run = server.api(
        "POST", "runs", {"workflow": [{"id": "t", "command": "echo t"}], "name": "tabled"}
    )
    assert status == 201, run
    server.wait_run(run["id"], {"completed"})
    lab.page.locator('#scripthut-panel button[data-action="open-jobs"]').click()
    table = lab.page.locator(".jp-ScriptHut-jobspanel .sh-jobtable")
    table.wait_for()
    lab.page.wait_for_function(
        "el => Number(el.dataset.jobs) >= 1", arg=table.element_handle(), timeout=15_000
    )
    assert "t" in table.locator(".sh-vt-row").first.inner_text()
    lab.screenshot("job-table")
