"""In a real ipykernel, a widget's patches reach the front end while a cell is running.

The test is the front end: it starts a kernel, makes a RunView in one cell, answers the
widget's opening with `ready` as the browser would (a comm message), then runs a cell
that sleeps. Patches sent by the feed thread must arrive on IOPub between that cell's
`busy` and `idle`, and bring the run to its end.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from tests.widgets.conftest import CONFIG, apply

pytestmark = pytest.mark.slow

SETUP = """
from scripthut.client.local import LocalClient
from scripthut.widgets import RunView
client = LocalClient(config_file={config!r}, data_dir={data!r})
run = client.submit(
    [{{"id": "a", "command": "sleep 2"}}, {{"id": "b", "command": "true", "deps": ["a"]}}]
)
view = RunView(run["id"], client=client)
view
"""


def execute(kc: Any, code: str) -> str:
    return str(kc.execute(code))


def collect(kc: Any, until_idle_of: str, timeout: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        out.append(msg)
        if (
            msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
            and msg["parent_header"].get("msg_id") == until_idle_of
        ):
            return out
    raise AssertionError("the kernel did not finish in time")


def test_patches_arrive_while_a_cell_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("SCRIPTHUT_SERVER_URL", raising=False)
    config = tmp_path / "scripthut.yaml"
    config.write_text(CONFIG)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        setup = execute(kc, SETUP.format(config=str(config), data=str(tmp_path / "data")))
        messages = collect(kc, setup, timeout=60)
        errors = [m["content"] for m in messages if m["msg_type"] == "error"]
        assert not errors, errors
        (opened,) = [
            m
            for m in messages
            if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_kind") == "runview"
        ]
        comm_id = opened["content"]["comm_id"]
        snapshot = opened["content"]["data"]["state"]["_snapshot"]
        assert snapshot["meta"]["state"] in ("pending", "running")

        ready = kc.session.msg(
            "comm_msg",
            {
                "comm_id": comm_id,
                "data": {"method": "custom", "content": {"type": "ready", "seq": snapshot["seq"]}},
            },
        )
        kc.shell_channel.send(ready)
        busy = execute(kc, "import time; time.sleep(6)")
        during: list[dict[str, Any]] = []
        running = False
        for msg in collect(kc, busy, timeout=60):
            if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == busy:
                running = msg["content"]["execution_state"] == "busy"
            elif msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id and running:
                during.append(msg["content"]["data"])
        patches = [d["content"] for d in during if d.get("method") == "custom"]
        assert patches, "no patch arrived while the cell was busy"
        assert all(p["type"] == "patch" for p in patches)
        held = apply(snapshot, patches)
        assert held["meta"]["state"] == "completed"
        assert {t["state"] for t in held["tables"]["tasks"].values()} == {"completed"}
        execute(kc, "view.close(); client.close()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
