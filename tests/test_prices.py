"""Live prices from a local HTTP server serving a sample of the instances.vantage.sh data."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripthut.prices import load_prices
from scripthut.widgets.cost import Pricing, run_cost

SAMPLE = Path(__file__).parent / "fixtures" / "vantage-sample.json"


@pytest.fixture
def price_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = SAMPLE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/instances.json", hits
    finally:
        server.shutdown()
        server.server_close()


def test_prices_are_fetched_once_and_cached_for_a_day(
    tmp_path: Path, price_server: tuple[str, list[str]]
) -> None:
    url, hits = price_server
    live = load_prices(tmp_path, region="us-east-1", price_type="spot_avg", url=url, now=1000.0)
    assert live.source == "live" and live.get("c5.xlarge") is not None
    assert live.instances["c5.xlarge"].price == 0.0651 and live.instances["c5.xlarge"].vcpus == 4
    assert "broken" not in live.instances
    again = load_prices(tmp_path, region="eu-west-1", price_type="ondemand", url=url, now=2000.0)
    assert again.source == "cache" and again.instances["c5.xlarge"].price == 0.192
    assert len(hits) == 1
    stale = load_prices(tmp_path, url=url, now=1000.0 + 25 * 3600)
    assert stale.source == "live" and len(hits) == 2


def test_unreachable_prices_fall_back_to_the_offline_table(tmp_path: Path) -> None:
    table = load_prices(tmp_path, url="http://127.0.0.1:9/instances.json")
    assert table.offline and table.describe() == "offline prices"
    pricing = Pricing({}, {"compute": "c5.xlarge"}, table)
    cost = run_cost(
        [{"id": "a", "cpus": 1, "started_at": 0.0, "ended_at": 3600.0}], {"a": "compute"}, pricing
    )
    assert cost.summary.endswith("(1 of 1 tasks costed), offline prices")


def test_a_task_is_charged_its_cpus_share_of_the_instance(
    tmp_path: Path, price_server: tuple[str, list[str]]
) -> None:
    url, _ = price_server
    table = load_prices(tmp_path, url=url)
    pricing = Pricing({"gpu": 2.0}, {"compute": "m5.2xlarge", "gpu": "p9.huge"}, table)
    tasks = [
        {"id": "one", "cpus": 1, "started_at": 0.0, "ended_at": 7200.0},
        {"id": "four", "cpus": 4, "started_at": 0.0, "ended_at": 3600.0},
        {"id": "gpu", "cpus": 2, "started_at": 0.0, "ended_at": 3600.0},
        {"id": "own", "instance_type": "c5.xlarge", "started_at": 0.0, "ended_at": 3600.0},
        {"id": "free", "cpus": 1, "started_at": 0.0, "ended_at": 3600.0},
    ]
    parts = {"one": "compute", "four": "compute", "gpu": "gpu", "own": "x", "free": "nowhere"}
    cost = run_cost(tasks, parts, pricing, now=7200.0)
    by = {i.task: i.cost for i in cost.items}
    assert by["one"] == pytest.approx(2 * (1 / 8) * 0.384)
    assert by["four"] == pytest.approx(1 * (4 / 8) * 0.384)
    assert by["gpu"] == pytest.approx(2.0)  # listed under the partition: vCPUs unknown, whole price
    assert by["own"] == pytest.approx(0.17)  # an instance of its own: whole, its own type
    assert by["free"] is None
    assert cost.summary == f"${cost.total:,.2f} (4 of 5 tasks costed)"
