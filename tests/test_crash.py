"""Kill the engine with SIGKILL in the middle of a 300-task local run, twice, and restart it:
every task must end exactly once — none run twice, none lost — judged from the tasks' own output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scripthut.store import Store

TASKS = 300


def scripthut(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    config = tmp_path / "scripthut.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": [{"name": "local", "type": "local", "max_concurrent": 8, "cpus": 8}],
                "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 2},
            }
        )
    )
    tasks = [
        {
            "id": f"t{i}",
            "command": f"echo $SCRIPTHUT_TASK_ID >> {ledger}; sleep 0.0{i % 7}",
            "deps": [f"t{i - 25}"] if i >= 25 else [],
        }
        for i in range(TASKS)
    ]
    workflow = tmp_path / "crash.json"
    workflow.write_text(json.dumps(tasks))
    env = {**os.environ, "SCRIPTHUT_CONFIG": str(config)}

    first = scripthut("run", str(workflow), "--json", env=env)
    wait_for_lines(ledger, 60)
    first.send_signal(signal.SIGKILL)
    first.wait()

    listing = subprocess.run(
        [sys.executable, "-m", "scripthut.cli", "runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = json.loads(listing.stdout)[0]["id"]

    second = scripthut("watch", run_id, "--json", env=env)
    wait_for_lines(ledger, 180)
    second.send_signal(signal.SIGKILL)
    second.wait()

    third = scripthut("watch", run_id, "--json", env=env)
    out, err = third.communicate(timeout=180)
    assert third.returncode == 0, f"{out}\n{err}"
    result = json.loads(out)
    assert result["status"] == "completed"
    assert set(result["tasks"].values()) == {"completed"}
    assert len(result["tasks"]) == TASKS

    lines = ledger.read_text().splitlines()
    assert sorted(lines) == sorted(f"t{i}" for i in range(TASKS)), "a task ran twice or never"

    store = Store.in_data_dir(tmp_path / "data")
    attempts = store.attempts(run_id)
    assert len(attempts) == TASKS, "a task was submitted more than once"
    assert {a.state for a in attempts} == {"completed"}
