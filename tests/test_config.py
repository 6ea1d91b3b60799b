from __future__ import annotations

from pathlib import Path

import pytest

from inferbench.config import Cell, MeasureConfig, SweepConfig, load_profile, profile_names
from inferbench.errors import UserError


def test_builtin_profiles_load_and_validate() -> None:
    assert {"cpu", "cpu-full", "smoke"} <= set(profile_names())
    engines = {"torch", "torchscript", "torch-compile", "onnxruntime", "openvino"}
    cpu = load_profile("cpu")  # the default: sized for about 30 minutes on 2 vCPUs
    assert set(cpu.models) == {"resnet50", "lstm", "minilm"}
    assert set(cpu.backends) == engines
    assert cpu.batch_sizes == (1, 8)
    assert len(cpu.cells()) == 180
    full = load_profile("cpu-full")
    assert set(full.models) == {"resnet50", "bert-base", "lstm", "minilm"}
    assert set(full.backends) == engines and full.batch_sizes == (1, 8, 32)
    assert len(full.cells()) == 360
    assert load_profile("smoke").measure.min_iterations >= 1


def test_cells_are_the_cartesian_product_with_threads_resolved() -> None:
    config = SweepConfig(
        models=("a", "b"),
        backends=("x",),
        precisions=("fp32", "int8"),
        batch_sizes=(1, 8),
        threads=(0,),
    )
    cells = config.cells()
    assert len(cells) == 2 * 1 * 2 * 2
    assert all(c.threads >= 1 for c in cells)  # 0 means "all cores", resolved to a count
    assert len({c.key for c in cells}) == len(cells)


def test_cell_key_is_filesystem_safe() -> None:
    key = Cell("/tmp/my model.onnx", "onnxruntime", "fp32", 1, 2).key
    assert "/" not in key and " " not in key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precisions": ("fp8",)}, "precision must be one of fp32, bf16, fp16, int8; got 'fp8'"),
        ({"batch_sizes": (0,)}, "batch size must be a positive integer; got 0"),
        ({"batch_sizes": (-4,)}, "got -4"),
        ({"threads": (-1,)}, "threads must be a non-negative integer"),
        ({"models": ()}, "at least one model"),
    ],
)
def test_sweep_validation_names_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"models": ("mlp",), "backends": ("torch",)}
    base.update(kwargs)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        SweepConfig(**base)  # type: ignore[arg-type]


def test_measure_validation() -> None:
    with pytest.raises(UserError, match="min_iterations must be >= 1"):
        MeasureConfig(min_iterations=0)
    with pytest.raises(UserError, match="must be a number"):
        MeasureConfig(min_seconds="fast")  # type: ignore[arg-type]


def test_profile_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\nmodels = [")
    with pytest.raises(UserError, match="malformed profile"):
        load_profile(str(bad))
    bad.write_text('[sweep]\nmodels = ["mlp"]\nbackends = ["torch"]\nbatch = [1]\n')
    with pytest.raises(UserError, match=r"unknown \[sweep\] key\(s\) \['batch'\]"):
        load_profile(str(bad))
    bad.write_text('[sweep]\nmodels = "mlp"\nbackends = ["torch"]\n')
    with pytest.raises(UserError, match=r"sweep\.models must be a list"):
        load_profile(str(bad))
    bad.write_text("[measure]\nmin_iterations = 3\n")
    with pytest.raises(UserError, match=r"missing \[sweep\]"):
        load_profile(str(bad))
    with pytest.raises(UserError, match="unknown profile 'gpu-xl'"):
        load_profile("gpu-xl")
    with pytest.raises(UserError, match="profile file not found"):
        load_profile(str(tmp_path / "nope.toml"))


def test_overrides_revalidate() -> None:
    config = load_profile("smoke")
    narrowed = config.with_overrides(models=["tiny-cnn"], batch_sizes=[2], backends=None)
    assert narrowed.models == ("tiny-cnn",) and narrowed.batch_sizes == (2,)
    assert narrowed.backends == config.backends
    with pytest.raises(UserError):
        config.with_overrides(batch_sizes=[0])


def test_a_selection_narrows_the_profile_as_the_keywords_do() -> None:
    """`with_overrides(Selection(...))` and the keyword form `ab`'s agents use are one thing;
    a field left None keeps the profile's value, input tables and options merge."""
    from inferbench.config import Selection

    config = load_profile("smoke")
    selection = Selection(
        models=["tiny-cnn"], batch_sizes=(2,), backend_options={"torch": {"bf16_mode": "full"}}
    )
    assert selection.models == ("tiny-cnn",)  # a list is kept as a tuple
    assert selection.overrides() == {
        "models": ("tiny-cnn",),
        "batch_sizes": (2,),
        "backend_options": {"torch": {"bf16_mode": "full"}},
    }
    assert config.with_overrides(selection) == config.with_overrides(**selection.overrides())
    assert config.with_overrides(Selection()) == config
    narrowed = config.with_overrides(selection, batch_sizes=[4])  # a keyword wins over the selection
    assert narrowed.models == ("tiny-cnn",) and narrowed.batch_sizes == (4,)
    assert narrowed.backends == config.backends
    with pytest.raises(UserError):
        config.with_overrides(Selection(batch_sizes=(0,)))
