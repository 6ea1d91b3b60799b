"""The cached FP32 reference and FLOP count: computed once per key, never served stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inferbench.cell.evaluation import evaluation_chunks, reference_infer
from inferbench.cell.refcache import cached_flops, cached_reference
from inferbench.models import build_model, resolve_model


def _counting(model, calls: list[int]):  # type: ignore[no-untyped-def]
    infer = reference_infer(model, threads=1)
    assert infer is not None

    def counted(chunk):  # type: ignore[no-untyped-def]
        calls.append(1)
        return infer(chunk)

    return counted


def test_reference_is_computed_once_then_served(tmp_path: Path) -> None:
    model = build_model(resolve_model("mlp"), seed=0)
    chunks = evaluation_chunks(model, 16, 4, 0)
    calls: list[int] = []
    first, hit1 = cached_reference(model, _counting(model, calls), chunks, 16, 4, tmp_path)
    assert not hit1 and len(calls) == 4  # 16 samples in chunks of 4
    again = build_model(resolve_model("mlp"), seed=0)  # the same model, built anew
    second, hit2 = cached_reference(again, _counting(again, calls), chunks, 16, 4, tmp_path)
    assert hit2 and len(calls) == 4  # served, not computed
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[0].shape[0] == 16


def test_changed_model_or_eval_set_is_a_new_key(tmp_path: Path) -> None:
    model = build_model(resolve_model("mlp"), seed=0)
    chunks = evaluation_chunks(model, 8, 4, 0)
    calls: list[int] = []
    cached_reference(model, _counting(model, calls), chunks, 8, 4, tmp_path)
    changed = build_model(resolve_model("mlp"), seed=0)
    with torch.no_grad():
        next(changed.module.parameters()).add_(0.5)  # type: ignore[union-attr]
    outputs, hit = cached_reference(changed, _counting(changed, calls), chunks, 8, 4, tmp_path)
    assert not hit and len(calls) == 4
    fresh = reference_infer(changed, 1)(chunks[0])  # type: ignore[misc]
    np.testing.assert_allclose(outputs[0][:4], fresh[0], rtol=1e-6)  # the changed model's
    other_set = evaluation_chunks(model, 8, 4, 1)
    _, hit = cached_reference(model, _counting(model, calls), other_set, 8, 4, tmp_path)
    assert not hit
    by_two = evaluation_chunks(model, 8, 2, 0)
    _, hit = cached_reference(model, _counting(model, calls), by_two, 8, 2, tmp_path)
    assert not hit  # another chunking


def test_flops_are_counted_once(tmp_path: Path) -> None:
    model = build_model(resolve_model("mlp"), seed=0)
    counted: list[int] = []

    def count(m):  # type: ignore[no-untyped-def]
        counted.append(1)
        return 1234.0

    assert cached_flops(model, count, tmp_path) == 1234.0
    assert cached_flops(build_model(resolve_model("mlp"), seed=0), count, tmp_path) == 1234.0
    assert len(counted) == 1
    assert cached_flops(build_model(resolve_model("mlp"), seed=1), count, tmp_path) == 1234.0
    assert len(counted) == 2  # another seed, other weights


def test_a_torn_reference_is_rebuilt(tmp_path: Path) -> None:
    model = build_model(resolve_model("mlp"), seed=0)
    chunks = evaluation_chunks(model, 8, 4, 0)
    calls: list[int] = []
    cached_reference(model, _counting(model, calls), chunks, 8, 4, tmp_path)
    stored = next((tmp_path / "references").glob("*/outputs.npz"))
    stored.write_bytes(stored.read_bytes()[:10])  # a torn write
    outputs, hit = cached_reference(model, _counting(model, calls), chunks, 8, 4, tmp_path)
    assert not hit and len(calls) == 4
    assert outputs[0].shape[0] == 8
