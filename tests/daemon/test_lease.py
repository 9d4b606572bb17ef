"""The lease names its holder's role and host; an engine that loses it stops driving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripthut.config import Config
from scripthut.daemon.files import EngineFiles, role_of
from scripthut.engine import engine as engine_module
from scripthut.engine.engine import Engine
from scripthut.store import Store
from scripthut.workflow.parse import parse_document


def test_roles_of_lease_owners() -> None:
    assert role_of("daemon/vm:1:ab") == "daemon"
    assert role_of("server/vm:1:ab") == "server"
    assert role_of("vm:1:ab") == "cli"
    assert role_of(None) == "cli"


def test_a_lease_taken_by_another_host_stops_this_engine(
    config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine_module, "LEASE_RENEW", 0.2)

    async def main() -> tuple[bool, list[str]]:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store)
        await engine.start()
        flow = parse_document({"tasks": [{"id": "a", "command": "sleep 30"}]})
        run = engine.submit(flow)
        # the lease expired while this host was suspended, and a compute node took it
        store.release_lease(engine.owner)
        assert store.grant_lease("daemon/node7:99:ff", 99, "node7", ttl=600)
        await asyncio.wait_for(engine.released.wait(), 10)
        stopped = all(s.task is None or s.task.done() for s in engine.slots.values())
        await engine.stop()
        holder = store.lease_holder() or {}
        store.close()
        return stopped, [run.id, holder.get("host", "")]

    stopped, (run_id, host) = asyncio.run(main())
    assert stopped
    assert host == "node7"  # stopping did not release the other host's lease
    assert run_id


def test_handover_is_declined_unless_the_host_allows_it(config: Config) -> None:
    async def main() -> tuple[bool, bool]:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store)
        await engine.start()
        request = {"owner": "daemon/vm:1:aa", "pid": 1, "host": "vm"}
        engine._handover(request)
        declined = not engine.released.is_set()
        engine.yields_to_daemon = True
        engine._handover(request)
        await engine.stop()
        store.close()
        return declined, engine.handover_to == request

    declined, granted = asyncio.run(main())
    assert declined
    assert granted


def test_pid_file_is_private_and_only_its_owner_removes_it(tmp_path: Path) -> None:
    files = EngineFiles(tmp_path / "data")
    files.write_pid("daemon/a")
    assert files.pid_file.stat().st_mode & 0o777 == 0o600
    files.remove_pid("daemon/b")
    assert files.read_pid() is not None
    files.remove_pid("daemon/a")
    assert files.read_pid() is None
