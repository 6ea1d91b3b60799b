"""Sharding: a coordination-free, balanced and mostly stable partition, and the schedulers'
variables."""

from __future__ import annotations

import pytest

from inferbench.config import Cell, SweepConfig
from inferbench.errors import UserError
from inferbench.sweep.shard import Shard, assign, group_of, hash_shard, parse_shard


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


def _groups_per_shard(cells: list[Cell], count: int) -> list[int]:
    where = assign(cells, count)
    return [list(where.values()).count(i) for i in range(1, count + 1)]


def test_no_shard_is_empty_while_there_are_groups_for_every_shard() -> None:
    # The case: 2 models x 2 backends over 3 shards; the hash alone leaves 3/3 empty.
    cells = SweepConfig(models=("resnet50", "mlp"), backends=("torch", "onnxruntime")).cells()
    assert {hash_shard(group_of(c), 3) for c in cells} == {1, 2}
    assert Shard(3, 3).select(cells)
    for models in (("resnet50",), ("resnet50", "bert-base"), ("resnet50", "bert-base", "lstm")):
        cells = _cells(models)
        groups = len({group_of(c) for c in cells})
        for count in range(1, groups + 1):
            assert min(_groups_per_shard(cells, count)) >= 1, (models, count)


def test_shards_balance_their_estimated_cost() -> None:
    """Every group of a sweep has as many cells, so balanced cost is group counts within one:
    9 groups over 4 shards are 2, 2, 2, 3, where the hash alone gives 1, 2, 3, 3."""
    cells = _cells(("resnet50",))
    hashed = [[hash_shard(group_of(c), 4) for c in cells].count(i) for i in range(1, 5)]
    assert max(hashed) - min(hashed) > 9  # in cells: the hash alone is uneven here
    for models in (("resnet50",), ("resnet50", "bert-base"), ("resnet50", "bert-base", "lstm")):
        for count in (2, 3, 4, 5, 7):
            spread = _groups_per_shard(_cells(models), count)
            assert max(spread) - min(spread) <= 1, (models, count, spread)


def test_unequal_groups_differ_by_at_most_the_biggest_group() -> None:
    big = [Cell("big", "torch", "fp32", b, 1) for b in range(1, 13)]
    small = [Cell(f"m{i}", "torch", "fp32", 1, 1) for i in range(9)]
    loads = [len(Shard(i, 3).select(big + small)) for i in (1, 2, 3)]
    assert sum(loads) == 21 and max(loads) - min(loads) <= 12
    assert sorted(loads)[-1] == 12  # the big group alone on its shard, the small ones beside it


def test_adding_a_model_moves_few_existing_groups() -> None:
    """Groups start on their hash shard and leave it only to even out the load, so adding a
    model keeps most of the existing split (a fresh balanced split would move many)."""
    for count in (2, 3, 4, 5):
        before = assign(_cells(("resnet50", "bert-base")), count)
        after = assign(_cells(("resnet50", "bert-base", "lstm")), count)
        moved = [group for group, shard in before.items() if after[group] != shard]
        assert len(moved) <= len(before) // 4, (count, moved)
        assert len(after) > len(before)


def test_thread_count_does_not_move_a_cell() -> None:
    one = SweepConfig(models=("mlp",), backends=("torch", "onnxruntime"), threads=(1,)).cells()
    two = SweepConfig(models=("mlp",), backends=("torch", "onnxruntime"), threads=(2,)).cells()
    assert list(assign(one, 7).values()) == list(assign(two, 7).values())


def test_more_shards_than_groups_leaves_some_empty() -> None:
    cells = SweepConfig(models=("mlp",), backends=("torch",)).cells()
    shares = [Shard(i, 3).select(cells) for i in (1, 2, 3)]
    assert sorted(len(s) for s in shares) == [0, 0, 1]


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
    cells = _cells(("resnet50", "bert-base", "lstm"))
    by_group: dict[tuple[str, str, str], set[int]] = {}
    for i in range(1, 5):
        for cell in Shard(i, 4).select(cells):
            by_group.setdefault(group_of(cell), set()).add(i)
    assert all(len(shards) == 1 for shards in by_group.values())
    assert len(set().union(*by_group.values())) == 4  # and the groups spread over every shard
