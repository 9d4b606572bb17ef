"""The usual HPC deployment on the Slurm rig: the hub's SlurmSpawner runs alice's server as a
Slurm job, and her standalone engine runs outside the job (on the "login node"), so the job
ending — its time limit, or the hub stopping it — never stops her runs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hub.harness import ROOT, Hub, missing, run_as, start_hub, stop_hub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_hub() -> Iterator[Hub]:
    rig = subprocess.run(["bash", str(ROOT / "tests/rig/slurm.sh"), "status"], capture_output=True)
    if rig.returncode != 0:
        missing("the Slurm rig is not up (bash tests/rig/slurm.sh up)")
    running = start_hub("slurm")
    try:
        yield running
    finally:
        stop_hub(running)


def alice_jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-u", "alice", "-o", "%i %j %T"], capture_output=True, text=True
    )
    return [line for line in out.stdout.splitlines() if "spawner" in line or "jupyter" in line]


def wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_slurm_spawned_server_uses_the_engine_outside_the_job(slurm_hub: Hub) -> None:
    hub = slurm_hub
    data = hub.data_dir("alice")
    started = run_as("alice", "engine", "start", "--json", data_dir=data)
    assert started.returncode == 0, started.stderr
    engine = json.loads(started.stdout)
    alice = hub.start_server("alice")
    assert alice_jobs(), "alice's server is not a Slurm job"
    health = hub.api(alice, "alice", "GET", "health").json()
    assert health["mode"] == "client", health
    assert health["lease"]["role"] == "daemon" and health["lease"]["pid"] == engine["pid"]
    body = {"workflow": {"tasks": [{"id": "a", "command": "sleep 3; id -un"}]}, "name": "hpc"}
    reply = hub.api(alice, "alice", "POST", "runs", json=body)
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]
    # the hub stops the server: scancel of its job; the run goes on without it
    assert hub.admin("DELETE", "users/alice/server").status_code in (202, 204)
    wait_for("the job to leave the queue", lambda: not alice_jobs())
    status = run_as("alice", "engine", "status", "--json", data_dir=data)
    assert json.loads(status.stdout)["pid"] == engine["pid"]
    show = lambda: json.loads(run_as("alice", "show", run_id, "--json", data_dir=data).stdout)  # noqa: E731
    final = wait_for("the run to complete", lambda: (s := show())["state"] == "completed" and s)
    assert final["tasks"][0]["state"] == "completed"
