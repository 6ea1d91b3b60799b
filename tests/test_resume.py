"""Self-describing cells: the settings hash, `--resume` under other settings, sessions, and
which run `--resume` picks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from inferbench.cli import main
from inferbench.config import Cell, MeasureConfig, SweepConfig, profile_id, settings_hash
from inferbench.errors import UserError
from inferbench.store.runfolder import latest_run, load_envs, load_run, read_csv
from inferbench.sweep.runner import SweepEvents, run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

FAKE = "tests.fakes:FakeBackend"
TORCH_DEFAULTS = {"bf16_mode": "autocast"}


def _hash(config: SweepConfig, cell: Cell, defaults: dict[str, str] | None = None) -> str:
    return settings_hash(config.cell_settings(cell, defaults or {}))


def test_bf16_full_and_autocast_do_not_collide() -> None:
    cell = Cell("mlp", "torch", "bf16", 1, 1)
    plain = SweepConfig(models=("mlp",), backends=("torch",))
    full = plain.with_overrides(backend_options={"torch": {"bf16_mode": "full"}})
    explicit = plain.with_overrides(backend_options={"torch": {"bf16_mode": "autocast"}})
    assert cell.key == "mlp__torch__bf16__b1__t1"  # the key, and so old baselines, unchanged
    assert _hash(full, cell, TORCH_DEFAULTS) != _hash(plain, cell, TORCH_DEFAULTS)
    # The default given explicitly is the same experiment as the default left out.
    assert _hash(explicit, cell, TORCH_DEFAULTS) == _hash(plain, cell, TORCH_DEFAULTS)
    assert full.cell_settings(cell, TORCH_DEFAULTS)["torch.bf16_mode"] == "full"


def test_settings_hash_covers_what_shapes_numbers_only() -> None:
    base = SweepConfig(models=("mlp",), backends=("torch",))
    latency, throughput = Cell("mlp", "torch", "fp32", 1, 1), Cell("mlp", "torch", "fp32", 1, 1, "throughput")
    changed = {
        "pin": replace(base, pin=True),
        "measure": replace(base, measure=MeasureConfig(min_seconds=5.0)),
        "repeats": replace(base, measure=MeasureConfig(repeats=3)),
    }
    for what, config in changed.items():
        assert _hash(config, latency) != _hash(base, latency), what
    streams = replace(base, measure=MeasureConfig(streams=4))
    assert _hash(streams, throughput) != _hash(base, throughput)
    assert _hash(streams, latency) == _hash(base, latency)  # one request in flight: no streams
    timeout = replace(base, measure=MeasureConfig(timeout_seconds=5.0))
    assert _hash(timeout, latency) == _hash(base, latency)  # when a cell ends, not its numbers
    integral = replace(base, measure=MeasureConfig(min_seconds=2))  # TOML `2` against `2.0`
    assert _hash(integral, latency) == _hash(base, latency)


def _run_dir(tmp_path: Path, name: str, profile: str, started_at: str | None) -> Path:
    run = tmp_path / name
    (run / "cells").mkdir(parents=True)
    config = {"name": profile.rsplit("/", 1)[-1], "profile": profile}
    if started_at is not None:
        config["started_at"] = started_at
    else:  # written before runs recorded their profile: the name is all there is
        del config["profile"]
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_latest_run_is_of_exactly_that_profile(tmp_path: Path) -> None:
    _run_dir(tmp_path, "20260101-000000-cpu", "cpu", "2026-01-01T00:00:00")
    _run_dir(tmp_path, "20260301-000000-gate-cpu", "gate-cpu", "2026-03-01T00:00:00")
    nightly = _run_dir(tmp_path, "nightly", "cpu", "2026-02-01T00:00:00")  # its own --run-id
    assert latest_run(tmp_path, "cpu") == nightly
    assert latest_run(tmp_path, "gate-cpu") == tmp_path / "20260301-000000-gate-cpu"
    assert latest_run(tmp_path, "gpu") is None
    old = _run_dir(tmp_path, "old", "smoke", None)
    assert latest_run(tmp_path, "smoke") == old  # older runs are found by their name


def test_resume_without_run_id_ignores_other_profiles(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The old lookup (`*-smoke`) took this run of `gate-smoke` for a run of `smoke`.
    _run_dir(tmp_path, "20260101-000000-gate-smoke", "gate-smoke", "2026-01-01T00:00:00")
    code = main(["run", "--profile", "smoke", "--resume", "--results-dir", str(tmp_path), "--no-report"])
    assert code == 2
    assert "no earlier run of profile 'smoke'" in capsys.readouterr().err


def test_profile_files_are_recorded_by_path(tmp_path: Path) -> None:
    path = tmp_path / "cpu.toml"
    path.write_text("")
    assert profile_id(str(path)) == str(path.resolve()) != profile_id("cpu") == "cpu"


@pytest.mark.slow
def test_resume_refuses_other_settings_and_keeps_sessions(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep([FAKE], batch_sizes=(1,))
    (first,) = run_sweep(config, run_dir, cache_dir=cache_dir, profile="fake")
    assert first["settings_hash"] and first["session"] == 1
    assert first["settings"]["measure.min_iterations"] == FAST_MEASURE.min_iterations
    assert read_csv(run_dir)["settings_hash"].iloc[0] == first["settings_hash"]

    slower = replace(config, measure=replace(FAST_MEASURE, min_iterations=7), pin=True)
    with pytest.raises(UserError) as refused:
        run_sweep(slower, run_dir, resume=True, cache_dir=cache_dir)
    line = str(refused.value)
    assert "\n" not in line
    assert "1 finished cell(s) of run-1 were measured under other settings" in line
    assert "measure.min_iterations: 5 -> 7" in line and "pin: False -> True" in line
    assert load_envs(run_dir) and not (run_dir / "env-2.json").exists()  # refused before writing

    # Same settings, one more batch size: a second session beside the first, not over it.
    wider = replace(config, batch_sizes=(1, 2))
    records = run_sweep(wider, run_dir, resume=True, cache_dir=cache_dir)
    assert [r["session"] for r in records] == [1, 2]
    assert records[0]["latencies_ns"] == first["latencies_ns"]  # kept, not re-measured
    assert (run_dir / "config.json").is_file() and (run_dir / "config-2.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["batch_sizes"] == [1]
    assert json.loads((run_dir / "config-2.json").read_text())["batch_sizes"] == [1, 2]
    assert len(load_envs(run_dir)) == 2
    _, _, env = load_run(run_dir)
    assert env == load_envs(run_dir)[-1]


@pytest.mark.slow
def test_unavailable_and_failed_cells_are_retried(run_dir: Path, cache_dir: Path) -> None:
    config = fake_sweep(["tests.fakes:MissingEngineBackend", FAKE], batch_sizes=(1,))
    first = run_sweep(config, run_dir, cache_dir=cache_dir)
    assert [r["status"] for r in first] == ["unavailable", "ok"]
    started: list[str] = []
    events = SweepEvents(on_cell_start=lambda cell: started.append(cell.backend))
    run_sweep(config, run_dir, resume=True, cache_dir=cache_dir, events=events)
    assert started == ["tests.fakes:MissingEngineBackend"]


def test_resume_refuses_cells_that_recorded_no_settings(tmp_path: Path) -> None:
    from inferbench.sweep.resume import kept_cells

    run = tmp_path / "old"
    (run / "cells").mkdir(parents=True)
    record = {"cell_key": "k", "status": "ok", "schema_version": 1}
    (run / "cells" / "k.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="settings not recorded"):
        kept_cells(run, {"k": {"pin": False}}, {"k": "abc"})
    record["status"] = "error"  # to be run again anyway: nothing to refuse
    (run / "cells" / "k.json").write_text(json.dumps(record))
    assert set(kept_cells(run, {"k": {"pin": False}}, {"k": "abc"})) == {"k"}


def test_run_written_before_the_move_still_loads() -> None:
    """Two cells of the CPU gate baseline committed before the one-import-name move and the
    settings hash (raw samples trimmed), read as they were written."""
    baseline = Path(__file__).resolve().parent / "golden" / "pre-inferbench-run"
    frame, records, env = load_run(baseline)
    assert len(frame) == len(records) > 0 and env
    assert frame["settings_hash"].isna().all()  # written before settings were hashed


@pytest.mark.slow
def test_resume_measures_disturbed_cells_again_when_asked(tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "results" / "r", tmp_path / "cache"
    config = fake_sweep([FAKE], batch_sizes=(1, 2))
    run_sweep(config, run_dir, cache_dir=cache)
    disturbed = run_dir / "cells" / f"{config.cells()[0].key}.json"
    record = json.loads(disturbed.read_text())
    record.update(interfered=True, interference_pct=55.0)
    disturbed.write_text(json.dumps(record))
    untouched = (run_dir / "cells" / f"{config.cells()[1].key}.json").read_text()

    started: list[str] = []
    events = SweepEvents(on_cell_start=lambda cell: started.append(cell.key))
    run_sweep(config, run_dir, cache_dir=cache, resume=True, events=events)
    assert started == []  # a plain resume keeps a disturbed cell as it is
    run_sweep(config, run_dir, cache_dir=cache, resume=True, events=events, redo_interfered=True)
    assert started == [config.cells()[0].key]  # measured again, and only it
    again = json.loads(disturbed.read_text())
    assert again["interference_pct"] != 55.0 and again["session"] == 3
    assert (run_dir / "cells" / f"{config.cells()[1].key}.json").read_text() == untouched


def test_redo_interfered_needs_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", "--profile", "smoke", "--redo-interfered", "--results-dir", str(tmp_path)])
    assert code == 2
    assert "--redo-interfered goes with --resume" in capsys.readouterr().err
