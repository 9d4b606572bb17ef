"""The bash the Grid Engine backend runs: one script per poll, find and info.

The scripts print marked sections (`remote.parse_sections`); every scheduler word they carry
is quoted. States are never decided here: the XML each one captures is parsed in Python.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from scripthut.backends import sge_parse as gp
from scripthut.backends.base import JobRef
from scripthut.backends.remote import (
    capture,
    exit_files_script,
    index_script,
    script_end,
    script_start,
)
from scripthut.backends.slurm_arrays import members_script

# Read the user's jobs out of `qstat -xml` line by line: only to skip live jobs' exit files and
# accounting; the states themselves come from the XML parsed in Python. A live array task is
# `<job>.<task>` too, and so is every task of a pending array's range (`3-5:1`, `1,4-9:2`).
_LIVE_SCAN = r"""declare -A __hut_live=()
__hut_id=
__hut_up=
__hut_range='^([0-9]+)(-([0-9]+)(:([0-9]+))?)?$'
while read -r __hut_l; do
    case $__hut_l in
        "<JB_job_number>"*) __hut_id=${__hut_l#<JB_job_number>}; __hut_id=${__hut_id%%<*} ;;
        "<state>"*)
            __hut_up=
            case $__hut_l in
                *z*) ;;
                *) [ -n "$__hut_id" ] && __hut_live[$__hut_id]=1 && __hut_up=1 ;;
            esac ;;
        "<tasks>"*)
            [ -n "$__hut_up" ] || continue
            __hut_t=${__hut_l#<tasks>}; __hut_t=${__hut_t%%<*}
            for __hut_p in ${__hut_t//,/ }; do
                [[ $__hut_p =~ $__hut_range ]] || continue
                __hut_a=$((10#${BASH_REMATCH[1]})); __hut_b=$((10#${BASH_REMATCH[3]:-$__hut_a}))
                __hut_s=$((10#${BASH_REMATCH[5]:-1})); [ "$__hut_s" -gt 0 ] || __hut_s=1
                [ $((__hut_b - __hut_a)) -le 1000000 ] || continue
                for ((__hut_k = __hut_a; __hut_k <= __hut_b; __hut_k += __hut_s)); do
                    __hut_live[$__hut_id.$__hut_k]=1
                done
            done ;;
    esac
done <<< "$__hut_out"
"""
# The records of `qacct -j` whose job number is one of `want` (space-separated job ids; an
# array element's `<job>.<task>` keeps every task of its job).
_QACCT_FILTER = (
    'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) { sub(/\\..*/, "", w[i]);'
    " k[w[i]] = 1 } }"
    ' /^=+$/ { if (keep) printf "%s", rec; rec = $0 "\\n"; keep = 0; next }'
    ' { rec = rec $0 "\\n" } $1 == "jobnumber" && ($2 in k) { keep = 1 }'
    ' END { if (keep) printf "%s", rec }'
)


def poll_script(jobs: Sequence[JobRef], user: str, marker: str, acct_days: int) -> str:
    """qstat once; for tracked jobs not live: exit files, then one qacct for them."""
    valid = [ref for ref in jobs if gp.is_job_id(ref.job_id)]
    return "".join(
        [
            script_start(marker),
            "printf '%s tz %(%z)T\\n' \"$__hut_m\" -1\n",
            capture("qstat", qstat_command(user)),
            'if [ "$__hut_rc" -eq 0 ]; then\n',
            _LIVE_SCAN,
            exit_files_script(
                [ref.job_id for ref in valid], [ref.paths.exit_code for ref in valid]
            ),
            'if [ "${#__hut_done[@]}" -gt 0 ]; then\n',
            capture("qacct", qacct_command(user, acct_days)),
            "fi\n",
            "fi\n",
            script_end(),
        ]
    )


def qstat_command(user: str) -> str:
    """The user's pending, running, suspended and zombie (ended) jobs, as XML."""
    return shlex.join(["qstat", "-xml", "-s", "prsz", "-u", user])


def qacct_command(user: str, acct_days: int) -> str:
    """The user's recent accounting records, only those of the jobs in `__hut_done`."""
    qacct = shlex.join(["qacct", "-o", user, "-d", str(acct_days), "-j"])
    awk = f'awk -v want="${{__hut_done[*]}}" {shlex.quote(_QACCT_FILTER)}'
    return f"set -o pipefail; {qacct} | {awk}"


def find_script(tags: Sequence[str], user: str, marker: str, index_dir: str, log_dir: str) -> str:
    """The tag index; when a tag is not there, the arrays whose wrappers list it (and their
    index entries), and the contexts of the user's queued jobs."""
    ids = (
        f"{qstat_command(user)} | "
        "sed -n 's:.*<JB_job_number>\\([0-9][0-9]*\\)</JB_job_number>.*:\\1:p' | paste -sd, -"
    )
    return "".join(
        [
            script_start(marker),
            index_script(tags, index_dir),
            'if [ "$__hut_missing" = 1 ]; then\n',
            members_script(tags, log_dir),
            'for __hut_t in $__hut_arrays; do if [ -s "$__hut_idx/$__hut_t" ]; then\n',
            '    __hut_j=; read -r __hut_j < "$__hut_idx/$__hut_t"\n',
            '    printf \'%s index %s %s\\n\' "$__hut_m" "$__hut_t" "$__hut_j"\n',
            "fi; done\n",
            f"__hut_ids=$(set -o pipefail; {ids} 2>&1)\n",
            "__hut_rc=$?\n",
            'if [ "$__hut_rc" -eq 0 ] && [ -n "$__hut_ids" ]; then\n',
            capture("contexts", 'qstat -xml -j "$__hut_ids"'),
            "else\n",
            '    printf \'%s contexts %s\\n%s\\n\' "$__hut_m" "$__hut_rc" "$__hut_ids"\n',
            "fi\n",
            "fi\n",
            script_end(),
        ]
    )


def info_script(user: str, marker: str) -> str:
    """Cluster queues, hosts, and pending/running counts (all users', then the user's)."""
    count = (
        "set -o pipefail; qstat -xml -u {who} -s pr | "
        'awk \'/<job_list state="pending"/ {{ p++ }} /<job_list state="running"/ {{ r++ }} '
        "END {{ print p+0, r+0 }}'"
    )
    return "".join(
        [
            script_start(marker),
            capture("queues", "qstat -g c -xml"),
            capture("hosts", "qhost -xml"),
            capture("all", count.format(who="'*'")),
            capture("mine", count.format(who=shlex.quote(user))),
            script_end(),
        ]
    )
