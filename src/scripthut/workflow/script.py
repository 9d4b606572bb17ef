"""The bash script that runs one task: exit-code file, init, exports, cd, command.

Backends pass their scheduler header lines (#SBATCH, #PBS) in `header`. Every
user-supplied string reaches the shell single-quoted; the command is stored in a
variable and run with `eval` in a background subshell the script waits for, so
nothing in it can end the script before the exit code is written, and TERM/INT
interrupt the wait at once. On TERM/INT the script records 143/130, sends TERM to
the command's subshell and, when the script leads its process group (as under a
scheduler or a new session), to the whole group, then exits.

The exit-code file and the folder it is in are created private (umask 077 only while
the script writes them, after the command ended); the command itself runs under the
user's own umask, so the files a task writes are as the user would make them.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

from scripthut.env_rules import ENV_NAME
from scripthut.workflow.env import ResolvedEnv
from scripthut.workflow.model import TaskSpec
from scripthut.workflow.notebook import runner_source

SHEBANG = "#!/bin/bash"
LOGIN_SHEBANG = "#!/bin/bash -l"
_HOME = '"$HOME"'

_EXIT_RECORDING = r"""__hut_recorded=
__hut_pid=
__hut_record() {
    if [ -n "$__hut_recorded" ]; then return 0; fi
    __hut_recorded=1
    umask 077
    printf '%s\n' "$1" > "$__hut_exit_file"
}
__hut_on_signal() {
    __hut_record "$1"
    trap '' TERM INT
    if [ -n "$__hut_pid" ]; then kill -s TERM -- "$__hut_pid" 2>/dev/null; fi
    __hut_group=$(command -p ps -o pgid= -p "$$" 2>/dev/null)
    if [ "${__hut_group//[^0-9]/}" = "$$" ]; then kill -s TERM 0 2>/dev/null; fi
    exit "$1"
}
trap '__hut_record "$?"' EXIT
trap '__hut_on_signal 143' TERM
trap '__hut_on_signal 130' INT"""

_RUN_COMMAND = (
    '( trap - INT QUIT; set -o pipefail; eval "$__hut_cmd" ) <&0 &',
    "__hut_pid=$!",
    'wait "$__hut_pid"',
    'exit "$?"',
)


def shell_quote(value: str) -> str:
    """`value` as one single-quoted shell word, whatever it holds (except NUL)."""
    if "\0" in value:
        raise ValueError("a shell word cannot contain a NUL byte")
    return "'" + value.replace("'", "'\\''") + "'"


def shell_path(path: str) -> str:
    """A quoted path whose leading "~" or "~/" expands to $HOME: "~/a b" -> "$HOME"/'a b'."""
    if path == "~":
        return _HOME
    if path.startswith("~/"):
        rest = path[2:]
        return f"{_HOME}/{shell_quote(rest)}" if rest else f"{_HOME}/"
    return shell_quote(path)


def _absolute_path(path: str) -> str:
    """Like shell_path, but a relative path is anchored at the script's start directory."""
    if path.startswith("/") or path == "~" or path.startswith("~/"):
        return shell_path(path)
    return f'"$PWD"/{shell_quote(path)}'


def render_task_script(
    task: TaskSpec,
    env: ResolvedEnv,
    *,
    exit_path: str,
    login_shell: bool = False,
    header: Sequence[str] = (),
    tag: str = "",
    before_cd: Sequence[str] = (),
    outputs: tuple[str, str] | None = None,
    working_dir: str | None = None,
    prepared_env: Sequence[str] | None = None,
) -> str:
    """The whole script for one attempt of `task`, ending with a newline.

    `before_cd` is bash run after the exports, before the script changes to the task's
    working directory (a task's clone of its commit: `workflow.clone`); a non-zero exit
    there ends the script with that status, recorded like the command's. `outputs` (output
    folder, summary file) become `$SCRIPTHUT_OUTPUT_DIR` (created before the command starts)
    and `$SCRIPTHUT_RUN_SUMMARY`. `working_dir` replaces the task's own; `prepared_env` is
    `env_lines(env)` when the caller keeps it for every task sharing `env`."""
    lines = [LOGIN_SHEBANG if login_shell else SHEBANG, *_header(header)]
    lines.append(_comment(task.id, tag))
    lines.extend(_exit_recording(exit_path))
    lines.extend(env_lines(env) if prepared_env is None else prepared_env)
    lines.extend(_task_exports(task.id, tag))
    if outputs is not None:
        lines.extend(_output_exports(*outputs))
    lines.extend(before_cd)
    lines.append(_change_dir(task.working_dir if working_dir is None else working_dir))
    if task.notebook is not None:
        lines.append(f"__hut_nb_runner={shell_quote(runner_source())}")
    lines.append(f"__hut_cmd={shell_quote(_command(task))}")
    lines.extend(_RUN_COMMAND)
    return "\n".join(lines) + "\n"


def _command(task: TaskSpec) -> str:
    """The task's command; for a notebook task, the runner with the notebook, where the
    executed copy goes (the attempt's output folder) and the parameters as JSON."""
    if task.notebook is None:
        return task.command
    executed = posixpath.basename(task.notebook)
    params = json.dumps(task.parameters or {})
    return (
        f'python3 -c "$__hut_nb_runner" {shell_path(task.notebook)} '
        f'"$SCRIPTHUT_OUTPUT_DIR"/{shell_quote(executed)} {shell_quote(params)}'
    )


def _header(lines: Sequence[str]) -> list[str]:
    for line in lines:
        if any(char in line for char in "\n\r\0"):
            raise ValueError(f"a script header line cannot span lines: {line!r}")
    return list(lines)


def _comment(task_id: str, tag: str) -> str:
    text = f"scripthut task {task_id}" + (f", run tag {tag}" if tag else "")
    if text.isprintable():
        return "# " + text
    return "# " + "".join(char if char.isprintable() else "?" for char in text)


def _exit_recording(exit_path: str) -> list[str]:
    """Write the exit code to `exit_path` however the script ends.

    One short `printf` with no fork: readers treat an empty or partial file as "not yet".
    """
    lines = [f"__hut_exit_file={_absolute_path(exit_path)}", _EXIT_RECORDING]
    directory = posixpath.dirname(exit_path)
    if directory not in ("", "/"):
        quoted = _absolute_path(directory)
        lines.append(f"[ -d {quoted} ] || (umask 077 && command -p mkdir -p -- {quoted}) || exit 1")
    return lines


def env_lines(env: ResolvedEnv) -> list[str]:
    """The script lines of a resolved env (init lines, then exports), the same in every
    script that shares it."""
    lines = [f"eval {shell_quote(text)}" for text in env.init_lines()]
    lines.extend(
        _export(name, value.value, value.from_runtime) for name, value in env.values.items()
    )
    return lines


def _task_exports(task_id: str, tag: str) -> list[str]:
    lines = [_export("SCRIPTHUT_TASK_ID", task_id, False)]
    if tag:
        lines.append(_export("SCRIPTHUT_TAG", tag, False))
    return lines


def _output_exports(directory: str, summary: str) -> list[str]:
    """The attempt's output folder (made now, private like the logs beside it; what the task
    writes in it keeps the user's umask) and summary file, as absolute paths."""
    folder = _absolute_path(directory)
    return [
        f"export SCRIPTHUT_OUTPUT_DIR={folder}",
        f"export SCRIPTHUT_RUN_SUMMARY={_absolute_path(summary)}",
        '[ -d "$SCRIPTHUT_OUTPUT_DIR" ] || (umask 077 && command -p mkdir -p -- '
        '"$SCRIPTHUT_OUTPUT_DIR") || exit 1',
    ]


def _export(name: str, value: str, from_runtime: bool) -> str:
    """`export NAME=...`; a runtime append keeps the variable's current value first."""
    if not ENV_NAME.fullmatch(name):
        raise ValueError(f"'{name}' is not a valid environment variable name")
    if from_runtime:
        return f'export {name}="${{{name}:+${{{name}}}:}}"{shell_quote(value)}'
    return f"export {name}={shell_quote(value)}"


def _change_dir(working_dir: str) -> str:
    """cd to the task's directory (CDPATH ignored), or stop with exit code 1."""
    target = shell_path("./-" if working_dir == "-" else working_dir)
    message = shell_quote(f"scripthut: cannot cd to the working directory {working_dir}")
    return f"CDPATH= cd -- {target} || {{ printf '%s\\n' {message} >&2; exit 1; }}"
