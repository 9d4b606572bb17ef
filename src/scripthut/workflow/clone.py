"""The start of a task that clones its run's commit (backends without a shared file system).

On AWS Batch and EC2 each task runs in a fresh container that sees no clone made by a sync.
The commit was resolved where the run was started; the task script fetches exactly that
commit at its start, before it changes to its working directory:

1. `git` must be in the task's image (else exit `EXIT_NO_GIT` with a message saying so).
2. Under a lock per commit (`flock`, where the image has it) and unless
   `<clone_dir>/<sha>/` is already complete (its mark `<clone_dir>/.<sha>.ok`): an empty
   repository in a temporary folder, a shallow fetch of the commit itself (`--depth 1
   origin <sha>`; when the server refuses to serve a commit by id, the branch's history
   instead), a checkout of the commit, a check that HEAD is that commit, a rename to
   `<clone_dir>/<sha>` (its folder's mode from the task's umask), `postclone` there, then
   the mark. Any failure: `EXIT_CLONE_FAILED`
   or `EXIT_POSTCLONE_FAILED`, its reason in the task's log.
3. A deploy key never travels in the script or the job request. When the repository needs
   one, the container must hold its text in `KEY_VARIABLE` (on AWS Batch: a secret of the
   job definition); the script writes it to a private temporary file for the fetch only,
   removes it, and unsets the variable before `postclone` and the task's command run.

Pure text: every value enters the script single-quoted.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scripthut.workflow.script import shell_path, shell_quote

TASK_CLONE_TYPES = frozenset({"batch", "ec2"})
DEFAULT_CLONE_DIR = "/tmp/scripthut/src"
KEY_VARIABLE = "SCRIPTHUT_GIT_SSH_KEY"
EXIT_NO_GIT = 252
EXIT_CLONE_FAILED = 253
EXIT_POSTCLONE_FAILED = 254


def clones_at_start(backend_type: str) -> bool:
    """True for backends whose tasks clone their run's commit themselves (Batch, EC2)."""
    return backend_type in TASK_CLONE_TYPES


@dataclass(frozen=True, slots=True)
class TaskClone:
    """What a task clones at its start: a repository at one commit, into `root`."""

    url: str
    branch: str
    sha: str
    clone_dir: str = DEFAULT_CLONE_DIR
    postclone: str | None = None
    key: bool = False  # the repository needs the deploy key the container holds
    accept_new_host_key: bool = False

    @property
    def root(self) -> str:
        """The clone's folder as written (`~` is the container user's home)."""
        return posixpath.join(self.clone_dir or DEFAULT_CLONE_DIR, self.sha)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "branch": self.branch,
            "sha": self.sha,
            "clone_dir": self.clone_dir,
            "postclone": self.postclone,
            "key": self.key,
            "accept_new_host_key": self.accept_new_host_key,
        }

    @classmethod
    def from_json(cls, data: object) -> TaskClone | None:
        """The clone a run's document records, or None (a run that clones nothing)."""
        if not isinstance(data, Mapping):
            return None
        return cls(
            url=str(data["url"]),
            branch=str(data["branch"]),
            sha=str(data["sha"]),
            clone_dir=str(data.get("clone_dir") or DEFAULT_CLONE_DIR),
            postclone=data.get("postclone") or None,
            key=bool(data.get("key")),
            accept_new_host_key=bool(data.get("accept_new_host_key")),
        )


def clone_exit_reason(code: int) -> str | None:
    """What an exit status of the clone step means, in words (None: not one of them)."""
    return {
        EXIT_NO_GIT: "git is not installed in the task's image (see the log)",
        EXIT_CLONE_FAILED: "the task could not clone its commit (see the log)",
        EXIT_POSTCLONE_FAILED: "postclone failed in the task's clone (see the log)",
    }.get(code)


_NO_KEY = (
    "scripthut: the repository needs a deploy key; give this container its text in "
    f"{KEY_VARIABLE} (on AWS Batch, a secret of the job definition): ScriptHut never "
    "sends deploy_key to AWS"
)

# Bash; the variables it reads are set by `clone_lines`. Ends the script on failure.
_CLONE = r"""__hut_git_clone() {
    if ! command -v git > /dev/null 2>&1; then
        printf 'scripthut: git is not installed in this image; it is needed to clone %s at %s\n' \
            "$__hut_git_url" "$__hut_git_sha" >&2
        return __EXIT_NO_GIT__
    fi
    __hut_git_key="${__KEY_VARIABLE__:-}"
    unset __KEY_VARIABLE__
    __hut_git_ok="$__hut_git_dir/.$__hut_git_sha.ok"
    if [ -e "$__hut_git_ok" ] && [ -d "$__hut_git_root" ]; then return 0; fi
    command -p mkdir -p -- "$__hut_git_dir" || return __EXIT_CLONE_FAILED__
    exec 8> "$__hut_git_dir/.$__hut_git_sha.lock" || return __EXIT_CLONE_FAILED__
    if command -v flock > /dev/null 2>&1; then flock 8; fi
    if [ -e "$__hut_git_ok" ] && [ -d "$__hut_git_root" ]; then exec 8>&-; return 0; fi
    printf 'scripthut: cloning %s at %s into %s\n' \
        "$__hut_git_url" "$__hut_git_sha" "$__hut_git_root" >&2
    __hut_git_fetch
    __hut_rc=$?
    if [ "$__hut_rc" -ne 0 ]; then exec 8>&-; return "$__hut_rc"; fi
    if [ -n "$__hut_git_postclone" ]; then
        ( CDPATH= cd -- "$__hut_git_root" && bash -c "$__hut_git_postclone" ) < /dev/null
        __hut_rc=$?
        if [ "$__hut_rc" -ne 0 ]; then
            printf 'scripthut: postclone exited with status %s\n' "$__hut_rc" >&2
            command -p rm -rf -- "$__hut_git_root"
            exec 8>&-
            return __EXIT_POSTCLONE_FAILED__
        fi
    fi
    : > "$__hut_git_ok"
    exec 8>&-
}
__hut_git_fetch() {
    __hut_git_ssh="ssh -o BatchMode=yes -o StrictHostKeyChecking=$__hut_git_host_key"
    __hut_git_keydir=
    if [ -n "$__hut_git_needs_key" ]; then
        if [ -z "$__hut_git_key" ]; then
            printf '%s\n' "$__hut_git_no_key" >&2
            return __EXIT_CLONE_FAILED__
        fi
        __hut_git_keydir=$(umask 077 && command -p mktemp -d) || return __EXIT_CLONE_FAILED__
        ( umask 077 && printf '%s\n' "$__hut_git_key" > "$__hut_git_keydir/key" ) ||
            { command -p rm -rf -- "$__hut_git_keydir"; return __EXIT_CLONE_FAILED__; }
        __hut_git_ssh="$__hut_git_ssh -i $(printf %q "$__hut_git_keydir/key")"
        __hut_git_ssh="$__hut_git_ssh -o IdentitiesOnly=yes"
    fi
    __hut_git_key=
    __hut_git_tmp=$(command -p mktemp -d "$__hut_git_dir/.tmp-$__hut_git_sha.XXXXXX") ||
        return __EXIT_CLONE_FAILED__
    __hut_git_get
    __hut_rc=$?
    if [ -n "$__hut_git_keydir" ]; then command -p rm -rf -- "$__hut_git_keydir"; fi
    if [ "$__hut_rc" -ne 0 ]; then
        command -p rm -rf -- "$__hut_git_tmp"
        return __EXIT_CLONE_FAILED__
    fi
    command -p chmod -- "$(printf '%o' $(( 0777 & ~0$(umask) )))" "$__hut_git_tmp"
    command -p rm -rf -- "$__hut_git_root"
    if ! command -p mv -- "$__hut_git_tmp" "$__hut_git_root"; then
        command -p rm -rf -- "$__hut_git_tmp"
        return __EXIT_CLONE_FAILED__
    fi
}
__hut_git_get() (
    export GIT_SSH_COMMAND="$__hut_git_ssh" GIT_TERMINAL_PROMPT=0
    cd -- "$__hut_git_tmp" || exit 1
    git -c init.defaultBranch=scripthut init -q . || exit 1
    git config remote.origin.url "$__hut_git_url" || exit 1
    if ! git fetch -q --depth 1 --no-tags origin "$__hut_git_sha"; then
        printf 'scripthut: the server did not serve the commit by id; fetching branch %s\n' \
            "$__hut_git_branch" >&2
        git fetch -q --no-tags origin "refs/heads/$__hut_git_branch" || exit 1
    fi
    git -c advice.detachedHead=false checkout -q "$__hut_git_sha" || exit 1
    __hut_head=$(git rev-parse HEAD) || exit 1
    if [ "$__hut_head" != "$__hut_git_sha" ]; then
        printf 'scripthut: the clone is at %s, not %s\n' "$__hut_head" "$__hut_git_sha" >&2
        exit 1
    fi
)
__hut_git_clone
__hut_rc=$?
__hut_git_key=
if [ "$__hut_rc" -ne 0 ]; then exit "$__hut_rc"; fi
"""


def clone_lines(clone: TaskClone) -> list[str]:
    """Bash that clones `clone` (or finds it complete), then leaves the script where it was."""
    root = clone.root
    body = (
        _CLONE.replace("__EXIT_NO_GIT__", str(EXIT_NO_GIT))
        .replace("__EXIT_CLONE_FAILED__", str(EXIT_CLONE_FAILED))
        .replace("__EXIT_POSTCLONE_FAILED__", str(EXIT_POSTCLONE_FAILED))
        .replace("__KEY_VARIABLE__", KEY_VARIABLE)
    )
    return [
        f"__hut_git_url={shell_quote(clone.url)}",
        f"__hut_git_branch={shell_quote(clone.branch)}",
        f"__hut_git_sha={shell_quote(clone.sha)}",
        f"__hut_git_dir={shell_path(posixpath.dirname(root))}",
        f"__hut_git_root={shell_path(root)}",
        f"__hut_git_postclone={shell_quote(clone.postclone or '')}",
        f"__hut_git_needs_key={'1' if clone.key else ''}",
        f"__hut_git_host_key={'accept-new' if clone.accept_new_host_key else 'yes'}",
        f"__hut_git_no_key={shell_quote(_NO_KEY)}",
        body.rstrip("\n"),
    ]
