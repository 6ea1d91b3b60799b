"""Exporters: Bencher Metric Format against its published JSON schema, MLflow file-store round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferbench.cli import main
from inferbench.config import Cell
from inferbench.history.export import to_bmf
from inferbench.store.runfolder import load_run
from tests.history_runs import CNN, EVIL, MLP, make_run

# Bencher's schema for BMF JSON (bencher.dev, "Bencher Metric Format" reference), as published.
BMF_SCHEMA = {
    "$id": "https://bencher.dev/bmf.json",
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {
        ".+": {
            "type": "object",
            "patternProperties": {
                ".+": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "number"},
                        "lower_value": {"type": "number"},
                        "upper_value": {"type": "number"},
                    },
                    "required": ["value"],
                }
            },
        }
    },
}
THROUGHPUT = Cell("mlp", "openvino", "fp32", 4, 2, "throughput")
BROKEN = Cell(EVIL, "torch", "bf16", 1, 2)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(
        tmp_path,
        "run-1",
        {MLP: 2.0, CNN: 5.0, THROUGHPUT: 1.0, BROKEN: 1.0},
        statuses={BROKEN: "error"},
    )


def test_bmf_validates_against_the_documented_schema(run_dir: Path, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "bmf.json"
    assert main(["export", str(run_dir), "--format", "bmf", "--out", str(out)]) == 0
    bmf = json.loads(out.read_text())
    jsonschema.validate(bmf, BMF_SCHEMA)
    # The names Bencher will show, one per measured cell; the failed cell has no numbers.
    assert set(bmf) == {
        "mlp/onnxruntime/fp32/b1/t2",
        "tiny-cnn/openvino/int8/b8/t2",
        "mlp/openvino/fp32/b4/t2/throughput",
    }
    latency = bmf["mlp/onnxruntime/fp32/b1/t2"]["latency"]
    # Bencher's built-in latency measure is in nanoseconds.
    assert latency == {"value": 2.0e6, "lower_value": 2.0e6 * 0.99, "upper_value": 2.0e6 * 1.01}
    throughput = bmf["tiny-cnn/openvino/int8/b8/t2"]["throughput"]
    assert throughput["lower_value"] <= throughput["value"] <= throughput["upper_value"]
    assert bmf["tiny-cnn/openvino/int8/b8/t2"]["latency-p99"] == {"value": pytest.approx(6.5e6)}


def test_bmf_to_stdout_and_nan_free(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_dir), "--format", "bmf", "--out", "-"]) == 0
    assert "NaN" not in capsys.readouterr().out
    _, records, _ = load_run(run_dir)
    records[0]["latency_p50_ci_low_ms"] = float("nan")
    assert "lower_value" not in to_bmf(records)["mlp/onnxruntime/fp32/b1/t2"]["latency"]


def test_export_usage_errors(tmp_path: Path) -> None:
    assert main(["export", str(tmp_path), "--format", "bmf"]) == 2  # not a run folder
    assert main(["export", str(tmp_path), "--format", "csv"]) == 2


def test_mlflow_file_store_round_trip(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="MLflow not installed (pip install 'inferbench[mlflow]')")
    from mlflow.tracking import MlflowClient

    from inferbench.history.mlflow_export import _file_store_allowed

    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    uri = (tmp_path / "mlruns").as_uri()
    args = ["export", str(run_dir), "--format", "mlflow", "--tracking-uri", uri, "--report", str(report)]
    assert main([*args, "--experiment", "nightly"]) == 0
    with _file_store_allowed(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("nightly")
        assert experiment is not None
        found = client.search_runs([experiment.experiment_id])
        parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        child_files = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert len(parents) == 1 and len(children) == 4
    assert {"report.html", "results.csv", "env.json", "config.json"} <= parent_files
    by_name = {r.info.run_name: r for r in children}
    cell = by_name["mlp/onnxruntime/fp32/b1/t2"]
    assert cell.data.params["model"] == "mlp" and cell.data.params["batch_size"] == "1"
    assert cell.data.metrics["latency_p50_ms"] == 2.0
    assert by_name[f"{EVIL}/torch/bf16/b1/t2"].data.params["status"] == "error"
    assert child_files and all(name.endswith(".json") for name in child_files)
