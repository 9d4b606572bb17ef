"""A real JupyterHub on 127.0.0.1: configurable-http-proxy, LocalProcessSpawner (setuid, as
root) or batchspawner's SlurmSpawner, the idle culler, users alice, bob, carol and dave, and
single-user servers running this checkout of ScriptHut (installed by tests/rig/hub.sh).

Without root or the rig the tests skip; under `CI=true` they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
RIG = ROOT / "tests" / "rig" / "hub.sh"
HUB_DIR = Path(os.environ.get("SCRIPTHUT_HUB_DIR", "/var/lib/scripthut-hub"))
VENV = HUB_DIR / "venv"
CHP = HUB_DIR / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "hub-rig-password-1"  # shared-password login, >= 8 characters
USERS = ("alice", "bob", "carol", "dave")
CULL_TIMEOUT = 30
CULL_EVERY = 10


def missing(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a CI run must not pass by skipping the hub tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the JupyterHub tests must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_rig() -> None:
    if os.geteuid() != 0:
        missing("the JupyterHub rig needs root (LocalProcessSpawner switches users)")
    if shutil.which("npm") is None:
        missing("npm is needed for configurable-http-proxy")
    done = subprocess.run(["bash", str(RIG), "install"], capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"tests/rig/hub.sh install failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


ROLES = """
c.JupyterHub.custom_scopes = {
    "custom:jupyter_server:read:*": {"description": "read-only access to a server"},
    "custom:jupyter_server:write:*": {"description": "change files and start runs",
                                      "subscopes": ["custom:jupyter_server:read:*"]},
    "custom:jupyter_server:execute:*": {
        "description": "run code", "subscopes": ["custom:jupyter_server:write:*"]},
}
c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", "custom:jupyter_server:execute:*!user"]},
    {"name": "alice-collaborator", "users": ["carol"],
     "scopes": ["access:servers!user=alice", "custom:jupyter_server:execute:*!user=alice"]},
    {"name": "alice-reader", "users": ["dave"],
     "scopes": ["access:servers!user=alice", "custom:jupyter_server:read:*!user=alice"]},
    {"name": "jupyterhub-idle-culler", "services": ["culler"],
     "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]},
    {"name": "tests", "services": ["tests"], "scopes": ["admin:users", "admin:servers", "tokens"]},
]
c.Spawner.oauth_client_allowed_scopes = [
    "access:servers!server", "custom:jupyter_server:execute:*!server",
    "custom:jupyter_server:write:*!server", "custom:jupyter_server:read:*!server",
]
"""

AUTHORIZER = '''\
"""Single-user server config: JupyterHub's custom scopes decide each action (read-only sharing)."""
import os

from jupyterhub.singleuser.extension import JupyterHubAuthorizer


class ScopedAuthorizer(JupyterHubAuthorizer):
    def is_authorized(self, handler, user, action, resource):
        owner = os.environ["JUPYTERHUB_USER"]
        server = f"{owner}/{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"
        wanted = set()
        for where in (f"!user={owner}", f"!server={server}"):
            wanted |= {f"custom:jupyter_server:{action}:{resource}{where}",
                       f"custom:jupyter_server:{action}:*{where}"}
        return bool(self.hub_auth.check_scopes(wanted, user.hub_user))


c = get_config()  # noqa: F821
c.ServerApp.authorizer_class = ScopedAuthorizer
c.ScriptHut.engine = "daemon"
'''


@dataclass
class Hub:
    folder: Path
    port: int
    token: str  # the `tests` service's token (admin of users and servers)
    tag: str
    proc: subprocess.Popen[bytes] | None = None
    culler: subprocess.Popen[bytes] | None = None
    sessions: dict[str, requests.Session] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "hub.log"

    def data_dir(self, user: str) -> Path:
        return Path(f"/home/{user}/.scripthut-hub-{self.tag}")

    # -- the hub's API as the tests' admin service ---------------------------------------
    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, f"{self.url}/hub/api/{path}", headers=headers, **kwargs)

    def server_running(self, user: str) -> bool:
        info = self.admin("GET", f"users/{user}").json()
        return bool(info.get("servers", {}).get("", {}).get("ready"))

    def user_token(self, user: str) -> str:
        reply = self.admin("POST", f"users/{user}/tokens", json={"note": "hub tests"})
        assert reply.status_code == 201, reply.text
        return str(reply.json()["token"])

    # -- a user's browser-like session ----------------------------------------------------
    def login(self, user: str) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.url}/hub/login")
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        assert xsrf, page.text[:500]
        reply = session.post(
            f"{self.url}/hub/login?next=",
            data={"username": user, "password": PASSWORD, "_xsrf": xsrf.group(1)},
            allow_redirects=False,
        )
        assert reply.status_code == 302, reply.text[:500]
        self.sessions[user] = session
        return session

    def start_server(self, user: str, timeout: float = 120) -> requests.Session:
        """Log in, start the user's server, and pass the OAuth dance for its cookie."""
        session = self.login(user)
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        reply = session.post(
            f"{self.url}/hub/api/users/{user}/server", headers={"X-XSRFToken": xsrf}
        )
        assert reply.status_code in (201, 202, 400), reply.text  # 400: already running
        deadline = time.monotonic() + timeout
        while not self.server_running(user):
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.3)
        self.visit(session, user)
        return session

    def visit(self, session: requests.Session, owner: str) -> requests.Response:
        """Open `owner`'s lab: the OAuth dance, accepting the hub's "Authorize" page (shown
        when the server is another user's) as a browser would."""
        page = session.get(f"{self.url}/user/{owner}/lab")
        if page.status_code == 200 and "/hub/api/oauth2/authorize" in page.url:
            form = dict(re.findall(r'name="(_xsrf)" value="([^"]+)"', page.text))
            scopes = re.findall(r'name="scopes" value="([^"]+)"', page.text)
            page = session.post(page.url, data={**form, "scopes": scopes})
        return page

    def api(
        self, session: requests.Session, owner: str, method: str, path: str, **kwargs: Any
    ) -> requests.Response:
        """A ScriptHut request to `owner`'s server with a session's cookies (and its XSRF)."""
        headers = dict(kwargs.pop("headers", {}))
        xsrf = session.cookies.get("_xsrf", path=f"/user/{owner}/")
        if xsrf and method != "GET":
            headers["X-XSRFToken"] = xsrf
        url = f"{self.url}/user/{owner}/scripthut/api/{path}"
        return session.request(method, url, headers=headers, allow_redirects=False, **kwargs)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def hub_config(hub: Hub, spawner: str) -> str:
    ports = f"""
c.JupyterHub.bind_url = "{hub.url}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.command = ["{CHP}"]
"""
    common = f"""
import os
c = get_config()  # noqa: F821
HERE = "{hub.folder}"
c.JupyterHub.cookie_secret_file = HERE + "/jupyterhub_cookie_secret"
c.JupyterHub.db_url = "sqlite:///" + HERE + "/jupyterhub.sqlite"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = "{PASSWORD}"
c.Authenticator.allowed_users = {set(USERS)!r}
c.JupyterHub.last_activity_interval = {CULL_EVERY}
c.JupyterHub.services = [
    {{"name": "tests", "api_token": "{hub.token}"}},
    {{"name": "culler", "api_token": "{hub.token}-culler"}},
]
c.Spawner.default_url = "/lab"
c.Spawner.args = ["--config=" + HERE + "/jupyter_server_config.py"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
"""
    environment = f"""
c.Spawner.environment = {{
    "JUPYTERHUB_ACTIVITY_INTERVAL": "{CULL_EVERY}",
    "SCRIPTHUT_DATA_DIR": lambda spawner: f"/home/{{spawner.user.name}}/.scripthut-hub-{hub.tag}",
}}
"""
    if spawner == "local":
        spawn = f"""
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = ["{VENV}/bin/jupyterhub-singleuser"]
"""
    else:
        spawn = f"""
import batchspawner  # noqa: F401  (registers the hub's batchspawner API)
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.exec_prefix = "/usr/sbin/runuser -u {{username}} --"
c.SlurmSpawner.req_partition = "debug"
c.SlurmSpawner.req_runtime = "00:30:00"
c.SlurmSpawner.req_memory = "1G"
c.SlurmSpawner.batchspawner_singleuser_cmd = "{VENV}/bin/batchspawner-singleuser"
c.SlurmSpawner.req_prologue = (
    'export JUPYTERHUB_SERVICE_URL="${{JUPYTERHUB_SERVICE_URL/0.0.0.0/127.0.0.1}}"'
)
c.SlurmSpawner.startup_poll_interval = 0.5
c.Spawner.cmd = ["jupyterhub-singleuser"]
"""
        environment = environment.replace(
            "c.Spawner.environment = {",
            f'c.Spawner.environment = {{\n    "PATH": "{VENV}/bin:/usr/local/bin:/usr/bin:/bin",',
        )
    return textwrap.dedent(common + ports + ROLES + environment + spawn)


def start_hub(spawner: str = "local") -> Hub:
    install_rig()
    tag = uuid.uuid4().hex[:8]
    folder = HUB_DIR / f"run-{tag}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # the users' servers read jupyter_server_config.py here
    hub = Hub(folder, free_port(), uuid.uuid4().hex, tag)
    (folder / "jupyterhub_config.py").write_text(hub_config(hub, spawner))
    (folder / "jupyter_server_config.py").write_text(AUTHORIZER)
    (folder / "jupyter_server_config.py").chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTHUT_", "JUPYTER"))}
    env["PATH"] = f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    with hub.log.open("wb") as out:
        hub.proc = subprocess.Popen(
            [str(VENV / "bin" / "jupyterhub"), "-f", str(folder / "jupyterhub_config.py")],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        assert hub.proc.poll() is None, hub.tail()
        try:
            if requests.get(f"{hub.url}/hub/health", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, hub.tail()
        time.sleep(0.2)
    culler_env = {
        **env,
        "JUPYTERHUB_API_TOKEN": f"{hub.token}-culler",
        "JUPYTERHUB_API_URL": f"{hub.url}/hub/api",
    }
    with (folder / "culler.log").open("wb") as out:
        hub.culler = subprocess.Popen(
            [
                str(VENV / "bin" / "python3"),
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={CULL_TIMEOUT}",
                f"--cull-every={CULL_EVERY}",
                "--remove-named-servers=false",
            ],
            env=culler_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return hub


def stop_hub(hub: Hub) -> None:
    """Stop the culler, the hub (its servers and proxy), the users' standalone engines."""
    for proc in (hub.culler, hub.proc):
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    for user in USERS:
        data = hub.data_dir(user)
        if data.exists():
            run_as(user, "engine", "stop", data_dir=data)
            shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(hub.folder, ignore_errors=True)


def run_as(user: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`scripthut ARGS` as `user`, from the hub's venv."""
    argv = ["/usr/sbin/runuser", "-u", user, "--", str(VENV / "bin" / "scripthut"), *args]
    env = {"PATH": "/usr/bin:/bin", "HOME": f"/home/{user}", "SCRIPTHUT_DATA_DIR": str(data_dir)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
