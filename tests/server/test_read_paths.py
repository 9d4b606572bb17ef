"""Secrets never shown over the API, and workflow commands run only on purpose.

Every read path of a run (task spec, script, env, run, dry-run document, workflow list)
is checked for the clear values of a workflow whose env holds every kind of secret the
masking rule knows, also for a principal allowed only to read. Dry-run is a POST needing
write on `scripthut:workflows`, XSRF-checked under cookie auth, and limited in concurrency.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jupyter_server.auth import Authorizer
from tornado import web

from scripthut.server.app import ScriptHutApp
from tests.helpers import SECRET_TOKEN, SECRET_WORKFLOW, assert_no_secret
from tests.server.conftest import CONFIG, Api
from tests.server.test_security import cookie_header, login_cookies, raw


class SwitchableAuthorizer(Authorizer):
    """Allows everything, or only `read` while `read_only` is set."""

    read_only: ClassVar[bool] = False

    def is_authorized(
        self, handler: web.RequestHandler, user: Any, action: str, resource: str
    ) -> bool:
        return action == "read" or not self.read_only


@pytest.fixture(autouse=True)
def full_access() -> Iterator[None]:
    SwitchableAuthorizer.read_only = False
    yield
    SwitchableAuthorizer.read_only = False


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(jp_server_config))
    config["ServerApp"]["authorizer_class"] = SwitchableAuthorizer
    return config


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """The file the `slow` workflow's command waits for."""
    return tmp_path / "go"


@pytest.fixture
def sh_config_text(tmp_path: Path, gate: Path) -> str:
    document = tmp_path / "secretive.json"
    document.write_text(json.dumps(SECRET_WORKFLOW))
    return CONFIG + (
        f"  - name: secretive\n    backend: local\n    command: cat {document}\n"
        "  - name: slow\n    backend: local\n    command: |-\n"
        f'      while [ ! -e {gate} ]; do sleep 0.05; done; echo \'[{{"id": "x", '
        '"command": "true"}]\'\n'
    )


async def test_no_read_path_shows_a_secret(api: Api, scripthut_app: ScriptHutApp) -> None:
    run = await api.post("runs", {"workflow": SECRET_WORKFLOW}, expect=201)
    assert (await api.wait_run(run["id"]))["state"] == "completed"
    rid = run["id"]
    store = scripthut_app.service.store
    assert store is not None
    assert SECRET_TOKEN in store.attempt(rid, "a").script  # the job had the clear value

    for read_only in (False, True):
        SwitchableAuthorizer.read_only = read_only
        task = await api.get(f"runs/{rid}/tasks/a")
        assert task["spec"]["env"][0]["set"]["MY_PASSWORD"] == "***"
        assert task["spec"]["env"][0]["set"]["COPY"] == "prefix-***"
        script = await api.get(f"runs/{rid}/tasks/a/script")
        assert "export API_TOKEN='***'" in script
        assert "export SLACK_URL='https://hooks.slack.com/***'" in script
        assert "export DB_URL='postgres://ann:***@db.example/x'" in script
        env = await api.get(f"runs/{rid}/tasks/a/env")
        assert env["values"]["COPY"]["secret"] is True
        shown = [task, script, env, await api.get(f"runs/{rid}"), await api.get("workflows")]
        for reply in shown:
            assert_no_secret(reply if isinstance(reply, str) else json.dumps(reply))

    SwitchableAuthorizer.read_only = False
    dry = await api.post("workflows/secretive/dry-run")
    assert dry["document"]["env"][0]["set"]["API_TOKEN"] == "***"
    assert_no_secret(json.dumps(dry))


async def test_dry_run_is_a_post_that_needs_write_access(
    api: Api, scripthut_app: ScriptHutApp, http_server_client: Any, jp_base_url: str
) -> None:
    code, _ = await api.call("GET", "workflows/demo/dry-run")
    assert code == 405
    assert (await api.get("runs"))["total"] == 0

    SwitchableAuthorizer.read_only = True
    for path in ("workflows/demo/dry-run", "workflows/demo/run"):
        code, _ = await api.call("POST", path)
        assert code == 403, path
    SwitchableAuthorizer.read_only = False

    token = scripthut_app.serverapp.identity_provider.token
    cookies = await login_cookies(http_server_client, jp_base_url, token)
    session = {"Cookie": cookie_header(cookies)}
    path = "scripthut/api/workflows/demo/dry-run"
    forged = await raw(http_server_client, jp_base_url, "POST", path, headers=session)
    assert forged.code == 403 and "xsrf" in forged.body.decode().lower()
    protected = {**session, "X-XSRFToken": cookies["_xsrf"]}
    sent = await raw(http_server_client, jp_base_url, "POST", path, headers=protected)
    assert sent.code == 200 and json.loads(sent.body)["tasks"] == 2


async def test_at_most_two_workflow_commands_run_at_once(
    api: Api, scripthut_app: ScriptHutApp, gate: Path
) -> None:
    slots = scripthut_app.service.commands
    assert slots.limit == 2
    first = asyncio.ensure_future(api.call("POST", "workflows/slow/dry-run"))
    second = asyncio.ensure_future(api.call("POST", "workflows/slow/run", {}))
    while slots.running < 2:
        await asyncio.sleep(0.02)
    for path in ("workflows/slow/dry-run", "workflows/demo/dry-run", "workflows/demo/run"):
        response = await api.fetch(
            "scripthut", "api", *path.split("/"), method="POST", body=b"{}", raise_error=False
        )
        assert response.code == 429, path
        assert response.headers["Retry-After"] == "5"
        reply = json.loads(response.body)
        assert reply["reason"] == "too_many_requests"
        assert "max_workflow_commands" in reply["message"]
    gate.touch()
    assert (await first)[0] == 200
    assert (await second)[0] == 201
    assert slots.running == 0
    assert (await api.call("POST", "workflows/broken/dry-run"))[0] == 400
    assert slots.running == 0  # a failed command gives its slot back
    assert (await api.call("POST", "workflows/demo/dry-run"))[0] == 200
