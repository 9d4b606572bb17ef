"""Authentication, authorization, XSRF and path handling of every route the extension adds.

The routes are read from the running extension, not listed by hand, so a new handler is
checked as soon as it is registered.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from jupyter_server.auth import Authorizer
from jupyter_server.utils import JupyterServerAuthWarning, url_path_join
from tornado import web
from tornado.simple_httpclient import HTTPTimeoutError

from scripthut.server.app import ScriptHutApp
from scripthut.server.handlers import routes
from tests.server.conftest import Api

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

SAMPLES = ("output", "abc", "x1")
RESOURCES = {
    "health": "scripthut:health",
    "openapi.yaml": "scripthut:health",
    "backends": "scripthut:backends",
    "jobs": "scripthut:jobs",
    "runs": "scripthut:runs",
    "workflows": "scripthut:workflows",
    "events": "scripthut:events",
    "sources": "scripthut:sources",
    "config": "scripthut:config",
}
# Syncing a source, previewing or running one of its files need what starting a run needs.
POST_RESOURCES = {"sources": "scripthut:runs"}


class RecordingAuthorizer(Authorizer):
    """Records every check; denies everything while `deny` is set."""

    seen: ClassVar[list[tuple[str, str, str]]] = []
    deny: ClassVar[bool] = False

    def is_authorized(
        self, handler: web.RequestHandler, user: Any, action: str, resource: str
    ) -> bool:
        self.seen.append((handler.request.path, action, resource))
        return not self.deny


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(jp_server_config))
    config["ServerApp"]["authorizer_class"] = RecordingAuthorizer
    return config


@pytest.fixture(autouse=True)
def fresh_authorizer() -> Iterator[None]:
    RecordingAuthorizer.seen.clear()
    RecordingAuthorizer.deny = False
    yield
    RecordingAuthorizer.deny = False


def split_groups(pattern: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level capturing group of a route pattern."""
    spans, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            if depth == 0 and not pattern.startswith("(?", i):
                start = i
                depth = 1
            elif depth:
                depth += 1
            else:
                depth = -1  # a lookahead outside any group: skip to its end
        elif char == ")":
            if depth == -1:
                depth = 0
            elif depth:
                depth -= 1
                if depth == 0:
                    spans.append((start, i + 1))
        i += 1
    return spans


def concrete(pattern: str) -> str:
    """A path the pattern matches, each group filled with the first sample it accepts."""
    out, last = [], 0
    for start, end in split_groups(pattern):
        group = pattern[start:end]
        sample = next(s for s in SAMPLES if re.fullmatch(group, s))
        out += [pattern[last:start], sample]
        last = end
    path = "".join(out) + pattern[last:]
    assert re.fullmatch(pattern, path), (pattern, path)
    return path


def methods(handler: type[web.RequestHandler]) -> list[str]:
    """The verbs a handler implements, except jupyter_server's public CORS preflight."""
    implemented = [
        m
        for m in handler.SUPPORTED_METHODS
        if getattr(handler, m.lower()) is not web.RequestHandler._unimplemented_method
    ]
    public = [
        m for m in implemented if hasattr(getattr(handler, m.lower()), "__allow_unauthenticated")
    ]
    assert public in ([], ["OPTIONS"]), (handler, public)
    assert "OPTIONS" not in vars(handler)  # the one public verb is jupyter_server's, not ours
    return [m for m in implemented if m not in public]


def every_route(app: ScriptHutApp) -> list[tuple[str, str, str]]:
    """(method, path relative to base_url, pattern) for every registered route and verb."""
    found = []
    for pattern, handler, *_ in app.handlers:
        for method in methods(handler):
            found.append((method, concrete(pattern), pattern))
    assert len(found) >= 20
    return found


async def raw(client: Any, base_url: str, method: str, path: str, **kwargs: Any) -> Any:
    body = b"{}" if method in ("POST", "PUT") else None
    if path.endswith("/events"):
        kwargs.setdefault("request_timeout", 1.0)  # a stream that is let in never ends
    try:
        return await client.fetch(
            url_path_join(base_url, path),
            method=method,
            body=body,
            raise_error=False,
            follow_redirects=False,
            **kwargs,
        )
    except HTTPTimeoutError:
        return SimpleNamespace(code=599, body=b"", headers={})  # the stream was let in


async def test_every_route_refuses_requests_without_credentials(
    scripthut_app: ScriptHutApp, http_server_client: Any, jp_base_url: str
) -> None:
    for method, path, _ in every_route(scripthut_app):
        response = await raw(http_server_client, jp_base_url, method, path)
        assert response.code == 403, (method, path, response.code)
        assert "application/json" in response.headers["Content-Type"]
    bogus = {"Authorization": "token not-the-token"}
    response = await raw(
        http_server_client, jp_base_url, "GET", "scripthut/api/runs", headers=bogus
    )
    assert response.code == 403


async def login_cookies(client: Any, base_url: str, token: str) -> dict[str, str]:
    page = await raw(client, base_url, "GET", "login")
    cookies = cookies_of(page)
    form = urllib.parse.urlencode({"_xsrf": cookies["_xsrf"], "password": token})
    response = await client.fetch(
        url_path_join(base_url, "login"),
        method="POST",
        body=form,
        headers={"Cookie": cookie_header(cookies)},
        raise_error=False,
        follow_redirects=False,
    )
    assert response.code == 302, response.code
    cookies.update(cookies_of(response))
    assert any(name.startswith("username-") for name in cookies)
    return cookies


def cookies_of(response: Any) -> dict[str, str]:
    out = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        out[name] = rest.split(";", 1)[0]
    return out


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def test_state_changing_requests_need_xsrf_protection(
    scripthut_app: ScriptHutApp, http_server_client: Any, jp_base_url: str, jp_serverapp: Any
) -> None:
    cookies = await login_cookies(
        http_server_client, jp_base_url, jp_serverapp.identity_provider.token
    )
    session = {"Cookie": cookie_header(cookies)}
    health = await raw(
        http_server_client, jp_base_url, "GET", "scripthut/api/health", headers=session
    )
    assert health.code == 200  # the login cookie authenticates reads on its own
    changing = [
        (m, p) for m, p, _ in every_route(scripthut_app) if m in ("POST", "DELETE", "PUT", "PATCH")
    ]
    assert len(changing) >= 6
    for method, path in changing:
        response = await raw(http_server_client, jp_base_url, method, path, headers=session)
        assert response.code == 403, (method, path, response.code)
        assert "xsrf" in response.body.decode().lower(), (method, path)
        protected = {**session, "X-XSRFToken": cookies["_xsrf"]}
        response = await raw(http_server_client, jp_base_url, method, path, headers=protected)
        assert response.code != 403, (method, path, response.body)


async def test_handlers_are_authorized_on_stable_resources(
    scripthut_app: ScriptHutApp,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
) -> None:
    routes_seen = every_route(scripthut_app)
    for method, path, pattern in routes_seen:
        if pattern.endswith("(.*)"):
            continue
        RecordingAuthorizer.seen.clear()
        response = await raw(http_server_client, jp_base_url, method, path, headers=jp_auth_header)
        assert response.code != 403, (method, path)
        checks = [(a, r) for p, a, r in RecordingAuthorizer.seen if r.startswith("scripthut:")]
        first = path.split("/")[2]
        action = "read" if method == "GET" else "write"
        resource = POST_RESOURCES.get(first, RESOURCES[first]) if method == "POST" else None
        assert checks == [(action, resource or RESOURCES[first])], (method, path, checks)
    RecordingAuthorizer.deny = True
    for method, path, _ in routes_seen:
        response = await raw(http_server_client, jp_base_url, method, path, headers=jp_auth_header)
        assert response.code == 403, (method, path, response.code)


async def test_registering_the_handlers_raises_no_auth_warning(
    scripthut_app: ScriptHutApp, jp_serverapp: Any
) -> None:
    web_app = jp_serverapp.web_app
    rules = [
        (url_path_join(jp_serverapp.base_url, pattern), handler, kwargs)
        for pattern, handler, kwargs in routes(scripthut_app.service)
    ]
    for pattern, handler, _ in rules:
        assert web_app._check_handler_auth(pattern, handler) == [], pattern
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        web_app.add_handlers(r"never-matches\.invalid$", rules)
    assert not [w for w in caught if issubclass(w.category, JupyterServerAuthWarning)]


async def test_ids_with_dots_slashes_or_encodings_get_404(
    api: Api,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    sh_data_dir: Path,
) -> None:
    run = await api.post(
        "runs", {"workflow": [{"id": "a", "command": "echo secret-free"}]}, expect=201
    )
    await api.wait_run(run["id"])
    rid = run["id"]
    base = f"scripthut/api/runs/{rid}/tasks"
    ok = await raw(
        http_server_client, jp_base_url, "GET", f"{base}/a/script", headers=jp_auth_header
    )
    assert ok.code == 200
    attempts = [
        ("GET", f"{base}/../script"),
        ("GET", f"{base}/..%2f..%2fetc%2fpasswd/script"),
        ("GET", f"{base}/%2e%2e/script"),
        ("GET", f"{base}/%2E%2E%2Fa/env"),
        ("GET", f"{base}/a%2f..%2f..%2fx/logs/output"),
        ("GET", f"{base}/a..b/script"),
        ("GET", f"{base}/a/logs/..%2f..%2f..%2fetc%2fpasswd"),
        ("GET", f"{base}/a/logs/output%2f..%2f.."),
        ("GET", f"scripthut/api/runs/..%2f{rid}/tasks/a/script"),
        ("GET", "scripthut/api/runs/%2e%2e/tasks/a/logs/output"),
        ("POST", "scripthut/api/jobs/local/..%2f..%2fx/cancel"),
        ("POST", "scripthut/api/jobs/..%2flocal/1/cancel"),
        ("POST", "scripthut/api/workflows/..%2fdemo/dry-run"),
        ("POST", "scripthut/api/workflows/de..mo/run"),
    ]
    for method, path in attempts:
        response = await raw(http_server_client, jp_base_url, method, path, headers=jp_auth_header)
        assert response.code == 404, (method, path, response.code)
        assert json.loads(response.body)["reason"] == "not_found", (method, path)
