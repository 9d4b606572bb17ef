"""Notifications from the engine against a real SMTP server (STARTTLS, login) and a real HTTP
receiver: they arrive once, say what happened, survive a restart, and wait out a down server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scripthut.config import Config, parse_config
from scripthut.engine.engine import Engine
from scripthut.notify import notifier as notifier_module
from scripthut.notify import opt_in
from scripthut.notify.outbox import Outbox
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.notify.servers import PASSWORD, USER, Hooks, Mailbox, make_cert, start_smtp

SLACK_PATH = "/services/T0001/B0001/abcdefSECRET"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    smtp_port, hook_port = free_port(), free_port()
    cert, key = make_cert(tmp_path)
    monkeypatch.setenv("HUT_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("HUT_SLACK_URL", f"http://127.0.0.1:{hook_port}{SLACK_PATH}")
    monkeypatch.setenv("HUT_TEAMS_URL", f"http://127.0.0.1:{hook_port}/teams/incoming")
    config = parse_config(
        {
            "backends": [{"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4}],
            "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 2},
            "notifications": {
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "username": USER,
                    "password_env": "HUT_SMTP_PASSWORD",
                    "from": "scripthut@example.org",
                    "to": ["alice@example.org"],
                    "ca_file": str(cert),
                    "timeout": 5,
                },
                "webhooks": [
                    {"url_env": "HUT_SLACK_URL", "format": "slack"},
                    {"url_env": "HUT_TEAMS_URL", "format": "teams"},
                ],
            },
        },
        source="test",
    )
    return {"config": config, "smtp": smtp_port, "hooks": hook_port, "cert": cert, "key": key}


async def with_engine(config: Config, body: Callable[[Engine], Awaitable[Any]]) -> Any:
    store = Store.in_data_dir(config.data_dir)
    engine = Engine(config, store, min_poll_interval=0.2)
    await engine.start()
    try:
        return await body(engine)
    finally:
        await engine.stop()
        store.close()


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def outbox_rows(config: Config) -> list[dict[str, Any]]:
    outbox = Outbox(Path(config.data_dir) / "scripthut.db")
    try:
        return outbox.rows()
    finally:
        outbox.close()


FLOW = [
    {"id": "ok", "command": "true"},
    {"id": "bad", "command": "echo broken >&2; exit 3"},
    {"id": "after", "command": "true", "deps": ["bad"]},
]


def test_messages_arrive_once_with_the_run_and_its_failed_tasks(setup: dict[str, Any]) -> None:
    config: Config = setup["config"]
    mailbox = Mailbox()
    smtp = start_smtp(setup["smtp"], setup["cert"], setup["key"], mailbox)
    hooks = Hooks(setup["hooks"])
    try:

        async def body(engine: Engine) -> tuple[str, str]:
            watched = engine.submit(parse_document(FLOW), name="nightly-fit")
            opt_in(engine.store, watched.id)
            quiet = engine.submit(parse_document([{"id": "x", "command": "false"}]), name="quiet")
            await engine.wait(watched.id, timeout=30)
            await engine.wait(quiet.id, timeout=30)
            await until(lambda: len(mailbox.messages) >= 2 and len(hooks.bodies) >= 4)
            await asyncio.sleep(2.5)  # two more notifier steps: nothing else is sent
            return watched.id, quiet.id

        run_id, _quiet = asyncio.run(with_engine(config, body))
        asyncio.run(with_engine(config, lambda _e: asyncio.sleep(2.5)))  # a restart repeats none
    finally:
        smtp.stop()
        hooks.stop()

    subjects = sorted(str(m["Subject"]) for m in mailbox.messages)
    assert subjects == [
        f"ScriptHut: run nightly-fit ({run_id}) failed",
        f"ScriptHut: task bad of run nightly-fit ({run_id}) failed",
    ]
    assert mailbox.logins == [USER, USER]  # STARTTLS then login, for each message
    run_mail = next(m for m in mailbox.messages if m["X-ScriptHut-Event"] == "run_failed")
    text = run_mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Tasks: 3 (1 completed, 1 dep_failed, 1 failed)" in text
    assert "- bad: " in text and "exit" in text  # the failed task and its reason
    slack = [b for path, b in hooks.bodies if path == SLACK_PATH]
    teams = [b for path, b in hooks.bodies if path == "/teams/incoming"]
    assert len(slack) == 2 and len(teams) == 2
    assert all(set(b) == {"text"} for b in slack)
    assert any("nightly-fit" in b["text"] and "failed" in b["text"] for b in slack)
    assert all(b["@type"] == "MessageCard" and "nightly-fit" in b["title"] for b in teams)
    rows = outbox_rows(config)
    assert len(rows) == 6 and all(r["sent_at"] and r["attempts"] == 1 for r in rows)
    assert {r["run_id"] for r in rows} == {run_id}  # the run that did not opt in sent nothing


def test_a_down_server_delays_messages_and_loses_none_across_a_restart(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier_module, "FIRST_RETRY", 0.2)
    monkeypatch.setattr(notifier_module, "MAX_RETRY", 0.5)
    config: Config = setup["config"]

    async def while_down(engine: Engine) -> str:
        run = engine.submit(parse_document([{"id": "a", "command": "true"}]), name="weekly")
        opt_in(engine.store, run.id)
        await engine.wait(run.id, timeout=30)
        await until(
            lambda: all(r["attempts"] >= 2 for r in outbox_rows(config) or [{"attempts": 0}])
        )
        return run.id

    run_id = asyncio.run(with_engine(config, while_down))  # the engine stops with 3 unsent
    rows = outbox_rows(config)
    assert len(rows) == 3 and not any(r["sent_at"] for r in rows)
    assert all(r["error"] for r in rows)
    assert not any("abcdefSECRET" in (r["error"] or "") for r in rows)  # the URL is a secret

    mailbox = Mailbox()
    smtp = start_smtp(setup["smtp"], setup["cert"], setup["key"], mailbox)
    hooks = Hooks(setup["hooks"])
    try:

        async def when_up(engine: Engine) -> None:
            await until(lambda: len(mailbox.messages) == 1 and len(hooks.bodies) == 2)
            await asyncio.sleep(2)

        asyncio.run(with_engine(config, when_up))
    finally:
        smtp.stop()
        hooks.stop()
    assert len(mailbox.messages) == 1 and len(hooks.bodies) == 2
    assert mailbox.messages[0]["Subject"] == f"ScriptHut: run weekly ({run_id}) completed"
    assert all(r["sent_at"] for r in outbox_rows(config))
