"""Bad input through the real API: a 400 (or 413) naming the field, never a 500.

Every case goes through jp_fetch to the running extension, and the server is checked to
still work afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripthut.workflow.parse import MAX_COMMAND, MAX_ENV_VALUE, MAX_NAME
from tests.server.conftest import Api, Fetch

BIG = 2**70
BODY_LIMIT_MB = 0.25


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(jp_server_config))
    config["ScriptHut"]["max_body_mb"] = BODY_LIMIT_MB
    return config


async def send(fetch: Fetch, method: str, path: str, body: bytes | None = None, **kw: Any) -> Any:
    if body is None and method == "POST":
        body = b""
    response = await fetch(
        "scripthut", "api", *path.split("/"), method=method, body=body, raise_error=False, **kw
    )
    return response.code, json.loads(response.body)


def fields(reply: dict[str, Any]) -> list[str]:
    return [str(e["field"]) for e in reply.get("errors", [])]


async def still_works(api: Api) -> None:
    run = await api.post("runs", {"workflow": [{"id": "ok", "command": "true"}]}, expect=201)
    assert (await api.wait_run(run["id"]))["state"] == "completed"


def task(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "command": "true", **fields}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workflow": [task()], "max_concurrent": BIG}, "max_concurrent"),
        ({"workflow": [task(cpus=BIG)]}, "workflow[0].cpus"),
        ({"workflow": [task(cpus=-BIG)]}, "workflow[0].cpus"),
        ({"workflow": [task(name="bad \ud800 name")]}, "workflow[0].name"),
        ({"workflow": [task(command="echo \udfff")]}, "workflow[0].command"),
        ({"workflow": [task(env=[{"set": {"X": "\ud800"}}])]}, "workflow[0].env[0].set.X"),
        ({"workflow": [task()], "name": "run \ud800"}, "name"),
        ({"workflow": [task()], "backend": "\udc00"}, "backend"),
        ({"workflow": [task(cpus=float("nan"))]}, "workflow[0].cpus"),
    ],
)
async def test_values_no_store_can_keep_are_named(
    api: Api, jp_fetch: Fetch, body: dict[str, Any], field: str
) -> None:
    code, reply = await send(jp_fetch, "POST", "runs", json.dumps(body).encode())
    assert code == 400, reply
    assert field in fields(reply), reply
    assert reply["reason"] == "invalid_input"


async def test_bodies_nested_deeply_repeated_keys_and_bad_utf8(api: Api, jp_fetch: Fetch) -> None:
    deep = b'{"workflow": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    code, reply = await send(jp_fetch, "POST", "runs", deep)
    assert code == 400 and "nested too deeply" in reply["errors"][0]["message"]

    repeated = b'{"workflow": [{"id": "a", "command": "true"}], "name": "x", "name": "y"}'
    code, reply = await send(jp_fetch, "POST", "runs", repeated)
    assert code == 400 and fields(reply) == ["name"]
    assert "more than once" in reply["errors"][0]["message"]

    in_task = b'{"workflow": [{"id": "a", "command": "true", "command": "rm -rf ~"}]}'
    code, reply = await send(jp_fetch, "POST", "runs", in_task)
    assert code == 400 and fields(reply) == ["command"]
    assert reply["errors"][0]["where"] == "task 'a'"

    encoded_surrogate = b'{"workflow": [{"id": "a", "command": "echo \xed\xa0\x80"}]}'
    code, reply = await send(jp_fetch, "POST", "runs", encoded_surrogate)
    assert code == 400 and "not UTF-8" in reply["errors"][0]["message"]

    for text in (b"[1e400]", b'{"workflow": [], "max_concurrent": Infinity}'):
        code, reply = await send(jp_fetch, "POST", "runs", text)
        assert code == 400, text

    code, reply = await send(jp_fetch, "POST", "workflows/demo/run", b'{"max_concurrent": 1e999}')
    assert code == 400 and fields(reply) == ["max_concurrent"]
    await still_works(api)


async def test_texts_have_documented_length_limits(api: Api, jp_fetch: Fetch) -> None:
    cases = [
        ({"workflow": [task(name="n" * (MAX_NAME + 1))]}, "name"),
        ({"workflow": [task(command="x" * (MAX_COMMAND + 1))]}, "command"),
        ({"workflow": [task(id="i" * 201)]}, "id"),
        ({"workflow": [task(env=[{"set": {"V": "v" * (MAX_ENV_VALUE + 1)}}])]}, "env[0].set.V"),
        ({"workflow": [task()], "name": "r" * (MAX_NAME + 1)}, "name"),
    ]
    for body, field in cases:
        code, reply = await send(jp_fetch, "POST", "runs", json.dumps(body).encode())
        assert code == 400, field
        assert field in fields(reply), reply
        text = json.dumps(reply)
        assert "too long" in text or "at most" in text or "not a valid id" in text, reply
    huge = "x" * 100_000  # refused, and not echoed back (the body limit here is 0.25 MiB)
    for body in ({"workflow": [task(id=huge, name=huge)]}, {"workflow": [task()], huge: 1}):
        response = await jp_fetch(
            "scripthut", "api", "runs", method="POST", body=json.dumps(body), raise_error=False
        )
        assert response.code == 400 and len(response.body) < 5_000
    at_limit = {"workflow": [task(name="n" * MAX_NAME, command="#" + "x" * 50_000)]}
    code, reply = await send(jp_fetch, "POST", "runs", json.dumps(at_limit).encode())
    assert code == 201, reply


async def test_a_body_over_the_limit_is_refused_before_parsing(api: Api, jp_fetch: Fetch) -> None:
    limit = int(BODY_LIMIT_MB * 2**20)
    body = b"[" + b" " * limit + b"]"  # not even a run request: never parsed
    code, reply = await send(jp_fetch, "POST", "runs", body)
    assert code == 413
    assert reply["reason"] == "payload_too_large"
    assert f"{limit:,}" in reply["message"] and "max_body_mb" in reply["message"]
    code, _ = await send(jp_fetch, "POST", "workflows/demo/run", body)
    assert code == 413
    await still_works(api)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("runs", {"offset": str(BIG)}, "offset"),
        ("runs", {"limit": "99999999999999999999"}, "limit"),
        ("runs", {"offset": "1_000"}, "offset"),
        ("runs", {"offset": "7e3"}, "offset"),
        ("runs", {"limit": "\u0661"}, "limit"),  # an Arabic-Indic digit: int() takes it
        ("runs", {"offset": "-1"}, "offset"),
        ("events", {"after": str(BIG)}, "after"),
    ],
)
async def test_query_integers_are_decimal_and_64_bit(
    api: Api, jp_fetch: Fetch, path: str, params: dict[str, str], field: str
) -> None:
    code, reply = await send(jp_fetch, "GET", path, params=params)
    assert code == 400, reply
    assert fields(reply) == [field]


async def test_task_query_integers_and_the_event_header(api: Api, jp_fetch: Fetch) -> None:
    run = await api.post("runs", {"workflow": [task(command="echo hi")]}, expect=201)
    await api.wait_run(run["id"])
    base = f"runs/{run['id']}/tasks/a"
    for path, name in [
        (f"{base}/script", "attempt"),
        (f"{base}/env", "attempt"),
        (f"{base}/logs/output", "attempt"),
        (f"{base}/logs/output", "offset"),
        (f"{base}/logs/output", "limit"),
        (f"{base}/logs/output", "tail"),
    ]:
        code, reply = await send(jp_fetch, "GET", path, params={name: str(BIG)})
        assert code == 400, (path, name, reply)
        assert fields(reply) == [name]
    headers = {"Last-Event-ID": str(BIG)}
    code, reply = await send(jp_fetch, "GET", "events", headers=headers)
    assert code == 400 and fields(reply) == ["Last-Event-ID"]
    logs = await api.get(f"{base}/logs/output", params={"offset": str(2**62)})
    assert logs["text"] == ""
    await still_works(api)


def config_dirs(tmp_path: Any) -> list[tuple[object, str]]:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return [
        ("relative/folder", "must be an absolute path"),
        ("~", "must be an absolute path"),
        ("", "must be a non-empty string"),
        (5, "must be a non-empty string"),
        (str(tmp_path / "missing"), "no such directory"),
        (str(tmp_path / "a-file"), "no such directory"),
        (str(tmp_path / "loop"), "no such directory"),
        ("/tmp/\0", "must be a non-empty string"),
    ]


async def test_a_config_dir_must_be_an_existing_absolute_folder(
    api: Api, jp_fetch: Fetch, tmp_path: Any
) -> None:
    for value, message in config_dirs(tmp_path):
        body = {"workflow": [task()], "config_dir": value}
        code, reply = await send(jp_fetch, "POST", "runs", json.dumps(body).encode())
        assert code == 400, (value, reply)
        (error,) = reply["errors"]
        assert error["field"] == "config_dir" and message in error["message"], (value, reply)
    assert (await api.get("runs"))["total"] == 0  # nothing recorded
    await still_works(api)


SOURCE_POSTS = [
    ("sources/sync", {}),
    ("sources/any/sync", {}),
    ("sources/any/dry-run", {"file": "f.json"}),
    ("sources/any/run", {"file": "f.json"}),
    ("workflows/any/dry-run", {}),
    ("workflows/any/run", {}),
]


async def test_sources_and_workflows_check_config_dir_as_runs_do(
    api: Api, jp_fetch: Fetch, tmp_path: Any
) -> None:
    for value, message in config_dirs(tmp_path):
        for path, body in SOURCE_POSTS:
            raw = json.dumps({**body, "config_dir": value}).encode()
            code, reply = await send(jp_fetch, "POST", path, raw)
            assert code == 400, (path, value, reply)
            (error,) = reply["errors"]
            assert error["where"] == "request body", (path, reply)
            assert error["field"] == "config_dir" and message in error["message"], (path, reply)
        if not isinstance(value, str) or "\0" in value:
            continue  # a query argument is text, and tornado refuses a NUL in a URL
        for path in ("sources", "workflows"):
            code, reply = await send(jp_fetch, "GET", path, params={"config_dir": value})
            assert code == 400, (path, value, reply)
            (error,) = reply["errors"]
            assert error["where"] == "query", (path, reply)
            assert error["field"] == "config_dir" and message in error["message"], (path, reply)
    assert (await api.get("runs"))["total"] == 0  # nothing recorded
    assert (await api.get("sources", params={"config_dir": str(tmp_path)}))["sources"] == []
