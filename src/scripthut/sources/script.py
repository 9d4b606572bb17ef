"""The one bash script a sync (or a workflow command in a clone) runs on a backend.

Pure text: no I/O here. Every value from the config (URL, branch, paths, glob, postclone,
the deploy key's text) enters the script through `shlex.quote`, and the script reaches the
backend as bash's stdin, never through argv (so a deploy key never shows in `ps`).

A git sync, in one round trip:
1. `git ls-remote` resolves the branch head (host key checked: `StrictHostKeyChecking=yes`,
   or `accept-new` when the config says so; with a deploy key, `IdentitiesOnly=yes`).
2. When `<clone_dir>/<sha>/` has no completion mark: under a lock per commit, a shallow
   clone into a temporary folder, renamed to the commit it holds, then `postclone` there,
   then the mark. A folder without its mark (a sync killed half-way) is removed and
   cloned again; one with the mark is never touched again.
3. The workflow files the glob finds there (`**` allowed), each printed whole.
The deploy key lives for the script only (0600 in a private folder; removed by an EXIT
trap, and a key left by a killed sync of the same source is removed by the next one).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

from scripthut.backends.remote import Section, capture, parse_sections, script_end, script_start

MAX_FILE_BYTES = 4 << 20
MAX_FILES = 500
KEY_DIR = "$HOME/.scripthut/keys"


@dataclass(frozen=True, slots=True)
class GitSpec:
    """What to clone and how to reach it."""

    url: str
    branch: str
    clone_dir: str
    key_text: str | None = None
    key_id: str = "source"  # names the key file (a digest of the source's name)
    accept_new_host_key: bool = False
    postclone: str | None = None


def key_id(name: str) -> str:
    """A file-name-safe word for a source or workflow name."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def home_path(path: str) -> str:
    """Bash text for a path from the config: `~` and `~/x` start at $HOME; rest quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def git_script(marker: str, spec: GitSpec, tail: str) -> str:
    """Resolve, clone when needed, then run `tail` (bash) inside the clone."""
    q = shlex.quote
    host_key = "accept-new" if spec.accept_new_host_key else "yes"
    lines = [
        script_start(marker),
        "umask 077",
        f"__hut_url={q(spec.url)}",
        f"__hut_branch={q(spec.branch)}",
        f"__hut_dir={home_path(spec.clone_dir)}",
        f'__hut_keydir="{KEY_DIR}"',
        '__hut_key=""',
        '__hut_cleanup() { if [ -n "$__hut_key" ]; then rm -f -- "$__hut_key"; fi; }',
        "trap __hut_cleanup EXIT",
        "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 141' PIPE",
        f'rm -f -- "$__hut_keydir"/{spec.key_id}.*.key 2>/dev/null',
        f"__hut_ssh='ssh -o BatchMode=yes -o StrictHostKeyChecking={host_key}'",
    ]
    if spec.key_text is not None:
        text = spec.key_text if spec.key_text.endswith("\n") else spec.key_text + "\n"
        lines += [
            'mkdir -p -- "$__hut_keydir" && chmod 700 -- "$__hut_keydir" "$HOME/.scripthut"',
            f'__hut_key="$__hut_keydir/{spec.key_id}.$$.key"',
            f'printf \'%s\' {q(text)} > "$__hut_key" && chmod 600 -- "$__hut_key"',
            '__hut_ssh="$__hut_ssh -i $(printf %q "$__hut_key") -o IdentitiesOnly=yes"',
        ]
    lines += [
        'export GIT_SSH_COMMAND="$__hut_ssh" GIT_TERMINAL_PROMPT=0',
        capture("lsremote", 'git ls-remote -- "$__hut_url" "refs/heads/$__hut_branch"'),
        'if [ "$__hut_rc" != 0 ]; then ' + script_end().strip() + "; exit 0; fi",
        "__hut_sha=$(printf '%s\\n' \"$__hut_out\" | "
        "awk -v r=\"refs/heads/$__hut_branch\" '$2 == r { print $1 }')",
        'case $__hut_sha in ""|*[!0-9a-f]*)',
        "  printf '%s nobranch 1\\n' \"$__hut_m\"; " + script_end().strip() + "; exit 0;; esac",
        clone_block(spec.postclone),
        'printf \'%s clone %s\\n%s\\n\' "$__hut_m" "$__hut_sha" "$__hut_dest"',
        'cd -- "$__hut_dest" || exit 1',
        tail,
        script_end(),
    ]
    return "\n".join(lines)


# Runs after ls-remote: sets __hut_dest to a complete clone or prints a failed section and ends.
_CLONE = r"""
__hut_ok() { [ -d "$__hut_dir/$1" ] && [ -e "$__hut_dir/.$1.ok" ]; }
__hut_fail() { printf '%s %s 1\n%s\n' "$__hut_m" "$1" "$2"; printf '%s end\n' "$__hut_m"; exit 0; }
if ! __hut_ok "$__hut_sha"; then
  mkdir -p -- "$__hut_dir" || __hut_fail clonefail "cannot create $__hut_dir"
  exec 8>"$__hut_dir/.$__hut_sha.lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  if ! __hut_ok "$__hut_sha"; then
    rm -rf -- "$__hut_dir/$__hut_sha" "$__hut_dir/.tmp-$__hut_sha".*
    __hut_tmp="$__hut_dir/.tmp-$__hut_sha.$$"
    __hut_out=$(git clone --quiet --depth 1 --no-tags --single-branch \
      --branch "$__hut_branch" -- "$__hut_url" "$__hut_tmp" 2>&1) ||
      { rm -rf -- "$__hut_tmp"; __hut_fail clonefail "$__hut_out"; }
    __hut_head=$(git -C "$__hut_tmp" rev-parse HEAD) ||
      { rm -rf -- "$__hut_tmp"; __hut_fail clonefail "cannot read the clone's HEAD"; }
    if [ "$__hut_head" != "$__hut_sha" ]; then
      __hut_sha=$__hut_head
      exec 8>"$__hut_dir/.$__hut_sha.lock"
      if command -v flock >/dev/null 2>&1; then flock 8; fi
    fi
    if __hut_ok "$__hut_sha"; then
      rm -rf -- "$__hut_tmp"
    else
      rm -rf -- "$__hut_dir/$__hut_sha"
      mv -- "$__hut_tmp" "$__hut_dir/$__hut_sha" || __hut_fail clonefail "cannot rename the clone"
      __HUT_POSTCLONE__
      : > "$__hut_dir/.$__hut_sha.ok"
    fi
  fi
  exec 8>&-
fi
__hut_dest=$(cd -- "$__hut_dir/$__hut_sha" && pwd -P)
"""


def clone_block(postclone: str | None) -> str:
    """The clone step with `postclone` (trusted config text) run once in the new clone."""
    if not postclone:
        return _CLONE.replace("__HUT_POSTCLONE__", ":")
    step = (
        f'__hut_out=$(cd -- "$__hut_dir/$__hut_sha" && bash -c {shlex.quote(postclone)} '
        '</dev/null 2>&1) || { __hut_rc=$?; rm -rf -- "$__hut_dir/$__hut_sha"; '
        '__hut_fail postclonefail "postclone exited with status $__hut_rc: $__hut_out"; }'
    )
    return _CLONE.replace("__HUT_POSTCLONE__", step)


def path_script(marker: str, path: str, tail: str) -> str:
    """`tail` run in a path source's folder (one round trip)."""
    return "\n".join(
        [
            script_start(marker),
            f"__hut_dir={home_path(path)}",
            'if ! cd -- "$__hut_dir" 2>/dev/null; then',
            '  printf \'%s pathfail 1\\n%s\\n\' "$__hut_m" "no folder $__hut_dir"',
            "  " + script_end().strip(),
            "  exit 0",
            "fi",
            'printf \'%s root 0\\n%s\\n\' "$__hut_m" "$(pwd -P)"',
            tail,
            script_end(),
        ]
    )


def discover(glob: str) -> str:
    """Bash printing every file the glob matches (relative to the current folder), whole."""
    return (
        "shopt -s globstar nullglob\n"
        f"__hut_glob={shlex.quote(glob)}\n"
        "IFS=''; __hut_files=( $__hut_glob ); unset IFS\n"
        "__hut_n=0\n"
        'for __hut_f in "${__hut_files[@]}"; do\n'
        '  [ -f "$__hut_f" ] || continue\n'
        "  case $__hut_f in *$'\\n'*) continue;; esac\n"
        f"  __hut_n=$((__hut_n + 1)); [ $__hut_n -le {MAX_FILES} ] || break\n"
        '  __hut_size=$(wc -c < "$__hut_f")\n'
        f'  if [ "$__hut_size" -gt {MAX_FILE_BYTES} ]; then\n'
        '    printf \'%s big %s\\n%s\\n\' "$__hut_m" "$__hut_size" "$__hut_f"; continue\n'
        "  fi\n"
        '  printf \'%s file %s\\n%s\\n\' "$__hut_m" "$__hut_size" "$__hut_f"\n'
        "  cat -- \"$__hut_f\"; printf '\\n'\n"
        "done\n"
    )


def command(text: str) -> str:
    """Bash running a workflow command (trusted config text), stdout and stderr apart."""
    return (
        "__hut_errf=$(mktemp) || exit 1\n"
        f'__hut_out=$(bash -c {shlex.quote(text)} </dev/null 2>"$__hut_errf")\n'
        "__hut_rc=$?\n"
        'printf \'%s command %s\\n%s\\n\' "$__hut_m" "$__hut_rc" "$__hut_out"\n'
        'printf \'%s stderr 0\\n%s\\n\' "$__hut_m" "$(tail -c 2000 "$__hut_errf")"\n'
        'rm -f -- "$__hut_errf"\n'
    )


def sections(text: str, marker: str) -> list[Section]:
    return parse_sections(text, marker)
