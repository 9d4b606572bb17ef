"""ScriptHut under a real JupyterHub: alice's API and panel through the proxy with the hub's
own login, bob kept out of every route, roles as docs/jupyterhub.md says, and a run that
completes while the idle culler has stopped alice's server (engine mode `daemon`).

The tests share one hub. Each stands on its own: alice's first run, which several of them
read or guard, is made once for the module by a fixture, and each test starts alice's server
if it is not running.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from scripthut.server.handlers import ROUTES
from tests.hub.harness import Hub
from tests.lab.harness import chromium_path

pytestmark = pytest.mark.slow

FINAL = {"completed", "failed", "cancelled"}


def wait_for(what: str, check: Any, timeout: float = 90, hub: Hub | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{hub.tail() if hub else ''}")


def run_of(hub: Hub, session: requests.Session, run_id: str) -> dict[str, Any]:
    reply = hub.api(session, "alice", "GET", f"runs/{run_id}")
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def start_run(hub: Hub, session: requests.Session, tasks: list[dict[str, Any]], name: str) -> str:
    body = {"workflow": {"tasks": tasks}, "name": name}
    reply = hub.api(session, "alice", "POST", "runs", json=body)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def first_run(hub: Hub) -> str:
    """Alice's first run, started through the proxy with her hub login and ended (made once
    for the module: the tests that read or guard it do not depend on each other)."""
    alice = hub.start_server("alice")
    tasks = [
        {"id": "who", "command": "id -un"},
        {"id": "where", "command": "echo $HOME", "deps": ["who"]},
    ]
    run_id = start_run(hub, alice, tasks, "first")
    wait_for("the first run to end", lambda: run_of(hub, alice, run_id)["state"] in FINAL, hub=hub)
    return run_id


def test_alice_runs_through_the_proxy_with_the_hub_login(hub: Hub, first_run: str) -> None:
    alice = hub.start_server("alice")
    health = hub.api(alice, "alice", "GET", "health")
    assert health.status_code == 200, health.text
    assert health.json()["engine_mode"] == "daemon"
    # the server started the standalone engine as alice; it holds the lease
    lease = wait_for(
        "the standalone engine",
        lambda: (
            hub.api(alice, "alice", "GET", "health").json().get("lease", {}).get("role") == "daemon"
        ),
        hub=hub,
    )
    assert lease
    final = run_of(hub, alice, first_run)
    assert final["state"] == "completed", final
    log = hub.api(alice, "alice", "GET", f"runs/{first_run}/tasks/who/logs/output").json()
    assert log["text"] == "alice\n"  # the task ran as alice, not as the hub's root


def alice_routes(run_id: str) -> list[tuple[str, str, Any]]:
    """One request per ScriptHut route (checked against the server's route table)."""
    task = f"runs/{run_id}/tasks/who"
    routes = [
        ("GET", "health", None),
        ("GET", "openapi.yaml", None),
        ("GET", "backends", None),
        ("GET", "jobs", None),
        ("POST", "jobs/local/1/cancel", None),
        ("GET", "runs", None),
        ("POST", "runs", {"workflow": {"tasks": [{"id": "x", "command": "touch ~/bob-was-here"}]}}),
        ("GET", f"runs/{run_id}", None),
        ("POST", f"runs/{run_id}/cancel", None),
        ("POST", f"runs/{run_id}/rerun", None),
        ("POST", f"runs/{run_id}/notify", None),
        ("GET", task, None),
        ("GET", f"{task}/script", None),
        ("GET", f"{task}/env", None),
        ("GET", f"{task}/logs/output", None),
        ("GET", "workflows", None),
        ("POST", "workflows/demo/run", None),
        ("POST", "workflows/demo/dry-run", None),
        ("GET", "events", None),
        ("GET", "config", None),
        ("POST", "config/reload", None),
        ("DELETE", f"runs/{run_id}", None),
        ("GET", f"runs/{run_id}/cost", None),
        ("GET", f"runs/{run_id}/summary", None),
        ("GET", f"{task}/outputs", None),
        ("GET", f"{task}/outputs/file?path=x", None),
        ("GET", f"{task}/manifest", None),
        ("GET", "sources", None),
        ("POST", "sources/sync", None),
        ("POST", "sources/demo/sync", None),
        ("POST", "sources/demo/dry-run", None),
        ("POST", "sources/demo/run", None),
    ]
    assert len({(m, p.split("/")[0]) for m, p, _ in routes}) >= 9
    # GET and POST of /runs, GET and DELETE of /runs/{id} share a route
    assert len(routes) == len(ROUTES) + 2
    return routes


def run_ids(hub: Hub, alice: requests.Session) -> list[str]:
    reply = hub.api(alice, "alice", "GET", "runs", params={"limit": 500})
    assert reply.status_code == 200, reply.text
    return [r["id"] for r in reply.json()["runs"]]


def test_bob_cannot_read_or_change_anything_of_alice(hub: Hub, first_run: str) -> None:
    run_id = first_run
    alice = hub.start_server("alice")
    before = run_ids(hub, alice)
    bob = hub.start_server("bob")
    token = hub.user_token("bob")
    refused = []
    for method, path, body in alice_routes(run_id):
        with_cookie = hub.api(bob, "alice", method, path, json=body, timeout=10, stream=True)
        with_token = requests.request(
            method,
            f"{hub.url}/user/alice/scripthut/api/{path}",
            headers={"Authorization": f"token {token}"},
            json=body,
            allow_redirects=False,
            timeout=10,
            stream=True,
        )
        refused.append((method, path, with_cookie.status_code, with_token.status_code))
        with_cookie.close()
        with_token.close()
    assert all(c == 403 and t == 403 for _, _, c, t in refused), refused
    # his browser is not let in either, and the hub does not even say alice's server exists
    page = hub.visit(bob, "alice")
    assert page.status_code == 403, (page.status_code, page.url)
    assert bob.get(f"{hub.url}/hub/api/users/alice").status_code == 404
    assert run_of(hub, alice, run_id)["state"] == "completed"
    assert not Path("/home/alice/bob-was-here").exists()
    assert run_id in before and run_ids(hub, alice) == before  # nothing started, nothing deleted


def test_roles_a_collaborator_may_start_runs_a_reader_may_only_read(
    hub: Hub, first_run: str
) -> None:
    run_id = first_run
    hub.start_server("alice")
    carol = hub.login("carol")
    visit = hub.visit(carol, "alice")  # the hub asks her to authorize alice's server
    assert visit.status_code == 200, (visit.status_code, visit.url)
    assert visit.url.endswith("/user/alice/lab")
    dave = hub.login("dave")
    assert hub.visit(dave, "alice").url.endswith("/user/alice/lab")
    read = hub.api(dave, "alice", "GET", f"runs/{run_id}")
    assert read.status_code == 200, (read.status_code, read.text)
    assert read.json()["state"] == "completed"
    log = hub.api(dave, "alice", "GET", f"runs/{run_id}/tasks/who/logs/output")
    assert log.json()["text"] == "alice\n"
    body = {"workflow": {"tasks": [{"id": "x", "command": "true"}]}}
    assert hub.api(dave, "alice", "POST", "runs", json=body).status_code == 403
    assert hub.api(dave, "alice", "POST", f"runs/{run_id}/rerun").status_code == 403
    started = hub.api(carol, "alice", "POST", "runs", json={**body, "name": "by-carol"})
    assert started.status_code == 201, started.text
    run = started.json()["id"]
    wait_for("carol's run", lambda: run_of(hub, carol, run)["state"] == "completed")


def test_alice_panel_in_chromium_through_the_proxy(hub: Hub, first_run: str) -> None:
    executable = chromium_path()
    if executable is None:
        pytest.fail("Chromium is not installed (bash tests/browser/install.sh)")
    from playwright.sync_api import sync_playwright

    run_id = first_run
    hub.start_server("alice")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu", "--no-sandbox"],
        )
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{hub.url}/hub/login?next=/user/alice/lab")
            page.fill("#username_input", "alice")
            page.fill("#password_input", "hub-rig-password-1")
            page.click("#login_submit")
            page.wait_for_url(f"{hub.url}/user/alice/lab**", timeout=60_000)
            tab = '.jp-SideBar .lm-TabBar-tab[data-id="scripthut-panel"]'
            page.wait_for_selector(tab, state="attached", timeout=60_000)
            page.click(tab)
            page.wait_for_selector('#scripthut-panel[data-connection="live"]')
            row = f'.jp-ScriptHut-run[data-run-id="{run_id}"][data-state="completed"]'
            page.wait_for_selector(f"#scripthut-panel {row}")
        finally:
            browser.close()


def events_of(hub: Hub, session: requests.Session, run_id: str) -> list[dict[str, Any]]:
    """The run's events replayed through the proxy's event stream, until it is final."""
    url = f"{hub.url}/user/alice/scripthut/api/events?run={run_id}"
    events: list[dict[str, Any]] = []
    with session.get(url, headers={"Last-Event-ID": "0"}, stream=True, timeout=30) as reply:
        assert reply.status_code == 200, reply.text
        for line in reply.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                event = json.loads(line[6:])
                events.append(event)
                if event["kind"] == "run" and event.get("state") in FINAL:
                    return events
    raise AssertionError(events[-3:])


def test_the_culler_stops_alice_mid_run_and_the_run_completes(hub: Hub) -> None:
    alice = hub.start_server("alice")
    steps = 9
    marker = Path(f"/home/alice/.hub-run-done-{hub.tag}")
    tasks = [
        {"id": f"s{i}", "command": "sleep 8", **({"deps": [f"s{i - 1}"]} if i else {})}
        for i in range(steps)
    ]
    tasks.append({"id": "done", "command": f"touch {marker}", "deps": [f"s{steps - 1}"]})
    run_id = start_run(hub, alice, tasks, "outlives-the-server")
    started = time.monotonic()
    # no request to alice's server from now on: the culler sees her idle and stops it
    wait_for("the culler", lambda: not hub.server_running("alice"), timeout=120, hub=hub)
    culled_after = time.monotonic() - started
    assert not marker.exists(), "the run ended before the server was culled: not a proof"
    wait_for("the run's last task", marker.exists, timeout=180, hub=hub)
    # alice comes back: her panel and API show the run completed, every event in order
    alice = hub.start_server("alice")
    final = wait_for(
        "the run to be final", lambda: (r := run_of(hub, alice, run_id))["state"] in FINAL and r
    )
    assert final["state"] == "completed", final
    events = events_of(hub, alice, run_id)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    ends = {e["task"]: e["id"] for e in events if e["kind"] == "task" and e["state"] == "completed"}
    sends = {
        e["task"]: e["id"] for e in events if e["kind"] == "task" and e["state"] == "submitted"
    }
    assert set(ends) == {t["id"] for t in tasks}
    order = [t["id"] for t in tasks]
    for before, after in itertools.pairwise(order):
        assert ends[before] < sends[after] < ends[after], (before, after)
    marker.unlink()
    print(f"alice's server was culled {culled_after:.0f} s into the run")
