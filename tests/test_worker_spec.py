"""The worker spec (inferbench.cell.spec): what the runner writes for a cell is what the worker
reads back, in the file format the worker has always read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from inferbench.cell.spec import WorkerSpec
from inferbench.config import AccuracyConfig, Cell
from inferbench.models import resolve_model
from inferbench.sweep import launch
from tests.conftest import FAST_MEASURE, NUMPY_MODEL, fake_sweep

FAKE = "tests.fakes:FakeBackend"


def _spec(tmp_path: Path) -> WorkerSpec:
    return WorkerSpec(
        cell=Cell("mlp", "torch", "int8", 4, 2, "throughput", "seq_len=8"),
        model_ref=resolve_model("mlp"),
        measure=FAST_MEASURE,
        cache_dir=tmp_path / "cache",
        accuracy=AccuracyConfig(eval_samples=8),
        options={"bf16_mode": "full"},
        pin_cpus=(0, 1),
        allow_emulated=True,
        deadline_s=960.0,
    )


def test_round_trip(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert WorkerSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    spec.write(tmp_path / "spec.json")
    assert WorkerSpec.read(tmp_path / "spec.json") == spec


def test_the_file_format(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.to_dict() == {
        "cell": asdict(spec.cell),
        "model_ref": asdict(spec.model_ref),
        "measure": asdict(spec.measure),
        "accuracy": asdict(spec.accuracy),
        "options": {"bf16_mode": "full"},
        "cache_dir": str(tmp_path / "cache"),
        "pin_cpus": [0, 1],
        "allow_emulated": True,
        "deadline_s": 960.0,
    }


def test_a_spec_written_by_hand_takes_the_defaults(tmp_path: Path) -> None:
    spec = WorkerSpec.from_dict(
        {
            "cell": {
                "model": NUMPY_MODEL,
                "backend": FAKE,
                "precision": "fp32",
                "batch_size": 1,
                "threads": 1,
            },
            "model_ref": {"ref": NUMPY_MODEL, "kind": "factory"},
            "measure": asdict(FAST_MEASURE),
            "cache_dir": str(tmp_path),
        }
    )
    assert spec.cell == Cell(NUMPY_MODEL, FAKE, "fp32", 1, 1)
    assert spec.accuracy == AccuracyConfig()
    assert (spec.options, spec.pin_cpus, spec.allow_emulated, spec.deadline_s) == ({}, None, False, None)
    assert spec.to_dict()["pin_cpus"] is None


def test_launch_writes_what_the_worker_reads(tmp_path: Path) -> None:
    config = fake_sweep([FAKE], pin=True, backend_options={FAKE: {"x": "1"}})
    config = replace(config, measure=replace(FAST_MEASURE, timeout_seconds=30.0))
    cell = config.cells()[0]
    ref = resolve_model(NUMPY_MODEL)
    spec_path, out_path, log_path = launch._write_spec(cell, ref, config, tmp_path, tmp_path / "cache")
    assert (spec_path, out_path) == (
        tmp_path / "work" / f"{cell.key}.spec.json",
        tmp_path / "work" / f"{cell.key}.out.json",
    )
    assert log_path == tmp_path / "logs" / f"{cell.key}.log"
    spec = WorkerSpec.read(spec_path)
    assert (spec.cell, spec.model_ref, spec.measure, spec.accuracy) == (
        cell,
        ref,
        config.measure,
        config.accuracy,
    )
    assert spec.options == {"x": "1"}
    assert spec.cache_dir == tmp_path / "cache"
    assert spec.pin_cpus == tuple(launch.pin_cpus(cell.threads))
    assert spec.deadline_s == 30.0 + launch.WORKER_DEADLINE_MARGIN_S
