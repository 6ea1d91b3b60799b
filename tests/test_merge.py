"""Shards of one sweep, run for real, merged into one run folder; mixed sweeps refused."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inferbench.config import Cell, load_profile
from inferbench.errors import UserError
from inferbench.status import SKIPPED
from inferbench.store.runfolder import write_csv
from inferbench.sweep.budget import BudgetClock
from inferbench.sweep.merge import merge_runs
from inferbench.sweep.runner import run_sweep
from inferbench.sweep.shard import Shard
from tests.conftest import FAST_MEASURE, fake_sweep


def _smoke():  # type: ignore[no-untyped-def]
    return replace(load_profile("smoke"), measure=FAST_MEASURE)


@pytest.mark.slow
def test_three_smoke_shards_merge_into_the_whole_sweep(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    config = _smoke()
    shards = []
    for i in (1, 2, 3):
        run_dir = tmp_path / "results" / f"shard-{i}"
        run_sweep(config, run_dir, cache_dir=tmp_path / "cache", shard=Shard(i, 3))
        assert json.loads((run_dir / "config.json").read_text())["shard"] == f"{i}/3"
        shards.append(run_dir)
    merged = merge_runs(shards, tmp_path / "results" / "merged")
    assert merged.missing == []
    rows = pd.read_csv(tmp_path / "results" / "merged" / "results.csv")
    assert sorted(rows["cell_key"]) == sorted(c.key for c in config.cells())
    assert (rows["status"] == "ok").all()
    # Each row names the machine that measured it: the fingerprint history keys on.
    from inferbench.history.fingerprint import machine_from_env

    env = json.loads((shards[0] / "env.json").read_text())
    assert set(rows["host"]) == {machine_from_env(env).fingerprint}
    holding = [d for d in shards if list((d / "cells").glob("*.json"))]  # one may hold no cell
    assert set(rows["shard"]) == {json.loads((d / "config.json").read_text())["shard"] for d in holding}
    assert len(list((tmp_path / "results" / "merged" / "envs").glob("*.json"))) == len(shards)


@pytest.mark.slow
def test_merge_refuses_shards_of_different_sweeps_and_reports_missing(tmp_path: Path) -> None:
    # Two engines x two precisions: groups in both of two shards (a group never splits).
    backends = ["tests.fakes:FakeBackend", "tests.fakes:SleepBackend"]
    config = fake_sweep(backends, batch_sizes=(1, 2), precisions=("fp32", "bf16"))
    first = tmp_path / "a"
    run_sweep(config, first, cache_dir=tmp_path / "cache", shard=Shard(1, 2))
    other = tmp_path / "b"
    run_sweep(replace(config, batch_sizes=(1, 2, 3)), other, cache_dir=tmp_path / "cache", shard=Shard(2, 2))
    with pytest.raises(UserError, match=r"not shards of one sweep \(batch_sizes"):
        merge_runs([first, other], tmp_path / "merged")
    partial = merge_runs([first], tmp_path / "partial")
    held = {key for key in (json.loads(p.read_text())["cell_key"] for p in (first / "cells").glob("*.json"))}
    assert len(partial.missing) == len(config.cells()) - len(held) > 0


def test_budget_turns_cells_that_do_not_fit_into_skipped_rows(tmp_path: Path) -> None:
    config = fake_sweep(["tests.fakes:FakeBackend"], batch_sizes=(1, 2, 3))
    # An earlier run took 30 s a cell, far over a 1 s budget. (With no history at all the
    # first cell would run as the probe: tests/test_budget.py.)
    past = [{**asdict(c), "cell_key": c.key, "status": "ok", "wall_s": 30.0} for c in config.cells()]
    write_csv(tmp_path / "earlier", past)
    records = run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "cache", budget_s=1.0)
    assert [r["status"] for r in records] == [SKIPPED] * 3
    assert all("budget" in r["reason"] for r in records)


def test_budget_plans_only_the_cells_that_need_a_worker_and_learns_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No history: the plan assumes 30 s a cell and fits 2 of the 3 cells that need a worker in
    70 s (rows decided without one, here an engine that is not installed, take no share). The
    third runs after them, estimated from this run's own timings (a second or two here)."""
    planned: list[list[str]] = []

    class Spy(BudgetClock):
        def __init__(self, cells: list[Cell], *args: Any, **kwargs: Any) -> None:
            planned.append([c.backend for c in cells])
            super().__init__(cells, *args, **kwargs)

    monkeypatch.setattr("inferbench.sweep.runner.BudgetClock", Spy)
    config = fake_sweep(
        ["tests.fakes:FakeBackend", "tests.fakes:MissingEngineBackend"], batch_sizes=(1, 2, 3)
    )
    records = run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "cache", budget_s=70.0)
    assert planned == [["tests.fakes:FakeBackend"] * 3]
    by_backend: dict[str, list[str]] = {}
    for r in records:
        by_backend.setdefault(r["backend"], []).append(r["status"])
    assert by_backend == {
        "tests.fakes:FakeBackend": ["ok"] * 3,
        "tests.fakes:MissingEngineBackend": ["unavailable"] * 3,
    }


# ---------------------------------------------------------------- untrusted shards (issue 27)


def _hostile_shard(root: Path, records: dict[str, dict[str, Any]]) -> Path:
    """A shard folder as a downloaded artifact could hold it: config, env and cell files."""
    config = fake_sweep(["tests.fakes:FakeBackend"], batch_sizes=(1,))
    shard = root / "shards" / "shard-1"
    (shard / "cells").mkdir(parents=True)
    (shard / "config.json").write_text(json.dumps({**config.to_dict(), "shard": "1/1", "schema_version": 1}))
    (shard / "env.json").write_text("{}")
    for name, record in records.items():
        (shard / "cells" / name).write_text(json.dumps(record))
    return shard


def _record(cell: Cell, **changes: Any) -> dict[str, Any]:
    return {**asdict(cell), "cell_key": cell.key, "status": "ok", "schema_version": 1, **changes}


CELL = Cell("numpy_model", "tests.fakes:FakeBackend", "fp32", 1, 1)


def test_a_shard_key_that_climbs_out_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "work" / "deep" / "merged"
    shard = _hostile_shard(tmp_path, {"x.json": _record(CELL, cell_key="../../../escaped/pwned")})
    with pytest.raises(UserError, match=r"x\.json: cell_key '\.\./\.\./\.\./escaped/pwned' does not match"):
        merge_runs([shard], out)
    assert not (tmp_path / "work" / "escaped").exists() and not out.exists()
    assert list(tmp_path.rglob("pwned*")) == []


def test_axes_that_make_a_key_with_a_slash_are_refused(tmp_path: Path) -> None:
    cell = Cell("m", "../../../escaped/pwned", "fp32", 1, 1)  # the key agrees with these axes
    shard = _hostile_shard(tmp_path, {"x.json": _record(cell)})
    with pytest.raises(UserError, match="must be one folder name"):
        merge_runs([shard], tmp_path / "merged")
    assert list(tmp_path.rglob("pwned*")) == [] and not (tmp_path / "merged").exists()


def test_a_record_that_is_not_a_cell_is_refused_naming_its_file(tmp_path: Path) -> None:
    shard = _hostile_shard(tmp_path, {"x.json": _record(CELL, batch_size="1")})
    with pytest.raises(UserError, match=r"x\.json: not a cell record \(batch_size is '1'\)"):
        merge_runs([shard], tmp_path / "merged")


def test_two_records_with_one_key_are_refused_naming_both_files(tmp_path: Path) -> None:
    shard = _hostile_shard(
        tmp_path, {"a.json": _record(CELL, latency_p50_ms=1.0), "b.json": _record(CELL, latency_p50_ms=2.0)}
    )
    with pytest.raises(UserError, match=r"a\.json and .*b\.json with different results"):
        merge_runs([shard], tmp_path / "merged")


def test_a_shard_name_that_climbs_out_of_envs_is_refused(tmp_path: Path) -> None:
    shard = _hostile_shard(tmp_path, {"x.json": _record(CELL)})
    config = json.loads((shard / "config.json").read_text())
    (shard / "config.json").write_text(json.dumps({**config, "shard": ".."}))
    with pytest.raises(UserError, match="shard name must be one folder name"):
        merge_runs([shard], tmp_path / "merged")


@pytest.mark.slow
def test_an_empty_shard_exits_0_and_merges(tmp_path: Path) -> None:
    """Two groups over three shards: one shard holds no cell. It still writes its run folder
    (environment, config, an empty table), and the merge of all three is the whole sweep."""
    from inferbench.commands.run import RunRequest, run_command

    profile = tmp_path / "two.toml"
    profile.write_text(
        '[sweep]\nmodels = ["tests.fakes:numpy_model"]\n'
        'backends = ["tests.fakes:FakeBackend", "tests.fakes:SleepBackend"]\n'
        "batch_sizes = [1]\nthreads = [1]\n[measure]\n"
        + "".join(f"{k} = {v!r}\n" for k, v in asdict(FAST_MEASURE).items())
    )
    shards = []
    for i in (1, 2, 3):
        code = run_command(
            RunRequest(
                profile=str(profile),
                run_id=f"shard-{i}",
                shard=f"{i}/3",
                results_dir=tmp_path / "results",
                cache_dir=tmp_path / "cache",
                reports_dir=tmp_path / "reports",
                peak="off",
            )
        )
        assert code == 0
        shards.append(tmp_path / "results" / f"shard-{i}")
    empty = [d for d in shards if not list((d / "cells").glob("*.json"))]
    assert len(empty) == 1
    assert {p.name for p in empty[0].iterdir()} >= {"config.json", "env.json", "results.csv", "cells"}
    merged = merge_runs(shards, tmp_path / "results" / "merged")
    assert merged.cells == 2 and merged.missing == [] and len(merged.shards) == 3
    assert len(list((tmp_path / "results" / "merged" / "envs").glob("*.json"))) == 3
