"""Sharding: a stable, coordination-free partition, and the schedulers' variables."""

from __future__ import annotations

import pytest

from inferbench.config import SweepConfig
from inferbench.errors import UserError
from inferbench.shard import Shard, parse_shard, shard_of


def _cells(models: tuple[str, ...]) -> list:  # type: ignore[type-arg]
    return SweepConfig(
        models=models,
        backends=("torch", "onnxruntime", "openvino"),
        precisions=("fp32", "bf16", "int8"),
        batch_sizes=(1, 8, 32),
        threads=(0,),
        modes=("latency", "throughput"),
    ).cells()


def test_shards_partition_the_sweep() -> None:
    cells = _cells(("resnet50", "bert-base"))
    shares = [Shard(i, 4).select(cells) for i in range(1, 5)]
    keys = [c.key for share in shares for c in share]
    assert sorted(keys) == sorted(c.key for c in cells)  # every cell once
    assert all(len(share) >= len(cells) / 4 / 2 for share in shares)  # none starved


def test_adding_a_model_moves_no_existing_cell() -> None:
    before = {c.key: shard_of(c, 4) for c in _cells(("resnet50", "bert-base"))}
    after = {c.key: shard_of(c, 4) for c in _cells(("resnet50", "bert-base", "lstm"))}
    assert all(after[key] == shard for key, shard in before.items())
    assert len(after) > len(before)


def test_thread_count_does_not_move_a_cell() -> None:
    one = SweepConfig(models=("mlp",), backends=("torch",), threads=(1,)).cells()[0]
    two = SweepConfig(models=("mlp",), backends=("torch",), threads=(2,)).cells()[0]
    assert shard_of(one, 7) == shard_of(two, 7)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (4, 4)),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (1, 4)),
        ({"JOB_COMPLETION_INDEX": "0", "INFERBENCH_SHARD_COUNT": "3"}, (1, 3)),
    ],
)
def test_auto_reads_the_scheduler(environ: dict[str, str], expected: tuple[int, int]) -> None:
    shard = parse_shard("auto", environ)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("2-4", {}, "shard must look like"),
        ("5/4", {}, "1 <= I <= N"),
        ("0/4", {}, "1 <= I <= N"),
        ("auto", {}, "found no scheduler"),
        ("auto", {"JOB_COMPLETION_INDEX": "1"}, "INFERBENCH_SHARD_COUNT"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT"),
    ],
)
def test_bad_shards_are_user_errors(text: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_shard(text, environ)


def test_explicit_shard() -> None:
    assert str(parse_shard("2/4")) == "2/4"


def test_sharded_workflow_parses_and_its_matrix_matches_the_shard_count() -> None:
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    workflow = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "sharded-sweep.yml"
    data = yaml.safe_load(workflow.read_text())
    count = int(data["env"]["SHARDS"])
    assert data["jobs"]["shard"]["strategy"]["matrix"]["shard"] == list(range(1, count + 1))
    assert data["jobs"]["merge"]["needs"] == "shard"


def test_a_shared_worker_group_stays_in_one_shard() -> None:
    by_group: dict[tuple[str, str, str], set[int]] = {}
    for cell in _cells(("resnet50", "bert-base", "lstm")):
        by_group.setdefault((cell.model, cell.backend, cell.precision), set()).add(shard_of(cell, 4))
    assert all(len(shards) == 1 for shards in by_group.values())
    assert len(set().union(*by_group.values())) == 4  # and the groups spread over every shard
