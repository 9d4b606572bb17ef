"""Pure parts of the EC2 backend: host keys from a console, the user data, error sorting."""

from __future__ import annotations

import base64
import gzip
import re
from pathlib import Path

import pytest

from scripthut.backends.ec2_access import host_keys_from_console, missing_tools, require_tools
from scripthut.backends.ec2_api import describe, is_transient
from scripthut.backends.ec2_userdata import packed, render_user_data, safety_minutes
from scripthut.errors import ScriptHutError

CONSOLE = """\
[   12.3] cloud-init[1]: Cloud-init v. 22.2.2 running 'modules:final'
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:abc root@ip-10-0-0-1 (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNh root@ip-10-0-0-1
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
ssh-rsa AAAAoutside the block
"""


def test_host_keys_are_read_only_from_the_key_block() -> None:
    assert host_keys_from_console(CONSOLE) == [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    ]
    assert host_keys_from_console("no keys here") == []


def test_user_data_quotes_the_image_and_carries_the_script_packed() -> None:
    script = "#!/bin/bash\necho 'it''s' $HOME\n" + "x" * 5000
    text = render_user_data(
        script=script, image="img:1; rm -rf /", time_limit_s=90, idle_s=60, comment="a\nb"
    )
    assert "docker pull -q 'img:1; rm -rf /'" in text
    assert "timeout --kill-after=30 90 docker run" in text
    assert "shutdown -h +3 " in text  # ceil((90 + 60) / 60) minutes
    payload = re.search(r"printf '%s' '([A-Za-z0-9+/=]+)'", text)
    assert payload is not None
    assert gzip.decompress(base64.b64decode(payload.group(1))).decode() == script
    assert payload.group(1) == packed(script)
    assert "# a?b" in text  # the comment cannot end its line


@pytest.mark.parametrize(
    ("limit", "idle", "minutes"), [(3600, 1800, 90), (1, 60, 2), (0, 0, 1), (61, 60, 3)]
)
def test_the_safety_timer_rounds_up_to_whole_minutes(limit: int, idle: int, minutes: int) -> None:
    assert safety_minutes(limit, idle) == minutes


class FakeClientError(Exception):
    def __init__(self, code: str, status: int = 400) -> None:
        super().__init__(code)
        self.response = {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }


class EndpointConnectionError(Exception):
    pass


def test_throttling_capacity_5xx_and_network_are_transient_the_rest_is_not() -> None:
    assert is_transient(FakeClientError("RequestLimitExceeded"))
    assert is_transient(FakeClientError("InsufficientInstanceCapacity"))
    assert is_transient(FakeClientError("Whatever", status=503))
    assert is_transient(EndpointConnectionError("down"))
    assert not is_transient(FakeClientError("InvalidAMIID.NotFound"))
    assert not is_transient(ValueError("x"))
    assert describe(FakeClientError("InvalidAMIID.NotFound")) == (
        "InvalidAMIID.NotFound: InvalidAMIID.NotFound happened"
    )


def test_missing_tools_name_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_tools() == ["aws", "session-manager-plugin"]
    with pytest.raises(ScriptHutError, match=r"install the AWS CLI .* Session Manager plugin"):
        require_tools()


def test_the_clone_step_statuses_are_told_in_words() -> None:
    from scripthut.backends.batch_jobs import status_of
    from scripthut.backends.ec2_userdata import exit_reason
    from scripthut.workflow.clone import EXIT_CLONE_FAILED, EXIT_NO_GIT, EXIT_POSTCLONE_FAILED

    assert exit_reason(EXIT_NO_GIT, 60) == "git is not installed in the task's image (see the log)"
    assert exit_reason(EXIT_CLONE_FAILED, 60) == "the task could not clone its commit (see the log)"
    assert exit_reason(EXIT_POSTCLONE_FAILED, 60) == (
        "postclone failed in the task's clone (see the log)"
    )
    assert exit_reason(3, 60) == "exit 3"
    job = {"jobId": "j", "status": "FAILED", "statusReason": "Essential container in task exited"}
    failed = status_of({**job, "container": {"exitCode": EXIT_NO_GIT}})
    assert failed.reason == (
        "git is not installed in the task's image (see the log); Essential container in task exited"
    )
    assert status_of({**job, "container": {"exitCode": 1}}).reason == (
        "Essential container in task exited"
    )
