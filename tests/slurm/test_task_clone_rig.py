"""The clone step of a Batch/EC2 task script over real SSH, on the rig: the rig's git-shell
account (`hutgit`) serves a bare repository and accepts one deploy key. The script runs on
this machine as a container would run it: the key only in SCRIPTHUT_GIT_SSH_KEY, the git
server's host key checked against the "image's" known_hosts (an `ssh` first on PATH that
points at a known_hosts file of the test's own and records how it was called)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripthut.workflow.clone import EXIT_CLONE_FAILED, KEY_VARIABLE, TaskClone
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_sources_rig import GitServer
from tests.slurm.test_sources_rig import git_server as git_server  # the rig's git account
from tests.test_task_clone import run_task

pytestmark = pytest.mark.slurm


def ssh_wrapper(tmp_path: Path) -> Path:
    """A bin folder whose `ssh` uses the test's known_hosts and logs its arguments and the
    mode of the key file it was given."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "ssh"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >> {tmp_path}/ssh.log\n'
        'for a in "$@"; do [ -f "$a" ] && stat -c "key-mode %a" "$a" '
        f">> {tmp_path}/ssh.log; done\n"
        f'exec /usr/bin/ssh -o UserKnownHostsFile={tmp_path}/known_hosts "$@"\n'
    )
    wrapper.chmod(0o755)
    return folder


def test_a_task_fetches_its_commit_with_the_key_from_its_environment(
    slurm_rig: SlurmRig, git_server: GitServer, tmp_path: Path
) -> None:
    first = git_server.commit("first", {".keep": ""})
    git_server.commit("second")  # the branch has moved on
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    key = git_server.deploy_key.read_text()
    env = {
        "PATH": f"{ssh_wrapper(tmp_path)}:/usr/bin:/bin",
        "TMPDIR": str(scratch),
        KEY_VARIABLE: key,
    }
    url = git_server.url(slurm_rig.ssh_port)
    clone = TaskClone(url, "main", first, str(tmp_path / "c"), key=True)
    probe = f"cat data.txt; git rev-parse HEAD; env | grep -c {KEY_VARIABLE}; true"

    unknown = run_task(tmp_path, clone, probe, env=env)
    assert (unknown.code, unknown.out) == (EXIT_CLONE_FAILED, ""), unknown.err
    assert "Host key verification failed" in unknown.err

    accepting = TaskClone(
        url, "main", first, str(tmp_path / "c"), key=True, accept_new_host_key=True
    )
    ran = run_task(tmp_path, accepting, probe, env=env)
    assert (ran.code, ran.out) == (0, f"first\n{first}\n0\n"), ran.err
    assert (tmp_path / "known_hosts").read_text().strip()

    again = run_task(
        tmp_path, TaskClone(url, "main", first, str(tmp_path / "d"), key=True), probe, env=env
    )  # host key now known: strict checking passes
    assert (again.code, again.out) == (0, f"first\n{first}\n0\n"), again.err

    calls = (tmp_path / "ssh.log").read_text()
    assert "-o IdentitiesOnly=yes" in calls and "-o BatchMode=yes" in calls
    assert "key-mode 600" in calls
    assert list(scratch.iterdir()) == []  # the key's folder is gone after each fetch
    assert key.strip().splitlines()[1] not in (tmp_path / "task.sh").read_text()

    keyless = run_task(
        tmp_path,
        TaskClone(url, "main", first, str(tmp_path / "e"), key=True),
        probe,
        env={**env, KEY_VARIABLE: ""},
    )
    assert keyless.code == EXIT_CLONE_FAILED
    assert f"give this container its text in {KEY_VARIABLE}" in keyless.err
