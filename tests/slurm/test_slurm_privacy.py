"""Privacy on the rig's Slurm: private log folders and files, no server credentials in a job,
`~` as the cluster's home, and logs that are symbolic links refused."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from scripthut.backends.slurm import SlurmBackend
from scripthut.engine.engine import Engine
from scripthut.errors import UnsafePath
from scripthut.states import RunState, TaskState
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import TRANSPORTS, Place, make_backend, with_backend
from tests.slurm.test_slurm_backend import place as place  # the fixture
from tests.slurm.test_slurm_workflows import absolute, drive, rig_config, slurm_of

CREDENTIALS = {
    "JUPYTER_TOKEN": "jt-slurm-0123456789",
    "JUPYTERHUB_API_TOKEN": "hub-api-slurm-0123456789",
    "JPY_API_TOKEN": "jpy-api-slurm-0123456789",
    "SCRIPTHUT_SERVER_URL": "http://127.0.0.1:1/slurm-stale-0123",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("place", ["local"], indirect=True)
def test_sbatch_over_the_local_shell_exports_no_server_credentials(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUT_PLAIN_SETTING", "plain-value-kept")
    work = tmp_path / "work"
    work.mkdir()
    config = rig_config(slurm_rig, "local", place.log_dir, tmp_path / "data")
    doc = [{"id": "env", "command": "env; touch own.txt", "working_dir": str(work)}]

    async def body(engine: Engine) -> tuple[str, str]:
        record = engine.submit(parse_document(doc), backend="rig")
        final = await engine.wait(record.id, timeout=120)
        assert final.state is RunState.COMPLETED, final.message
        attempt = engine.store.attempt(record.id, "env", None)
        text = (await slurm_of(engine).read_log(attempt.stdout_path)).data.decode()
        return record.id, text

    run_id, text = drive(config, body)
    printed = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    for name, value in CREDENTIALS.items():
        assert name not in printed and value not in text
    assert printed["HUT_PLAIN_SETTING"] == "plain-value-kept"
    assert printed["SCRIPTHUT_RUN_ID"] == run_id
    # ScriptHut's own folders and files are private; the task's own file keeps the umask.
    run_dir = place.local_dir / run_id
    assert {mode(p) for p in (place.local_dir, run_dir, place.local_dir / ".tags")} == {0o700}
    files = sorted(p for p in run_dir.iterdir() if p.is_file())
    assert [p.name for p in files] == ["env.1.err", "env.1.exit", "env.1.out", "env.1.sh"]
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(run_dir / "env.1.outputs") == 0o700  # the attempt's output folder
    umask = os.umask(0)
    os.umask(umask)
    assert mode(work / "own.txt") == 0o666 & ~umask


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_tilde_paths_are_the_clusters_home_over_ssh(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, "ssh", place.log_dir, tmp_path / "data")
    sub = place.log_dir  # "~/hut-tests/<id>"
    child = json.dumps([{"id": "child", "command": "echo child", "output_file": f"{sub}/c.txt"}])
    doc = [
        {
            "id": "parent",
            "command": f"echo parent; printf '%s' '{child}' > {sub[2:]}/gen.json",
            "output_file": f"{sub}/out/parent.txt",
            "error_file": "parent.err",
            "generates_source": f"{sub}/gen.json",
        }
    ]

    async def body(engine: Engine) -> str:
        record = engine.submit(parse_document(doc), backend="rig")
        await engine.wait(record.id, timeout=120)
        tasks = {t.task_id: (t.state, t.reason) for t in engine.store.tasks(record.id)}
        assert tasks == {
            "parent": (TaskState.COMPLETED, None),
            "child": (TaskState.COMPLETED, None),
        }
        attempt = engine.store.attempt(record.id, "parent", None)
        assert attempt.stdout_path == f"{absolute(slurm_rig, place)}/out/parent.txt"
        assert attempt.stderr_path == f"{slurm_rig.remote_home}/parent.err"
        return record.id

    run_id = drive(config, body)
    home = Path(slurm_rig.remote_home)
    assert (place.local_dir / "out" / "parent.txt").read_text() == "parent\n"
    assert (place.local_dir / "c.txt").read_text() == "child\n"
    assert not (home / "~").exists()
    (home / "parent.err").unlink()
    # The run's folders were made private on the cluster, by the submission itself.
    assert {mode(p) for p in (place.local_dir, place.local_dir / run_id)} == {0o700}
    assert mode(place.local_dir / "out") == 0o700
    assert mode(place.local_dir / "out" / "parent.txt") == 0o600
    assert mode(place.local_dir / run_id / "parent.1.exit") == 0o600


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_a_log_that_is_a_symbolic_link_is_refused(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    where = absolute(slurm_rig, place)

    async def body(slurm: SlurmBackend) -> None:
        made = await slurm.transport.run(
            ["bash", "-c", 'mkdir -p -- "$1" && cd -- "$1" && echo real > real.out && '
             'ln -s /etc/passwd link.out && ln -s real.out inner.out', "-", where]
        )  # fmt: skip
        assert made.ok, made.stderr
        assert (await slurm.read_log(f"{where}/real.out")).data == b"real\n"
        for name in ("link.out", "inner.out"):
            for path in (f"{where}/{name}", f"{place.log_dir}/{name}"):
                with pytest.raises(UnsafePath, match="is a symbolic link; refusing to read it"):
                    await slurm.read_log(path)
                with pytest.raises(UnsafePath):
                    await slurm.read_log(path, -10, 10)
                with pytest.raises(UnsafePath):
                    await slurm.read_text(path)

    with_backend(backend, body)
