"""Hourly instance prices and vCPU counts: live from the instances.vantage.sh data, else offline.

`load_prices(config)` returns a `PriceTable` for `pricing.region` and `pricing.price_type`:
- the instances.vantage.sh data (`pricing.url`), fetched at most once a day: the reduced
  table (vCPUs and the four price types per region) is cached under
  `<data_dir>/prices/instances.json` for 24 hours;
- when it cannot be fetched (no network, a bad answer) and no cache exists, the offline
  table below, marked `offline` so views say "offline prices".

Prices listed in `pricing.prices` (instance type or partition -> price per hour) win over
both. Nothing here imports boto3: prices need no AWS credentials.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_URL = "https://instances.vantage.sh/instances.json"
CACHE_TTL_S = 24 * 3600.0
FETCH_TIMEOUT_S = 20.0
MAX_DOWNLOAD_BYTES = 512 << 20
PRICE_TYPES = ("ondemand", "spot_avg", "spot_min", "spot_max")
CACHE_FILE = "instances.json"

# Linux on-demand USD per hour in us-east-1, and vCPUs: used only when the live data cannot
# be had. Other regions and price types fall back to these on-demand figures.
OFFLINE: dict[str, tuple[int, float]] = {
    "t3.medium": (2, 0.0416),
    "t3.large": (2, 0.0832),
    "m5.large": (2, 0.096),
    "m5.xlarge": (4, 0.192),
    "m5.2xlarge": (8, 0.384),
    "m5.4xlarge": (16, 0.768),
    "c5.large": (2, 0.085),
    "c5.xlarge": (4, 0.17),
    "c5.2xlarge": (8, 0.34),
    "c5.4xlarge": (16, 0.68),
    "c5.9xlarge": (36, 1.53),
    "r5.large": (2, 0.126),
    "r5.xlarge": (4, 0.252),
    "r5.2xlarge": (8, 0.504),
    "m6i.xlarge": (4, 0.192),
    "c6i.xlarge": (4, 0.17),
    "g4dn.xlarge": (4, 0.526),
    "p3.2xlarge": (8, 3.06),
}


@dataclass(frozen=True, slots=True)
class InstancePrice:
    vcpus: int | None
    price: float  # per hour


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices for one region and price type, and where they came from."""

    instances: Mapping[str, InstancePrice] = field(default_factory=dict)
    source: str = "none"  # "live", "cache", "offline" or "none"
    region: str = "us-east-1"
    price_type: str = "ondemand"
    fetched_at: float | None = None

    @property
    def offline(self) -> bool:
        return self.source == "offline"

    def get(self, instance_type: str) -> InstancePrice | None:
        return self.instances.get(instance_type)

    def describe(self) -> str:
        if self.source == "offline":
            return "offline prices"
        if self.source in ("live", "cache"):
            return f"{self.price_type} prices of {self.region} (instances.vantage.sh)"
        return "configured prices"


def reduce_vantage(data: Any) -> dict[str, dict[str, Any]]:
    """instance type -> {"vcpus": n, "prices": {region: {price type: float}}} from vantage JSON."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(data, list):
        raise ValueError("the price data is not a list of instances")
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("instance_type"), str):
            continue
        regions: dict[str, dict[str, float]] = {}
        for region, by_os in (item.get("pricing") or {}).items():
            linux = by_os.get("linux") if isinstance(by_os, dict) else None
            if not isinstance(linux, dict):
                continue
            prices = {k: _number(linux.get(k)) for k in PRICE_TYPES}
            kept = {k: v for k, v in prices.items() if v is not None}
            if kept:
                regions[str(region)] = kept
        out[item["instance_type"]] = {"vcpus": _int(item.get("vCPU")), "prices": regions}
    return out


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number else None


def table_for(
    reduced: Mapping[str, Mapping[str, Any]], region: str, price_type: str, source: str, at: float
) -> PriceTable:
    instances: dict[str, InstancePrice] = {}
    for name, item in reduced.items():
        price = ((item.get("prices") or {}).get(region) or {}).get(price_type)
        if price is not None:
            instances[name] = InstancePrice(item.get("vcpus"), float(price))
    return PriceTable(instances, source, region, price_type, at)


def offline_table(region: str, price_type: str) -> PriceTable:
    instances = {k: InstancePrice(v, p) for k, (v, p) in OFFLINE.items()}
    return PriceTable(instances, "offline", region, price_type, None)


def fetch(url: str, timeout: float = FETCH_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Download and reduce the vantage data; OSError/ValueError when it cannot be had."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"pricing url {url!r} is not http(s)")
    # http(s) only, checked above
    request = urllib.request.Request(url, headers={"User-Agent": "scripthut"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
        body = reply.read(MAX_DOWNLOAD_BYTES + 1)
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise ValueError(f"the price data at {url} is over {MAX_DOWNLOAD_BYTES} bytes")
    return reduce_vantage(json.loads(body))


def cached(path: Path, url: str, now: float) -> tuple[dict[str, dict[str, Any]], float] | None:
    """The cached reduced table and when it was fetched, if fresh and from `url`."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("url") != url:
        return None
    at = float(doc.get("fetched_at") or 0)
    if now - at > CACHE_TTL_S or not isinstance(doc.get("instances"), dict):
        return None
    return doc["instances"], at


def _store(path: Path, url: str, reduced: Mapping[str, Any], now: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps({"url": url, "fetched_at": now, "instances": reduced}))
    part.replace(path)


def load_prices(
    data_dir: Path,
    *,
    region: str = "us-east-1",
    price_type: str = "ondemand",
    url: str = DEFAULT_URL,
    now: float | None = None,
) -> PriceTable:
    """Live prices (cached 24 h under `data_dir/prices`), else the offline table."""
    moment = time.time() if now is None else now
    path = data_dir / "prices" / CACHE_FILE
    hit = cached(path, url, moment)
    if hit is not None:
        return table_for(hit[0], region, price_type, "cache", hit[1])
    try:
        reduced = fetch(url)
    except (OSError, ValueError) as exc:
        log.info("prices from %s could not be fetched (%s): using offline prices", url, exc)
        return offline_table(region, price_type)
    try:
        _store(path, url, reduced, moment)
    except OSError as exc:
        log.info("prices could not be cached in %s: %s", path, exc)
    return table_for(reduced, region, price_type, "live", moment)
