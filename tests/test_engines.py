"""Each real engine on tiny models, in-process: outputs must match eager FP32.

Skipped (with the reason) where an engine is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferbench.backends import BUILTIN_BACKENDS, load_backend
from inferbench.backends.base import Backend
from inferbench.cell.stats import accuracy
from inferbench.machine.capability import refusal, this_cpu
from inferbench.models import InputSpec, ModelDef, build_model, resolve_model

pytestmark = pytest.mark.engine
TOLERANCE = 1e-4  # FP32 engines reorder sums; they do not lose precision


def _backend(name: str, cache_dir: Path) -> Backend:
    cls = load_backend(name)
    available = cls.availability()
    if not available.ok:
        pytest.skip(available.reason)
    return cls(threads=1, cache_dir=cache_dir)


def _eager(model: ModelDef, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    assert model.module is not None
    with torch.inference_mode():
        return model.module(*(torch.from_numpy(inputs[n]) for n in model.input_names)).numpy()


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.mark.parametrize("backend_name", list(BUILTIN_BACKENDS))
@pytest.mark.parametrize("model_name", ["mlp", "tiny-cnn"])
def test_fp32_matches_eager(backend_name: str, model_name: str, engine_cache: Path) -> None:
    backend = _backend(backend_name, engine_cache)
    model = build_model(resolve_model(model_name))
    batch = 3
    info = backend.prepare(model, "fp32", batch)
    assert info.engine_precision in {"fp32", "f32"}  # what the engine says it really ran
    for seed in (11, 12):
        inputs = model.make_inputs(batch, seed)
        out = backend.to_numpy(backend.run(backend.to_native(inputs)))
        backend.synchronize()
        ref = _eager(model, inputs)
        assert out[0].shape == ref.shape
        metrics = accuracy([ref], out, classification=True)
        assert metrics["max_abs_err"] < TOLERANCE, metrics
        assert metrics["top1_agreement"] == 1.0
    backend.close()


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_user_onnx_file_runs_on_onnx_backends(backend_name: str, engine_cache: Path, tmp_path: Path) -> None:
    backend = _backend(backend_name, engine_cache)
    from inferbench.backends.onnx_export import onnx_file

    torch_model = build_model(resolve_model("tiny-cnn"))
    path, _ = onnx_file(torch_model, tmp_path)
    ref = resolve_model(str(path))
    assert ref.kind == "onnx"
    onnx_model = build_model(ref)
    assert onnx_model.module is None
    assert onnx_model.inputs[0].shape == (3, 32, 32)  # read from the graph, batch dim dropped
    backend.prepare(onnx_model, "fp32", 2)
    inputs = onnx_model.make_inputs(2, 5)
    out = backend.to_numpy(backend.run(backend.to_native(inputs)))
    np.testing.assert_allclose(out[0], _eager(torch_model, inputs), atol=TOLERANCE)
    # Engines that need a torch module say so instead of failing.
    reason = load_backend("torchscript").unsupported_reason(ref, "fp32")
    assert reason is not None and "needs a torch module" in reason


def test_openvino_fp32_is_really_f32(engine_cache: Path) -> None:
    backend = _backend("openvino", engine_cache)
    info = backend.prepare(build_model(resolve_model("tiny-cnn")), "fp32", 1)
    # On AVX512_BF16/AMX CPUs the plugin defaults to bf16; the explicit hint must win.
    assert info.details["inference_precision"] == "f32"
    assert set(info.details["runtime_precisions"]) == {"f32"}


def _tiny_bert() -> ModelDef:
    pytest.importorskip("transformers")
    import torch
    from transformers import BertConfig, BertModel

    from inferbench.models.transformers_zoo import EncoderLastHidden

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=500,
    )
    return ModelDef(
        name="tiny-bert",
        module=EncoderLastHidden(BertModel(config, add_pooling_layer=False)).eval(),
        inputs=(
            InputSpec("input_ids", (16,), "int64", 1, 500),
            InputSpec("attention_mask", (16,), "int64", 1, 2),
        ),
        output_names=("last_hidden_state",),
        transformer={"model_type": "bert", "num_heads": 4, "hidden_size": 64},
    )


def test_ort_fuses_transformer_attention(engine_cache: Path) -> None:
    backend = _backend("onnxruntime", engine_cache)
    model = _tiny_bert()
    info = backend.prepare(model, "fp32", 2)
    assert info.details["fused_ops"].get("Attention") == 2  # one per layer
    inputs = model.make_inputs(2, 1)
    out = backend.to_numpy(backend.run(backend.to_native(inputs)))
    np.testing.assert_allclose(out[0], _eager(model, inputs), atol=1e-4)


LOW_PRECISION = [(b, p) for b in BUILTIN_BACKENDS for p in ("bf16", "int8")]


@pytest.mark.parametrize(("backend_name", "precision"), LOW_PRECISION)
@pytest.mark.parametrize("model_name", ["mlp", "tiny-cnn"])
def test_low_precision_within_threshold_or_unsupported_with_reason(
    backend_name: str, precision: str, model_name: str, engine_cache: Path
) -> None:
    """Every backend x precision either runs within its accuracy threshold or says why not."""
    from inferbench.config import AccuracyConfig
    from inferbench.errors import UnsupportedError

    backend = _backend(backend_name, engine_cache)
    model = build_model(resolve_model(model_name))
    static = backend.unsupported_reason(resolve_model(model_name), precision)
    # A precision this CPU does not compute natively is refused before any worker: the reason
    # comes from the capability model, whatever CPU runs the test.
    static = static or refusal(backend.cpu_support(this_cpu(), precision), allow_emulated=False)
    if static is not None:
        assert len(static) > 20  # a reason a user can act on, not a bare "no"
        return
    try:
        info = backend.prepare(model, precision, 4)
    except UnsupportedError as exc:
        assert str(exc)
        return
    inputs = model.make_inputs(4, 21)
    out = backend.to_numpy(backend.run(backend.to_native(inputs)))
    metrics = accuracy([_eager(model, inputs)], out, classification=True)
    assert 0 < metrics["rel_l2_err"] <= AccuracyConfig().threshold(precision), metrics
    assert precision in info.engine_precision or precision.replace("int8", "8") in info.engine_precision


def test_quantization_really_changes_the_graph(engine_cache: Path) -> None:
    model = build_model(resolve_model("tiny-cnn"))
    ort = _backend("onnxruntime", engine_cache)
    info = ort.prepare(model, "int8", 2)
    assert info.details["quantization"] == "static-qdq"
    assert (
        info.details["quant_ops"]["QuantizeLinear"] > 0 and info.details["quant_ops"]["DequantizeLinear"] > 0
    )
    ov = _backend("openvino", engine_cache)
    info = ov.prepare(model, "int8", 2)
    assert {"u8", "i8"} & set(info.details["runtime_precisions"])  # int8 kernels really ran
    torch_int8 = _backend("torch", engine_cache).prepare(build_model(resolve_model("lstm")), "int8", 1)
    assert torch_int8.details["quantized_layers"] >= 3  # 2 LSTM layers (one module) + fc... at least


def test_openvino_bf16_really_runs_bf16(engine_cache: Path) -> None:
    from inferbench.errors import UnsupportedError

    backend = _backend("openvino", engine_cache)
    model = build_model(resolve_model("tiny-cnn"))
    if not backend.cpu_support(this_cpu(), "bf16").runs:  # the engine's own read-back refuses it
        # Real AVX2: the plugin runs f32 and its read-back refuses. A bf16 CPU capped to AVX2
        # (ONEDNN_MAX_CPU_ISA): the plugin still picks bf16, the capped oneDNN has no kernel.
        with pytest.raises(UnsupportedError, match=r"ran no compute layer in bf16|no native bf16"):
            backend.prepare(model, "bf16", 1)
        return
    info = backend.prepare(model, "bf16", 1)
    assert info.details["inference_precision"] == "bf16"
    assert "bf16" in info.details["runtime_precisions"]


def test_quantized_artifacts_come_from_cache_the_second_time(tmp_path: Path) -> None:
    model = build_model(resolve_model("tiny-cnn"))
    for name in ("onnxruntime", "openvino"):
        first = _backend(name, tmp_path).prepare(model, "int8", 2)
        second = _backend(name, tmp_path).prepare(model, "int8", 8)  # other batch: same artifact
        assert first.artifact_cached is False, name
        assert second.artifact_cached is True, name
        assert first.artifact == second.artifact


def test_torch_int8_refuses_convolutional_models(engine_cache: Path) -> None:
    from inferbench.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="convolutions would stay fp32"):
        _backend("torch", engine_cache).prepare(build_model(resolve_model("tiny-cnn")), "int8", 1)


def test_onnxruntime_bf16_is_unsupported_with_reason() -> None:
    reason = load_backend("onnxruntime").unsupported_reason(resolve_model("mlp"), "bf16")
    assert reason is not None and "no bf16 MatMul/Conv kernels" in reason


def test_torch_bf16_full_model_mode(engine_cache: Path) -> None:
    """bf16_mode=full runs the whole model in bf16 (weights too); autocast is the default."""
    import torch

    model = build_model(resolve_model("mlp"))
    cls = load_backend("torch")
    full = cls(1, engine_cache, options={"bf16_mode": "full"})
    info = full.prepare(model, "bf16", 2)
    assert info.details["mode"] == "eager, full bf16 model"
    assert next(full.module.parameters()).dtype == torch.bfloat16
    assert next(model.module.parameters()).dtype == torch.float32  # the reference is untouched
    inputs = model.make_inputs(2, 3)
    out = full.to_numpy(full.run(full.to_native(inputs)))
    assert 0 < accuracy([_eager(model, inputs)], out, classification=True)["rel_l2_err"] < 5e-2
    assert cls(1, engine_cache).prepare(model, "bf16", 2).details["mode"] == "eager, autocast bf16"
    assert cls.check_options({"bf16_mode": "half"}) == (
        "torch option bf16_mode must be one of autocast, full; got 'half'"
    )
