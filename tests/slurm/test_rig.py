"""Proofs that the Slurm + OpenSSH rig does what the rest of the suite relies on.

Everything goes through the system OpenSSH client as the rig's test user, with host key
checking on, exactly as ScriptHut's SSH transport will reach a real cluster.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from .conftest import SlurmRig

T = TypeVar("T")

# Slurm states after which a job never changes again (sacct spelling).
TERMINAL = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
)


def ssh(
    rig: SlurmRig,
    command: str,
    *,
    stdin: str | None = None,
    known_hosts: Path | None = None,
    timeout: float = 30,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        rig.ssh_argv(command, known_hosts=known_hosts),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"ssh {command!r} -> exit {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def poll(what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.3) -> T:
    """Call fn until it returns something other than None; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last is not None:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def sacct_row(rig: SlurmRig, job_id: str) -> dict[str, str] | None:
    fields = ["JobID", "JobName", "State", "ExitCode", "Partition", "User"]
    out = ssh(
        rig, f"sacct -j {job_id} --parsable2 --noheader -X -o {','.join(fields)}"
    ).stdout.strip()
    for line in out.splitlines():
        row = dict(zip(fields, line.split("|"), strict=True))
        if row["JobID"] == job_id:
            return row
    return None  # accounting is asynchronous: the job may not be in the DB yet


def wait_terminal(rig: SlurmRig, job_id: str, timeout: float = 60) -> dict[str, str]:
    """Poll sacct until the job is finished AND its full record has reached the database.

    slurmctld sends a job's start record to slurmdbd from a thread that runs every ~5 s, so a
    short job first shows up as a placeholder: JobName=allocation, User=root, Partition empty,
    possibly already COMPLETED. Only the user field tells the two apart.
    """

    def terminal() -> dict[str, str] | None:
        row = sacct_row(rig, job_id)
        if row and row["User"] == rig.ssh_user and row["State"].split()[0] in TERMINAL:
            return row
        return None

    return poll(f"job {job_id} to finish in sacct", terminal, timeout=timeout)


def submit(rig: SlurmRig, script: str, sbatch_args: str) -> str:
    out = ssh(rig, f"sbatch --parsable {sbatch_args}", stdin=script).stdout.strip()
    job_id = out.split(";")[0]  # --parsable prints "id" or "id;cluster"
    assert job_id.isdigit(), f"sbatch --parsable printed {out!r}"
    return job_id


@pytest.fixture(scope="module")
def remote_dir(slurm_rig: SlurmRig) -> Iterator[str]:
    path = f"{slurm_rig.remote_home}/rig-tests/{uuid.uuid4().hex[:12]}"
    ssh(slurm_rig, f"mkdir -p {shlex.quote(path)}")
    yield path
    ssh(slurm_rig, f"rm -rf {shlex.quote(path)}", check=False)


def test_key_login_as_test_user(slurm_rig: SlurmRig) -> None:
    out = ssh(slurm_rig, 'id -un; printf "%s\\n" "$HOME"; command -v sbatch squeue sacct scancel')
    lines = out.stdout.split()
    assert lines[0] == slurm_rig.ssh_user
    assert lines[1] == slurm_rig.remote_home
    assert [Path(p).name for p in lines[2:]] == ["sbatch", "squeue", "sacct", "scancel"]


def test_cluster_shape(slurm_rig: SlurmRig) -> None:
    out = ssh(slurm_rig, "sinfo -h -o '%P|%a|%c'; scontrol show config").stdout
    partitions = {}
    for line in out.splitlines():
        if line.count("|") == 2:
            name, avail, cpus = line.split("|")
            partitions[name] = (avail, int(cpus))
    assert partitions[f"{slurm_rig.partition}*"] == ("up", slurm_rig.cpus)  # '*' = default
    assert partitions["normal"] == ("up", slurm_rig.cpus)  # the task JSON default partition
    assert slurm_rig.cpus >= 4  # many jobs at once on a small box
    config = dict(re.findall(r"^(\w+)\s+= (.*)$", out, flags=re.MULTILINE))
    assert config["MinJobAge"] == f"{slurm_rig.min_job_age} sec"
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert "bf_interval=1" in config["SchedulerParameters"]
    assert config["ClusterName"] == slurm_rig.cluster


@pytest.mark.parametrize("partition", [None, "normal"], ids=["default-partition", "normal"])
def test_sbatch_from_stdin_completes_and_is_accounted(
    slurm_rig: SlurmRig, remote_dir: str, partition: str | None
) -> None:
    # The script goes to sbatch on stdin, as ScriptHut submits it; its text stays literal.
    script = (
        "#!/bin/bash\n"
        "#SBATCH --job-name=rig-proof\n"
        'echo "user=$(id -un) job=$SLURM_JOB_ID partition=$SLURM_JOB_PARTITION"\n'
        "echo 'literal: $HOME \"q\" `t` EOF'\n"
    )
    args = f"-o {shlex.quote(remote_dir)}/job-%j.out"
    if partition:
        args += f" -p {partition}"
    job_id = submit(slurm_rig, script, args)

    row = wait_terminal(slurm_rig, job_id)
    expected_partition = partition or slurm_rig.partition
    assert row == {
        "JobID": job_id,
        "JobName": "rig-proof",
        "State": "COMPLETED",
        "ExitCode": "0:0",
        "Partition": expected_partition,
        "User": slurm_rig.ssh_user,
    }
    output = ssh(slurm_rig, f"cat {shlex.quote(remote_dir)}/job-{job_id}.out").stdout
    assert output.splitlines() == [
        f"user={slurm_rig.ssh_user} job={job_id} partition={expected_partition}",
        'literal: $HOME "q" `t` EOF',
    ]


def test_squeue_shows_running_job_and_scancel_cancels_it(slurm_rig: SlurmRig) -> None:
    job_id = submit(slurm_rig, "#!/bin/bash\nsleep 120\n", "-J rig-sleeper -o /dev/null")

    def running() -> list[str] | None:
        out = ssh(slurm_rig, f"squeue -h -j {job_id} -o '%i|%T|%u|%P|%j'").stdout.strip()
        fields = out.split("|")
        return fields if len(fields) == 5 and fields[1] == "RUNNING" else None

    try:
        fields = poll(f"job {job_id} RUNNING in squeue", running, timeout=30)
        assert fields == [job_id, "RUNNING", slurm_rig.ssh_user, slurm_rig.partition, "rig-sleeper"]
        mine = ssh(slurm_rig, f"squeue -h -u {slurm_rig.ssh_user} -o %i").stdout.split()
        assert job_id in mine
    finally:
        ssh(slurm_rig, f"scancel {job_id}")
    row = wait_terminal(slurm_rig, job_id, timeout=30)
    assert row["State"].startswith("CANCELLED")


@pytest.mark.skipif(os.geteuid() != 0, reason="sshd -T needs root to read the host key")
def test_sshd_config_is_site_like(slurm_rig: SlurmRig) -> None:
    out = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(slurm_rig.sshd_config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    effective = set(out.splitlines())
    assert "maxsessions 10" in effective
    assert "passwordauthentication no" in effective
    assert "permitrootlogin no" in effective
    assert f"port {slurm_rig.ssh_port}" in effective


def test_max_sessions_is_enforced(slurm_rig: SlurmRig) -> None:
    """One connection carries at most 10 sessions: sshd refuses the 11th.

    The OpenSSH client then falls back to a new connection of its own, so the proof is the
    refusal message plus the sshd process ($PPID) each session ran under.
    """
    tmp = tempfile.mkdtemp(prefix="rigcm", dir="/tmp")  # short: unix socket paths max ~104 chars
    mux = ["-o", f"ControlPath={tmp}/cm"]
    master_opts = [*mux, "-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N", "-f"]
    master = subprocess.run(
        slurm_rig.ssh_argv(options=master_opts),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    try:
        assert master.returncode == 0, "could not start the ssh control master"
        sessions = [
            subprocess.Popen(
                slurm_rig.ssh_argv("sleep 4; echo $PPID", options=[*mux, "-o", "ControlMaster=no"]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(11)
        ]
        results = [p.communicate(timeout=30) for p in sessions]
        refused = [err for _, err in results if "Session open refused by peer" in err]
        assert len(refused) == 1, results
        per_connection: dict[str, int] = {}
        for out, _ in results:
            per_connection[out.strip()] = per_connection.get(out.strip(), 0) + 1
        assert sorted(per_connection.values()) == [1, 10], results
    finally:
        subprocess.run(
            slurm_rig.ssh_argv(options=[*mux, "-O", "exit"]),
            capture_output=True,
            timeout=10,
            check=False,
        )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("case", ["wrong-key", "unknown-host"])
def test_host_key_is_verified(slurm_rig: SlurmRig, tmp_path: Path, case: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    if case == "wrong-key":
        key = tmp_path / "impostor"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=10
        )
        pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        known_hosts.write_text(f"[{slurm_rig.ssh_host}]:{slurm_rig.ssh_port} {pub}\n")
    else:
        known_hosts.write_text("")
    proc = ssh(slurm_rig, "echo connected", known_hosts=known_hosts, check=False)
    assert proc.returncode == 255
    assert "connected" not in proc.stdout
    assert "Host key verification failed" in proc.stderr
    if case == "wrong-key":
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr
    # and the rig's own known_hosts is accepted
    assert ssh(slurm_rig, "echo connected").stdout.strip() == "connected"


def test_torque_wrappers_present(slurm_rig: SlurmRig) -> None:
    if not slurm_rig.torque_bin:
        pytest.skip("Torque wrappers (slurm-wlm-torque) not available on this rig")
    bin_dir = shlex.quote(slurm_rig.torque_bin)
    out = ssh(slurm_rig, f"test -x {bin_dir}/qsub -a -x {bin_dir}/qdel && {bin_dir}/pbsnodes -a")
    assert out.stdout.splitlines()[0] == "localhost"
    assert f"np = {slurm_rig.cpus}" in out.stdout
