"""`POST runs/<id>/notify`: a run opts in to notifications, recorded where the engine reads it."""

from __future__ import annotations

from pathlib import Path

from scripthut.notify.outbox import Outbox
from tests.server.conftest import Api


async def test_a_run_opts_in_and_an_unknown_run_is_404(api: Api, sh_data_dir: Path) -> None:
    run = await api.post(
        "runs", {"workflow": {"tasks": [{"id": "a", "command": "true"}]}}, expect=201
    )
    reply = await api.post(f"runs/{run['id']}/notify", {})
    assert reply == {"run": run["id"], "notify": True, "configured": False}
    outbox = Outbox(sh_data_dir / "scripthut.db")
    try:
        assert outbox.opted_in([run["id"], "other"]) == {run["id"]}
    finally:
        outbox.close()
    code, error = await api.call("POST", "runs/20990101-000000-dead/notify", {})
    assert code == 404, error
