"""Task outputs on the real Slurm rig, over SSH and the local shell: listed over the backend's
transport in one round trip per poll, symbolic links skipped, contents read on demand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripthut.engine.engine import Engine
from scripthut.errors import NotFound
from scripthut.server.results import outputs_json, read_output, summary_json
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import TRANSPORTS, Place, make_backend, rig_config
from tests.slurm.test_slurm_backend import place as place  # the fixture
from tests.slurm.test_slurm_workflows import MEM, drive

WRITER = r"""
printf 'name with space\n' > "$SCRIPTHUT_OUTPUT_DIR/a b.txt"
mkdir -p "$SCRIPTHUT_OUTPUT_DIR/sub"
printf '{"x": 1}' > "$SCRIPTHUT_OUTPUT_DIR/sub/m.json"
ln -s /etc/hostname "$SCRIPTHUT_OUTPUT_DIR/link.txt"
printf 'slurm summary %s\n' "$SCRIPTHUT_TASK_ID" > "$SCRIPTHUT_RUN_SUMMARY"
"""


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_outputs_are_listed_and_read_over_the_transport(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    doc = [{"id": f"w.{i}", "command": WRITER, "memory": MEM} for i in (1, 2)]

    async def body(engine: Engine) -> tuple[str, bytes]:
        record = engine.submit(parse_document(doc))
        await engine.wait(record.id, timeout=180)
        data = await read_output(
            engine.store, engine.registry, record.id, "w.1", "sub/m.json", None
        )
        with pytest.raises(NotFound):
            await read_output(engine.store, engine.registry, record.id, "w.1", "link.txt", None)
        return record.id, data.data

    run_id, content = drive(config, body)
    assert content == b'{"x": 1}'
    store = Store.in_data_dir(config.data_dir)
    for task in ("w.1", "w.2"):
        listing = outputs_json(store, run_id, task, None)
        assert [f["path"] for f in listing["files"]] == ["a b.txt", "sub/m.json"]
        assert listing["summary"] == f"slurm summary {task}\n"
    assert "- `sub/m.json` (8 B)" in summary_json(store, run_id)["markdown"]


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_one_listing_round_trip_for_many_folders(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    backend = make_backend(slurm_rig, place, tmp_path)
    pairs = [(f"~/nowhere-{i}.outputs", f"~/nowhere-{i}.summary.md") for i in range(50)]

    async def body() -> None:
        await backend.start()
        try:
            before = backend.transport.stats.commands
            found = await backend.list_outputs(pairs)
            assert backend.transport.stats.commands == before + 1
        finally:
            await backend.close()
        assert set(found) == {p[0] for p in pairs}
        assert all(not listing.files for listing in found.values())

    asyncio.run(body())


@pytest.mark.parametrize("place", ["ssh"], indirect=True)
def test_a_notebook_task_runs_in_the_jobs_env_and_says_what_it_lacks(
    slurm_rig: SlurmRig, place: Place, tmp_path: Path
) -> None:
    """The rig's python3 has neither papermill nor nbclient: the job says so, exit 127."""
    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    work = f"{place.log_dir}/work"
    doc = [
        {"id": "prep", "command": f"mkdir -p {work} && printf '{{}}' > {work}/fit.ipynb"},
        {
            "id": "nb",
            "notebook": "fit.ipynb",
            "working_dir": work,
            "deps": ["prep"],
            "memory": MEM,
            "matrix": {"alpha": [1]},
        },
    ]

    async def body(engine: Engine) -> tuple[int | None, str]:
        record = engine.submit(parse_document(doc))
        await engine.wait(record.id, timeout=180)
        task = engine.store.task(record.id, "nb.0")
        attempt = engine.store.attempt(record.id, "nb.0")
        log = await engine.registry.get("rig").read_text(attempt.stderr_path)
        return task.exit_code, log

    code, log = drive(config, body)
    assert code == 127, log
    assert "a notebook task needs papermill, or nbclient and nbformat" in log


@pytest.mark.parametrize("place", TRANSPORTS, indirect=True)
def test_the_result_cache_on_the_rig(slurm_rig: SlurmRig, place: Place, tmp_path: Path) -> None:
    """Directory store in the cluster user's home: a second run hits and restores without a
    job; a changed input misses. Hashing, look-up and copies happen on the cluster."""
    config = rig_config(slurm_rig, place.transport, place.log_dir, tmp_path / "data")
    config.cache.directory = f"{place.log_dir}/store"
    work = f"{place.log_dir}/work"
    prep = {"id": "prep", "command": f"mkdir -p {work} && printf 'v1' > {work}/in.txt"}
    fit = {
        "id": "fit",
        "command": "echo ran >> runs.log; cp in.txt out.txt",
        "working_dir": work,
        "inputs": ["in.txt"],
        "outputs": ["out.txt"],
        "memory": MEM,
    }

    async def body(engine: Engine) -> list[dict[str, object]]:
        backend = engine.registry.get("rig")
        first = engine.submit(parse_document([{**prep, "memory": MEM}]))
        await engine.wait(first.id, timeout=120)
        manifests = []
        for step in ("first", "second", "changed"):
            if step == "changed":
                change = engine.submit(
                    parse_document(
                        [{**prep, "command": f"printf 'v2' > {work}/in.txt", "memory": MEM}]
                    )
                )
                await engine.wait(change.id, timeout=120)
            run = engine.submit(parse_document([fit]))
            await engine.wait(run.id, timeout=180)
            manifests.append(engine.store.manifest(run.id, "fit"))
        log = await backend.read_text(f"{work}/runs.log")
        return [*manifests, {"runs": log.count("ran")}]

    first, second, changed, runs = drive(config, body)
    assert first["cache"] == {**first["cache"], "hit": False, "stored": True}  # type: ignore[index]
    assert second["cache"]["hit"] is True  # type: ignore[index]
    assert changed["cache"]["hit"] is False  # type: ignore[index]
    assert runs == {"runs": 2}
