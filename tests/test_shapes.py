"""The shape axis (issue 26): input sizes swept like batch sizes, a `shape` column and key part
that stay empty at a model's default shape, and every shape problem decided before a worker."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferbench.cli import main
from inferbench.compare.core import CompareOptions, compare_records
from inferbench.config import CELL_AXES, Cell, SweepConfig, cell_axes, load_profile
from inferbench.errors import UserError
from inferbench.models import BUILTIN_MODELS, resolve_model
from inferbench.models.shapes import BUILTIN_SIZES, canonical, parse_point, sweep_points
from inferbench.status import UNSUPPORTED
from inferbench.sweep.runner import resolve_models, run_sweep, static_verdict
from tests import onnx_models
from tests.conftest import fake_sweep
from tests.test_compare import _record

SIZED = "tests.fakes:sized_model"


def test_points_have_one_spelling_and_bad_ones_name_themselves() -> None:
    assert canonical(" input_ids=?x32 ; attention_mask=?x32") == "attention_mask=?x32;input_ids=?x32"
    assert parse_point("seq_len=64").sizes == (("seq_len", 64),)
    assert parse_point("").text == ""
    for bad, words in (
        ("seq_len=0", "positive integer"),
        ("seq_len=abc", "positive integer"),
        ("images=?x3xQ", "each dim is a positive integer"),
        ("seq_len=8;seq_len=16", "given twice"),
        ("noequals", "NAME=VALUE"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            parse_point(bad)


def test_the_axis_from_flags() -> None:
    assert sweep_points([32, 128], [], []) == ("seq_len=32", "seq_len=128")
    assert sweep_points([], [224], []) == ("image_size=224",)
    # Inputs with several values move together, value by value.
    assert sweep_points([], [], ["input_ids=?x8,?x16", "attention_mask=?x8,?x16"]) == (
        "attention_mask=?x8;input_ids=?x8",
        "attention_mask=?x16;input_ids=?x16",
    )
    with pytest.raises(UserError, match="as many each"):
        sweep_points([], [], ["input_ids=?x8,?x16", "attention_mask=?x8,?x16,?x32"])


def test_the_default_shape_keeps_the_old_key_and_others_extend_it() -> None:
    config = SweepConfig(
        models=("bert-base",), backends=("torch",), threads=(1,), shapes=("seq_len=32", "seq_len=128")
    )
    keys = [c.key for c in config.cells()]
    # 128 is bert-base's own sequence length: that cell keeps the key runs before the axis had.
    assert keys == ["bert-base__torch__fp32__b1__t1__shape-seq_len_32", "bert-base__torch__fp32__b1__t1"]
    assert [c.shape for c in config.cells()] == ["seq_len=32", ""]
    assert CELL_AXES[-1] == "shape"
    # A record from before the axis is a default-shape cell.
    old = {"model": "m", "backend": "b", "precision": "fp32", "batch_size": 1, "threads": 2}
    assert cell_axes(old) == ("m", "b", "fp32", 1, 2, "latency", "")


def test_a_shape_given_twice_or_misspelt_is_a_user_error() -> None:
    with pytest.raises(UserError, match="given twice"):
        SweepConfig(models=("mlp",), backends=("torch",), shapes=("seq_len=8", "seq_len=8"))
    with pytest.raises(UserError, match="is written"):
        SweepConfig(models=("mlp",), backends=("torch",), shapes=("seq_len = 8",))
    with pytest.raises(UserError, match="batch sizes: 2 given twice"):
        SweepConfig(models=("mlp",), backends=("torch",), batch_sizes=(2, 2))


def test_profiles_take_shapes(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        '[sweep]\nmodels = ["bert-base"]\nbackends = ["torch"]\nshapes = ["seq_len=32", " seq_len=512"]\n'
    )
    assert load_profile(str(profile)).shapes == ("seq_len=32", "seq_len=512")
    profile.write_text('[sweep]\nmodels = ["bert-base"]\nbackends = ["torch"]\nshapes = [32]\n')
    with pytest.raises(UserError, match=r"sweep\.shapes holds text"):
        load_profile(str(profile))


def test_builtin_defaults_are_the_factories_own() -> None:
    from inferbench.models import _call  # noqa: F401 - the registry's targets import lazily

    for model, sizes in BUILTIN_SIZES.items():
        module_name, _, attr = BUILTIN_MODELS[model].partition(":")
        factory = getattr(__import__(module_name, fromlist=[attr]), attr)
        parameters = inspect.signature(factory).parameters
        for name, size in sizes.items():
            assert parameters[name].default == size.default, (model, name)


def test_a_shape_a_model_cannot_take_is_unsupported_before_any_worker() -> None:
    from inferbench.backends import load_backend

    config = SweepConfig(
        models=("bert-base", "resnet50"),
        backends=("torch",),
        threads=(1,),
        shapes=("seq_len=32", "seq_len=1024", "image_size=384"),
    )
    refs = resolve_models(config)
    verdicts = {
        (c.model, c.shape): static_verdict(c, refs[c.model], load_backend("torch")) for c in config.cells()
    }
    assert verdicts[("bert-base", "seq_len=32")] is None
    assert verdicts[("resnet50", "image_size=384")] is None
    for key, words in (
        (("bert-base", "seq_len=1024"), "from 1 to 512 (its position embeddings); got 1024"),
        (("bert-base", "image_size=384"), "takes no image size (it takes --seq-len)"),
        (("resnet50", "seq_len=32"), "takes no sequence length (it takes --image-size)"),
    ):
        verdict = verdicts[key]
        assert verdict is not None and verdict["status"] == UNSUPPORTED
        assert words in verdict["reason"], verdict


@pytest.mark.slow
def test_a_factory_is_built_at_each_size_and_one_without_the_parameter_is_unsupported(
    tmp_path: Path,
) -> None:
    config = fake_sweep(
        ["torch"],
        models=(SIZED, "tests.fakes:torch_linear_model"),
        batch_sizes=(2,),
        shapes=("seq_len=3", "seq_len=6"),
    )
    records = run_sweep(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    by_cell = {(r["model"], r["shape"]): r for r in records}
    assert len(by_cell) == 4
    for seq_len in (3, 6):
        sized = by_cell[(SIZED, f"seq_len={seq_len}")]
        assert sized["status"] == "ok", sized
        # The module was built with `seq_len` inputs: its FLOPs grow with it.
        assert sized["flops_per_sample"] == pytest.approx(2 * 3 * seq_len, rel=0.5)
        other = by_cell[("tests.fakes:torch_linear_model", f"seq_len={seq_len}")]
        assert other["status"] == UNSUPPORTED and "takes no seq_len" in other["reason"], other
    keys = {r["cell_key"] for r in records}
    assert len(keys) == 4
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(set(frame["shape"])) == ["seq_len=3", "seq_len=6"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    return onnx_models.tokens(tmp_path_factory.mktemp("tokens") / "tokens.onnx")


def _run(tokens: Path, results: Path, *flags: str) -> int:
    argv = [
        "run",
        "--profile",
        "smoke",
        "--model",
        str(tokens),
        "--backend",
        "onnxruntime",
        "--mode",
        "latency",
    ]
    argv += [*flags, "--results-dir", str(results), "--run-id", "r", "--no-history", "--no-progress"]
    return main(argv)


@pytest.mark.slow
def test_an_onnx_shape_axis_end_to_end(tokens: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    reports = tmp_path / "reports"
    code = _run(
        tokens, tmp_path, "--shape", "input_ids=?x8,?x32", "--batch-size", "1", "--reports-dir", str(reports)
    )
    assert code == 0
    frame = pd.read_csv(tmp_path / "r" / "results.csv")
    assert list(frame["shape"]) == ["input_ids=?x8", "input_ids=?x32"]
    assert set(frame["status"]) == {"ok"}
    assert frame["cell_key"].is_unique
    # The attention mask took the sequence from input_ids (one symbolic name, one value).
    cells = [json.loads(p.read_text()) for p in (tmp_path / "r" / "cells").glob("*.json")]
    assert {c["shape"] for c in cells} == {"input_ids=?x8", "input_ids=?x32"}
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "input_ids=?x8 b1 latency" in summary and "input_ids=?x32 b1 latency" in summary
    page = next(reports.glob("*.html")).read_text()
    assert 'data-col="shape"' in page


def test_onnx_shape_problems_exit_2_before_any_worker(
    tokens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags, words in (
        (["--shape", "input_idz=?x8,?x16"], "no ONNX model of this sweep has an input named 'input_idz'"),
        (["--shape", "input_ids=?x8x3,?x16"], "at shape input_ids=?x8x3"),
        (["--seq-len", "8,8"], "given twice"),
    ):
        assert _run(tokens, tmp_path / "x", *flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x" / "r" / "cells").exists()


def test_a_size_flag_on_an_onnx_file_is_an_unsupported_row(tokens: Path) -> None:
    ref = resolve_model(str(tokens), shapes=("input_ids=?x8",))
    assert ref.shape == "input_ids=?x8"  # its trial run's shape: the file leaves the sequence open
    problem = ref.shape_problem("seq_len=64")
    assert problem is not None and "--shape NAME=DIMS" in problem
    assert (
        ref.shape_problem("images=?x3x8x8")
        == "it has no input named images (inputs: input_ids, attention_mask)"
    )
    assert ref.shape_problem("input_ids=?x4") is None


def test_compare_matches_a_run_from_before_the_axis() -> None:
    old = _record("m", np.full(30, 1.0))
    new = {**old, "mode": "latency", "shape": ""}
    other = {
        **new,
        "shape": "seq_len=32",
        "cell_key": Cell("m", "torch", "fp32", 1, 1, shape="seq_len=32").key,
    }
    frame, unmatched = compare_records([old], [new, other], CompareOptions())
    assert set(frame["shape"]) == {""}
    assert list(unmatched["only_in"]) == ["new"] and list(unmatched["shape"]) == ["seq_len=32"]
