"""The original's files through the server: filter_user on the job list, runs from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripthut.server import reads
from tests.server.conftest import CONFIG, Api

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


@pytest.fixture
def sh_config_text() -> str:
    text = CONFIG.replace("settings:\n", "settings:\n  filter_user: alice\n", 1)
    assert "filter_user: alice" in text
    return text


async def test_jobs_default_to_filter_user_with_a_way_to_show_all(api: Api) -> None:
    reply = await api.get("jobs")
    assert (reply["user_filter"], reply["default_user_filter"]) == ("alice", "alice")
    everyone = await api.get("jobs", params={"all": "true"})
    assert (everyone["user_filter"], everyone["default_user_filter"]) == (None, "alice")
    bob = await api.get("jobs", params={"user": "bob"})
    assert bob["user_filter"] == "bob"


async def test_run_of_a_file_defaults_to_the_file_folder(api: Api, jp_root_dir: Path) -> None:
    folder = jp_root_dir / "flows"
    folder.mkdir()
    doc = {"title": "From a file", "tasks": [{"id": "f", "command": "pwd"}]}
    (folder / "wf.json").write_text(json.dumps(doc))
    run = await api.post("runs", {"path": "flows/wf.json"}, expect=201)
    assert run["name"] == "From a file"
    await api.wait_run(run["id"])
    out = await api.get(f"runs/{run['id']}/tasks/f/logs/output")
    assert out["text"].strip() == str(folder)

    inline = await api.post("runs", {"workflow": [{"id": "g", "command": "pwd"}]}, expect=201)
    await api.wait_run(inline["id"])
    out = await api.get(f"runs/{inline['id']}/tasks/g/logs/output")
    assert out["text"].strip() != str(folder)  # only runs of a file move the default


class _Slot:
    def __init__(self) -> None:
        self.tracked: dict[str, Any] = {}


class _Engine:
    """What jobs_json reads of an engine: its slots and the users' other jobs."""

    def __init__(self, external: list[Any]) -> None:
        self.slots = {"hpc": _Slot()}
        self.runs: dict[str, Any] = {}
        self._external = external

    def external_jobs(self) -> dict[str, Any]:
        return {"hpc": self._external}


def test_user_filter_keeps_that_users_other_jobs() -> None:
    from scripthut.backends.base import JobStatus
    from scripthut.states import JobState

    statuses = [
        JobStatus(job_id="1", state=JobState.RUNNING, user="alice"),
        JobStatus(job_id="2", state=JobState.PENDING, user="bob"),
    ]
    engine: Any = _Engine(statuses)
    rows = reads.jobs_json(engine, None, user="alice", default_user="alice")  # type: ignore[arg-type]
    assert [r["job_id"] for r in rows["jobs"]] == ["1"]
    rows = reads.jobs_json(engine, None, user=None, default_user="alice")  # type: ignore[arg-type]
    assert [r["job_id"] for r in rows["jobs"]] == ["1", "2"]
