"""The generated task script, run by real bash: exports, command, cd, exit-code file."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripthut.env_rules import EnvRule
from scripthut.workflow.env import EnvValue, ResolvedEnv, resolve_env
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.script import (
    LOGIN_SHEBANG,
    SHEBANG,
    render_task_script,
    shell_path,
    shell_quote,
)

HOSTILE = [
    'it\'s a "quoted" value',
    "'",
    "",
    "$(touch pwned-sub)",
    "`touch pwned-tick`",
    "a; touch pwned-semi",
    "${HOME} $HOME ~",
    "line one\nline two\n",
    "EOF\nEOF",
    "naïve — 日本語 ✓",
    "  spaces  and\ttabs  ",
    "back\\slash\\n",
    "-n",
    "!event",
    "trailing newline\n",
    "\r\ncarriage",
]


@dataclass
class Run:
    """One finished run of a generated script."""

    returncode: int
    stdout: bytes
    stderr: str
    exit_file: Path

    @property
    def recorded(self) -> str:
        return self.exit_file.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def task(command: str, working_dir: str = "~") -> TaskSpec:
    return TaskSpec(id="t1", command=command, name="t1", working_dir=working_dir)


def resolved(values: dict[str, str], runtime: frozenset[str] = frozenset()) -> ResolvedEnv:
    return ResolvedEnv(
        {name: EnvValue(value, name in runtime, []) for name, value in values.items()}
    )


def write_script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.sh"
    path.write_text(text, encoding="utf-8")
    return path


def base_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def run(
    tmp_path: Path,
    home: Path,
    spec: TaskSpec,
    env: ResolvedEnv | None = None,
    stdin: bytes = b"",
    exit_path: str | None = None,
    tag: str = "",
) -> Run:
    exit_path = exit_path or str(tmp_path / "logs" / "deep" / "t1.exit")
    text = render_task_script(spec, env or ResolvedEnv(), exit_path=exit_path, tag=tag)
    script = write_script(tmp_path, text)
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env=base_env(home),
        input=stdin,
        capture_output=True,
        timeout=30,
    )
    exit_file = Path(exit_path) if exit_path.startswith("/") else tmp_path / exit_path
    return Run(done.returncode, done.stdout, done.stderr.decode(), exit_file)


def environ_of(output: bytes) -> dict[bytes, bytes]:
    """The environment `env -0` printed."""
    pairs = [entry.split(b"=", 1) for entry in output.split(b"\0") if entry]
    return {name: value for name, value in pairs}


# -- exports ---------------------------------------------------------------------------


def test_hostile_values_arrive_byte_exact(tmp_path: Path, home: Path) -> None:
    values = {f"V{index}": value for index, value in enumerate(HOSTILE)}
    result = run(tmp_path, home, task(f"env -0 > {tmp_path}/env.out"), resolved(values))
    assert result.returncode == 0, result.stderr
    environ = environ_of((tmp_path / "env.out").read_bytes())
    for name, value in values.items():
        assert environ[name.encode()] == value.encode(), name
    assert not list(home.glob("pwned*"))
    assert not list(tmp_path.glob("pwned*"))


def test_task_id_tag_and_seed_are_exported(tmp_path: Path, home: Path) -> None:
    env = resolve_env([], {}, {"SCRIPTHUT_RUN_ID": "r1"})
    result = run(tmp_path, home, task("env -0"), env, tag="run-r1-t1-a1")
    environ = environ_of(result.stdout)
    assert environ[b"SCRIPTHUT_TASK_ID"] == b"t1"
    assert environ[b"SCRIPTHUT_TAG"] == b"run-r1-t1-a1"
    assert environ[b"SCRIPTHUT_RUN_ID"] == b"r1"


def test_runtime_append_keeps_the_system_path(tmp_path: Path, home: Path) -> None:
    env = resolve_env(
        [("task", [EnvRule(append={"PATH": "/opt/hut bin", "NEWVAR": "/x"})])], {}, {}
    )
    assert env.values["PATH"].from_runtime
    result = run(tmp_path, home, task('printf "%s|%s" "$PATH" "$NEWVAR"'), env)
    system_path = base_env(home)["PATH"]
    assert result.stdout.decode() == f"{system_path}:/opt/hut bin|/x"


def test_set_path_replaces_it_and_the_exit_code_is_still_recorded(
    tmp_path: Path, home: Path
) -> None:
    result = run(tmp_path, home, task("exit 6"), resolved({"PATH": "/nonexistent"}))
    assert result.returncode == 6
    assert result.recorded == "6\n"


@pytest.mark.parametrize("name", ["BAD NAME", "A\n", "A;id", "1A", ""])
def test_invalid_variable_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        render_task_script(task("true"), resolved({name: "x"}), exit_path="/tmp/x")


# -- the command -----------------------------------------------------------------------

HOSTILE_COMMANDS = [
    'echo "it\'s" \'quoted "twice"\'',
    "echo $(echo sub) `echo tick`; echo after-semicolon",
    "printf '%s\\n' one\necho two\n\necho three",
    "cat <<EOF\nheredoc line $((1 + 2))\nEOF\necho past-heredoc",
    "echo 'EOF'\nEOF=1; echo \"$EOF\"",
    "echo naïve — 日本語 ✓",
    "x='a b'; for w in $x; do echo \"[$w]\"; done",
    "echo start # trailing comment ' \"",
    "f() { echo in-function; }; f",
    "echo $0-is-not-checked > /dev/null; echo done",
]


@pytest.mark.parametrize("command", HOSTILE_COMMANDS)
def test_hostile_commands_run_exactly_as_written(tmp_path: Path, home: Path, command: str) -> None:
    expected = subprocess.run(
        ["bash", "-c", command], cwd=home, env=base_env(home), capture_output=True, timeout=30
    )
    result = run(tmp_path, home, task(command))
    assert result.stdout == expected.stdout
    assert result.returncode == expected.returncode == 0
    assert result.recorded == "0\n"


def test_exit_in_the_command_is_recorded(tmp_path: Path, home: Path) -> None:
    result = run(tmp_path, home, task("echo before; exit 3; echo after"))
    assert result.stdout == b"before\n"
    assert result.returncode == 3
    assert result.recorded == "3\n"
    assert not result.exit_file.with_name("t1.exit.tmp").exists()


@pytest.mark.parametrize("command", ['echo "unbalanced', "echo 'unbalanced", "if true; then", ")"])
def test_a_syntax_error_in_the_command_is_recorded(
    tmp_path: Path, home: Path, command: str
) -> None:
    result = run(tmp_path, home, task(command))
    assert result.returncode != 0
    assert result.recorded == f"{result.returncode}\n"


def test_the_command_cannot_touch_the_recording(tmp_path: Path, home: Path) -> None:
    command = "__hut_exit_file=/dev/null; __hut_recorded=1; trap - EXIT; exit 5"
    result = run(tmp_path, home, task(command))
    assert result.returncode == 5
    assert result.recorded == "5\n"


def test_pipelines_fail_when_any_part_fails(tmp_path: Path, home: Path) -> None:
    result = run(tmp_path, home, task("false | cat"))
    assert result.recorded == "1\n"


def test_the_command_reads_the_scripts_stdin(tmp_path: Path, home: Path) -> None:
    result = run(tmp_path, home, task('read -r line; echo "got $line"'), stdin=b"hello\n")
    assert result.stdout == b"got hello\n"


def test_success_is_recorded_as_zero(tmp_path: Path, home: Path) -> None:
    result = run(tmp_path, home, task("true"), exit_path="rel/logs/t1.exit")
    assert result.returncode == 0
    assert (tmp_path / "rel" / "logs" / "t1.exit").read_text() == "0\n"


# -- signals ---------------------------------------------------------------------------


@pytest.fixture
def started(tmp_path: Path, home: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Scripts started in their own session; whatever they leave is killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_the_command_runs_is_recorded(
    tmp_path: Path,
    home: Path,
    started: list[subprocess.Popen[bytes]],
    signum: int,
    code: int,
) -> None:
    marker = tmp_path / "running"
    exit_path = tmp_path / "logs" / "t1.exit"
    text = render_task_script(
        task(f"touch {marker}; sleep 30; echo never"), ResolvedEnv(), exit_path=str(exit_path)
    )
    script = write_script(tmp_path, text)
    process = subprocess.Popen(
        ["bash", str(script)],
        env=base_env(home),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    started.append(process)
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    process.send_signal(signum)
    assert process.wait(timeout=10) == code
    assert exit_path.read_text() == f"{code}\n"
    assert process.stdout is not None
    assert b"never" not in process.stdout.read()
    assert group_ends(process.pid), "the command outlived the script"


def group_ends(group: int, within: float = 10.0) -> bool:
    """True once no process of the group is left (the script led its own group)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


# -- working directory -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("working_dir", "where"),
    [
        ("~", "home"),
        ("~/", "home"),
        ("~/x y", "home/x y"),
        ("~/with 'quote'", "home/with 'quote'"),
        ("rel dir/sub", "rel dir/sub"),
        ("ABS/$(spaced) dir", "$(spaced) dir"),
    ],
)
def test_working_dir_forms(tmp_path: Path, home: Path, working_dir: str, where: str) -> None:
    target = tmp_path / where
    target.mkdir(parents=True, exist_ok=True)
    if working_dir.startswith("ABS/"):
        working_dir = str(tmp_path / working_dir.removeprefix("ABS/"))
    result = run(tmp_path, home, task("pwd -P", working_dir))
    assert result.stdout.decode() == f"{target.resolve()}\n", result.stderr


def test_tilde_elsewhere_is_literal(tmp_path: Path, home: Path) -> None:
    (tmp_path / "a~b").mkdir()
    result = run(tmp_path, home, task("pwd -P", "a~b"))
    assert result.stdout.decode() == f"{(tmp_path / 'a~b').resolve()}\n"


def test_a_missing_working_dir_stops_with_1(tmp_path: Path, home: Path) -> None:
    result = run(tmp_path, home, task("echo ran", "~/missing dir"))
    assert result.returncode == 1
    assert result.recorded == "1\n"
    assert result.stdout == b""
    assert "cannot cd to the working directory ~/missing dir" in result.stderr


def test_cdpath_is_ignored(tmp_path: Path, home: Path) -> None:
    (home / "elsewhere" / "only").mkdir(parents=True)
    text = render_task_script(task("pwd", "only"), ResolvedEnv(), exit_path=str(tmp_path / "e"))
    script = write_script(tmp_path, text)
    env = {**base_env(home), "CDPATH": str(home / "elsewhere")}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 1
    assert done.stdout == b""


# -- init ------------------------------------------------------------------------------


def test_init_runs_in_the_script_before_the_command(tmp_path: Path, home: Path) -> None:
    rules = [
        EnvRule(init="echo 'init one'; export FROM_INIT=\"it's set\""),
        EnvRule(set={"A": "x"}, init='init_fn() { echo "fn sees $FROM_INIT"; }'),
    ]
    env = resolve_env([("task", rules)], {}, {})
    result = run(tmp_path, home, task('echo "cmd sees $FROM_INIT"; init_fn'), env)
    assert result.stdout.decode().splitlines() == [
        "init one",
        "cmd sees it's set",
        "fn sees it's set",
    ]


def test_exit_in_init_is_recorded(tmp_path: Path, home: Path) -> None:
    env = resolve_env([("task", [EnvRule(init="exit 7")])], {}, {})
    result = run(tmp_path, home, task("echo never"), env)
    assert result.returncode == 7
    assert result.recorded == "7\n"
    assert result.stdout == b""


def test_a_broken_init_does_not_swallow_the_script(tmp_path: Path, home: Path) -> None:
    env = resolve_env([("task", [EnvRule(init="echo 'unbalanced")])], {}, {})
    result = run(tmp_path, home, task("echo still ran; exit 4"), env)
    assert result.stdout == b"still ran\n"
    assert result.recorded == "4\n"


# -- shape -----------------------------------------------------------------------------


def test_layout_and_header(tmp_path: Path) -> None:
    text = render_task_script(
        task("echo hi"),
        resolved({"A": "1"}),
        exit_path=str(tmp_path / "e"),
        header=["#SBATCH --job-name=t1", "#SBATCH --time=1:00:00"],
        tag="tag-1",
    )
    lines = text.splitlines()
    assert lines[:4] == [
        SHEBANG,
        "#SBATCH --job-name=t1",
        "#SBATCH --time=1:00:00",
        "# scripthut task t1, run tag tag-1",
    ]
    assert text.endswith("\n")
    assert "<<" not in text


def test_header_lines_cannot_span_lines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot span lines"):
        render_task_script(
            task("true"), ResolvedEnv(), exit_path="/tmp/e", header=["#SBATCH --x\nrm -rf /"]
        )


def test_comment_cannot_carry_a_newline() -> None:
    spec = TaskSpec(id="t\nrm -rf /", command="true", name="x")
    text = render_task_script(spec, ResolvedEnv(), exit_path="/tmp/e")
    assert "# scripthut task t?rm -rf /" in text.splitlines()


@pytest.mark.parametrize("login", [False, True])
def test_login_shell_shebang(tmp_path: Path, home: Path, login: bool) -> None:
    command = "shopt -q login_shell && echo login || echo plain"
    text = render_task_script(
        task(command), ResolvedEnv(), exit_path=str(tmp_path / "e"), login_shell=login
    )
    assert text.splitlines()[0] == (LOGIN_SHEBANG if login else SHEBANG)
    script = write_script(tmp_path, text)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run([str(script)], env=base_env(home), capture_output=True, timeout=30)
    assert done.stdout.decode().splitlines()[-1] == ("login" if login else "plain")


# -- quoting helpers -------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_quote_round_trips_through_bash(value: str) -> None:
    done = subprocess.run(
        ["bash", "-c", f"printf '%s' {shell_quote(value)}"], capture_output=True, timeout=30
    )
    assert done.stdout == value.encode()


def test_shell_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        shell_quote("a\0b")


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("~", '"$HOME"'),
        ("~/", '"$HOME"/'),
        ("~/a b", "\"$HOME\"/'a b'"),
        ("~user/x", "'~user/x'"),
        ("/abs/it's", "'/abs/it'\\''s'"),
        ("rel", "'rel'"),
    ],
)
def test_shell_path(path: str, quoted: str) -> None:
    assert shell_path(path) == quoted
