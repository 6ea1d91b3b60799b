"""The accuracy check rests on a fixed N-sample set, whatever the cell's batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbench.cell.evaluation import evaluation_chunks, gather, reference_infer, run_chunks
from inferbench.cell.stats import accuracy
from inferbench.config import AccuracyConfig
from inferbench.models import build_model, resolve_model
from inferbench.models.sentences import CALIBRATION, EVALUATION, TIMED
from tests.conftest import fake_sweep


def test_the_evaluation_set_does_not_depend_on_the_batch_size() -> None:
    model = build_model(resolve_model("mlp"))
    whole = evaluation_chunks(model, 10, 10, seed=0)[0]["input"]
    for batch in (1, 3, 4, 10):
        chunks = evaluation_chunks(model, 10, batch, seed=0)
        assert len(chunks) == -(-10 // batch) and all(c["input"].shape[0] == batch for c in chunks)
        joined = gather([[c["input"]] for c in chunks], 10, batch)[0]
        np.testing.assert_array_equal(joined, whole)  # wrap-around padding dropped
    assert not np.array_equal(whole, model.make_inputs(10, 0)["input"])  # not the timed inputs


def test_top1_agreement_is_a_fraction_over_n_samples_at_batch_1() -> None:
    model = build_model(resolve_model("mlp"))
    samples = 64
    chunks = evaluation_chunks(model, samples, 1, seed=0)
    reference_of = reference_infer(model, threads=1)
    assert reference_of is not None
    reference = run_chunks(reference_of, chunks, samples, 1)

    def wrong_every_fourth(chunk: dict[str, np.ndarray]) -> list[np.ndarray]:
        (out,) = reference_of(chunk)
        if int(abs(chunk["input"][0, 0]) * 1e6) % 4 == 0:
            out = -out  # flips the argmax
        return [out]

    candidate = run_chunks(wrong_every_fourth, chunks, samples, 1)
    metrics = accuracy(reference, candidate, classification=True)
    assert reference[0].shape == (samples, 10)
    assert 0 < metrics["top1_agreement"] < 1
    assert metrics["top1_agreement"] * samples == pytest.approx(round(metrics["top1_agreement"] * samples))


def test_minilm_sentence_pools_are_disjoint_and_large_enough() -> None:
    assert not set(TIMED) & set(CALIBRATION)
    assert not set(TIMED) & set(EVALUATION)
    assert not set(CALIBRATION) & set(EVALUATION)
    assert len(set(EVALUATION)) >= AccuracyConfig().eval_samples
    assert len(set(CALIBRATION)) >= AccuracyConfig().calibration_samples


def test_accuracy_settings_are_validated() -> None:
    from inferbench.errors import UserError

    with pytest.raises(UserError, match="eval_samples must be a positive integer"):
        AccuracyConfig(eval_samples=0)
    with pytest.raises(UserError, match="min_lowp_share must be between 0 and 1"):
        AccuracyConfig(min_lowp_share=1.5)


@pytest.mark.slow
def test_cells_report_eval_samples_and_whether_they_were_checked(tmp_path: Path) -> None:
    from inferbench.backends.onnx_export import onnx_file
    from inferbench.sweep.runner import run_sweep

    onnx_path, _ = onnx_file(build_model(resolve_model("tiny-cnn")), tmp_path / "export")
    checks = AccuracyConfig(eval_samples=20)
    config = fake_sweep(
        ["torch", "onnxruntime", "tests.fakes:FakeBackend"],
        models=("mlp", str(onnx_path), "tests.fakes:numpy_model"),
        batch_sizes=(1,),
        accuracy=checks,
    )
    records = {
        (r["model"], r["backend"]): r for r in run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "c")
    }
    torch_cell = records[("mlp", "torch")]
    assert torch_cell["accuracy_checked"] is True and torch_cell["eval_samples"] == 20
    assert 0 <= torch_cell["top1_agreement"] <= 1
    onnx_cell = records[
        ("model", "onnxruntime")
    ]  # an ONNX file, named by its stem: ORT FP32 is its reference
    assert onnx_cell["status"] == "ok" and onnx_cell["accuracy_checked"] is True
    assert onnx_cell["eval_samples"] == 20 and onnx_cell["rel_l2_err"] < 1e-5
    fake = records[("tests.fakes:numpy_model", "tests.fakes:FakeBackend")]
    assert fake["accuracy_checked"] is False and fake.get("eval_samples") is None
