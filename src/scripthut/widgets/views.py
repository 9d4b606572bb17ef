"""The four widgets: JobTable, RunView, Timeline and CostView."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import traitlets

from scripthut.client.base import Client
from scripthut.config import PricingConfig
from scripthut.widgets import api, render
from scripthut.widgets.base import LiveWidget
from scripthut.widgets.cost import Pricing
from scripthut.widgets.diff import Row
from scripthut.widgets.sources import CostSource, JobsSource, RunSource, TimelineSource


class JobTable(LiveWidget):
    """Every job, ScriptHut's and the user's others, live; sortable, filterable, cancellable.

    `backend`, `state` and `run` are the filters it opens with (the user can change
    them; `filters` holds the current ones). With `run`, that run's finished jobs are
    listed too. Other users' jobs are re-read every `refresh` seconds, and at once when
    `all_users` changes (the table's "only NAME's jobs" / "all users" toggle, shown when
    settings.filter_user is set).
    """

    kind: ClassVar[str] = "jobtable"
    filters = traitlets.Dict(help="Filters shown: backend, state, run and text ('' is any).").tag(
        sync=True
    )
    all_users = traitlets.Bool(
        False, help="Every user's other jobs, not only settings.filter_user's (when it is set)."
    ).tag(sync=True)

    def __init__(
        self,
        client: Client | None = None,
        backend: str | None = None,
        state: str | None = None,
        run: str | None = None,
        *,
        refresh: float = 10.0,
        history: int = 20_000,
        all_users: bool = False,
    ) -> None:
        source = JobsSource(run=run, history=history, all_users=all_users)
        source.refresh_every = refresh
        filters = {"backend": backend or "", "state": state or "", "run": run or "", "text": ""}
        super().__init__(client, source, filters=filters, all_users=all_users)

    @traitlets.observe("all_users")
    def _all_users_changed(self, change: dict[str, Any]) -> None:
        """The front end's toggle (or Python) changed it: the other jobs are read again now."""
        source = self.source
        wanted = bool(change["new"])
        if isinstance(source, JobsSource) and source.all_users != wanted:
            with self._feed.lock:
                source.all_users = wanted
            self._feed.refresh_soon()

    def visible_jobs(self) -> list[Row]:
        """The jobs the current filters let through (text search aside)."""
        wanted = {k: v for k, v in self.filters.items() if v and k in ("backend", "state", "run")}
        rows = self.source.rows["jobs"].values()
        return [r for r in rows if all(str(r.get(k) or "") == v for k, v in wanted.items())]

    def summary_text(self) -> str:
        return render.jobs_text(self.visible_jobs())

    def summary_html(self) -> str:
        return render.jobs_html(self.visible_jobs())


class RunView(LiveWidget):
    """One run: progress per state, its DAG, and a drawer with a task's log and details."""

    kind: ClassVar[str] = "runview"
    run_id = traitlets.Unicode(help="The run shown (its full id).").tag(sync=True)
    selected_task = traitlets.Unicode("", help="The task open in the drawer ('' when none).").tag(
        sync=True
    )

    def __init__(self, run_id: str, client: Client | None = None) -> None:
        super().__init__(client, RunSource(run_id))

    def _loaded_traits(self) -> dict[str, Any]:
        source = self.source
        assert isinstance(source, RunSource)
        return {"run_id": source.run_id}

    def _tasks(self) -> list[Row]:
        return list(self.source.rows["tasks"].values())

    def summary_text(self) -> str:
        return render.run_text(self.source.current_meta(), self._tasks())

    def summary_html(self) -> str:
        return render.run_html(self.source.current_meta(), self._tasks())


class Timeline(LiveWidget):
    """A Gantt view of when tasks ran, one lane group per backend.

    Without `run_id` it shows the most recent runs and the ones started after it.
    """

    kind: ClassVar[str] = "timeline"

    def __init__(self, run_id: str | None = None, client: Client | None = None) -> None:
        super().__init__(client, TimelineSource(run_id))

    def summary_text(self) -> str:
        return render.timeline_text(list(self.source.rows["bars"].values()))

    def summary_html(self) -> str:
        return render.timeline_html(list(self.source.rows["bars"].values()))


class CostView(LiveWidget):
    """A run's estimated cost, per task and in total, from the config's pricing section
    (live instances.vantage.sh prices, cached 24 h, or the offline table: "offline prices").

    `pricing` replaces the config's table (a `PricingConfig`, a `Pricing` or a mapping
    with `prices` and `partitions`).
    """

    kind: ClassVar[str] = "cost"

    def __init__(
        self,
        run_id: str,
        client: Client | None = None,
        *,
        pricing: Pricing | PricingConfig | Mapping[str, Any] | None = None,
    ) -> None:
        from scripthut.widgets.base import default_client

        chosen = client or default_client()
        table = Pricing.of(pricing) if pricing is not None else api.pricing_for(chosen)
        super().__init__(chosen, CostSource(run_id, table))

    def summary_text(self) -> str:
        return render.cost_text(self.source.current_meta())

    def summary_html(self) -> str:
        tasks = list(self.source.rows["tasks"].values())
        return render.cost_html(self.source.current_meta(), tasks)
