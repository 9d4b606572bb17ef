"""What the widgets need from a client beyond the `Client` interface.

Cancelling one job, the tasks' partitions and the pricing table are served by the API
(HTTP client) and by the service the in-process client hosts; this module asks
whichever the client is. `api_base` tells the browser where it may call the REST API
itself: only when the client talks to the Jupyter server that launched this kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scripthut.client.base import Client
from scripthut.config import Config, PricingConfig, load_config
from scripthut.widgets.cost import Pricing
from scripthut.workflow.model import DEFAULT_PARTITION

if TYPE_CHECKING:
    from scripthut.client.http import HTTPClient
    from scripthut.client.local import LocalClient

PARTITION_FETCHERS = 8


def _http(client: Client) -> HTTPClient | None:
    from scripthut.client.http import HTTPClient

    return client if isinstance(client, HTTPClient) else None


def _local(client: Client) -> LocalClient | None:
    from scripthut.client.local import LocalClient

    return client if isinstance(client, LocalClient) else None


def _unsupported(client: Client, what: str) -> NotImplementedError:
    return NotImplementedError(f"{type(client).__name__} cannot give {what}")


def cancel_job(client: Client, backend: str, job_id: str) -> dict[str, Any]:
    """Ask the engine to cancel one job (ScriptHut's or another of the user's)."""
    if (http := _http(client)) is not None:
        reply: dict[str, Any] = http.request("POST", f"jobs/{backend}/{job_id}/cancel", body={})
        return reply
    if (local := _local(client)) is not None:
        return local.run_async(lambda: local.service.cancel_job(backend, job_id))
    raise _unsupported(client, "job cancellation")


def jobs_listing(client: Client, *, all_users: bool = False) -> dict[str, Any]:
    """`GET jobs` whole: `jobs`, and the user filter applied (`user_filter`) and configured
    (`default_user_filter`, settings.filter_user); a client that gives only the list of
    jobs reports no filter."""
    if (http := _http(client)) is not None:
        query = {"all": "true" if all_users else None}
        reply: dict[str, Any] = http.request("GET", "jobs", query=query)
        return reply
    if (local := _local(client)) is not None:
        return local.call(lambda: local.service.jobs(all_users=all_users))
    jobs = client.jobs(all_users=all_users)
    return {"jobs": jobs, "user_filter": None, "default_user_filter": None}


def task_partitions(client: Client, run_id: str, task_ids: Iterable[str]) -> dict[str, str]:
    """The partition each task asked for (the default one when its spec names none)."""
    return {t: p for t, (p, _) in task_resources(client, run_id, task_ids).items()}


def task_resources(
    client: Client, run_id: str, task_ids: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """The partition (the default one when its spec names none) and CPUs each task asked for."""
    wanted = list(task_ids)
    if not wanted:
        return {}
    if (local := _local(client)) is not None:

        def read() -> dict[str, tuple[str, int]]:
            store = local.service.store
            if store is None:
                return {}
            resolved = store.resolve_run_id(run_id)
            return {t.task_id: _resources(t.spec) for t in store.tasks(resolved)}

        every = local.call(read)
        return {t: every[t] for t in wanted if t in every}

    def one(task_id: str) -> tuple[str, tuple[str, int]]:
        return task_id, _resources(client.task(run_id, task_id).get("spec") or {})

    with ThreadPoolExecutor(PARTITION_FETCHERS, thread_name_prefix="scripthut-spec") as pool:
        return dict(pool.map(one, wanted))


def _resources(spec: dict[str, Any]) -> tuple[str, int]:
    try:
        cpus = max(1, int(spec.get("cpus") or 1))
    except (TypeError, ValueError):
        cpus = 1
    return _partition(spec), cpus


def _partition(spec: dict[str, Any]) -> str:
    value = spec.get("partition")
    return str(value) if value else DEFAULT_PARTITION


def pricing_of(client: Client) -> PricingConfig | None:
    """The pricing section of the config the engine uses (None when there is none)."""
    config = _config_of(client)
    return config.pricing if config is not None else None


def pricing_for(client: Client) -> Pricing:
    """The config's pricing with its price table (live, cached or offline)."""
    config = _config_of(client)
    return Pricing.load(config) if config is not None else Pricing()


def _config_of(client: Client) -> Config | None:
    if (local := _local(client)) is not None:
        return local.service.config
    try:
        path = client.health().get("config_file")
    except Exception:
        return None
    if not path:
        return None
    try:
        return load_config(str(path))
    except Exception:
        return None


def api_base(client: Client) -> str:
    """The API's path on the Jupyter server that launched this kernel, else "".

    The browser shows this kernel's widgets from that server's pages, so it may call the
    API there itself (same origin, its own login cookie).
    """
    from scripthut.client.discovery import ENV_URL, normalize

    http = _http(client)
    launched_by = os.environ.get(ENV_URL)
    if http is None or not launched_by:
        return ""
    if normalize(launched_by) != http.server.url:
        return ""
    return urlsplit(http.server.api).path


def last_event_id(client: Client) -> int | None:
    """The id of the newest event the API has (None when it cannot tell)."""
    try:
        value = client.health().get("stream", {}).get("last_event_id")
    except Exception:
        return None
    return int(value) if isinstance(value, int) else None
