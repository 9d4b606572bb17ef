"""Configuration layers: a global file and a project file found by walking up; merge rules,
refused infrastructure keys, relative paths, provenance, and `scripthut config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripthut.config import ConfigSource, load_config
from scripthut.config.provenance import entries
from scripthut.errors import InvalidInput

GLOBAL = """\
backends:
  - name: hpc
    type: slurm
    ssh: {host: login.example.org, user: ann, key_path: keys/id_ed25519}
    env:
      - set: {FROM_BACKEND: global}
  - name: laptop
    type: local
    log_dir: logs
env:
  - set: {SITE: global}
env_groups:
  gpu:
    - set: {CUDA: "11"}
workflows:
  - name: fit
    backend: hpc
    command: echo global-fit
  - name: keep
    backend: laptop
    command: echo keep
settings:
  data_dir: data
"""

PROJECT = """\
workflows:
  - name: fit
    backend: laptop
    command: echo project-fit
  - name: extra
    backend: hpc
    command: echo extra
env:
  - set: {SITE: project}
env_groups:
  gpu:
    - set: {CUDA: "12"}
backends:
  - name: hpc
    env:
      - set: {FROM_PROJECT: "yes"}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SCRIPTHUT_CONFIG", "SCRIPTHUT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "scripthut" / "scripthut.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(GLOBAL)
    (tmp_path / "repo" / "src" / "deep").mkdir(parents=True)
    (tmp_path / "repo" / "scripthut.yaml").write_text(PROJECT)
    (tmp_path / "other").mkdir()
    return tmp_path


def test_the_project_file_is_found_walking_up_and_merged_by_name(home: Path) -> None:
    config = load_config(start=home / "repo" / "src" / "deep")
    assert [(w.name, w.backend, w.command) for w in config.workflows] == [
        ("fit", "laptop", "echo project-fit"),  # replaced in place: the project wins
        ("keep", "laptop", "echo keep"),
        ("extra", "hpc", "echo extra"),
    ]
    assert [r.set for r in config.env] == [{"SITE": "global"}, {"SITE": "project"}]
    assert [r.set for r in config.env_groups["gpu"]] == [{"CUDA": "12"}]
    assert [r.set for r in config.backend("hpc").env] == [
        {"FROM_BACKEND": "global"},
        {"FROM_PROJECT": "yes"},
    ]


def test_without_a_project_file_the_global_file_alone(home: Path) -> None:
    config = load_config(start=home / "other")
    assert [w.name for w in config.workflows] == ["fit", "keep"]
    assert [r.set for r in config.env] == [{"SITE": "global"}]
    assert config.for_folder(home / "repo").workflows[0].command == "echo project-fit"
    assert config.for_folder(home / "other") is not config.for_folder(home / "repo")


def test_relative_paths_resolve_against_their_own_file(home: Path) -> None:
    folder = home / "xdg" / "scripthut"
    config = load_config(start=home / "repo")
    hpc = config.backend("hpc")
    assert hpc.ssh is not None and hpc.ssh.key_path == folder / "keys" / "id_ed25519"
    assert config.backend("laptop").log_dir == str(folder / "logs")
    assert config.data_dir == folder / "data"


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("settings:\n  data_dir: /elsewhere\n", 2, "'settings.data_dir'"),
        ("pricing: {region: eu-west-1}\n", 1, "'pricing'"),
        (
            "backends:\n  - name: hpc\n    ssh: {host: evil.example, user: x}\n",
            3,
            "'ssh' of backend 'hpc'",
        ),
    ],
)
def test_infrastructure_keys_are_refused_in_a_project_file(
    home: Path, text: str, line: int, key: str
) -> None:
    project = home / "repo" / "scripthut.yaml"
    project.write_text("env: []\n" + text)
    with pytest.raises(InvalidInput) as caught:
        load_config(start=home / "repo")
    (issue,) = caught.value.issues
    assert issue.file == str(project) and issue.line == line + 1
    assert key in issue.message
    assert f"belongs in the global file {home / 'xdg' / 'scripthut' / 'scripthut.yaml'}" in (
        issue.message
    )
    assert str(issue).startswith(f"{project}: ")


def test_a_project_backend_entry_must_name_a_global_backend(home: Path) -> None:
    (home / "repo" / "scripthut.yaml").write_text(
        "backends:\n  - name: mine\n    env: [{set: {A: b}}]\n"
    )
    with pytest.raises(InvalidInput, match="backend 'mine' is not defined in the global file"):
        load_config(start=home / "repo")


def test_errors_of_both_files_come_at_once_with_their_file_and_line(home: Path) -> None:
    global_file = home / "xdg" / "scripthut" / "scripthut.yaml"
    global_file.write_text(GLOBAL.replace("command: echo keep", "comand: echo keep"))
    project = home / "repo" / "scripthut.yaml"
    project.write_text(PROJECT.replace("backend: hpc\n", "backend: hcp\n"))
    with pytest.raises(InvalidInput) as caught:
        load_config(start=home / "repo")
    found = {(i.file, i.line) for i in caught.value.issues}
    assert (str(global_file), 21) in found  # comand:
    assert (str(project), 6) in found  # hcp
    assert any("did you mean 'hpc'" in i.message for i in caught.value.issues)


def test_show_gives_file_and_line_of_every_key(home: Path) -> None:
    config = load_config(start=home / "repo")
    where = {e["key"]: (e["file"], e["line"]) for e in entries(config)}
    global_file = str(home / "xdg" / "scripthut" / "scripthut.yaml")
    project = str(home / "repo" / "scripthut.yaml")
    assert where["backends[hpc].ssh.host"] == (global_file, 4)
    assert where["workflows[fit].command"] == (project, 4)
    assert where["workflows[keep].command"] == (global_file, 21)
    assert where["backends[hpc].env[1].set.FROM_PROJECT"] == (project, 16)
    assert where["settings.poll_interval"] == (None, None)  # a default


def test_secret_looking_values_are_masked_in_show(home: Path) -> None:
    (home / "repo" / "scripthut.yaml").write_text("env:\n  - set: {API_TOKEN: tok-123456}\n")
    listed = entries(load_config(start=home / "repo"))
    assert "tok-123456" not in json.dumps(listed)


def test_the_same_file_is_never_both_layers(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = home / "repo" / "scripthut.yaml"
    project.write_text(GLOBAL)
    monkeypatch.setenv("SCRIPTHUT_CONFIG", str(project))
    source = ConfigSource(start=home / "repo" / "src")
    assert [f.layer for f in source.files()] == ["global"]
    assert source.load().backend("hpc").name == "hpc"


def hut(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "xdg")}
    env.pop("SCRIPTHUT_CONFIG", None)
    env["JUPYTER_RUNTIME_DIR"] = str(home / "runtime")
    return subprocess.run(
        [sys.executable, "-m", "scripthut.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_config_show_and_check(home: Path) -> None:
    shown = hut("config", "show", cwd=home / "repo" / "src", home=home)
    assert shown.returncode == 0, shown.stderr
    assert f'workflows[fit].command = "echo project-fit"  # {home}/repo/scripthut.yaml:4' in (
        shown.stdout.replace("\n", "")
    )
    data: dict[str, Any] = json.loads(
        hut("config", "show", "--json", cwd=home / "repo", home=home).stdout
    )
    assert [f["layer"] for f in data["files"]] == ["global", "project"]
    checked = hut("config", "check", cwd=home / "repo", home=home)
    assert checked.returncode == 0 and "project" in checked.stdout
    (home / "repo" / "scripthut.yaml").write_text("settings: {data_dir: /x}\n")
    broken = hut("config", "check", cwd=home / "repo", home=home)
    assert broken.returncode == 2
    assert "scripthut.yaml: settings.data_dir (line 1)" in broken.stderr
    as_json = json.loads(hut("config", "check", "--json", cwd=home / "repo", home=home).stdout)
    assert as_json["valid"] is False and as_json["errors"][0]["line"] == 1
    outside = hut("config", "check", cwd=home / "other", home=home)
    assert outside.returncode == 0  # the broken project file is not in use from there


def test_cli_config_reload_without_a_server_says_so(home: Path) -> None:
    (home / "runtime").mkdir()
    result = hut("config", "reload", cwd=home / "repo", home=home)
    assert result.returncode == 1
    assert "no running Jupyter server" in result.stderr


def test_cli_run_of_a_file_reads_the_project_file_of_its_folder(home: Path) -> None:
    outs = {}
    for name, folder in (("repo", home / "repo" / "src"), ("other", home / "other")):
        out = home / f"{name}.txt"
        wf = folder / "wf.json"
        wf.write_text(json.dumps([{"id": "t", "command": f"echo \"$SITE\" > '{out}'"}]))
        result = hut("run", str(wf), "--backend", "laptop", cwd=home, home=home)
        assert result.returncode == 0, result.stderr
        outs[name] = out.read_text()
    assert outs == {"repo": "project\n", "other": "global\n"}
