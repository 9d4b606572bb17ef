"""`GET runs/{id}/cost`: a run's cost computed from its stored attempts, off the event loop."""

from __future__ import annotations

import pytest

from tests.server.conftest import CONFIG, Api

PRICING = """\
pricing:
  url: http://127.0.0.1:9/instances.json
  prices: {normal: 3600.0}
"""


@pytest.fixture
def sh_config_text() -> str:
    return CONFIG + PRICING  # one dollar per second of a task's time


async def test_a_run_s_cost_is_served_with_and_without_items(api: Api) -> None:
    workflow = [{"id": f"t{i}", "command": "sleep 0.3"} for i in range(2)]
    run = await api.post("runs", {"workflow": workflow, "backend": "local"}, expect=201)
    await api.wait_run(run["id"])
    tasks = (await api.get(f"runs/{run['id']}"))["tasks"]
    seconds = {t["id"]: t["ended_at"] - t["started_at"] for t in tasks}
    cost = await api.get(f"runs/{run['id']}/cost")
    assert (cost["run"], cost["priced"], cost["costed"], cost["tasks"]) == (run["id"], True, 2, 2)
    assert cost["source"] == "offline prices"
    assert cost["summary"].endswith("(2 of 2 tasks costed), offline prices")
    assert {i["task"]: i["cost"] for i in cost["items"]} == pytest.approx(seconds)
    assert cost["total"] == pytest.approx(sum(seconds.values()))
    short = await api.get(f"runs/{run['id'][:17]}/cost", params={"items": "0"})
    assert "items" not in short and short["total"] == cost["total"]
    code, body = await api.call("GET", "runs/20990101-000000-zzzz/cost")
    assert code == 404 and "20990101-000000-zzzz" in body["message"]
