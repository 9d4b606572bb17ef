"""A run on a missing or unreachable backend never blocks the data directory.

The unreachable backend is a Slurm cluster whose SSH port is closed on 127.0.0.1: the
real transport fails to connect, as it would for a cluster that is down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.config import Config, parse_config
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

CHAIN = [
    {"id": "a", "command": "echo a"},
    {"id": "b", "command": "echo b", "deps": ["a"]},
    {"id": "c", "command": "echo c", "deps": ["b"]},
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_data(data_dir: Path, tmp_path: Path, *, with_x: bool = True) -> dict[str, Any]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    backends: list[dict[str, Any]] = [
        {"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4}
    ]
    if with_x:
        ssh = {
            "host": "127.0.0.1",
            "port": closed_port(),
            "user": "nobody",
            "key_path": str(tmp_path / "no-key"),
            "known_hosts": str(known_hosts),
        }
        backends.insert(0, {"name": "x", "type": "slurm", "ssh": ssh})
    return {"backends": backends, "settings": {"data_dir": str(data_dir), "poll_interval": 2}}


def make_config(data_dir: Path, tmp_path: Path, *, with_x: bool = True) -> Config:
    return parse_config(config_data(data_dir, tmp_path, with_x=with_x), source="test")


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_unreachable_backend_is_reported_once_and_blocks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    config = make_config(data_dir, tmp_path)
    caplog.set_level(logging.DEBUG, logger="scripthut")

    async def main() -> None:
        store = Store.in_data_dir(data_dir)
        engine = Engine(config, store, min_poll_interval=0.2)
        await engine.start()
        try:
            stuck = engine.submit(parse_document(CHAIN), backend="x")
            await until(
                lambda: (store.get_run(stuck.id).message or "").startswith(
                    "backend 'x' unreachable since"
                ),
                20,
                "the run to say why it waits",
            )
            message = store.get_run(stuck.id).message or ""
            assert "127.0.0.1" in message  # the transport's own error, in full
            # Another run on another backend completes meanwhile.
            other = engine.submit(parse_document(CHAIN), backend="local")
            done = await engine.wait(other.id, timeout=30)
            assert done.state == RunState.COMPLETED
            await asyncio.sleep(5)  # several retry periods: still one line
            lines = [
                r
                for r in caplog.records
                if r.levelno >= logging.WARNING and "'x'" in r.getMessage()
            ]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            assert "unreachable" in lines[0].getMessage()
            # Cancel finishes although the submission of 'a' was never confirmed.
            await engine.cancel(stuck.id)
            final = await engine.wait(stuck.id, timeout=10)
            assert final.state == RunState.CANCELLED
            states = {t.task_id: t.state for t in store.tasks(stuck.id)}
            assert set(states.values()) == {TaskState.CANCELLED}
        finally:
            await engine.stop()
            store.close()

    asyncio.run(main())


def test_a_removed_backend_strands_only_its_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def record_on_x() -> str:
        store = Store.in_data_dir(data_dir)
        engine = Engine(make_config(data_dir, tmp_path), store, min_poll_interval=0.2)
        await engine.start()
        try:
            run_id = engine.submit(parse_document(CHAIN), backend="x").id
            await until(lambda: store.attempts(run_id), 20, "a submission to be recorded")
            return run_id
        finally:
            await engine.stop()
            store.close()

    stranded = asyncio.run(record_on_x())

    async def without_x() -> None:
        store = Store.in_data_dir(data_dir)
        engine = Engine(make_config(data_dir, tmp_path, with_x=False), store, min_poll_interval=0.2)
        await engine.start()  # does not fail because of the stranded run
        try:
            assert store.get_run(stranded).message == "backend 'x' is not configured"
            other = engine.submit(parse_document(CHAIN), backend="local")
            assert (await engine.wait(other.id, timeout=30)).state == RunState.COMPLETED
            await engine.cancel(stranded)
            final = await engine.wait(stranded, timeout=10)
            assert final.state == RunState.CANCELLED
            attempts = store.attempts(stranded)
            assert attempts and all(a.state == "cancelled" for a in attempts)
            assert all("not configured" in (a.reason or "") for a in attempts)
        finally:
            await engine.stop()
            store.close()

    asyncio.run(without_x())


def test_one_ctrl_c_ends_scripthut_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config_file = tmp_path / "scripthut.yaml"
    config_file.write_text(yaml.safe_dump(config_data(data_dir, tmp_path)))
    workflow = tmp_path / "chain.json"
    workflow.write_text(__import__("json").dumps(CHAIN))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config_file)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", "run", str(workflow), "--backend", "x"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 30
    while "unreachable since" not in seen:
        assert time.monotonic() < deadline, seen
        line = proc.stderr.readline()
        assert line, f"scripthut run ended early: {seen}"
        seen += line
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("one Ctrl-C did not end scripthut run") from None
    assert proc.returncode == 1, (out, err)
    assert "cancelled" in out
