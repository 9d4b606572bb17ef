"""`scripthut cache probe|ls|clear`, `run --no-cache` and `manifest` on real runs, and the
manifest over REST through a real jupyter_server is in tests/server/test_outputs_api.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.test_cli import hut, write


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "scripthut.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": [{"name": "local", "type": "local", "max_concurrent": 4}],
                "cache": {"directory": str(tmp_path / "store")},
                "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 2},
            }
        )
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTHUT_")}
    return {**clean, "SCRIPTHUT_CONFIG": str(config)}


def test_probe_run_ls_manifest_no_cache_and_clear(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    tasks = [
        {
            "id": "make",
            "command": "echo ran >> log; cp in.txt out.txt",
            "inputs": ["in.txt"],
            "outputs": ["out.txt"],
        },
        {"id": "plain", "command": "true"},
    ]
    wf = write(tmp_path / "wf.json", tasks)

    def probe() -> dict[str, str]:
        rows = json.loads(hut("cache", "probe", wf, "--json", env=env).stdout)
        return {r["task"]: r["outcome"] for r in rows}

    assert probe() == {"make": "miss", "plain": "not cacheable"}
    run1 = json.loads(hut("run", wf, "--json", env=env).stdout)["run"]
    assert probe() == {"make": "hit", "plain": "not cacheable"}
    manifest = json.loads(hut("manifest", run1, "make", env=env).stdout)
    assert manifest["cache"]["stored"] is True and "in.txt" in manifest["inputs"]

    listed = json.loads(hut("cache", "ls", "--json", env=env).stdout)
    assert [e["key"] for e in listed] == [manifest["cache"]["key"]]

    run2 = json.loads(hut("run", wf, "--json", env=env).stdout)["run"]
    hit = json.loads(hut("manifest", run2, "make", env=env).stdout)["cache"]
    assert hit["hit"] is True
    logged = hut("logs", run2, "make", env=env)
    assert logged.returncode == 0 and f"restored from cache {hit['key']}" in logged.stdout
    shown = json.loads(hut("show", run2, "--json", env=env).stdout)["tasks"]
    assert [
        (t["id"], t["state"], t["job_id"], t["attempt"]) for t in shown if t["id"] == "make"
    ] == [("make", "completed", None, 1)]
    hut("run", wf, "--no-cache", env=env)
    assert (tmp_path / "log").read_text() == "ran\nran\n"

    cleared = hut("cache", "clear", "--all", env=env)
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert probe()["make"] == "miss"
    refused = hut("cache", "clear", env=env)
    assert refused.returncode == 2 and "--all" in refused.stderr
    missing = hut("manifest", run1, "plain", env=env)
    assert missing.returncode == 2 and "no manifest" in missing.stderr
