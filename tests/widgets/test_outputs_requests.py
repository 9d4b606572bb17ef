"""The widgets answer the drawer's Outputs tab over the kernel channel too (when the page
cannot reach the REST API): the listing, and a file's bytes as base64 with its type."""

from __future__ import annotations

import base64

import pytest

from scripthut.client.local import LocalClient
from scripthut.widgets import RunView
from tests.widgets.conftest import front_end, wait_for
from tests.widgets.test_feed import comm_of

pytestmark = pytest.mark.usefixtures("recording_comm")


def test_outputs_and_a_file_over_the_channel(client: LocalClient) -> None:
    cmd = 'printf "x,y\\n1,2\\n" > "$SCRIPTHUT_OUTPUT_DIR/t.csv"'
    run = client.submit([{"id": "fit", "command": cmd}])
    client.wait(run["id"], timeout=60)
    view = RunView(run["id"], client=client)
    try:
        args = {"run": run["id"], "task": "fit"}
        front_end(view, {"type": "request", "id": 1, "op": "outputs", "args": args})
        front_end(
            view, {"type": "request", "id": 2, "op": "output", "args": {**args, "path": "t.csv"}}
        )
        front_end(
            view, {"type": "request", "id": 3, "op": "output", "args": {**args, "path": "../x"}}
        )
        front_end(view, {"type": "request", "id": 4, "op": "summary", "args": {"run": run["id"]}})
        replies = wait_for(
            lambda: (
                (r := {m["id"]: m for m in comm_of(view).customs() if m["type"] == "reply"})
                and len(r) == 4
                and r
            ),
            what="every reply",
        )
        assert [f["path"] for f in replies[1]["data"]["files"]] == ["t.csv"]
        assert base64.b64decode(replies[2]["data"]["base64"]) == b"x,y\n1,2\n"
        assert replies[2]["data"]["type"].startswith("text/csv")
        assert replies[3]["ok"] is False and "../x" in replies[3]["error"]
        assert "- `t.csv` (8 B)" in replies[4]["data"]["markdown"]
    finally:
        view.close()
