"""Each real engine on tiny models, in-process: outputs must match eager FP32.

Skipped (with the reason) where an engine is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends import BUILTIN_BACKENDS, load_backend
from backends.base import Backend
from bench.stats import accuracy
from models import InputSpec, ModelDef, build_model, resolve_model

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
def test_user_onnx_file_runs_on_onnx_backends(
    backend_name: str, engine_cache: Path, tmp_path: Path
) -> None:
    backend = _backend(backend_name, engine_cache)
    from backends.onnx_export import onnx_file

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

    from models.transformers_zoo import EncoderLastHidden

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
