"""What the panel says when the server side is not usable, and when a backend is down.

Each test starts its own JupyterLab: without the server extension, with a broken
scripthut.yaml, with a backend that does not answer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab.harness import Lab, LabServer

pytestmark = pytest.mark.slow

FAST_FALLBACK = {"scripthut:plugin": {"refreshInterval": 2, "maxRefreshInterval": 30}}

BROKEN_CONFIG = """\
backends:
  - name: local
    type: local
    max_concurrent: 0
  - name: local
    type: teleporter
"""

UNREACHABLE_CONFIG = """\
backends:
  - name: local
    type: local
    cpus: 2
  - name: cluster
    type: slurm
    ssh:
      host: 127.0.0.1
      port: 1
      user: nobody
      connect_timeout: 5
settings:
  poll_interval: 2
"""


def test_server_extension_not_installed(
    lab_factory: Callable[..., LabServer], open_lab: Callable[[LabServer], Lab]
) -> None:
    server = lab_factory("noext", extension_enabled=False, lab_settings=FAST_FALLBACK)
    status, _ = server.api("GET", "health")
    assert status == 404
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    banner = panel.locator('.jp-ScriptHut-banner[data-kind="not_installed"]')
    banner.wait_for()
    assert "server extension is not running" in banner.inner_text()
    assert "jupyter server extension enable scripthut" in banner.inner_text()
    assert panel.get_attribute("data-status") == "not_installed"
    assert panel.locator(".jp-ScriptHut-section[data-section='runs']").is_hidden()
    lab.screenshot("not-installed")
    # It backs off instead of hammering the server: the first retry comes after 2 s, the
    # next ones about three times later each.
    start = len(lab.api_requests)
    lab.page.wait_for_timeout(8_000)
    health = [r for r in lab.api_requests[start:] if r.startswith("health")]
    assert 1 <= len(health) <= 3, lab.api_requests[start:]


def test_config_error(
    lab_factory: Callable[..., LabServer], open_lab: Callable[[LabServer], Lab]
) -> None:
    server = lab_factory("badconfig", config_text=BROKEN_CONFIG)
    status, health = server.api("GET", "health")
    assert status == 200
    assert health["status"] == "config_error", health
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    banner = panel.locator('.jp-ScriptHut-banner[data-kind="config_error"]')
    banner.wait_for()
    text = banner.inner_text()
    assert "scripthut.yaml has errors" in text
    assert "scripthut.yaml" in banner.locator("code").first.inner_text()
    shown = banner.locator(".jp-ScriptHut-errors li")
    assert shown.count() == len(health["errors"]) >= 1
    for issue in health["errors"]:
        assert issue["message"] in text
    lab.screenshot("config-error")


def test_backend_unreachable(
    lab_factory: Callable[..., LabServer], open_lab: Callable[[LabServer], Lab]
) -> None:
    server = lab_factory("unreachable", config_text=UNREACHABLE_CONFIG)
    status, answer = server.api("GET", "backends")
    assert status == 200
    states = {b["name"]: b["status"] for b in answer["backends"]}
    assert states == {"local": "ok", "cluster": "unreachable"}, answer
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    cluster = panel.locator('.jp-ScriptHut-backend[data-backend="cluster"]')
    cluster.wait_for()
    assert cluster.get_attribute("data-status") == "unreachable"
    assert "unreachable" in cluster.inner_text()
    assert panel.locator('.jp-ScriptHut-backend[data-backend="local"]').get_attribute(
        "data-status"
    ) == ("ok")
    banner = panel.locator('.jp-ScriptHut-banner[data-kind="unreachable"]')
    banner.wait_for()
    assert "Unreachable: cluster" in banner.inner_text()
    lab.screenshot("unreachable")
