"""The `scripthut` command's contract: exit codes, JSON shapes, every subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import SECRET_HOOK, SECRET_WORKFLOW, assert_no_secret


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    config = tmp_path / "scripthut.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": [{"name": "local", "type": "local", "max_concurrent": 4, "cpus": 4}],
                "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 2},
            }
        )
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTHUT_")}
    values = {**clean, "SCRIPTHUT_CONFIG": str(config)}
    yield values
    hut("engine", "stop", env=values)  # `run --detach` starts the standalone engine


def hut(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripthut.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(path: Path, doc: object) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_run_json_reports_every_task_and_exits_zero(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(
        tmp_path / "wf.json",
        [{"id": "a", "command": "echo hi"}, {"id": "b", "command": "true", "deps": ["a"]}],
    )
    result = hut("run", wf, "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"run", "status", "tasks"}
    assert doc["status"] == "completed"
    assert doc["tasks"] == {"a": "completed", "b": "completed"}


def test_failed_run_exits_one_with_summary(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(
        tmp_path / "wf.json",
        [{"id": "a", "command": "exit 4"}, {"id": "b", "command": "true", "deps": ["a"]}],
    )
    result = hut("run", wf, env=env)
    assert result.returncode == 1
    assert "failed" in result.stdout and "dep_failed" in result.stdout
    assert "exit code 4" in result.stdout or " 4 " in result.stdout


def test_invalid_workflow_exits_two_and_lists_every_problem(
    tmp_path: Path, env: dict[str, str]
) -> None:
    wf = write(
        tmp_path / "wf.json",
        [
            {"id": "a", "command": "true", "deps": ["missing"]},
            {"id": "a", "command": "true"},
            {"id": "b", "comand": "true"},
        ],
    )
    for command in ("run", "validate"):
        result = hut(command, wf, env=env)
        assert result.returncode == 2
        assert "missing" in result.stderr
        assert "duplicate" in result.stderr.lower()
        assert "comand" in result.stderr
        assert result.stdout == ""
    assert json.loads(hut("runs", "--json", env=env).stdout) == []


def test_validate_ok(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(
        tmp_path / "wf.json",
        {
            "tasks": [
                {"id": "x.1", "command": "true"},
                {"id": "y", "command": "true", "deps": ["x.*"]},
            ]
        },
    )
    result = hut("validate", wf, "--json", env=env)
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc == {
        "valid": True,
        "config": env["SCRIPTHUT_CONFIG"],
        "backends": ["local"],
        "file": wf,
        "backend": "local",
        "tasks": 2,
        "edges": 1,
    }


def test_config_errors_exit_two(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  - name: x\n    type: local\n    max_concurent: 3\n")
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true"}])
    result = hut("run", wf, "--config", str(bad), env=env)
    assert result.returncode == 2
    assert "max_concurent" in result.stderr and "max_concurrent" in result.stderr


def test_unknown_backend_exits_two(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true"}])
    result = hut("run", wf, "--backend", "nope", env=env)
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_runs_show_logs_export(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(
        tmp_path / "wf.json",
        [{"id": "a", "command": "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2"}],
    )
    run_id = json.loads(hut("run", wf, "--json", env=env).stdout)["run"]

    runs = json.loads(hut("runs", "--json", env=env).stdout)
    assert runs[0]["id"] == run_id and runs[0]["counts"] == {"completed": 1}

    shown = json.loads(hut("show", run_id[:17], "--json", env=env).stdout)
    assert shown["id"] == run_id and shown["tasks"][0]["state"] == "completed"

    assert hut("logs", run_id, "a", env=env).stdout == "line1\nline2\nline3\nline4\nline5\n"
    assert hut("logs", run_id, "a", "--tail", "2", env=env).stdout == "line4\nline5\n"
    assert hut("logs", run_id, "a", "--error", env=env).stdout == "err\n"
    as_json = json.loads(hut("logs", run_id, "a", "--tail", "1", "--json", env=env).stdout)
    assert as_json["text"] == "line5\n"
    assert as_json["log"] == "output"
    assert as_json["next_offset"] == as_json["offset"] + len("line5\n")

    exported = json.loads(hut("export", run_id, env=env).stdout)
    assert exported["run"]["id"] == run_id
    assert exported["workflow"]["tasks"][0]["id"] == "a"
    assert exported["attempts"][0]["script"].startswith("#!/bin/bash")

    missing = hut("show", "no-such-run", env=env)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr
    missing_task = hut("logs", run_id, "zzz", env=env)
    assert missing_task.returncode == 2 and "zzz" in missing_task.stderr


def test_cancel_and_rerun(tmp_path: Path, env: dict[str, str]) -> None:
    flag = tmp_path / "flag"
    wf = write(
        tmp_path / "wf.json",
        [
            {"id": "slow", "command": f"test -e {flag} || sleep 60"},
            {"id": "after", "command": "true", "deps": ["slow"]},
        ],
    )
    started = hut("run", wf, "--detach", "--json", env=env)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run"]

    cancelled = hut("cancel", run_id, "--json", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == {"run": run_id, "status": "cancelled"}
    shown = json.loads(hut("show", run_id, "--json", env=env).stdout)
    assert {t["id"]: t["state"] for t in shown["tasks"]} == {
        "slow": "cancelled",
        "after": "cancelled",
    }

    flag.touch()
    rerun = hut("rerun", run_id, "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["tasks"] == {"slow": "completed", "after": "completed"}


def test_follow_prints_log_while_task_runs(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "echo one; sleep 1; echo two"}])
    run_id = json.loads(hut("run", wf, "--detach", "--json", env=env).stdout)["run"]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "scripthut.cli", "watch", run_id, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    followed = hut("logs", run_id, "a", "--follow", env=env, timeout=30)
    watcher.communicate(timeout=30)
    assert followed.stdout == "one\ntwo\n"


def test_data_dir_environment_variable_wins(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true"}])
    other = tmp_path / "elsewhere"
    result = hut("run", wf, "--json", env={**env, "SCRIPTHUT_DATA_DIR": str(other)})
    assert result.returncode == 0, result.stderr
    assert (other / "scripthut.db").exists()
    assert not (tmp_path / "data" / "scripthut.db").exists()


# --- the original's files, validate, migrate, errors in full ---------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_validate_checks_the_config_as_run_does(tmp_path: Path, env: dict[str, str]) -> None:
    result = hut("validate", "--config", str(FIXTURES / "original" / "scripthut.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert "valid, backends hpc, torque, aws-batch, aws-ec2, workstation" in result.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("backends:\n  - name: a\n    type: ecs\n")
    result = hut("validate", "--config", str(broken), env=env)
    assert result.returncode == 2
    assert "ECS is not supported (use type: batch for AWS Batch)" in result.stderr
    result = hut("validate", env={**env, "SCRIPTHUT_CONFIG": str(broken)})
    assert result.returncode == 2

    wf = write(
        tmp_path / "wf.json", [{"id": "a", "command": "true", "env": [{"include": ["gcc"]}]}]
    )
    result = hut("validate", wf, env=env)
    assert result.returncode == 2
    assert "gcc" in result.stderr
    result = hut("validate", wf, "--backend", "nope", env=env)
    assert result.returncode == 2 and "nope" in result.stderr


def test_v03_files_validate_with_one_warning_per_key(env: dict[str, str]) -> None:
    config = str(FIXTURES / "v03" / "scripthut.yaml")
    sflow = str(FIXTURES / "v03" / "sims" / "sweep" / "sflow.json")
    result = hut("validate", sflow, "--config", config, "--backend", "local", env=env)
    assert result.returncode == 0, result.stderr
    assert "3 tasks, 2 dependencies, ready to run on backend 'local'" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 4, result.stderr
    assert sum("'environments' is deprecated" in w for w in warnings) == 1
    assert sum("'projects' is deprecated" in w for w in warnings) == 1
    assert sum("'environment' is deprecated" in w for w in warnings) == 1
    assert sum("'env_vars' is deprecated" in w for w in warnings) == 1


def test_migrate_workflow_to_stdout_and_in_place(tmp_path: Path, env: dict[str, str]) -> None:
    source = FIXTURES / "v03" / "sims" / "sweep" / "sflow.json"
    result = hut("migrate", str(source), env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["title"] == "Parameter sweep"
    fit = doc["tasks"][1]
    assert "environment" not in fit and "env_vars" not in fit
    assert fit["env"] == [{"include": ["gcc"]}, {"set": {"MODEL": "linear"}}]

    copy = tmp_path / "sflow.json"
    copy.write_text(source.read_text())
    result = hut("migrate", str(copy), "--in-place", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sflow.json.bak").read_text() == source.read_text()
    assert json.loads(copy.read_text()) == doc
    result = hut("migrate", str(copy), "--in-place", env=env)
    assert "nothing to migrate" in result.stderr
    assert "deprecated" not in hut("validate", str(copy), env=env).stderr


def test_migrate_config(tmp_path: Path, env: dict[str, str]) -> None:
    source = FIXTURES / "v03" / "scripthut.yaml"
    result = hut("migrate", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert "YAML comments are not kept" in result.stderr
    modern = yaml.safe_load(result.stdout)
    assert "environments" not in modern and "projects" not in modern
    assert modern["env_groups"]["gcc"] == [
        {"set": {"CC": "gcc", "OMP_NUM_THREADS": "4"}, "init": "module load gcc/12"}
    ]
    assert modern["sources"][0] == {
        "name": "sims",
        "type": "path",
        "path": "sims",
        "backend": "local",
        "description": "Monte Carlo simulations",
        "workflows_glob": "**/sflow.json",
    }
    copy = tmp_path / "scripthut.yaml"
    copy.write_text(result.stdout)
    check = hut("validate", "--config", str(copy), env=env)
    assert check.returncode == 0 and "deprecated" not in check.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("projects:\n  - name: p\n")
    result = hut("migrate", str(broken), env=env)
    assert result.returncode == 2 and "missing required key 'backend'" in result.stderr


def test_json_errors_are_json_on_stdout(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true", "inputs": ["../x"]}])
    for command in ("run", "validate"):
        result = hut(command, wf, "--json", env=env)
        assert result.returncode == 2
        error = json.loads(result.stdout)["error"]
        assert error["kind"] == "InvalidInput"
        assert error["issues"] == [
            {
                "where": "task 'a'",
                "message": "'../x' must stay inside the task's working_dir (no '/…', no '..')",
                "field": "inputs",
            }
        ]
    result = hut("show", "nope", "--json", env=env)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["kind"] == "NotFound"


def test_a_run_from_a_file_works_in_the_file_folder_and_is_titled(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    generated = [{"id": "gen.1", "command": "pwd > gen.txt"}]
    doc = {
        "title": "Sweep of the project",
        "tasks": [
            {"id": "here", "command": "pwd > here.txt"},
            {"id": "there", "command": "pwd > there.txt", "working_dir": "data"},
            {
                "id": "maker",
                "command": f"echo '{json.dumps(generated)}' > more.json",
                "working_dir": "data",
                "generates_source": "more.json",
            },
        ],
    }
    wf = write(folder / "wf.json", doc)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "scripthut.cli", "run", wf, "--json"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "here.txt").read_text().strip() == str(folder)
    assert (folder / "data" / "there.txt").read_text().strip() == str(folder / "data")
    assert json.loads(result.stdout)["tasks"]["gen.1"] == "completed"
    runs = json.loads(hut("runs", "--json", env=env).stdout)
    assert runs[0]["name"] == "Sweep of the project"


def test_failure_reasons_are_never_cut(tmp_path: Path, env: dict[str, str]) -> None:
    bad = [{"id": f"bad{i}", "command": "true", "colour": "x"} for i in range(12)]
    doc = [
        {
            "id": "maker",
            "command": f"echo '{json.dumps(bad)}' > more.json",
            "generates_source": "more.json",
        }
    ]
    wf = write(tmp_path / "wf.json", doc)
    result = hut("run", wf, env={**env, "COLUMNS": "4000"})
    assert result.returncode == 1
    for i in range(12):
        assert f"task 'bad{i}': unknown key 'colour'" in result.stdout, result.stdout


def test_show_and_export_mask_secrets(tmp_path: Path, env: dict[str, str]) -> None:
    doc = json.loads(json.dumps(SECRET_WORKFLOW))
    hook = f"https://hooks.slack.com/services/T1/B2/{SECRET_HOOK}"
    doc["tasks"].append({"id": "notify", "name": f"notify {hook}", "command": "true"})
    run_id = json.loads(hut("run", write(tmp_path / "wf.json", doc), "--json", env=env).stdout)[
        "run"
    ]

    shown = hut("show", run_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    names = {t["id"]: t["name"] for t in json.loads(shown.stdout)["tasks"]}
    assert names["notify"] == "notify https://hooks.slack.com/***"
    table = hut("show", run_id, env=env)
    for text in (shown.stdout, table.stdout, table.stderr):
        assert_no_secret(text)

    exported = hut("export", run_id, env=env)
    assert exported.returncode == 0, exported.stderr
    assert_no_secret(exported.stdout)
    doc = json.loads(exported.stdout)
    assert doc["secrets"] == "masked"
    assert doc["workflow"]["env"][0]["set"]["API_TOKEN"] == "***"
    scripts = {a["task"]: a["script"] for a in doc["attempts"]}
    assert "export API_TOKEN='***'" in scripts["a"]
    assert doc["attempts"][0]["env"]["values"]["API_TOKEN"]["value"] == "***"


def test_a_run_name_has_the_api_s_length_limit(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true"}])
    result = hut("run", wf, "--name", "n" * 201, "--json", env=env)
    assert result.returncode == 2
    assert "at most 200 characters" in json.loads(result.stdout)["error"]["issues"][0]["message"]


def test_show_gives_the_run_s_cost_when_the_config_prices_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = Path(env["SCRIPTHUT_CONFIG"])
    doc = yaml.safe_load(config.read_text())
    doc["pricing"] = {"url": "http://127.0.0.1:9/x", "prices": {"normal": 3600.0}}
    config.write_text(yaml.safe_dump(doc))
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "sleep 0.2"}])
    run_id = json.loads(hut("run", wf, "--json", env=env).stdout)["run"]
    shown = json.loads(hut("show", run_id, "--json", env=env).stdout)
    [task] = shown["tasks"]
    seconds = task["ended_at"] - task["started_at"]
    assert task["cost"] == pytest.approx(seconds)  # one dollar a second
    cost = shown["cost"]
    assert (cost["priced"], cost["costed"], cost["tasks"], cost["source"]) == (
        True,
        1,
        1,
        "offline prices",
    )
    assert cost["total"] == pytest.approx(seconds) and "items" not in cost
    table = hut("show", run_id, env=env).stdout
    assert f"cost: {cost['summary']}" in table and "1 of 1 tasks costed" in table
    assert f"${seconds:,.2f}" in table


def test_show_without_pricing_says_nothing_of_cost(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "a", "command": "true"}])
    run_id = json.loads(hut("run", wf, "--json", env=env).stdout)["run"]
    shown = json.loads(hut("show", run_id, "--json", env=env).stdout)
    assert shown["cost"]["priced"] is False and shown["tasks"][0]["cost"] is None
    assert "cost" not in hut("show", run_id, env=env).stdout
