"""Static summaries of the widgets: plain text and HTML tables.

They are what a reader sees where no widget front end runs: a plain console, an
exported HTML page, a notebook opened without its kernel. Every value is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

Row = Mapping[str, Any]
MAX_HTML_ROWS = 200
STATE_ORDER = (
    "running",
    "submitted",
    "pending",
    "completed",
    "failed",
    "dep_failed",
    "cancelled",
    "unknown",
)


def counts_text(counts: Mapping[str, int]) -> str:
    """'3 completed, 1 running' in a stable order (states with no task left out)."""
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    items = sorted(((s, n) for s, n in counts.items() if n), key=lambda x: order.get(x[0], 99))
    return ", ".join(f"{n} {s}" for s, n in items) or "no tasks"


def clock(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    if not start or not end:
        return ""
    seconds = max(0, round(end - start))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def money(value: float | None) -> str:
    return "" if value is None else f"${value:,.2f}"


def _cell(value: Any) -> str:
    return "" if value is None else escape(str(value))


def html_table(
    caption: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Mapping[str, Any]],
    *,
    limit: int = MAX_HTML_ROWS,
) -> str:
    """`columns` are (field, heading); rows beyond `limit` are counted, not shown."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(f))}</td>" for f, _ in columns) + "</tr>"
        for r in rows[:limit]
    )
    more = ""
    if len(rows) > limit:
        more = f"<p>… and {len(rows) - limit:,} more rows</p>"
    return (
        '<div class="scripthut-static">'
        f"<p><strong>{escape(caption)}</strong></p>"
        f'<table border="1" style="border-collapse:collapse">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}</div>"
    )


# -- RunView --------------------------------------------------------------------------------


def run_text(meta: Mapping[str, Any], tasks: Iterable[Row]) -> str:
    counts = Counter(str(t.get("state")) for t in tasks)
    total = sum(counts.values())
    name = f" ({meta['name']})" if meta.get("name") and meta.get("name") != meta.get("id") else ""
    return (
        f"ScriptHut run {meta.get('id')}{name} on {meta.get('backend')}: {meta.get('state')} — "
        f"{total} tasks: {counts_text(counts)}"
    )


def run_html(meta: Mapping[str, Any], tasks: Sequence[Row]) -> str:
    rows = [
        {
            "id": t.get("id"),
            "state": t.get("state"),
            "exit_code": t.get("exit_code"),
            "started": clock(t.get("started_at")),
            "ended": clock(t.get("ended_at")),
            "duration": duration(t.get("started_at"), t.get("ended_at")),
        }
        for t in tasks
    ]
    columns = [
        ("id", "task"),
        ("state", "state"),
        ("exit_code", "exit code"),
        ("started", "started"),
        ("ended", "ended"),
        ("duration", "duration"),
    ]
    return html_table(run_text(meta, tasks), columns, rows)


# -- JobTable -------------------------------------------------------------------------------


def jobs_text(jobs: Sequence[Row]) -> str:
    counts = Counter(str(j.get("state")) for j in jobs)
    external = sum(1 for j in jobs if j.get("source") == "external")
    extra = f"; {external} external" if external else ""
    return f"ScriptHut jobs: {len(jobs)} ({counts_text(counts)}{extra})"


def jobs_html(jobs: Sequence[Row]) -> str:
    rows = [
        {
            **j,
            "what": j.get("task") or j.get("name"),
            "source": "external" if j.get("source") == "external" else "scripthut",
            "started": clock(j.get("started_at")),
        }
        for j in jobs
    ]
    columns = [
        ("backend", "backend"),
        ("job_id", "job id"),
        ("state", "state"),
        ("source", "source"),
        ("run", "run"),
        ("what", "task / name"),
        ("partition", "partition"),
        ("node", "node"),
        ("started", "started"),
    ]
    return html_table(jobs_text(jobs), columns, rows)


# -- Timeline -------------------------------------------------------------------------------


def timeline_text(bars: Sequence[Row]) -> str:
    if not bars:
        return "ScriptHut timeline: no task has started"
    per_backend = Counter(str(b.get("backend")) for b in bars)
    starts = [b["started_at"] for b in bars if b.get("started_at")]
    ends = [b.get("ended_at") for b in bars]
    last = "now" if None in ends or not ends else clock(max(e for e in ends if e))
    span = f"{clock(min(starts))} to {last}"
    backends = ", ".join(f"{k}: {n}" for k, n in sorted(per_backend.items()))
    return f"ScriptHut timeline: {len(bars)} tasks ({backends}), {span}"


def timeline_html(bars: Sequence[Row]) -> str:
    ordered = sorted(bars, key=lambda b: (str(b.get("backend")), b.get("started_at") or 0.0))
    rows = [
        {
            **b,
            "started": clock(b.get("started_at")),
            "ended": clock(b.get("ended_at")),
            "duration": duration(b.get("started_at"), b.get("ended_at")),
        }
        for b in ordered
    ]
    columns = [
        ("backend", "backend"),
        ("run", "run"),
        ("task", "task"),
        ("state", "state"),
        ("started", "started"),
        ("ended", "ended"),
        ("duration", "duration"),
    ]
    return html_table(timeline_text(bars), columns, rows)


# -- CostView -------------------------------------------------------------------------------


def cost_text(meta: Mapping[str, Any]) -> str:
    if not meta.get("priced"):
        return f"ScriptHut cost of run {meta.get('run')}: no pricing table in the config"
    return (
        f"ScriptHut cost of run {meta.get('run')}: {money(meta.get('total'))} "
        f"({meta.get('costed', 0)} of {meta.get('tasks', 0)} tasks costed)"
        + (", offline prices" if meta.get("prices") == "offline prices" else "")
    )


def cost_html(meta: Mapping[str, Any], tasks: Sequence[Row]) -> str:
    rows = [
        {
            **t,
            "hours": f"{t.get('hours') or 0.0:.3f}",
            "price": money(t.get("price")),
            "cost": money(t.get("cost")) if t.get("cost") is not None else "not costed",
        }
        for t in tasks
    ]
    columns = [
        ("task", "task"),
        ("state", "state"),
        ("partition", "partition"),
        ("priced_as", "priced as"),
        ("hours", "hours"),
        ("price", "$/hour"),
        ("cost", "cost"),
    ]
    return html_table(cost_text(meta), columns, rows)
