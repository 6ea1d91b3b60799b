"""Trust boundaries (issue 27): names and keys checked where they enter, one run per run
folder, and a run that measured nothing failing closed. No test here starts a worker."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inferbench.ab.core import Agent
from inferbench.cli import main
from inferbench.config import Cell, resolve_threads
from inferbench.errors import UserError
from inferbench.store.runfolder import cell_path, save_cell
from inferbench.sweep.cellkeys import record_key, sweep_cells
from inferbench.sweep.runlock import LOCK_NAME, run_lock
from inferbench.sweep.runner import run_sweep
from tests.conftest import fake_sweep

MISSING = "tests.fakes:MissingEngineBackend"  # unavailable: decided without a worker
CELL = Cell("m", "torch", "fp32", 1, 2)


def _profile(tmp_path: Path, backend: str = MISSING) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        f'[sweep]\nmodels = ["tests.fakes:numpy_model"]\nbackends = ["{backend}"]\nthreads = [1]\n'
    )
    return path


def _run(tmp_path: Path, *extra: str) -> int:
    argv = ["run", "--profile", str(_profile(tmp_path)), "--results-dir", str(tmp_path / "results")]
    return main([*argv, "--no-report", "--no-progress", "--peak", "off", *extra])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- run ids


@pytest.mark.parametrize("run_id", ["../../escape", "a/b", "..", ".", ".hidden", "", "/abs"])
def test_a_run_id_must_be_one_folder_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str
) -> None:
    root = tmp_path / "deep" / "er"
    root.mkdir(parents=True)
    assert _run(root, "--run-id", run_id) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (
        "inferbench: error: --run-id must be one folder name (no '/', '..', leading '.', or empty); "
        f"got {run_id!r}"
    )
    assert [p for p in tmp_path.rglob("*") if p.name != "p.toml" and p.is_file()] == []


# ---------------------------------------------------------------- cell keys


def test_a_cell_path_stays_in_cells(tmp_path: Path) -> None:
    assert cell_path(tmp_path, CELL.key) == tmp_path / "cells" / f"{CELL.key}.json"
    for key in ("../../../escaped/pwned", "..", ".x", ""):
        with pytest.raises(UserError, match="cell key must be one folder name"):
            save_cell(tmp_path, {"cell_key": key})
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "planted.json").symlink_to(tmp_path.parent / "elsewhere.json")
    with pytest.raises(UserError, match="leads outside"):
        save_cell(tmp_path, {"cell_key": "planted"})
    assert not (tmp_path.parent / "elsewhere.json").exists()


def test_a_record_key_is_recomputed_from_its_axes() -> None:
    record = {"model": "m", "backend": "torch", "precision": "fp32", "batch_size": 1, "threads": 2}
    assert record_key({**record, "cell_key": CELL.key}, "f.json") == CELL.key  # no mode/shape: old
    with pytest.raises(UserError, match=r"^f\.json: cell_key 'x' does not match its axes \('m__torch"):
        record_key({**record, "cell_key": "x"}, "f.json")
    with pytest.raises(UserError, match=r"^f\.json: not a cell record \(threads is True\)"):
        record_key({**record, "threads": True, "cell_key": CELL.key}, "f.json")


def test_two_thread_counts_that_resolve_alike_are_refused_before_the_run_folder(tmp_path: Path) -> None:
    cores = resolve_threads(0)
    config = fake_sweep([MISSING], threads=(0, cores), batch_sizes=(1,))
    with pytest.raises(UserError, match=rf"^threads 0 and {cores} would share the cell key '.*__t{cores}'"):
        run_sweep(config, tmp_path / "results" / "r", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "results").exists()


def test_two_models_whose_names_make_one_key_are_refused() -> None:
    config = fake_sweep([MISSING], models=("exp/model.onnx", "other/model.onnx", "exp_model.onnx"))
    labels = config.model_labels()
    assert labels["exp/model.onnx"] == "exp/model" and labels["exp_model.onnx"] == "exp_model"
    with pytest.raises(UserError, match=r"^model 'exp/model\.onnx' and 'exp_model\.onnx' would share"):
        sweep_cells(config)


def test_an_ab_agent_answering_another_cell_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent.__new__(Agent)  # no process: only what the parent does with an answer
    agent.side = SimpleNamespace(label="head")  # type: ignore[assignment]
    answers: list[dict[str, Any]] = [
        {**asdict(CELL), "cell_key": "../../../escaped/pwned", "status": "ok"},
        {**asdict(CELL), "batch_size": 8, "cell_key": Cell("m", "torch", "fp32", 8, 2).key, "status": "ok"},
        {**asdict(CELL), "cell_key": CELL.key, "status": "ok"},
    ]
    monkeypatch.setattr(agent, "_ask", lambda message: answers.pop(0))
    hostile = re.escape("the head side's agent: cell_key '../../../escaped/pwned' does not")
    with pytest.raises(UserError, match=hostile):
        agent.run(CELL.key)
    with pytest.raises(UserError, match=r"the head side's agent answered cell 'm__torch__fp32__b8__t2' for"):
        agent.run(CELL.key)
    assert agent.run(CELL.key)["cell_key"] == CELL.key


# ---------------------------------------------------------------- the run folder's lock


def test_a_locked_run_folder_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with run_lock(tmp_path / "r"):
        holder = json.loads((tmp_path / "r" / LOCK_NAME).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        expected = f"in use by another run \\(pid {os.getpid()} on {socket.gethostname()}, started "
        with pytest.raises(UserError, match=expected):
            with run_lock(tmp_path / "r"):
                pass
    with run_lock(tmp_path / "r"):  # released at the end of the block
        pass


def test_a_fresh_run_is_refused_under_the_lock_where_cells_appeared(tmp_path: Path) -> None:
    save_cell(tmp_path / "r", {"cell_key": CELL.key})
    with pytest.raises(UserError, match="already holds results; pass --resume"):
        with run_lock(tmp_path / "r", fresh=True):
            pass


# ---------------------------------------------------------------- failing closed


def test_a_run_where_no_cell_produced_a_number_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, "--run-id", "r") == 4
    err = capsys.readouterr().err
    assert "no cell produced a number (1 cell(s), none measured)" in err
    rows = (tmp_path / "results" / "r" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",unavailable," in rows[1]  # the row is written all the same
