"""Workflows that live in git, on the rig: the Slurm backend (hutuser over SSH) clones a bare
repository served by the same sshd through a git-shell account (`hutgit`) that accepts one
deploy key and nothing else, runs a workflow from it, and the tasks see the commit and its
files. Faults: the git server down (behind a relay that is closed), a host key not known,
two syncs at once, the sync process killed during a clone, and no deploy key left behind.

`tests/rig/slurm.sh git` (run by the fixture; idempotent) adds the git account to a rig
that is already up.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.server.service import ScriptHutService, ServiceOptions
from tests.slurm.conftest import RIG_SCRIPT, SlurmRig, parse_env_output
from tests.slurm.test_slurm_backend import rig_backend_entry
from tests.slurm.test_slurm_outage import Relay

ROOT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
FLOW = {
    "title": "From git",
    "tasks": [
        {
            "id": "show",
            "command": 'echo "sha=$SCRIPTHUT_GIT_SHA"; echo "pwd=$(pwd)"; cat data.txt',
            "partition": "debug",
        },
        {
            "id": "sub",
            "command": "pwd",
            "working_dir": "sub",
            "deps": ["show"],
            "partition": "debug",
        },
    ],
}


@dataclass
class GitServer:
    user: str
    deploy_key: Path
    repo: Path  # the bare repository on the rig's filesystem
    work: Path  # a working copy that pushes to it (as root, through the filesystem)

    def url(self, port: int) -> str:
        return f"ssh://{self.user}@127.0.0.1:{port}{self.repo}"

    def commit(self, data: str, files: dict[str, str] | None = None) -> str:
        (self.work / "data.txt").write_text(data + "\n")
        for name, text in (files or {}).items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        env = {**os.environ, **ROOT_ENV}
        subprocess.run(["git", "-C", str(self.work), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(self.work), "commit", "-qm", data], check=True, env=env)
        # root pushes through the filesystem: the repository is root's meanwhile
        subprocess.run(["chown", "-R", "root:root", str(self.repo)], check=True)
        subprocess.run(
            ["git", "-C", str(self.work), "push", "-q", str(self.repo), "main"], check=True, env=env
        )
        subprocess.run(["chown", "-R", f"{self.user}:{self.user}", str(self.repo)], check=True)
        return subprocess.run(
            ["git", "-C", str(self.work), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()


@pytest.fixture
def git_server(slurm_rig: SlurmRig, tmp_path: Path) -> Iterator[GitServer]:
    subprocess.run(["bash", str(RIG_SCRIPT), "git"], check=True, capture_output=True)
    env = parse_env_output(
        subprocess.run(
            ["bash", str(RIG_SCRIPT), "env"], check=True, capture_output=True, text=True
        ).stdout
    )
    user = env["SCRIPTHUT_RIG_GIT_USER"]
    repo = Path(f"/home/{user}/repos/t-{uuid.uuid4().hex[:10]}.git")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    server = GitServer(user, Path(env["SCRIPTHUT_RIG_DEPLOY_KEY"]), repo, work)
    yield server
    shutil.rmtree(repo, ignore_errors=True)


def run_tag(tmp_path: Path) -> str:
    """A folder name on the rig unique to this test in this session."""
    return f"{tmp_path.parent.name}-{tmp_path.name}"[-60:]


def write_config(
    rig: SlurmRig, server: GitServer, tmp_path: Path, port: int, **source: Any
) -> Path:
    tag = run_tag(tmp_path)
    clone_dir = f"~/hut-tests/clones/{tag}"
    config = {
        "backends": [rig_backend_entry(rig, "ssh", f"~/hut-tests/logs/{tag}")],
        "sources": [
            {
                "name": "demo",
                "type": "git",
                "url": server.url(port),
                "backend": "rig",
                "deploy_key": str(server.deploy_key),
                "clone_dir": clone_dir,
                **source,
            },
            {
                "name": "folder",
                "type": "path",
                "backend": "rig",
                "path": f"~/hut-tests/folder-{tag}",
            },
        ],
        "settings": {"data_dir": str(tmp_path / "data"), "poll_interval": 2},
    }
    path = tmp_path / "scripthut.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rig_home(rig: SlurmRig) -> Path:
    return Path(rig.remote_home)


def keys_left(rig: SlurmRig) -> list[str]:
    """Deploy keys on the 'cluster' filesystem (checked directly: the rig is this machine)."""
    folder = rig_home(rig) / ".scripthut" / "keys"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def with_service(config: Path, body: Callable[[ScriptHutService], Awaitable[None]]) -> None:
    """Run `body` against a service hosting a real engine over `config`."""

    async def main() -> None:
        service = ScriptHutService(ServiceOptions(config_file=str(config), min_poll_interval=0.5))
        await service.start()
        try:
            assert service.engine is not None, service.health()
            await body(service)
        finally:
            await service.stop()

    asyncio.run(main())


async def finished(service: ScriptHutService, run_id: str, limit: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        run = await service.run(run_id)
        if run["state"] in ("completed", "failed", "cancelled"):
            return run
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish: {run}")


async def log_text(service: ScriptHutService, run_id: str, task: str) -> str:
    return str((await service.logs(run_id, task))["text"])


def test_a_run_from_git_sees_its_commit_and_files(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    flows = {
        ".hut/workflows/flow.json": json.dumps(FLOW),
        "sub/.keep": "",
        ".hut/workflows/broken.json": '{"tasks": [{"id": "x", "dep": []}]}',
    }
    first = git_server.commit("one", flows)
    config = write_config(slurm_rig, git_server, tmp_path, slurm_rig.ssh_port)

    async def body(service: ScriptHutService) -> None:
        synced = (await service.sync("demo"))["sources"][0]
        assert synced["error"] is None, synced
        assert synced["sha"] == first
        files = {f["path"]: f for f in synced["files"]}
        assert files[".hut/workflows/flow.json"]["valid"]
        assert files[".hut/workflows/flow.json"]["title"] == "From git"
        assert files[".hut/workflows/flow.json"]["tasks"] == 2
        assert not files[".hut/workflows/broken.json"]["valid"]
        assert "dep" in files[".hut/workflows/broken.json"]["issues"][0]
        assert keys_left(slurm_rig) == []

        run = await service.run_source("demo", {"file": ".hut/workflows/flow.json"})
        done = await finished(service, run["id"])
        assert done["state"] == "completed", done
        root = synced["root"]
        text = await log_text(service, run["id"], "show")
        assert f"sha={first}" in text and f"pwd={root}" in text and "one" in text
        assert (await log_text(service, run["id"], "sub")).strip() == f"{root}/sub"
        stored = service.store.get_run(run["id"]).document  # type: ignore[union-attr]
        assert stored["git"]["sha"] == first
        assert stored["source"]["file"] == ".hut/workflows/flow.json"

        second = git_server.commit("two")
        again = (await service.sync("demo"))["sources"][0]
        assert again["sha"] == second and again["root"] != root
        old = Path(root)
        assert (old / "data.txt").read_text() == "one\n"  # the old run's folder is untouched
        assert (old.parent / f".{first}.ok").exists()
        assert keys_left(slurm_rig) == []

    with_service(config, body)


def test_git_server_down_keeps_the_last_good_clone(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.commit("one", {".hut/workflows/flow.json": json.dumps(FLOW), "sub/.keep": ""})
    known = rig_home(slurm_rig) / ".ssh" / "known_hosts"
    host_key = slurm_rig.known_hosts.read_text().splitlines()[0].split(" ", 1)[1]

    async def main() -> None:
        relay = Relay(slurm_rig.ssh_port)
        await relay.open()
        entry = f"[127.0.0.1]:{relay.port} {host_key}\n"
        config = write_config(slurm_rig, git_server, tmp_path, relay.port)
        service = ScriptHutService(ServiceOptions(config_file=str(config), min_poll_interval=0.5))
        await service.start()
        try:
            unknown = (await service.sync("demo"))["sources"][0]
            assert "Host key verification failed" in unknown["error"], unknown
            assert unknown["sha"] is None and keys_left(slurm_rig) == []

            with known.open("a") as out:  # the git server's key, as an admin would publish it
                out.write(entry)
            good = (await service.sync("demo"))["sources"][0]
            assert good["error"] is None, good

            await relay.close()
            down = (await service.sync("demo"))["sources"][0]
            assert "ls-remote" in down["error"], down
            assert down["sha"] == good["sha"] and down["root"] == good["root"]
            assert [f["path"] for f in down["files"]] == [f["path"] for f in good["files"]]
            assert keys_left(slurm_rig) == []
            listed = service.sources()["sources"][0]["syncs"][0]
            assert listed["error"] == down["error"]

            run = await service.run_source("demo", {"file": ".hut/workflows/flow.json"})
            assert (await finished(service, run["id"]))["state"] == "completed"
        finally:
            await service.stop()
            lines = known.read_text().splitlines(keepends=True)
            known.write_text("".join(line for line in lines if line != entry))

    asyncio.run(main())


def test_two_syncs_at_once_are_one(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.commit("one", {".hut/workflows/flow.json": json.dumps(FLOW)})
    config = write_config(slurm_rig, git_server, tmp_path, slurm_rig.ssh_port)

    async def body(service: ScriptHutService) -> None:
        syncs = service._source_syncs()
        await service.sync("demo")
        scripts: list[str] = []  # the engine polls over the same connection meanwhile
        original = syncs.transport_for

        def counting(backend: str) -> Any:
            scripts.append(backend)
            return original(backend)

        syncs.transport_for = counting
        first, second = await asyncio.gather(service.sync("demo"), service.sync("demo"))
        assert first == second and first["sources"][0]["error"] is None
        assert scripts == ["rig"]  # joined, and an unchanged source costs one round trip

    with_service(config, body)


def test_a_sync_killed_during_its_clone_is_finished_by_the_next(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    sha = git_server.commit("one", {".hut/workflows/flow.json": json.dumps(FLOW)})
    config = write_config(
        slurm_rig,
        git_server,
        tmp_path,
        slurm_rig.ssh_port,
        postclone="sleep 4; echo built > built.txt",
    )
    clones = rig_home(slurm_rig) / "hut-tests" / "clones" / run_tag(tmp_path)
    cli = [str(Path(sys.executable).parent / "scripthut")]
    proc = subprocess.Popen(
        [*cli, "sync", "demo", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (clones / sha).is_dir():  # renamed into place: postclone is running
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (clones / f".{sha}.ok").exists()

    done = subprocess.run(
        [*cli, "sync", "demo", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    state = json.loads(done.stdout)["sources"][0]
    assert state["error"] is None and state["sha"] == sha, state
    assert (clones / sha / "built.txt").read_text() == "built\n"
    assert (clones / f".{sha}.ok").exists()
    assert not list(clones.glob(".tmp-*"))
    assert keys_left(slurm_rig) == []


def test_a_path_source_on_the_rig(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    config = write_config(slurm_rig, git_server, tmp_path, slurm_rig.ssh_port)
    folder = rig_home(slurm_rig) / "hut-tests" / f"folder-{run_tag(tmp_path)}"
    (folder / "flows" / ".hut" / "workflows").mkdir(parents=True)
    flow = {"tasks": [{"id": "here", "command": "pwd; cat data.txt", "partition": "debug"}]}
    (folder / "flows" / ".hut" / "workflows" / "x.json").write_text(json.dumps(flow))
    (folder / "data.txt").write_text("from the folder\n")
    subprocess.run(["chown", "-R", f"{slurm_rig.ssh_user}:", str(folder.parent)], check=True)
    text = config.read_text().replace("workflows_glob: .hut/workflows/*.json", "")
    config.write_text(text)

    async def body(service: ScriptHutService) -> None:
        assert service.config is not None
        service.config.sources[1].workflows_glob = "**/.hut/workflows/*.json"
        state = (await service.sync("folder"))["sources"][0]
        assert state["error"] is None and state["root"] == str(folder), state
        assert [f["path"] for f in state["files"]] == ["flows/.hut/workflows/x.json"]
        run = await service.run_source("folder", {"file": "flows/.hut/workflows/x.json"})
        assert (await finished(service, run["id"]))["state"] == "completed"
        assert await log_text(service, run["id"], "here") == f"{folder}\nfrom the folder\n"

    with_service(config, body)
