"""What the EC2 tests share: moto in this process, a stand-in for the SSM port forward, and
the rig's OpenSSH server playing the instance.

moto runs in this process (`ThreadedMotoServer`) so a test can set what an instance prints
on its console (moto prints a fixed text) and hold an instance in `pending`. boto3 reaches it
through `AWS_ENDPOINT_URL`, as users of private endpoints do. Under CI=true a test fails when
moto or the rig is missing; elsewhere it is skipped.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.slurm.conftest import RigUnavailableError, SlurmRig, load_rig

REGION = "us-east-1"
ACCOUNT = "123456789012"
AMI = "ami-12c6146b"
SSH = shutil.which("ssh") or "ssh"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    except Exception as exc:  # ImportError, a port problem
        unavailable(f"moto cannot start: {exc}")
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A wiped moto, and the environment every AWS tool reads pointing at it."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_url


def client(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION)


def default_subnet() -> str:
    ec2 = client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    return str(subnets["Subnets"][0]["SubnetId"])


def moto_instance(instance_id: str) -> Any:
    """moto's own object for an instance (to hold it in a state or age it)."""
    from moto.ec2.models import ec2_backends

    return ec2_backends[ACCOUNT][REGION].get_instance(instance_id)


def user_data(instance_id: str) -> str:
    reply = client("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(reply["UserData"]["Value"]).decode()


def set_console(monkeypatch: pytest.MonkeyPatch, host_keys: list[str]) -> None:
    """What every instance prints on its console: a cloud-init host-key block."""
    from moto.ec2.responses import general

    block = "\n".join(["ec2: -----BEGIN SSH HOST KEY KEYS-----", *host_keys])
    text = f"cloud-init: boot\n{block}\nec2: -----END SSH HOST KEY KEYS-----\nlogin:\n"
    monkeypatch.setattr(general, "SAMPLE_CONSOLE_OUTPUT", text)


# --- the rig's sshd as the instance ---------------------------------------------------------


@pytest.fixture(scope="module")
def rig() -> SlurmRig:
    try:
        return load_rig()
    except RigUnavailableError as exc:
        unavailable(f"the rig's sshd is not up: {exc}")
        raise


def rig_host_key(rig: SlurmRig) -> str:
    """`type base64` of the rig's host key, from its known_hosts."""
    words = rig.known_hosts.read_text().split()
    return f"{words[1]} {words[2]}"


def on_rig(rig: SlurmRig, command: str, stdin: str = "", timeout: float = 120) -> str:
    """Run a command on the rig host as its SSH user; its stdout (fails the test if it fails)."""
    argv = rig.ssh_argv(command)
    argv[0] = SSH  # a test may empty PATH
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command}: exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


DOCKER_STANDIN = r"""#!/bin/bash
# Stand-in for docker: `run` runs the mounted script with bash on this host, as a container
# would, after recording its arguments; `pull` fails for images named *missing*.
here=$(cd "$(dirname "$0")" && pwd)
printf '%s\n' "$*" >> "$here/docker.calls"
case $1 in
  info) exit 0 ;;
  pull) case $* in *missing*) echo "pull access denied" >&2; exit 1 ;; esac; echo pulled; exit 0 ;;
  kill) [ -f "$here/docker.pid" ] && kill -9 "$(cat "$here/docker.pid")" 2>/dev/null; exit 0 ;;
  run)
    shift; mount=
    while [ $# -gt 0 ]; do
      case $1 in
        -v) mount=$2; shift 2 ;;
        --name|--network|--entrypoint) shift 2 ;;
        --*) shift ;;
        *) break ;;
      esac
    done
    shift  # the image
    echo $$ > "$here/docker.pid"
    exec bash "${mount%%:*}" ;;
esac
exit 0
"""

SHUTDOWN_STANDIN = """#!/bin/bash
printf '%s\\n' "$*" >> "$(cd "$(dirname "$0")" && pwd)/shutdown.calls"
"""


@dataclass(frozen=True)
class Host:
    """A folder on the rig host that plays an instance's file system, with stand-ins."""

    rig: SlurmRig
    root: str

    @property
    def bin(self) -> str:
        return f"{self.root}/bin"

    def run_user_data(self, text: str, timeout: float = 120) -> None:
        """Execute a user-data script here, with the stand-ins first on PATH."""
        on_rig(self.rig, f"PATH={shlex.quote(self.bin)}:$PATH bash -s", stdin=text, timeout=timeout)

    def read(self, name: str) -> str:
        return on_rig(self.rig, f"cat -- {shlex.quote(self.bin + '/' + name)} 2>/dev/null || true")


@pytest.fixture
def host(rig: SlurmRig) -> Iterator[Host]:
    root = on_rig(rig, "mktemp -d ~/ec2-instance.XXXXXX").strip()
    place = Host(rig, root)
    on_rig(rig, f"mkdir -p {shlex.quote(place.bin)} && chmod 755 {shlex.quote(root)}")
    for name, text in (("docker", DOCKER_STANDIN), ("shutdown", SHUTDOWN_STANDIN)):
        path = shlex.quote(f"{place.bin}/{name}")
        on_rig(rig, f"cat > {path} && chmod 755 {path}", stdin=text)
    yield place
    on_rig(rig, f"rm -rf -- {shlex.quote(root)}")


# --- the stand-in for `aws ssm start-session` -----------------------------------------------

RELAY = '''#!{python}
"""Stand-in for `aws ssm start-session` port forwarding: listens on localPortNumber and
relays every connection to {target}, as the Session Manager plugin does to port 22."""
import asyncio, json, sys
with open({calls!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
params = dict(p.split("=") for p in args[args.index("--parameters") + 1].split(","))
port = int(params["localPortNumber"])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection({host!r}, {port})
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"Starting session with SessionId: test\\nPort {{port}} opened for sessionId test.")
    print("Waiting for connections...", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


@dataclass(frozen=True)
class Tools:
    bin: Path
    calls: Path

    def forwards(self) -> list[str]:
        """The instance ids `aws ssm start-session` was started for."""
        import json

        if not self.calls.exists():
            return []
        return [json.loads(line)[3] for line in self.calls.read_text().splitlines()]


@pytest.fixture
def ssm_standin(rig: SlurmRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    """`aws` (a relay to the rig's sshd) and `session-manager-plugin` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "forward.calls"
    relay = RELAY.format(
        python=sys.executable,
        target=f"{rig.ssh_host}:{rig.ssh_port}",
        calls=str(calls),
        host=rig.ssh_host,
        port=rig.ssh_port,
    )
    (bin_dir / "aws").write_text(textwrap.dedent(relay))
    (bin_dir / "session-manager-plugin").write_text("#!/bin/sh\nexit 0\n")
    for name in ("aws", "session-manager-plugin"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return Tools(bin_dir, calls)
