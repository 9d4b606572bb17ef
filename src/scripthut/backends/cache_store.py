"""The directory store of the result cache, driven by bash scripts that run where the tasks
run (on a cluster, over the backend's transport): one script hashes the inputs of a whole
batch of tasks, looks their keys up and restores the hits; one saves the outputs of a
batch of finished tasks. Nothing is hashed or copied on the machine of the engine.

An entry is `<root>/<key>/`: `files/` (the outputs, at their paths relative to the task's
working_dir), `sums` (their `sha256sum` lines) and `inputs` (the inputs' lines). It is
built in `<root>/.tmp/` and renamed into place in one step (`mv -T`), so two identical
tasks finishing at once never corrupt it: the second rename fails and its copy is dropped.
A restore first checks every file against `sums`; an entry that fails (or lacks `sums`) is
a miss and the task runs.

Replies are NUL-separated records, `<tag>\\0<task>\\0<value>\\0`:
`K` key, `I` input lines, `H` hit (restored), `M` miss, `N` not cacheable (reason),
`S` saved (output lines), `X` not saved (reason), `E` an entry (key, size, mtime).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

# Shared by both scripts: files matching patterns, sorted, one per line (NUL-safe names
# are not needed: newlines in names are refused).
_MATCH = r"""
set -f
match() {  # $1 working dir, then patterns; prints matched regular files (relative), sorted
    local wd=$1; shift
    (
        cd -- "$wd" 2>/dev/null || exit 3
        set +f; shopt -s nullglob globstar; IFS=$'\n'
        for p in "$@"; do
            found=0
            for f in $p; do
                found=1
                if [ -L "$f" ]; then continue; fi
                if [ -d "$f" ]; then find "$f" -type f
                elif [ -f "$f" ]; then printf '%s\n' "$f"; fi
            done
            [ "$found" = 1 ] || exit 4
        done
    ) | LC_ALL=C sort -u
    return "${PIPESTATUS[0]}"
}
emit() { printf '%s\0%s\0%s\0' "$1" "$2" "$3"; }
home() {
    case $1 in
        "~/"*) printf '%s' "$HOME/${1#"~/"}" ;;
        "~") printf '%s' "$HOME" ;;
        *) printf '%s' "$1" ;;
    esac
}
"""

# Arguments: root, restore (1|0), then per task: id, working dir, key prefix, N, N patterns.
LOOKUP_BASH = (
    _MATCH
    + r"""
root=$(home "$1"); restore=$2; shift 2
while [ "$#" -ge 4 ]; do
    id=$1; wd=$(home "$2"); prefix=$3; n=$4; shift 4
    pats=("${@:1:n}"); shift "$n"
    sums=
    if [ "$n" -gt 0 ]; then
        files=$(match "$wd" "${pats[@]}"); rc=$?
        if [ "$rc" = 3 ]; then emit N "$id" "working dir $wd not found"; continue; fi
        if [ "$rc" = 4 ]; then emit N "$id" "an input pattern matches no file"; continue; fi
        if [ -z "$files" ]; then emit N "$id" "the inputs match no file"; continue; fi
        sums=$(cd -- "$wd" && printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 sha256sum --) \
            || { emit N "$id" "an input cannot be read"; continue; }
        sums=$sums$'\n'
    fi
    key=$(printf '%s\n%s' "$prefix" "$sums" | sha256sum | cut -c1-64)
    emit K "$id" "$key"
    emit I "$id" "$sums"
    entry=$root/$key
    if [ ! -f "$entry/sums" ] \
        || ! (cd -- "$entry/files" && sha256sum --quiet -c ../sums >/dev/null 2>&1); then
        emit M "$id" ""; continue
    fi
    if [ "$restore" = 1 ]; then
        (cd -- "$entry/files" && cp -R --no-preserve=ownership -- . "$wd"/) \
            || { emit M "$id" "restore failed"; continue; }
    fi
    emit S "$id" "$(cat -- "$entry/sums")"
    emit H "$id" ""
done
"""
)

# The same in one Python process when the host has python3 (1,000 tasks in well under a
# second, where bash forks a dozen processes per task); bash otherwise.
_PYTHON = resources.files("scripthut.backends").joinpath("cache_lookup.py").read_text("utf-8")
_PY_FIRST = f"__hut_py={shlex.quote(_PYTHON)}\n__hut_python=${{SCRIPTHUT_STORE_PYTHON:-python3}}\n"
LOOKUP_SCRIPT = (
    _PY_FIRST
    + 'if command -v "$__hut_python" >/dev/null 2>&1; then\n'
    + '    exec "$__hut_python" -c "$__hut_py" "$@"\n'
    + "fi\n"
    + "case $1 in s3://*)\n"
    + '    echo "an S3 store needs python3 with boto3 on the host" >&2; exit 6;;\n'
    + "esac\n"
    + LOOKUP_BASH
)

# Arguments: root, then per task: id, working dir, key, input lines, N, N output patterns.
SAVE_SCRIPT = (
    _PY_FIRST
    + 'case $1 in s3://*) exec "$__hut_python" -c "$__hut_py" save "$@";; esac\n'
    + _MATCH
    + r"""
root=$(home "$1"); shift
mkdir -p -- "$root/.tmp" || exit 5
while [ "$#" -ge 5 ]; do
    id=$1; wd=$(home "$2"); key=$3; inputs=$4; n=$5; shift 5
    pats=("${@:1:n}"); shift "$n"
    files=$(match "$wd" "${pats[@]}") \
        || { emit X "$id" "an output pattern matches no file"; continue; }
    [ -n "$files" ] || { emit X "$id" "the outputs match no file"; continue; }
    if [ "$key" = - ]; then  # not to be stored: only their hashes, for the manifest
        emit O "$id" "$(cd -- "$wd" && printf '%s\n' "$files" | tr '\n' '\0' \
            | xargs -0 sha256sum --)"
        continue
    fi
    if [ -e "$root/$key" ]; then emit X "$id" "already stored"; continue; fi
    tmp=$(mktemp -d "$root/.tmp/$key.XXXXXX") \
        || { emit X "$id" "cannot write to the store"; continue; }
    ok=1
    while IFS= read -r f; do
        mkdir -p -- "$tmp/files/$(dirname -- "$f")" && cp -- "$wd/$f" "$tmp/files/$f" || ok=0
    done <<< "$files"
    (cd -- "$tmp/files" && printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 sha256sum -- \
        > ../sums) || ok=0
    printf '%s\n' "$inputs" > "$tmp/inputs" || ok=0
    if [ "$ok" = 1 ] && mv -T -- "$tmp" "$root/$key" 2>/dev/null; then
        emit S "$id" "$(cat -- "$root/$key/sums")"
    else
        rm -rf -- "$tmp"; emit X "$id" "another task stored it first, or a copy failed"
    fi
done
"""
)

# Arguments: root, then keys to remove (none: list every entry).
ADMIN_SCRIPT = r"""
emit() { printf '%s\0%s\0%s\0' "$1" "$2" "$3"; }
case $1 in "~/"*) root=$HOME/${1#"~/"} ;; *) root=$1 ;; esac; shift
[ -d "$root" ] || exit 0
if [ "$#" = 0 ]; then
    for entry in "$root"/*/; do
        [ -f "$entry/sums" ] || continue
        key=$(basename -- "$entry")
        emit E "$key" "$(du -sk -- "$entry" | cut -f1) $(stat -c %Y -- "$entry")"
    done
elif [ "$1" = "--all" ]; then
    for entry in "$root"/*/ "$root"/.tmp; do
        [ -e "$entry" ] && rm -rf -- "$entry" && emit R "$(basename -- "$entry")" ""
    done
else
    for key in "$@"; do
        case $key in *[!0-9a-f]*|"") continue ;; esac
        [ -d "$root/$key" ] && rm -rf -- "$root/$key" && emit R "$key" ""
    done
fi
"""


@dataclass(frozen=True, slots=True)
class LookupRequest:
    task_id: str
    working_dir: str
    prefix: str
    inputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SaveRequest:
    task_id: str
    working_dir: str
    key: str
    input_sums: str
    outputs: tuple[str, ...]


@dataclass(slots=True)
class CacheReply:
    """What a script said about each task: key, input lines, hit, saved lines, or why not."""

    keys: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    hits: set[str] = field(default_factory=set)
    misses: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)
    hashed: dict[str, str] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def script_bytes(script: str, args: Sequence[str]) -> bytes:
    """The script with its arguments set first (`set -- ...`), for `bash -s`: arguments go
    on stdin, so a batch of any size is one round trip."""
    quoted = " ".join(shlex.quote(a) for a in args)
    return f"{{\nset -- {quoted}\n{script}\n}}\n".encode()


def lookup_args(root: str, requests: Sequence[LookupRequest], restore: bool) -> list[str]:
    args = [root, "1" if restore else "0"]
    for r in requests:
        args.extend((r.task_id, r.working_dir, r.prefix, str(len(r.inputs)), *r.inputs))
    return args


def save_args(root: str, requests: Sequence[SaveRequest]) -> list[str]:
    args = [root]
    for r in requests:
        args.extend((r.task_id, r.working_dir, r.key, r.input_sums, str(len(r.outputs))))
        args.extend(r.outputs)
    return args


def parse_reply(data: bytes) -> CacheReply:
    reply = CacheReply()
    parts = data.decode("utf-8", errors="replace").split("\0")
    targets = {"K": reply.keys, "I": reply.inputs, "N": reply.skipped, "S": reply.saved}
    targets["O"] = reply.hashed
    targets |= {"X": reply.skipped, "E": reply.entries, "M": reply.misses}
    for i in range(0, len(parts) - 2, 3):
        tag, task, value = parts[i], parts[i + 1], parts[i + 2]
        if tag == "H":
            reply.hits.add(task)
        elif tag == "R":
            reply.removed.append(task)
        elif tag in targets:
            targets[tag][task] = value.rstrip("\n") + ("\n" if tag in "ISO" and value else "")
    return reply
