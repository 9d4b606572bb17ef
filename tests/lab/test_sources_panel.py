"""The panel's Sources section in a real JupyterLab (Chromium): sync a git source, preview a
workflow file (the run view's DAG component), run it, and see the run complete."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab.harness import LabServer, newest_run

pytestmark = pytest.mark.slow

FLOW = {
    "title": "Panel flow",
    "tasks": [
        {"id": "prep", "command": 'echo "at $SCRIPTHUT_GIT_SHA"'},
        {"id": "sim.1", "command": "cat data.txt", "deps": ["prep"]},
        {"id": "sim.2", "command": "cat data.txt", "deps": ["prep"]},
        {"id": "report", "command": "echo done", "deps": ["sim.*"]},
    ],
}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def make_repo(base: Path) -> tuple[Path, str]:
    bare, work = base / "flows.git", base / "work"
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / ".hut" / "workflows").mkdir(parents=True)
    (work / ".hut" / "workflows" / "panel.json").write_text(json.dumps(FLOW))
    (work / ".hut" / "workflows" / "broken.json").write_text("{not json")
    (work / "data.txt").write_text("from the repository\n")
    for argv in (["add", "-A"], ["commit", "-qm", "one"], ["push", "-q", str(bare), "main"]):
        subprocess.run(["git", "-C", str(work), *argv], check=True, env=env)
    sha = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return bare, sha


def test_sync_preview_and_run_a_source_from_the_panel(
    lab_factory: Callable[..., LabServer],
    open_lab: Callable[[LabServer], object],
    tmp_path: Path,
) -> None:
    bare, sha = make_repo(tmp_path)
    config = f"""\
backends:
  - name: local
    type: local
    max_concurrent: 4
sources:
  - name: flows
    type: git
    url: {bare}
    clone_dir: {tmp_path / "clones"}
settings:
  poll_interval: 2
"""
    server = lab_factory("sources", config_text=config)
    lab = open_lab(server)
    lab.open()  # type: ignore[attr-defined]
    panel = lab.open_panel()  # type: ignore[attr-defined]
    page = lab.page  # type: ignore[attr-defined]
    source = panel.locator('.jp-ScriptHut-source[data-source="flows"]')
    source.wait_for(timeout=20_000)
    assert "never synced" in source.inner_text()

    source.locator('button[data-source-action="sync"]').click()
    good = source.locator('.jp-ScriptHut-source-file[data-file=".hut/workflows/panel.json"]')
    good.wait_for(timeout=30_000)
    assert good.get_attribute("data-valid") == "true"
    assert "Panel flow" in good.inner_text() and "4 tasks" in good.inner_text()
    bad = source.locator('.jp-ScriptHut-source-file[data-file=".hut/workflows/broken.json"]')
    assert bad.get_attribute("data-valid") == "false"
    assert "not valid JSON" in bad.inner_text()
    assert source.locator(f'[data-sha="{sha}"]').count() == 1

    good.locator('button[data-source-action="preview"]').click()
    preview = panel.locator('.jp-ScriptHut-preview[data-file=".hut/workflows/panel.json"]')
    preview.wait_for(timeout=30_000)
    preview.locator('.sh-graph svg g[data-task-id="prep"]').wait_for()
    assert preview.locator(".sh-edge").count() >= 2
    assert "4 tasks" in preview.inner_text() and sha[:12] in preview.inner_text()
    assert server.api("GET", "runs")[1]["total"] == 0  # a preview starts nothing
    lab.screenshot("sources-preview")  # type: ignore[attr-defined]

    good.locator('button[data-source-action="run"]').click()
    view = page.locator(".jp-ScriptHut-runpanel")
    view.wait_for(timeout=30_000)
    run = newest_run(server, "Panel flow")
    page.wait_for_selector(
        '.jp-ScriptHut-runpanel .sh-runview[data-state="completed"]', timeout=60_000
    )
    assert run["provenance"]["git"]["sha"] == sha
    assert server.wait_run(run["id"], {"completed"}, timeout=5)["state"] == "completed"
    lab.screenshot("sources-run")  # type: ignore[attr-defined]
