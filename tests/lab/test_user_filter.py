"""The job views' user filter toggle (settings.filter_user) in a real JupyterLab, on Slurm.

The server's scripthut.yaml names the real Slurm rig over SSH and sets `filter_user: alice`.
A job the rig's user submits with plain sbatch is one of their "other jobs": hidden while
the views list only alice's, shown once the toggle says "all users". The Slurm backend
lists the jobs of the user it connects as, so a job of a second user (submitted on the rig
host by `nobody`) is in squeue but in no list: the toggle is proven by the requests it
makes, the label it shows and the rig user's job appearing and going.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tests.lab.harness import Lab, LabServer
from tests.slurm.conftest import RigUnavailableError, SlurmRig, load_rig

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

FILTER_USER = "alice"
JOB_NAME = "hut-filter-external"


def rig_or_skip() -> SlurmRig:
    try:
        return load_rig()
    except RigUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm rig is not up: {exc}", pytrace=False)
        pytest.skip(f"Slurm rig is not up: {exc}")


def config_text(rig: SlurmRig) -> str:
    return f"""\
backends:
  - name: local
    type: local
    cpus: 2
  - name: cluster
    type: slurm
    ssh:
      host: {rig.ssh_host}
      port: {rig.ssh_port}
      user: {rig.ssh_user}
      key_path: {rig.ssh_key}
      known_hosts: {rig.known_hosts}
      connect_timeout: 10
settings:
  poll_interval: 2
  filter_user: {FILTER_USER}
"""


def sbatch(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


@pytest.fixture(scope="module")
def rig() -> SlurmRig:
    return rig_or_skip()


SBATCH = ["sbatch", "--parsable", "-J", JOB_NAME, "-o", "/dev/null", "--wrap", "sleep 600"]


@pytest.fixture(scope="module")
def jobs(rig: SlurmRig) -> Iterator[dict[str, str]]:
    """A job of the rig user's (over SSH) and, as root, one of `nobody`'s (on the rig host)."""
    own = sbatch(rig.ssh_argv(shlex.join(SBATCH)))
    other = ""
    if os.geteuid() == 0:
        other = sbatch(["runuser", "-u", "nobody", "--", *SBATCH, "--chdir=/tmp"])
    try:
        yield {"own": own, "other": other}
    finally:
        subprocess.run(rig.ssh_argv("scancel", own), capture_output=True, timeout=60)
        if other:
            subprocess.run(["scancel", other], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def server(lab_factory: Callable[..., LabServer], rig: SlurmRig) -> LabServer:
    return lab_factory("userfilter", config_text=config_text(rig))


def row_of(reply: dict[str, Any], job_id: str) -> dict[str, Any]:
    rows = [j for j in reply["jobs"] if j["backend"] == "cluster" and j["job_id"] == job_id]
    return rows[0] if rows else {}


def wait_known(server: LabServer, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """`GET jobs?all=true` once the engine's poll of the cluster lists the job."""
    deadline = time.monotonic() + timeout
    while True:
        status, reply = server.api("GET", "jobs?all=true")
        assert status == 200, reply
        if row_of(reply, job_id):
            return dict(reply)
        assert time.monotonic() < deadline, f"job {job_id} never listed: {reply}"
        time.sleep(0.5)


def saved_setting(lab: Lab, name: str) -> Any:
    reply = lab.page.request.get(
        f"{lab.server.url}lab/api/settings/scripthut:plugin",
        headers={"Authorization": f"token {lab.server.token}"},
    )
    return reply.json()["settings"].get(name)


def wait_saved(lab: Lab, name: str, value: Any) -> None:
    for _ in range(100):
        if saved_setting(lab, name) == value:
            return
        lab.page.wait_for_timeout(100)
    assert saved_setting(lab, name) == value


def jobs_requests(lab: Lab, since: int = 0) -> list[str]:
    """The page's `GET jobs` requests, as `jobs` or `jobs?all=true` (the cache buster,
    a bare number JupyterLab appends, left out)."""
    out = []
    for request in lab.api_requests[since:]:
        path, _, query = request.partition("?")
        if path == "jobs":
            kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not k.isdigit()]
            out.append(f"jobs?{urlencode(kept)}" if kept else "jobs")
    return out


def test_the_server_hides_other_users_jobs_until_asked(
    server: LabServer, jobs: dict[str, str], rig: SlurmRig
) -> None:
    everyone = wait_known(server, jobs["own"])
    assert everyone["user_filter"] is None
    assert everyone["default_user_filter"] == FILTER_USER
    row = row_of(everyone, jobs["own"])
    assert (row["user"], row["source"]) == (rig.ssh_user, "external")
    status, alices = server.api("GET", "jobs")
    assert status == 200, alices
    assert (alices["user_filter"], alices["default_user_filter"]) == (FILTER_USER, FILTER_USER)
    assert row_of(alices, jobs["own"]) == {}, "the rig user's job is not alice's"
    if jobs["other"]:
        queue = subprocess.run(
            ["squeue", "-h", "-j", jobs["other"], "-o", "%u"], capture_output=True, text=True
        )
        assert queue.stdout.strip() == "nobody"  # in the queue, yet listed by no view:
        assert row_of(everyone, jobs["other"]) == {}


def test_panel_toggle_asks_for_all_users_and_remembers(
    server: LabServer, jobs: dict[str, str], open_lab: Callable[[LabServer], Lab], rig: SlurmRig
) -> None:
    wait_known(server, jobs["own"])  # the engine knows the job
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="live"]', timeout=30_000)
    section = panel.locator('.jp-ScriptHut-section[data-section="jobs"]')
    toggle = panel.locator('button[data-filter="users"]')
    toggle.wait_for(state="visible")
    assert toggle.inner_text() == f"only {FILTER_USER}'s jobs"
    assert toggle.get_attribute("aria-pressed") == "false"
    assert section.get_attribute("data-user-filter") == FILTER_USER
    row = panel.locator(f'.jp-ScriptHut-job[data-backend="cluster"][data-job-id="{jobs["own"]}"]')
    assert row.count() == 0
    assert jobs_requests(lab) and all(r == "jobs" for r in jobs_requests(lab))
    lab.screenshot("only-alice")

    before = len(lab.api_requests)
    toggle.click()
    lab.page.wait_for_selector('#scripthut-panel [data-section="jobs"][data-user-filter=""]')
    row.wait_for(timeout=15_000)
    assert "jobs?all=true" in jobs_requests(lab, before)
    assert toggle.inner_text() == "all users"
    assert toggle.get_attribute("aria-pressed") == "true"
    assert f"external ({rig.ssh_user})" in row.inner_text()
    wait_saved(lab, "allUsers", True)
    lab.screenshot("all-users")

    # Events make the panel read the jobs again (the queue changed), at most every 5 s
    # (JOBS_MIN_GAP_MS): past that gap, a run's events bring a read with the same filter.
    lab.page.wait_for_timeout(5_500)
    before = len(lab.api_requests)
    status, run = server.api(
        "POST", "runs", {"workflow": [{"id": "t", "command": "true"}], "backend": "local"}
    )
    assert status == 201, run
    server.wait_run(run["id"], {"completed"})
    for _ in range(150):
        if jobs_requests(lab, before):
            break
        lab.page.wait_for_timeout(100)
    after_activity = jobs_requests(lab, before)
    assert after_activity and all(r == "jobs?all=true" for r in after_activity), after_activity
    assert row.count() == 1

    # A new page keeps the choice (it is a setting) and asks for every user's at once.
    start = len(lab.api_requests)
    lab.open()
    panel = lab.open_panel()
    panel.locator('button[data-filter="users"]:has-text("all users")').wait_for()
    panel.locator(
        f'.jp-ScriptHut-job[data-backend="cluster"][data-job-id="{jobs["own"]}"]'
    ).wait_for(timeout=15_000)
    reads = jobs_requests(lab, start)
    assert reads and all(r == "jobs?all=true" for r in reads), reads


def test_job_table_toggle_goes_back_to_the_default_user(
    server: LabServer, jobs: dict[str, str], open_lab: Callable[[LabServer], Lab]
) -> None:
    wait_known(server, jobs["own"])
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    lab.page.wait_for_selector('#scripthut-panel[data-connection="live"]', timeout=30_000)
    if saved_setting(lab, "allUsers") is not True:  # this test alone: turn it on first
        panel.locator('button[data-filter="users"]').click()
        wait_saved(lab, "allUsers", True)
    panel.locator('button[data-action="open-jobs"]').click()
    table = lab.page.locator(".jp-ScriptHut-jobspanel .sh-jobtable")
    table.wait_for()
    toggle = table.locator('button[data-filter="users"]')
    toggle.wait_for(state="visible")
    assert toggle.inner_text() == "all users"
    own = table.locator(f'.sh-vt-row[data-key="cluster/{jobs["own"]}"]')
    own.wait_for(timeout=15_000)
    lab.screenshot("table-all-users")

    before = len(lab.api_requests)
    toggle.click()
    lab.page.wait_for_selector(
        f'.jp-ScriptHut-jobspanel .sh-jobtable[data-user-filter="{FILTER_USER}"]'
    )
    own.wait_for(state="hidden", timeout=15_000)  # the table keeps spare row nodes, hidden
    assert jobs_requests(lab, before) == ["jobs"]
    assert toggle.inner_text() == f"only {FILTER_USER}'s jobs"
    # The panel's toggle follows (one setting, one job list).
    assert panel.locator('button[data-filter="users"]').inner_text() == (
        f"only {FILTER_USER}'s jobs"
    )
    wait_saved(lab, "allUsers", False)
    lab.screenshot("table-only-alice")
