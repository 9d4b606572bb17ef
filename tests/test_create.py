"""Runs from a file: working dirs anchored at the file's folder on shared file systems."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripthut.config import parse_config
from scripthut.engine.create import anchor_working_dirs, check_run
from scripthut.errors import InvalidInput
from scripthut.workflow.parse import parse_document

CONFIG = {
    "backends": [
        {"name": "here", "type": "slurm", "transport": "local"},
        {"name": "far", "type": "slurm", "ssh": {"host": "h", "user": "u"}},
        {"name": "box", "type": "local"},
    ]
}
DOC = [
    {"id": "default", "command": "true"},
    {"id": "relative", "command": "true", "working_dir": "data/../out"},
    {"id": "home", "command": "true", "working_dir": "~"},
    {"id": "absolute", "command": "true", "working_dir": "/tmp"},
]


@pytest.mark.parametrize("backend", ["here", "box"])
def test_shared_file_system_anchors_default_and_relative_dirs(backend: str, tmp_path: Path) -> None:
    workflow = parse_document(DOC)
    anchor_working_dirs(parse_config(CONFIG), workflow, backend, tmp_path)
    dirs = {t.id: t.working_dir for t in workflow.tasks}
    assert dirs == {
        "default": str(tmp_path),
        "relative": str(tmp_path / "out"),
        "home": "~",
        "absolute": "/tmp",
    }
    assert workflow.tasks[0].to_dict()["working_dir"] == str(tmp_path)  # stored with the run


def test_remote_backends_keep_their_defaults(tmp_path: Path) -> None:
    workflow = parse_document(DOC)
    anchor_working_dirs(parse_config(CONFIG), workflow, "far", tmp_path)
    assert [t.working_dir for t in workflow.tasks] == ["~", "data/../out", "~", "/tmp"]


def test_check_run_checks_backend_and_env_includes() -> None:
    config = parse_config({**CONFIG, "env_groups": {"gcc": [{"init": "true"}]}})
    ok = parse_document([{"id": "a", "command": "x", "env": [{"include": ["gcc"]}]}])
    assert check_run(config, ok, "box").name == "box"
    bad = parse_document([{"id": "a", "command": "x", "env": [{"include": ["gcc", "nope"]}]}])
    with pytest.raises(InvalidInput) as caught:
        check_run(config, bad, "box")
    assert "nope" in caught.value.render()
