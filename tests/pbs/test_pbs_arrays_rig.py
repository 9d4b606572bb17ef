"""What the rig's Torque wrappers (over Slurm) do with job arrays: why the PBS backend keeps
submitting one job per task there. Real Torque and PBS Pro formats are tested with fixtures
(tests/test_pbs_parse.py).

The wrappers accept `-t 0-2%1` (Torque) and `-J 0-2` (PBS Pro) and create a Slurm array,
but print a bare id (not `123[]`), list one `qstat -f` record per array (no `-t`), give the
elements neither `$PBS_ARRAYID` nor `$PBS_ARRAY_INDEX` (only Slurm's variables), and take
`qdel '123[1]'` for `qdel 123` (the whole array): elements can be neither polled nor cancelled
one by one through them.
"""

from __future__ import annotations

import subprocess
import uuid

from tests.slurm.conftest import SlurmRig

PROBE = r"""set -u
B={bin}
d=$HOME/{folder}; mkdir -p "$d"; cd "$d"
o='"$HOME/{folder}/$1.$SLURM_ARRAY_TASK_ID"'
v='T=${{PBS_ARRAYID-unset}} P=${{PBS_ARRAY_INDEX-unset}} S=$SLURM_ARRAY_TASK_ID'
printf '%s\n' '#!/bin/bash' "echo \"$v\" > $o" > t.sh
cp t.sh j.sh; sed -i 's/\$1/torque/' t.sh; sed -i 's/\$1/pro/' j.sh
a=$("$B/qsub" -h -t 0-2%1 t.sh); b=$("$B/qsub" -h -J 0-2 j.sh)
echo "ids $a $b"
"$B/qstat" -f "$a" | grep -c '^Job Id:' | sed 's/^/records /'
"$B/qstat" -t >/dev/null 2>&1; echo "qstat-t $?"
"$B/qdel" "$a[1]" >/dev/null 2>&1; echo "qdel-element $?"
scontrol release "$a" "$b" >/dev/null
for _ in $(seq 120); do [ "$(ls "$d" | grep -c '^pro\.[0-9]$')" -ge 3 ] && break; sleep 0.5; done
cat "$d"/pro.2; ls "$d" | grep -c '^torque\.' | sed 's/^/torque-elements /'
"$B/qdel" "$a" "$b" >/dev/null 2>&1; cd; rm -rf -- "$d"
"""


def test_the_wrappers_make_a_slurm_array_but_show_no_pbs_elements(pbs_rig: SlurmRig) -> None:
    folder = f"hut-pbs-arrays-{uuid.uuid4().hex[:10]}"
    script = PROBE.format(bin=pbs_rig.torque_bin, folder=folder)
    done = subprocess.run(
        pbs_rig.ssh_argv("bash", "-s"),
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()
    ids = lines[0].split()[1:]
    assert len(ids) == 2 and all(job_id.isdigit() for job_id in ids), lines  # no `123[]`
    assert lines[1:4] == ["records 1", "qstat-t 2", "qdel-element 0"], lines
    # `qdel 123[1]` deleted the whole held Torque-style array: none of its elements ran.
    assert lines[4:] == ["T=unset P=unset S=2", "torque-elements 0"], lines
