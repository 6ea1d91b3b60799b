"""`--executor ray` on a local Ray instance of two logical nodes: each cell a Ray task holding
the one-per-node resource, running the same isolated worker as the local executor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferbench.errors import UserError
from inferbench.status import ERROR, OK
from inferbench.sweep.runner import run_sweep
from tests.conftest import fake_sweep

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'inferbench[ray]')")

from inferbench.sweep.executor_ray import RESOURCE, RayExecutor  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {RESOURCE: 1}})
    nodes.add_node(num_cpus=1, resources={RESOURCE: 1})
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


@pytest.mark.slow
def test_cells_run_as_ray_tasks_one_per_node_and_a_crash_costs_one_cell(cluster: Any, tmp_path: Path) -> None:
    config = fake_sweep(["tests.fakes:FakeBackend", "tests.fakes:CrashBackend"], batch_sizes=(1, 2, 3))
    run_dir = tmp_path / "run"
    records = run_sweep(config, run_dir, cache_dir=tmp_path / "cache", executor=RayExecutor(cluster.address))
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_backend.setdefault(record["backend"], []).append(record)
    assert [r["status"] for r in by_backend["tests.fakes:FakeBackend"]] == [OK] * 3
    assert [r["status"] for r in by_backend["tests.fakes:CrashBackend"]] == [
        ERROR
    ] * 3  # each its own, the rest ran
    assert len({r["ray_node"] for r in records}) == 2  # both nodes took cells
    # The node's host facts, and its environment beside the run's (as in a merged run).
    envs = list((run_dir / "envs").glob("*.json"))
    assert [p.stem for p in envs] == [records[0]["host"]]
    assert json.loads(envs[0].read_text())["cpu"]
    assert not ray.is_initialized()  # the executor disconnects when it is done


@pytest.mark.slow
def test_a_cluster_without_the_resource_is_refused(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        with pytest.raises(UserError, match=f"offers the resource '{RESOURCE}'"):
            run_sweep(
                fake_sweep(["tests.fakes:FakeBackend"]),
                tmp_path / "run",
                cache_dir=tmp_path / "cache",
                executor=RayExecutor(nodes.address),
            )
    finally:
        nodes.shutdown()
    with pytest.raises(UserError, match="cannot be combined with --executor ray"):
        run_sweep(
            fake_sweep(["tests.fakes:FakeBackend"]), tmp_path / "r2", budget_s=60, executor=RayExecutor()
        )
