"""Users' ONNX files as they are (issue 26): symbolic dims filled from --shape, a batch axis
anywhere or none, scalars the graph checks, float16 inputs, fixed batches; every problem one
line and exit 2 before any worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferbench.cli import main
from inferbench.errors import UserError
from inferbench.models import InputOptions, build_model, resolve_model
from inferbench.models.onnx_inputs import graph_inputs, load_graph, parse_shape, resolve
from tests import onnx_models

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx-models")
    return {
        name: getattr(onnx_models, name)(folder / f"{name}.onnx")
        for name in ("detector", "all_symbolic", "fixed_batch", "streaming", "half_input")
    }


def _run(model: Path, results: Path, *flags: str) -> int:
    """`inferbench run` of one ONNX file on ONNX Runtime, the smoke profile's settings."""
    argv = ["run", "--profile", "smoke", "--model", str(model), "--backend", "onnxruntime", *flags]
    return main([*argv, "--results-dir", str(results), "--no-history", "--no-report"])


def _specs(path: Path, **options: object) -> dict[str, object]:
    resolved = resolve(path.name, graph_inputs(load_graph(path)), InputOptions(**options))  # type: ignore[arg-type]
    return {s.name: (s.shape, s.batch_axis, s.dtype) for s in resolved.specs} | {"batched": resolved.batched}


def test_parse_shape() -> None:
    assert parse_shape("?x3x640x640") == (None, 3, 640, 640)
    assert parse_shape("1*8") == (1, 8)
    assert parse_shape("scalar") == ()
    for bad in ("?x?", "0x3", "ax3", "?x3,?x5"):
        with pytest.raises(UserError):
            parse_shape(bad)


def test_symbolic_spatial_dims_come_from_the_shape(files: dict[str, Path]) -> None:
    found = _specs(files["detector"], shapes=(("images", "?x3x64x48"),))
    assert found == {"images": ((3, 64, 48), 0, "float32"), "batched": True}


def test_every_dim_symbolic(files: dict[str, Path]) -> None:
    found = _specs(files["all_symbolic"], shapes=(("x", "?x3x32x32"),))
    assert found["x"] == ((3, 32, 32), 0, "float32")


def test_the_batch_in_the_second_dim_and_a_scalar_value(files: dict[str, Path]) -> None:
    """`state: [2, batch, 8]` shares its batch with `input: [batch, 8]` by name; `sr` is a
    scalar the user gives."""
    found = _specs(files["streaming"], values=(("sr", "16000"),))
    assert found["input"] == ((8,), 0, "float32")
    assert found["state"] == ((2, 8), 1, "float32")
    assert found["sr"] == ((), None, "int64")
    ref = resolve_model(str(files["streaming"]), InputOptions(values=(("sr", "16000"),)))
    inputs = build_model(ref).make_inputs(3, seed=0)
    assert inputs["state"].shape == (2, 3, 8) and inputs["input"].shape == (3, 8)
    assert inputs["sr"].shape == () and int(inputs["sr"]) == 16000


def test_batch_axis_given_by_the_user(files: dict[str, Path]) -> None:
    found = _specs(files["streaming"], batch_axes=(("state", 1),), values=(("sr", "8000"),))
    assert found["state"] == ((2, 8), 1, "float32")
    with pytest.raises(UserError, match="--batch-axis state=0 names a dim fixed to 2"):
        _specs(files["streaming"], batch_axes=(("state", 0),))


def test_a_fixed_batch_runs_at_batch_1_only(files: dict[str, Path]) -> None:
    ref = resolve_model(str(files["fixed_batch"]))
    assert ref.batched is False
    assert ref.batch_problem(1) is None
    assert "runs at batch 1 only" in (ref.batch_problem(8) or "")
    assert build_model(ref).make_inputs(1, 0)["images"].shape == (1, 3, 16, 16)


def test_float16_inputs(files: dict[str, Path]) -> None:
    model = build_model(resolve_model(str(files["half_input"])))
    assert model.make_inputs(2, 0)["x"].dtype == np.float16


@pytest.mark.parametrize(
    ("model", "flags", "expected"),
    [
        (
            "detector",
            [],
            "input images [batch, 3, height, width] has unknown dims height, width; "
            "give them with --shape images=?x3xHEIGHTxWIDTH",
        ),
        ("detector", ["--shape", "images=?x4x32x32"], "fixes a dim to 3; --shape/--input gave 4"),
        ("detector", ["--shape", "images=?x3x32"], "has 4 dims; --shape/--input gave 3"),
        ("detector", ["--shape", "imgs=?x3x32x32"], "no ONNX model of this sweep has an input named 'imgs'"),
        ("fixed_batch", ["--shape", "images=?x3x16x16"], "fixes dim 0 to 1; it cannot be the batch axis"),
        ("streaming", [], "inputs with made-up data: sr (int64 scalar, drawn from [0, 2))"),
        ("streaming", ["--input", "sr=8000"], "failed a trial run in ONNX Runtime"),
        ("streaming", ["--input", "sr=fast"], "--input sr=fast: not a number of the model's dtype int64"),
        ("streaming", ["--input", "state=missing.npy"], "--input state="),
        ("streaming", ["--batch-axis", "state=one"], "--batch-axis expects NAME=K"),
    ],
)
def test_every_model_problem_is_one_line_and_exit_2_before_any_worker(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    tmp_path: Path,
    model: str,
    flags: list[str],
    expected: str,
) -> None:
    if "trial run" in expected or "made-up" in expected:
        pytest.importorskip("onnxruntime")
    code = _run(files[model], tmp_path, *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert expected in err[0]
    assert not any(tmp_path.iterdir())  # no run folder: nothing started


def test_a_data_file_of_the_wrong_dtype(files: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "state.npy"
    np.save(data, np.zeros((2, 8), dtype=np.float64))
    with pytest.raises(UserError, match="dtype float64, but the model takes float32"):
        resolve_model(str(files["streaming"]), InputOptions(values=(("state", str(data)), ("sr", "16000"))))


def test_model_names_are_file_stems(tmp_path: Path) -> None:
    from inferbench.config import model_labels

    a, b = tmp_path / "exp" / "det.onnx", tmp_path / "prod" / "det.onnx"
    assert model_labels([str(tmp_path / "det.onnx"), "resnet50"]) == {
        str(tmp_path / "det.onnx"): "det",
        "resnet50": "resnet50",
    }
    assert model_labels([str(a), str(b)]) == {str(a): "exp/det", str(b): "prod/det"}


def test_the_user_options_reach_the_worker_intact(files: dict[str, Path]) -> None:
    """A worker rebuilds the model from the spec's JSON: the same inputs come out."""
    from dataclasses import asdict

    from inferbench.models import ModelRef

    ref = resolve_model(str(files["streaming"]), InputOptions(values=(("sr", "16000"),)))
    again = ModelRef(**json.loads(json.dumps(asdict(ref))))
    assert again == ref
    first, second = build_model(ref).make_inputs(2, 5), build_model(again).make_inputs(2, 5)
    assert all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize(
    ("model", "flags"),
    [
        ("detector", ["--shape", "images=?x3x16x16"]),
        ("all_symbolic", ["--shape", "x=?x3x16x16"]),
        ("streaming", ["--input", "sr=16000"]),
        ("fixed_batch", []),
        ("half_input", []),
    ],
)
def test_each_signature_runs_end_to_end_on_both_engines(
    files: dict[str, Path], tmp_path: Path, model: str, flags: list[str]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            "--model",
            str(files[model]),
            "--backend",
            "onnxruntime,openvino",
            "--precision",
            "fp32,int8",
            "--batch-size",
            "1,2",
            "--mode",
            "latency",
            *flags,
            "--results-dir",
            str(tmp_path),
            "--run-id",
            "r",
            "--no-history",
            "--no-report",
            "--no-progress",
        ]
    )
    assert code == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(frame["model"]) == {model}  # the file's stem, not its path
    for row in frame.to_dict("records"):
        if model == "fixed_batch" and row["batch_size"] == 2:
            assert row["status"] == "unsupported" and "batch 1 only" in row["reason"]
            continue
        # Real quantization may cost accuracy on random weights, but never an error.
        assert row["status"] in ("ok", "accuracy-fail", "unsupported"), row
        if row["status"] == "unsupported":
            assert row["precision"] == "int8" and row["reason"], row


@pytest.fixture(scope="module")
def qdq(files: dict[str, Path]) -> Path:
    pytest.importorskip("onnxruntime")
    return onnx_models.quantized(files["fixed_batch"], files["fixed_batch"].with_name("det_int8.onnx"))


def test_a_quantized_model_is_read_as_int8_and_runs_at_int8_only(qdq: Path, files: dict[str, Path]) -> None:
    ref = resolve_model(str(qdq))
    assert ref.graph_precision == "int8 (QDQ, from the model)"
    assert ref.precision_problem("int8") is None
    problem = ref.precision_problem("fp32") or ""
    assert "runs as it is, at int8 only (never quantized or cast again)" in problem
    assert resolve_model(str(files["fixed_batch"])).graph_precision == ""


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--reference", "{qdq}"], "is itself int8 (QDQ, from the model); give the FP32 model"),
        (["--reference", "{streaming}"], "takes inputs ['input', 'sr', 'state']"),
        (["--reference", "nosuch=x.onnx"], "--reference names no model of this sweep: nosuch"),
    ],
)
def test_reference_problems_exit_2(
    capsys: pytest.CaptureFixture[str],
    qdq: Path,
    files: dict[str, Path],
    tmp_path: Path,
    flags: list[str],
    expected: str,
) -> None:
    flags = [f.format(qdq=qdq, streaming=files["streaming"]) for f in flags]
    code = _run(qdq, tmp_path, *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_a_bare_reference_needs_one_quantized_model(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path
) -> None:
    code = _run(files["fixed_batch"], tmp_path, "--reference", str(files["fixed_batch"]))
    err = capsys.readouterr().err
    assert code == 2 and "needs exactly one quantized ONNX model in the sweep (found: none)" in err


@pytest.mark.slow
@pytest.mark.engine
def test_a_quantized_model_runs_as_it_is_checked_against_its_fp32(
    qdq: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    """Its int8 cells run without a second quantization on both engines (the cells say where
    the quantization came from), against the user's FP32 model; without one, unchecked with
    the reason; its fp32 cells are unsupported before any worker."""
    import pandas as pd

    pytest.importorskip("openvino")
    for run_id, extra in (("checked", ["--reference", str(files["fixed_batch"])]), ("unchecked", [])):
        code = main(
            [
                "run",
                "--profile",
                "smoke",
                "--model",
                str(qdq),
                "--backend",
                "onnxruntime,openvino",
                "--precision",
                "fp32,int8",
                "--batch-size",
                "1",
                "--mode",
                "latency",
                *extra,
                "--results-dir",
                str(tmp_path),
                "--run-id",
                run_id,
                "--no-history",
                "--no-report",
                "--no-progress",
            ]
        )
        assert code == 0
        rows = {
            (r["backend"], r["precision"]): r
            for r in pd.read_csv(tmp_path / run_id / "results.csv").to_dict("records")
        }
        for backend in ("onnxruntime", "openvino"):
            assert rows[(backend, "fp32")]["status"] == "unsupported"
            int8 = rows[(backend, "int8")]
            assert int8["status"] in ("ok", "accuracy-fail"), int8
            record = json.loads(
                (tmp_path / run_id / "cells" / f"det_int8__{backend}__int8__b1__t1.json").read_text()
            )
            assert record["details"]["quantization"] == "int8 (QDQ, from the model)"
            if run_id == "checked":
                assert str(int8["accuracy_checked"]) == "True" and int8["rel_l2_err"] < 0.25
            else:
                assert str(int8["accuracy_checked"]) == "False" and "--reference" in int8["reason"]


def test_a_graph_openvino_cannot_convert_is_unsupported_with_its_operators() -> None:
    """silero_vad.onnx's If branches (Conv and ReduceMean of unknown rank) stop OpenVINO's
    frontend: the cells are `unsupported`, naming them, not engine errors."""
    from inferbench.backends.openvino import unconverted_ops

    message = (
        "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:\n"
        "FrontEnd API failed with OpConversionFailure:\n"
        "Model wasn't fully converted. Failed operations detailed log:\n"
        "-- Conv-16 with a message:\nThe input data tensor's rank has to be known (static)\n\n"
        "-- ReduceMean-16 with a message:\nCheck failed\n"
    )
    assert unconverted_ops(message) == ["Conv-16", "ReduceMean-16"]
    assert unconverted_ops("Exception from src/inference/src/cpp/core.cpp:84: file not found") == []


def test_static_int8_of_an_opset_11_graph_loads(tmp_path: Path) -> None:
    """Per-channel Q/DQ needs opset 13: an older graph is converted up first (PP-OCRv4's
    detector, opset 11, became an invalid model without it)."""
    ort = pytest.importorskip("onnxruntime")
    from inferbench.backends.qdq import static_qdq

    old = onnx_models.fixed_batch(tmp_path / "old.onnx", opset=11)
    batches = [
        {"images": np.random.default_rng(k).standard_normal((1, 3, 16, 16)).astype(np.float32)}
        for k in range(2)
    ]
    out, _ = static_qdq(old, tmp_path / "derived", batches, 2)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, batches[0])[0].shape == (1, 4)


def test_a_data_file_is_samples_along_the_batch_axis(files: dict[str, Path], tmp_path: Path) -> None:
    images = np.arange(6 * 3 * 8 * 8, dtype=np.float32).reshape(6, 3, 8, 8)
    path = tmp_path / "images.npy"
    np.save(path, images)
    # The file says height and width: no --shape needed.
    model = build_model(resolve_model(str(files["detector"]), InputOptions(values=(("images", str(path)),))))
    (spec,) = model.inputs
    assert (spec.shape, spec.batch_axis) == ((3, 8, 8), 0)
    # Evaluation from the first half, calibration from the second: out of sample.
    evaluation = model.make_inputs(5, 0, purpose="evaluation")["images"]
    calibration = model.make_inputs(2, 0, purpose="calibration")["images"]
    assert [int(x[0, 0, 0]) // (3 * 64) for x in evaluation] == [0, 1, 2, 0, 1]
    assert [int(x[0, 0, 0]) // (3 * 64) for x in calibration] == [3, 4]
    timed = [model.make_inputs(4, k)["images"] for k in range(2)]
    assert [int(x[0, 0, 0]) // (3 * 64) for t in timed for x in t] == [0, 1, 2, 3, 4, 5, 0, 1]


def test_a_npz_gives_each_input_its_data_and_the_batch_may_sit_in_dim_1(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "stream.npz"
    rng = np.random.default_rng(0)
    state = rng.standard_normal((2, 4, 8)).astype(np.float32)  # the batch is dim 1
    np.savez(data, input=rng.standard_normal((4, 8)).astype(np.float32), state=state)
    values = (("input", str(data)), ("sr", "16000"), ("state", str(data)))
    model = build_model(resolve_model(str(files["streaming"]), InputOptions(values=values)))
    specs = {s.name: s for s in model.inputs}
    assert specs["state"].batch_axis == 1 and specs["state"].data is not None
    assert specs["sr"].value is not None and specs["sr"].batch_axis is None
    batch = model.make_inputs(3, 0)
    assert batch["state"].shape == (2, 3, 8)
    assert np.array_equal(batch["state"], state[:, [0, 1, 2]])
    assert int(batch["sr"]) == 16000


def test_data_problems_exit_2_before_any_worker(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong_dims = tmp_path / "wrong.npy"
    np.save(wrong_dims, np.zeros((4, 5, 8, 8), dtype=np.float32))  # the graph fixes 3 channels
    stream = tmp_path / "stream.npz"
    np.savez(stream, input=np.zeros((4, 8), dtype=np.float32))
    for model, flags, words in (
        ("detector", ["--input", f"images={wrong_dims}"], "fixes a dim to 3"),
        ("streaming", ["--input", f"state={stream}", "--input", "sr=16000"], "holds no array named state"),
        ("streaming", ["--input", str(tmp_path / "none.npz")], "file not found"),
    ):
        assert _run(files[model], tmp_path / "r", *flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "r").exists()


@pytest.mark.engine
def test_real_data_runs_end_to_end_with_a_bare_npz(files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    data = tmp_path / "stream.npz"
    rng = np.random.default_rng(1)
    np.savez(
        data,
        input=rng.standard_normal((8, 8)).astype(np.float32),
        state=rng.standard_normal((2, 8, 8)).astype(np.float32),
        sr=np.array(16000, dtype=np.int64),
    )
    flags = ["--input", str(data), "--precision", "fp32,int8", "--batch-size", "2", "--mode", "latency"]
    assert _run(files["streaming"], tmp_path, *flags, "--run-id", "r", "--no-progress") == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(frame["status"]) <= {"ok", "accuracy-fail"}, frame[["status", "reason"]]
    assert set(frame["precision"]) == {"fp32", "int8"}


def test_an_fp16_export_is_read_as_fp16_and_runs_as_it_is(files: dict[str, Path], tmp_path: Path) -> None:
    from inferbench.backends import load_backend
    from inferbench.config import SweepConfig
    from inferbench.sweep.runner import resolve_models, static_verdict

    half = onnx_models.half_conv(tmp_path / "half_conv.onnx")
    assert resolve_model(str(half)).graph_precision == "fp16 (from the model)"
    # An fp16 input cast up before fp32 weights computes in fp32.
    assert resolve_model(str(files["half_input"])).graph_precision == ""
    config = SweepConfig(models=(str(half),), backends=("onnxruntime",), precisions=("fp32", "fp16"))
    refs = resolve_models(config)
    reasons = {
        c.precision: (static_verdict(c, refs[c.model], load_backend("onnxruntime")) or {}).get("reason", "")
        for c in config.cells()
    }
    assert "the model is fp16 (from the model): it runs as it is, at fp16 only" in reasons["fp32"]
    # The fp16 cell goes to the engine's own word: ONNX Runtime's CPU build has no fp16 path.
    assert "does not implement fp16" in reasons["fp16"]
