"""Model zoo and user-model resolution.

A model reference is one of:
- a built-in name (`resnet50`, `bert-base`, `lstm`, `mlp`, `tiny-cnn`, `minilm`);
- a path to an `.onnx` file (runs on ONNX-capable backends only);
- `package.module:factory`, a callable returning a `ModelDef` or `(module, inputs)` where
  inputs maps input names to `(shape_without_batch, dtype)`.
Built-ins are imported lazily, so listing the zoo imports no engine.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inferbench.errors import UnsupportedError, UserError, first_line
from inferbench.models.base import InputSpec, ModelDef, count_flops
from inferbench.models.onnx_inputs import GraphInput, InputOptions, graph_inputs, load_graph, resolve
from inferbench.models.onnx_precision import base_precision, graph_precision
from inferbench.models.shapes import PARAMETERS, builtin_problem, parse_point

_SIZE_FLAGS = tuple(f"--{name.replace('_', '-')}" for name in PARAMETERS)

__all__ = [
    "BUILTIN_MODELS",
    "InputOptions",
    "InputSpec",
    "ModelDef",
    "ModelRef",
    "build_model",
    "count_flops",
    "resolve_model",
]

BUILTIN_MODELS: dict[str, str] = {
    "resnet50": "inferbench.models.resnet:build",
    "bert-base": "inferbench.models.transformers_zoo:build_bert_base",
    "minilm": "inferbench.models.transformers_zoo:build_minilm",
    "lstm": "inferbench.models.small:build_lstm",
    "mlp": "inferbench.models.small:build_mlp",
    "tiny-cnn": "inferbench.models.small:build_tiny_cnn",
}


@dataclass(frozen=True)
class ModelRef:
    """A validated model reference; `kind` is builtin, onnx or factory."""

    ref: str
    kind: str
    # Layer kinds and counts of the built torch module ("conv", "linear", "recurrent"), when
    # known: learned once before the sweep (inferbench.sweep.modelcheck), so verdicts that follow from
    # the model's structure are decided without starting a worker. Empty = not known.
    layers: tuple[tuple[str, int], ...] = ()
    # ONNX files: the user's shapes and values for its inputs (inferbench.models.onnx_inputs),
    # and whether any input has a batch axis (without one, the model runs at batch 1 only).
    inputs: InputOptions = field(default_factory=InputOptions)
    batched: bool = True
    # ONNX files that arrive quantized: their precision as read from the graph (for example
    # "int8 (QDQ, from the model)"), and the user's FP32 model to check their accuracy against.
    graph_precision: str = ""
    reference: str = ""
    # The point of the shape axis this model is built at (inferbench.models.shapes); "" is the
    # model's own shape. Set per cell with `at_shape`.
    shape: str = ""
    # An ONNX file's input names, for saying which shapes it cannot take.
    input_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # a worker's spec gives JSON lists and dicts back
        object.__setattr__(self, "layers", tuple((str(k), int(n)) for k, n in self.layers))
        object.__setattr__(self, "input_names", tuple(self.input_names))
        if isinstance(self.inputs, dict):
            object.__setattr__(self, "inputs", InputOptions(**self.inputs))

    def precision_problem(self, precision: str) -> str | None:
        """Why a model that arrives quantized cannot run at `precision`, or None."""
        if not self.graph_precision or precision == base_precision(self.graph_precision):
            return None
        return (
            f"the model is {self.graph_precision}: it runs as it is, at "
            f"{base_precision(self.graph_precision)} only (never quantized or cast again)"
        )

    def batch_problem(self, batch_size: int) -> str | None:
        """Why this model cannot run at `batch_size`, or None."""
        if self.batched or batch_size == 1:
            return None
        return (
            "its inputs have no batch axis (every dim is fixed or given), so it runs at batch 1 only; "
            "mark one with --shape NAME=?x... or --batch-axis NAME=K where the graph allows it"
        )

    def shape_problem(self, shape: str) -> str | None:
        """Why this model cannot be built at `shape` (a cell's shape), or None. A factory's
        size parameters are known only once it is imported: its worker decides those."""
        if not shape:
            return None
        point = parse_point(shape)
        if self.kind == "builtin":
            return builtin_problem(self.ref, point)
        if self.kind == "factory":
            if point.inputs:
                return f"{self.ref} is a factory: size it with {' or '.join(_SIZE_FLAGS)}, not input shapes"
            return None
        if point.sizes:
            names = ", ".join(name for name, _ in point.sizes)
            return f"an ONNX file takes no {names}: give its inputs' shapes with --shape NAME=DIMS"
        lacking = [name for name, _ in point.inputs if name not in self.input_names]
        if lacking:
            return f"it has no input named {', '.join(lacking)} (inputs: {', '.join(self.input_names)})"
        return None

    def at_shape(self, shape: str) -> ModelRef:
        """This model as built for a cell at `shape`: an ONNX file's input shapes from the
        point override the sweep's own."""
        if self.kind != "onnx" or not shape:
            return replace(self, shape=shape)
        point = parse_point(shape)
        shapes = {**dict(self.inputs.shapes), **dict(point.inputs)}
        return replace(self, shape=shape, inputs=replace(self.inputs, shapes=tuple(sorted(shapes.items()))))

    @property
    def has_torch_module(self) -> bool:
        return self.kind != "onnx"

    def layer_count(self, kind: str) -> int | None:
        """How many layers of `kind` the model has, or None when its structure is not known."""
        return dict(self.layers).get(kind, 0) if self.layers else None


def resolve_model(
    ref: str,
    inputs: InputOptions | None = None,
    reference: str | None = None,
    shapes: tuple[str, ...] = (),
) -> ModelRef:
    """Validate a model reference without building it (cheap; no engine imports). An ONNX
    file's inputs are resolved against `inputs` here, and at each of the sweep's `shapes` it
    can take, so a missing or contradicting shape is a UserError before any worker."""
    if ref in BUILTIN_MODELS:
        return ModelRef(ref, "builtin")
    looks_like_factory = ":" in ref and "/" not in ref and not ref.endswith(".onnx")
    if not looks_like_factory and (Path(ref).suffix or "/" in ref):
        path = Path(ref)
        if not path.is_file():
            raise UserError(f"model file not found: {ref}")
        if path.suffix != ".onnx":
            raise UserError(f"model file must be an .onnx file; got {ref}")
        _check_onnx(path)
        graph = _load_graph(path)
        declared = graph_inputs(graph)
        arrives_as = graph_precision(graph)
        if reference:
            _check_reference(path, declared, Path(reference), arrives_as)
        found = ModelRef(
            str(path.resolve()),
            "onnx",
            inputs=inputs or InputOptions(),
            graph_precision=arrives_as,
            reference=str(Path(reference).resolve()) if reference else "",
            input_names=tuple(gi.name for gi in declared),
        )
        return _resolved_at_shapes(found, declared, shapes)
    if looks_like_factory:
        module_name, _, attr = ref.partition(":")
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not attr:
            raise UserError(f"model factory {ref!r} not importable (expected package.module:function)")
        return ModelRef(ref, "factory")
    raise UserError(
        f"unknown model {ref!r}; choose one of {', '.join(BUILTIN_MODELS)}, "
        "a path to an .onnx file, or package.module:factory"
    )


def _resolved_at_shapes(found: ModelRef, declared: list[GraphInput], shapes: tuple[str, ...]) -> ModelRef:
    """An ONNX model resolved at each point of the shape axis it can take (and at its own
    shape, unless every point of the sweep gives it one). Without its own shape, the model's
    trial run (inferbench.sweep.modelcheck) uses the first point."""
    label = Path(found.ref).name
    points = [s for s in shapes if s and found.shape_problem(s) is None]
    own = "" in shapes or not points
    batched = None
    for shape in [""] * own + points:
        try:
            resolved = resolve(label, declared, found.at_shape(shape).inputs)
        except UserError as exc:
            raise (UserError(f"at shape {shape}: {exc}") if shape else exc) from None
        batched = resolved.batched if batched is None else batched
    found = replace(found, batched=bool(batched))
    return found if own else found.at_shape(points[0])


def _check_onnx(path: Path) -> None:
    try:
        import onnx
    except ImportError:
        return  # the backend will report it; nothing to validate with here
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the checker raises several types for a corrupt file
        raise UserError(f"broken ONNX model {path}: {first_line(exc)}") from None


def build_model(ref: ModelRef, seed: int = 0) -> ModelDef:
    """Build the model in this process (called inside workers)."""
    sizes = dict(parse_point(ref.shape).sizes)
    if ref.kind == "builtin":
        return _call(BUILTIN_MODELS[ref.ref], seed=seed, **sizes)
    if ref.kind == "onnx":
        return _onnx_model(Path(ref.ref), ref.inputs, ref.reference)
    produced = _call_factory(ref.ref, seed, sizes)
    if isinstance(produced, ModelDef):
        return produced
    module, inputs = produced
    specs = tuple(InputSpec(name, tuple(shape), dtype) for name, (shape, dtype) in inputs.items())
    return ModelDef(name=ref.ref, module=module.eval(), inputs=specs, seed=seed)


def _call_factory(target: str, seed: int, sizes: dict[str, int] | None = None) -> Any:
    """Call a user's factory with the sweep's seed: as `seed=` when it takes one, else with
    torch's and numpy's global generators seeded, so random weights are the same every run.
    The shape axis's sizes (`seq_len`, `image_size`) go as keywords; a factory without such a
    parameter cannot be built at that shape (an `unsupported` cell)."""
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    try:
        parameters = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # builtins and C callables have no signature
        parameters = set()
    sizes = sizes or {}
    missing = sorted(set(sizes) - parameters)
    if missing:
        raise UnsupportedError(f"{target} takes no {', '.join(missing)} parameter, so it cannot be resized")
    if "seed" in parameters:
        return factory(seed=seed, **sizes)
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    return factory(**sizes)


def _call(target: str, **kwargs: Any) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


def _check_reference(path: Path, declared: list[GraphInput], reference: Path, arrives_as: str) -> None:
    """The FP32 model a quantized ONNX file is checked against: an ONNX file, not itself
    quantized, taking the same inputs."""
    if not arrives_as:
        raise UserError(
            f"--reference {reference} given for {path.name}, which is not quantized (its own FP32)"
        )
    if not reference.is_file() or reference.suffix != ".onnx":
        raise UserError(f"--reference {reference}: not an .onnx file")
    _check_onnx(reference)
    graph = _load_graph(reference)
    quantized = graph_precision(graph)
    if quantized:
        raise UserError(f"--reference {reference.name} is itself {quantized}; give the FP32 model")
    theirs = sorted(gi.name for gi in graph_inputs(graph))
    if theirs != sorted(gi.name for gi in declared):
        raise UserError(f"--reference {reference.name} takes inputs {theirs}; {path.name} takes others")


def _load_graph(path: Path) -> Any:
    try:
        return load_graph(path)
    except ImportError:
        raise UserError(f"reading {path.name} needs onnx: pip install 'inferbench[onnx]'") from None


def _onnx_model(path: Path, inputs: InputOptions, reference: str = "") -> ModelDef:
    graph = _load_graph(path)
    specs = resolve(path.name, graph_inputs(graph), inputs).specs
    outputs = tuple(v.name for v in graph.output)
    return ModelDef(
        name=path.stem,
        inputs=specs,
        output_names=outputs,
        onnx_path=path,
        graph_precision=graph_precision(graph),
        reference_path=Path(reference) if reference else None,
    )
