"""The result cache with an S3-compatible store (a real moto server), on the local backend:
a second run hits and restores; a changed input misses; concurrent identical tasks leave
one whole entry; an entry whose bytes were changed is ignored; manifests say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from scripthut.config import Config
from tests.helpers import local_config
from tests.test_engine import run_doc

BUCKET = "hut-cache"


@pytest.fixture
def s3_config(moto: Any, data_dir: Path) -> Config:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    config = local_config(data_dir)
    config.cache.directory = f"s3://{BUCKET}/results"
    return config


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "in.txt").write_text("v1\n")
    return folder


def task(work: Path, **extra: Any) -> dict[str, Any]:
    return {
        "id": "fit",
        "command": "echo ran >> runs.log; cp in.txt out.txt",
        "working_dir": str(work),
        "inputs": ["in.txt"],
        "outputs": ["out.txt"],
        **extra,
    }


def runs(work: Path) -> int:
    return len((work / "runs.log").read_text().splitlines())


def test_hits_misses_and_restores_through_s3(s3_config: Config, work: Path) -> None:
    run1, store = run_doc(s3_config, [task(work)])
    first = store.manifest(run1, "fit")
    assert first["cache"]["stored"] is True, first
    (work / "out.txt").unlink()
    run2, store = run_doc(s3_config, [task(work)])
    assert store.manifest(run2, "fit")["cache"]["hit"] is True
    assert (work / "out.txt").read_text() == "v1\n" and runs(work) == 1

    (work / "in.txt").write_text("v2\n")
    run3, store = run_doc(s3_config, [task(work)])
    assert store.manifest(run3, "fit")["cache"]["hit"] is False and runs(work) == 2

    key = store.manifest(run3, "fit")["cache"]["key"]
    s3 = boto3.client("s3")
    upload = s3.get_object(Bucket=BUCKET, Key=f"results/{key}/entry")["Body"].read().decode()
    s3.put_object(Bucket=BUCKET, Key=f"results/{key}/{upload}/files/out.txt", Body=b"tampered")
    run4, store = run_doc(s3_config, [task(work)])
    assert store.manifest(run4, "fit")["cache"]["hit"] is False and runs(work) == 3
    assert (work / "out.txt").read_text() == "v2\n"


def test_concurrent_identical_tasks_leave_a_whole_entry(s3_config: Config, work: Path) -> None:
    twins = [task(work, id=f"t.{i}", command="sleep 0.2; cp in.txt out.txt") for i in range(3)]
    run1, store = run_doc(s3_config, twins)
    keys = {store.manifest(run1, f"t.{i}")["cache"]["key"] for i in range(3)}
    assert len(keys) == 1
    run2, store = run_doc(s3_config, [twins[0]])
    assert store.manifest(run2, "t.0")["cache"]["hit"] is True
