"""Fixtures of the widget tests: a recording comm, an in-process client, front-end messages.

`RecordingComm` stands in for the kernel's comm: ipywidgets asks `comm.create_comm` for
one, and every message the widget publishes (its opening state, trait updates, custom
messages) is kept with the time and the thread that sent it. The client is the real
in-process one, hosting the engine over a temporary data directory with the local backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comm
import pytest
from comm import DummyComm

from scripthut.client.local import LocalClient

CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 4
    cpus: 4
settings:
  poll_interval: 2
"""


@dataclass
class Sent:
    msg_type: str
    data: dict[str, Any]
    at: float
    thread: str


class RecordingComm(DummyComm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        with self._lock:
            self.sent.append(
                Sent(msg_type, data or {}, time.monotonic(), threading.current_thread().name)
            )

    def customs(self) -> list[dict[str, Any]]:
        """Custom messages (patches, replies), in order."""
        with self._lock:
            return [s.data["content"] for s in self.sent if s.data.get("method") == "custom"]

    def snapshots(self) -> list[dict[str, Any]]:
        """Every `_snapshot` the widget published: the opening one, then trait updates."""
        out = []
        with self._lock:
            for s in self.sent:
                state = s.data.get("state", {})
                if "_snapshot" in state:
                    out.append(state["_snapshot"])
        return out


@pytest.fixture
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalClient]:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    for name in ("SCRIPTHUT_SERVER_URL", "SCRIPTHUT_SERVER_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "scripthut.yaml"
    config.write_text(CONFIG)
    hosted = LocalClient(config_file=str(config), data_dir=str(tmp_path / "data"))
    yield hosted
    hosted.close()


def front_end(widget: Any, content: dict[str, Any]) -> None:
    """Deliver a custom message as the kernel does when the front end sends one."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def ready(widget: Any) -> None:
    front_end(widget, {"type": "ready", "seq": widget._snapshot["seq"]})


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def apply(snapshot: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """What a front end holds after a snapshot and the patches that follow it."""
    tables = {
        name: {str(r[t["key"]]): dict(r) for r in t["rows"]}
        for name, t in snapshot["tables"].items()
    }
    keys = {name: t["key"] for name, t in snapshot["tables"].items()}
    meta = dict(snapshot["meta"])
    seq = snapshot["seq"]
    for patch in patches:
        if patch.get("type") != "patch" or patch["seq"] <= seq:
            continue
        assert patch["seq"] == seq + 1, "patches arrive in order, none missing"
        seq = patch["seq"]
        meta.update(patch.get("meta", {}))
        for name, change in patch.get("tables", {}).items():
            rows = tables[name]
            for row in change.get("set", []):
                rows.setdefault(str(row[keys[name]]), {}).update(row)
            for key in change.get("del", []):
                rows.pop(key, None)
    return {"meta": meta, "tables": tables, "seq": seq}
