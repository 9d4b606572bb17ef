"""Tasks that clone their run's commit at start (AWS Batch, EC2): the rendered script run by
real bash against a real bare repository on this machine, and sources on such backends
(the commit resolved here, the run recording what each task clones, what is refused)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripthut.config import Config
from scripthut.errors import InvalidInput
from scripthut.sources import Sources
from scripthut.transport import LocalTransport
from scripthut.workflow.clone import (
    DEFAULT_CLONE_DIR,
    EXIT_CLONE_FAILED,
    EXIT_NO_GIT,
    EXIT_POSTCLONE_FAILED,
    KEY_VARIABLE,
    TaskClone,
    clone_lines,
)
from scripthut.workflow.env import EnvValue, ResolvedEnv
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import render_task_script, shell_quote

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
FLOW = '{"title": "flow", "tasks": [{"id": "a", "command": "cat data.txt"}]}'
KEY_TEXT = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key-4f1e\n-----END OPENSSH PRIVATE KEY-----"
)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True, capture_output=True
    )
    return done.stdout.decode().strip()


@dataclass
class Repo:
    bare: Path
    work: Path

    def commit(self, data: str) -> str:
        (self.work / "data.txt").write_text(data + "\n")
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", data, cwd=self.work)
        git("push", "-q", str(self.bare), "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    bare = tmp_path / "demo.git"
    work = tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    (work / ".hut" / "workflows").mkdir(parents=True)
    (work / ".hut" / "workflows" / "flow.json").write_text(FLOW)
    (work / "sub").mkdir()
    (work / "sub" / "here.txt").write_text("in sub\n")
    return Repo(bare, work)


@dataclass
class Ran:
    code: int
    out: str
    err: str
    recorded: str


def run_task(
    tmp_path: Path,
    clone: TaskClone,
    command: str,
    working_dir: str | None = None,
    env: dict[str, str] | None = None,
) -> Ran:
    """Render the task script as a Batch/EC2 task gets it and run it with bash."""
    spec = TaskSpec(id="t1", command=command, name="t1", working_dir=working_dir or clone.root)
    exit_file = tmp_path / "t1.exit"
    exit_file.unlink(missing_ok=True)
    seed = ResolvedEnv({"SCRIPTHUT_GIT_SHA": EnvValue(clone.sha, False, [])})
    text = render_task_script(spec, seed, exit_path=str(exit_file), before_cd=clone_lines(clone))
    script = tmp_path / "task.sh"
    script.write_text(text)
    base = {"HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    recorded = exit_file.read_text().strip() if exit_file.exists() else ""
    return Ran(done.returncode, done.stdout, done.stderr, recorded)


# -- the rendered script -------------------------------------------------------------


def test_the_script_quotes_every_value_and_clones_between_exports_and_cd(
    tmp_path: Path,
) -> None:
    hostile = "$(touch pwned)'; `touch pwned2` \n--upload-pack=touch pwned3"
    clone = TaskClone(
        url="ssh://git@host/r.git" + hostile,
        branch="main" + hostile,
        sha="a" * 40,
        clone_dir="~/clones",
        postclone="echo " + hostile,
        key=True,
    )
    spec = TaskSpec(id="t1", command="true", name="t1", working_dir="~/clones/" + "a" * 40)
    env = ResolvedEnv({"SCRIPTHUT_GIT_SHA": EnvValue("a" * 40, False, [])})
    text = render_task_script(spec, env, exit_path="/x/t1.exit", before_cd=clone_lines(clone))
    for value in (clone.url, clone.branch, clone.postclone or ""):
        assert f"={shell_quote(value)}\n" in text
    assert '__hut_git_root="$HOME"/' + shell_quote("clones/" + "a" * 40) in text
    exports = text.index("export SCRIPTHUT_GIT_SHA=")
    cloning = text.index("__hut_git_clone\n__hut_rc=$?")
    cd = text.rindex("CDPATH= cd -- ")
    assert exports < cloning < cd
    assert f"unset {KEY_VARIABLE}" in text
    assert '--depth 1 --no-tags origin "$__hut_git_sha"' in text
    assert "StrictHostKeyChecking=$__hut_git_host_key" in text
    assert "__hut_git_host_key=yes" in text
    ran = run_task(tmp_path, clone, "echo ran", env={KEY_VARIABLE: "k"})
    assert (ran.code, ran.out) == (EXIT_CLONE_FAILED, "")
    assert list(tmp_path.glob("pwned*")) == []


def test_a_task_record_round_trips_and_defaults_its_folder() -> None:
    clone = TaskClone(url="u", branch="b", sha="c" * 40, postclone="make", key=True)
    assert TaskClone.from_json(clone.to_json()) == clone
    assert clone.root == f"{DEFAULT_CLONE_DIR}/{'c' * 40}"
    assert TaskClone.from_json(None) is None


# -- run for real ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["2", "0"])
def test_a_task_checks_out_its_commit_even_after_the_branch_moved(
    tmp_path: Path, repo: Repo, protocol: str
) -> None:
    """Protocol v2 serves the commit by id (a shallow fetch of one commit); a v0 server that
    refuses an id it does not advertise makes the task fetch the branch and check it out."""
    first = repo.commit("first")
    moved = repo.commit("second")
    assert git("ls-remote", str(repo.bare), "refs/heads/main", cwd=tmp_path).split()[0] == moved
    clone = TaskClone(url=str(repo.bare), branch="main", sha=first, clone_dir=str(tmp_path / "c"))
    protocol_env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.version",
        "GIT_CONFIG_VALUE_0": protocol,
    }
    ran = run_task(
        tmp_path,
        clone,
        'cat data.txt; git rev-parse HEAD; echo "sha=$SCRIPTHUT_GIT_SHA"; pwd',
        env=protocol_env,
    )
    assert (ran.code, ran.recorded) == (0, "0"), ran.err
    assert ran.out.split("\n")[:4] == ["first", first, f"sha={first}", clone.root]
    assert ("fetching branch main" in ran.err) == (protocol == "0")
    if protocol == "2":  # one commit fetched: the clone is shallow
        assert git("rev-parse", "--is-shallow-repository", cwd=Path(clone.root)) == "true"


def test_working_dirs_follow_the_rule_and_postclone_runs_once_per_clone(
    tmp_path: Path, repo: Repo
) -> None:
    sha = repo.commit("one")
    clone = TaskClone(
        url=str(repo.bare),
        branch="main",
        sha=sha,
        clone_dir=str(tmp_path / "c"),
        postclone=f"echo built >> {tmp_path}/post.log; echo ready > ready.txt",
    )
    sub = run_task(tmp_path, clone, "pwd; cat here.txt ../ready.txt", f"{clone.root}/sub")
    assert (sub.code, sub.out) == (0, f"{clone.root}/sub\nin sub\nready\n"), sub.err
    again = run_task(tmp_path, clone, "pwd", "/tmp")
    assert (again.code, again.out, again.err) == (0, "/tmp\n", "")  # the clone was complete
    assert (tmp_path / "post.log").read_text() == "built\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert Path(clone.root).stat().st_mode & 0o777 == 0o777 & ~umask  # the task's umask


def test_a_missing_git_ends_the_task_with_its_own_status(tmp_path: Path, repo: Repo) -> None:
    sha = repo.commit("one")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    clone = TaskClone(url=str(repo.bare), branch="main", sha=sha, clone_dir=str(tmp_path / "c"))
    ran = run_task(tmp_path, clone, "echo ran", env={"PATH": str(bin_dir)})
    assert (ran.code, ran.recorded, ran.out) == (EXIT_NO_GIT, str(EXIT_NO_GIT), "")
    assert f"git is not installed in this image; it is needed to clone {repo.bare} at {sha}" in (
        ran.err
    )


def test_a_failing_postclone_or_an_unknown_commit_leaves_no_clone(
    tmp_path: Path, repo: Repo
) -> None:
    sha = repo.commit("one")
    folder = tmp_path / "c"
    failing = TaskClone(str(repo.bare), "main", sha, str(folder), postclone="exit 7")
    ran = run_task(tmp_path, failing, "echo ran")
    assert (ran.code, ran.recorded, ran.out) == (EXIT_POSTCLONE_FAILED, "254", "")
    assert "postclone exited with status 7" in ran.err
    assert sorted(p.name for p in folder.iterdir()) == [f".{sha}.lock"]
    unknown = TaskClone(str(repo.bare), "main", "f" * 40, str(folder))
    ran = run_task(tmp_path, unknown, "echo ran")
    assert (ran.code, ran.out) == (EXIT_CLONE_FAILED, ""), ran.err
    assert not (folder / ("f" * 40)).exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_deploy_key_comes_only_from_the_container_and_is_gone_before_the_command(
    tmp_path: Path, repo: Repo
) -> None:
    sha = repo.commit("one")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    clone = TaskClone(str(repo.bare), "main", sha, str(tmp_path / "c"), key=True)
    missing = run_task(tmp_path, clone, "echo ran")
    assert (missing.code, missing.out) == (EXIT_CLONE_FAILED, "")
    assert f"give this container its text in {KEY_VARIABLE}" in missing.err
    probe = f"env | grep -c {KEY_VARIABLE}; set | grep -c not-a-real[-]key; ls {scratch} | wc -l"
    given = run_task(tmp_path, clone, probe, env={KEY_VARIABLE: KEY_TEXT, "TMPDIR": str(scratch)})
    assert (given.code, given.out.split()) == (0, ["0", "0", "0"]), given.err
    script = (tmp_path / "task.sh").read_text()
    assert "not-a-real-key" not in script


# -- sources on a Batch / EC2 backend ----------------------------------------------------


def config(tmp_path: Path, repo: Repo, backend: dict[str, object], **source: object) -> Config:
    return Config.model_validate(
        {
            "backends": [
                {"name": "local", "type": "local"},
                {"name": "aws", **backend},
            ],
            "sources": [
                {
                    "name": "demo",
                    "type": "git",
                    "url": str(repo.bare),
                    "backend": "aws",
                    "clone_dir": str(tmp_path / "user-clones"),
                    "postclone": f"echo here >> {tmp_path}/post.log",
                    **source,
                },
                {"name": "folder", "type": "path", "path": str(repo.work), "backend": "local"},
            ],
            "settings": {"data_dir": str(tmp_path / "data")},
        }
    )


BATCH: dict[str, object] = {
    "type": "batch",
    "aws": {"region": "us-east-1", "job_queue": "q"},
    "default_image": "img",
}
EC2: dict[str, object] = {
    "type": "ec2",
    "aws": {"region": "us-east-1"},
    "ami": "ami-1",
    "subnet_id": "s-1",
}


def sources_of(conf: Config) -> Sources:
    shell = LocalTransport()
    return Sources(conf, lambda _name: shell)


def test_a_batch_run_resolves_here_and_records_what_each_task_clones(
    tmp_path: Path, repo: Repo
) -> None:
    sha = repo.commit("one")
    conf = config(tmp_path, repo, {**BATCH, "clone_dir": "~/work"})
    syncs = sources_of(conf)
    workflow, provenance, state = asyncio.run(syncs.workflow("demo", ".hut/workflows/flow.json"))
    assert [t.id for t in workflow.tasks] == ["a"]
    assert state.sha == sha and state.backend == "aws"
    assert state.root is not None and state.root.startswith(str(conf.sources_cache_dir))
    assert not (tmp_path / "user-clones").exists()
    assert not (tmp_path / "post.log").exists()  # postclone runs in the tasks' containers
    assert provenance.root == f"~/work/{sha}"
    document = provenance.document()
    assert document["git"] == {"repo": str(repo.bare), "branch": "main", "sha": sha}
    assert document["source"]["root"] == f"~/work/{sha}"
    assert document["task_clone"] == {
        "url": str(repo.bare),
        "branch": "main",
        "sha": sha,
        "clone_dir": "~/work",
        "postclone": f"echo here >> {tmp_path}/post.log",
        "key": False,
        "accept_new_host_key": False,
    }


@pytest.mark.parametrize(
    ("backend", "source", "field", "words"),
    [
        (
            BATCH,
            {"url": "https://me:hunter22@git.example.org/r.git"},
            "url",
            "carries a credential",
        ),
        (EC2, {"deploy_key": "/k"}, "deploy_key", "never sends deploy_key to AWS"),
        (BATCH, {"deploy_key": "/k"}, "deploy_key", "set job_definition on backend 'aws'"),
    ],
)
def test_what_cannot_reach_a_container_safely_is_refused_before_any_sync(
    tmp_path: Path,
    repo: Repo,
    backend: dict[str, object],
    source: dict[str, object],
    field: str,
    words: str,
) -> None:
    conf = config(tmp_path, repo, backend, **source)
    with pytest.raises(InvalidInput) as raised:
        asyncio.run(sources_of(conf).workflow("demo", ".hut/workflows/flow.json"))
    (issue,) = raised.value.issues
    assert (issue.where, issue.field) == ("source 'demo'", field)
    assert words in issue.message
    assert "hunter22" not in issue.message
    assert not (conf.sources_cache_dir / "clones").exists()


def test_a_path_source_is_refused_on_batch(tmp_path: Path, repo: Repo) -> None:
    conf = config(tmp_path, repo, BATCH)
    with pytest.raises(InvalidInput) as raised:
        asyncio.run(sources_of(conf).workflow("folder", "x.json", backend="aws"))
    assert "use a git source" in raised.value.issues[0].message


def test_a_batch_job_definition_of_ones_own_carries_the_key(tmp_path: Path, repo: Repo) -> None:
    sha = repo.commit("one")
    key = tmp_path / "deploy"
    key.write_text(KEY_TEXT + "\n")
    conf = config(tmp_path, repo, {**BATCH, "job_definition": "with-secret"}, deploy_key=str(key))
    _, provenance, _ = asyncio.run(sources_of(conf).workflow("demo", ".hut/workflows/flow.json"))
    assert provenance.clone is not None and provenance.clone.key
    assert provenance.root == f"{DEFAULT_CLONE_DIR}/{sha}"
    assert "not-a-real-key" not in str(provenance.document())
