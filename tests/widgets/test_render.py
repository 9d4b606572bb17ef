"""Static views: plain text and HTML next to the widget view, for where no front end runs."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from nbconvert import HTMLExporter

from scripthut.client.local import LocalClient
from scripthut.widgets import CostView, JobTable, RunView, Timeline, render

pytestmark = pytest.mark.usefixtures("recording_comm")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def test_run_text_and_html_escape_everything() -> None:
    meta = {"id": "r1", "name": "fits <b>", "backend": "local", "state": "running"}
    tasks = [
        {"id": "a", "state": "completed", "exit_code": 0, "started_at": 10.0, "ended_at": 75.0},
        {"id": "b", "state": "running", "exit_code": None, "started_at": 20.0, "ended_at": None},
        {"id": "c<x>", "state": "pending"},
    ]
    text = render.run_text(meta, tasks)
    assert (
        text == "ScriptHut run r1 (fits <b>) on local: running — 3 tasks: "
        "1 running, 1 pending, 1 completed"
    )
    html = render.run_html(meta, tasks)
    assert "fits &lt;b&gt;" in html and "<b>" not in html
    assert "<td>c&lt;x&gt;</td>" in html
    assert "<td>1:05</td>" in html  # a's duration


def test_html_tables_are_capped() -> None:
    jobs = [{"backend": "local", "job_id": str(i), "state": "running"} for i in range(250)]
    html = render.jobs_html(jobs)
    assert html.count("<tr>") == 1 + render.MAX_HTML_ROWS
    assert "… and 50 more rows" in html
    assert render.jobs_text(jobs) == "ScriptHut jobs: 250 (250 running)"


def test_cost_and_timeline_texts() -> None:
    assert render.cost_text({"run": "r", "priced": False}) == (
        "ScriptHut cost of run r: no pricing table in the config"
    )
    meta = {"run": "r", "priced": True, "total": 1234.5, "costed": 3, "tasks": 4}
    assert render.cost_text(meta) == "ScriptHut cost of run r: $1,234.50 (3 of 4 tasks costed)"
    assert render.timeline_text([]) == "ScriptHut timeline: no task has started"
    bars = [
        {"backend": "hpc", "started_at": 100.0, "ended_at": 200.0},
        {"backend": "local", "started_at": 150.0, "ended_at": None},
    ]
    assert render.timeline_text(bars).startswith("ScriptHut timeline: 2 tasks (hpc: 1, local: 1), ")
    assert render.timeline_text(bars).endswith(" to now")  # one still runs
    bars[1]["ended_at"] = 300.0
    assert render.timeline_text(bars).endswith(render.clock(300.0))


def bundle_of(widget: Any) -> dict[str, Any]:
    data, _metadata = widget._repr_mimebundle_()
    return data


def test_every_widget_shows_text_html_and_the_widget_view(client: LocalClient) -> None:
    run = client.submit(
        [{"id": "a", "command": "echo a"}, {"id": "b", "command": "true", "deps": ["a"]}]
    )
    client.wait(run["id"], timeout=60)
    widgets = [
        RunView(run["id"], client=client),
        JobTable(client=client, run=run["id"]),
        Timeline(run["id"], client=client),
        CostView(run["id"], client=client, pricing={"prices": {"normal": 1.0}}),
    ]
    try:
        bundles = [bundle_of(w) for w in widgets]
        for widget, data in zip(widgets, bundles, strict=True):
            assert set(data) >= {"text/plain", "text/html", WIDGET_MIME}
            assert data[WIDGET_MIME]["model_id"] == widget.model_id
            assert data["text/plain"].startswith("ScriptHut ")
            assert "<table" in data["text/html"]
        assert bundles[0]["text/plain"] == (
            f"ScriptHut run {run['id']} (workflow) on local: completed — 2 tasks: 2 completed"
        )
        assert bundles[1]["text/plain"] == "ScriptHut jobs: 2 (2 completed)"
        assert bundles[2]["text/plain"].startswith("ScriptHut timeline: 2 tasks (local: 2)")
        assert "(2 of 2 tasks costed)" in bundles[3]["text/plain"]
        assert repr(widgets[0]) == f"<RunView: {bundles[0]['text/plain']}>"
    finally:
        for widget in widgets:
            widget.close()


def test_html_export_without_widget_state_shows_the_static_table(client: LocalClient) -> None:
    run = client.submit([{"id": "alpha", "command": "true"}])
    client.wait(run["id"], timeout=60)
    view = RunView(run["id"], client=client)
    try:
        data = bundle_of(view)
    finally:
        view.close()
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("RunView(run_id)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", data=data, execution_count=1)]
    notebook.cells.append(cell)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    assert f"ScriptHut run {run['id']}" in html
    assert "<td>alpha</td>" in html
