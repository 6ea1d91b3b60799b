"""The cell record (inferbench.store.record): declared once, and every table of records selected
from it: results.csv, the report's table, summary.md's cell tables, the history's metrics."""

from __future__ import annotations

import typing
from dataclasses import fields, replace
from pathlib import Path

import pytest

from inferbench.cell.spec import WorkerSpec
from inferbench.cell.worker import Memo, run_guarded
from inferbench.config import CELL_AXES, AccuracyConfig, Cell
from inferbench.history.db import METRIC_COLUMNS, RESULT_AXES, results
from inferbench.history.mlflow_export import EXTRA_METRICS, PARAMS
from inferbench.models import ModelRef
from inferbench.report import html, serving, summary
from inferbench.report.answer import FLAGS, GROUP_KEYS
from inferbench.store import record, runfolder
from inferbench.store.record import FIELDS, CellRecord
from inferbench.sweep import budget
from inferbench.sweep.runner import run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

FAKE = "tests.fakes:FakeBackend"
GOLDEN_HEADER = Path(__file__).parent / "golden" / "results_header.csv"


def test_csv_columns_are_the_golden_header() -> None:
    assert ",".join(record.CSV_COLUMNS) == GOLDEN_HEADER.read_text().strip()
    assert runfolder.COLUMNS == record.CSV_COLUMNS


def test_the_axes_are_the_cells_fields_in_order() -> None:
    axes = [f for f in FIELDS.values() if f.group == "axes"]
    assert tuple(f.name for f in axes) == CELL_AXES
    # Cell's annotations are strings (its module postpones them).
    assert [f.type.__name__ for f in axes] == [f.type for f in fields(Cell)]


def test_the_parts_are_the_records_fields_in_order() -> None:
    assert list(typing.get_type_hints(CellRecord)) == list(FIELDS)
    assert len(FIELDS) == len(set(FIELDS))


def test_kinds_follow_the_types() -> None:
    assert runfolder.TEXT_COLUMNS == frozenset(
        c for c in record.CSV_COLUMNS if FIELDS[c].kind in (record.TEXT, record.BOOL)
    )
    assert {FIELDS[c].kind for c in runfolder.NUMERIC} == {record.NUMBER}
    assert FIELDS["p99_reliable"].kind == record.BOOL and "p99_reliable" in runfolder.TEXT_COLUMNS
    assert FIELDS["latencies_ns"].kind == record.LIST and "latencies_ns" not in record.CSV_COLUMNS
    assert FIELDS["details"].kind == record.MAP


def test_the_report_table_has_one_place_per_column() -> None:
    places = sorted(f.column.table for f in FIELDS.values() if f.column and f.column.table)
    assert places == list(range(1, len(places) + 1))
    assert html.TABLE_COLUMNS[:7] == (*(a for a in CELL_AXES if a != "shape"), "status")
    assert html.TABLE_COLUMNS[-1] == "reason"
    # Left-aligned: the table's text columns, the host column a merged run adds, and the best
    # batching policy that serve rows add.
    assert html.TEXT_COLUMNS == {"model", "backend", "precision", "mode", "status", "engine_precision"} | {
        "reason",
        "host",
        serving.POLICY,
    }


def test_views_select_from_the_record() -> None:
    assert summary.CELL_COLUMNS == list(record.SUMMARY_COLUMNS)
    assert "model" not in summary.CELL_COLUMNS  # each model has its own table
    assert METRIC_COLUMNS == record.METRIC_COLUMNS
    assert all(FIELDS[c].kind == record.NUMBER for c in METRIC_COLUMNS)
    # Columns of the report that no record holds: computed from the others.
    derived = {f.name for f in FIELDS.values() if f.column and not f.column.csv}
    assert derived == {"speedup_vs_eager_fp32"}


def test_the_history_keeps_the_cells_axes_but_its_shape() -> None:
    assert RESULT_AXES == tuple(a for a in CELL_AXES if a != "shape")
    names = [c.name for c in results.columns]
    assert names[names.index("cell_key") + 1 :][: len(RESULT_AXES)] == list(RESULT_AXES)
    assert [results.c[a].type.python_type for a in RESULT_AXES] == [FIELDS[a].type for a in RESULT_AXES]


def test_names_chosen_elsewhere_are_record_fields() -> None:
    """Selections made by name outside the record (what a planner reads, what an export sends,
    what keeps a cell out of the answer) name fields the record declares."""
    assert set(budget._HISTORY_COLUMNS) <= set(record.CSV_COLUMNS)
    assert set(EXTRA_METRICS) | set(PARAMS) <= set(FIELDS)
    assert set(FLAGS) <= set(FIELDS)
    assert set(GROUP_KEYS) <= set(CELL_AXES)


@pytest.mark.slow
def test_a_cells_record_holds_only_declared_fields(tmp_path: Path) -> None:
    """The worker's records, in both modes, accuracy checked and taken over from an earlier
    cell of the same worker."""
    memo = Memo(shared=True)
    made = []
    for mode in ("latency", "throughput"):
        spec = WorkerSpec(
            cell=Cell("tests.fakes:torch_linear_model", "tests.fakes:LinearBackend", "bf16", 2, 1, mode),
            model_ref=ModelRef("tests.fakes:torch_linear_model", "factory"),
            measure=replace(FAST_MEASURE, max_seconds=0.2),
            cache_dir=tmp_path,
            accuracy=AccuracyConfig(eval_samples=4),
        )
        made.append(run_guarded(spec, memo))
    assert [r["status"] for r in made] == ["ok", "ok"]
    assert "accuracy_from" in made[1]
    for made_record in made:
        assert set(made_record) <= set(FIELDS)


@pytest.mark.slow
def test_a_sweeps_records_hold_only_declared_fields(run_dir: Path, cache_dir: Path) -> None:
    """What the runner adds too: repeats merged, machine, settings, session."""
    config = fake_sweep([FAKE], batch_sizes=(1,), modes=("latency", "throughput"))
    config = replace(config, measure=replace(FAST_MEASURE, repeats=2))
    for made in run_sweep(config, run_dir, cache_dir=cache_dir):
        assert made["status"] == "ok"
        assert set(made) <= set(FIELDS)
