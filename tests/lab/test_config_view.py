"""The panel's Configuration view in a real JupyterLab (Chromium), with edits on disk.

A backend added to the global file appears in the panel without a restart; a broken
project file shows its problem with its line, and a click opens the file at that line in
Lab's editor; the fix clears it; Reload reads the files again on request.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab.harness import LOCAL_CONFIG, Lab, LabServer

pytestmark = pytest.mark.slow

PROJECT = "env:\n  - set: {WHERE: project}\n"
BROKEN_PROJECT = "env:\n  - set: {WHERE: project}\nsettings:\n  data_dir: /elsewhere\n"
WITH_SECOND = LOCAL_CONFIG.replace(
    "settings:", "  - name: second\n    type: local\n    cpus: 1\nsettings:"
)


def test_configuration_view_follows_edits_and_opens_problems_at_their_line(
    lab_factory: Callable[..., LabServer], open_lab: Callable[[LabServer], Lab]
) -> None:
    server = lab_factory("configview")
    global_file = server.root.parent / "scripthut.yaml"
    project = server.root / "scripthut.yaml"
    project.write_text(PROJECT)
    lab = open_lab(server)
    lab.open()
    panel = lab.open_panel()
    section = panel.locator(".jp-ScriptHut-section[data-section='config']")
    section.locator("summary").first.click()
    files = section.locator(".jp-ScriptHut-config-files li")
    files.nth(1).wait_for()
    assert files.nth(0).get_attribute("data-layer") == "global"
    assert str(global_file) in files.nth(0).inner_text()
    assert files.nth(1).get_attribute("data-layer") == "project"
    section.locator("[data-problems='0']").wait_for()

    # A backend added to the global file appears without a restart.
    panel.locator('.jp-ScriptHut-backend[data-backend="local"]').wait_for()
    assert panel.locator('.jp-ScriptHut-backend[data-backend="second"]').count() == 0
    global_file.write_text(WITH_SECOND)
    panel.locator('.jp-ScriptHut-backend[data-backend="second"]').wait_for(timeout=20_000)
    lab.screenshot("backend-added")

    # A broken project file: the problem with its line; a click opens the file there.
    project.write_text(BROKEN_PROJECT)
    problem = section.locator(".jp-ScriptHut-config-problems li").first
    problem.wait_for(timeout=20_000)
    assert problem.get_attribute("data-line") == "4"
    assert "belongs in the global file" in problem.inner_text()
    banner = panel.locator('.jp-ScriptHut-banner[data-kind="config"]')
    banner.wait_for()
    assert panel.locator('.jp-ScriptHut-backend[data-backend="second"]').count() == 1
    lab.screenshot("problem")
    problem.locator("a[data-action='open-file']").click()
    editor = lab.page.locator(".jp-FileEditor").last
    editor.wait_for()
    editor.locator(".cm-line", has_text="data_dir: /elsewhere").wait_for()
    # The cursor is on the problem's line: the status bar says where it is.
    lab.page.locator("#jp-main-statusbar", has_text="Ln 4, Col 1").wait_for()
    tab = lab.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    assert "scripthut.yaml" in tab.inner_text()
    lab.screenshot("opened-at-line")

    # The fix is taken up by itself; Reload does it on request.
    project.write_text(PROJECT)
    section.locator("[data-problems='0']").wait_for(timeout=20_000)
    banner.wait_for(state="detached", timeout=20_000)
    section.locator("button[data-action='reload-config']").click()
    lab.page.wait_for_function(
        "() => document.querySelector(\"[data-section='config']\").dataset.reload === 'ok'"
    )
    section.locator(".jp-ScriptHut-config-merged > summary").click()
    merged = section.locator(".jp-ScriptHut-config-entry[data-key='env[0].set.WHERE']")
    merged.wait_for()
    assert '"project"' in merged.inner_text() and "scripthut.yaml:2" in merged.inner_text()
    lab.screenshot("fixed")
