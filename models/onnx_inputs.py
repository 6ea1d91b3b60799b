"""An ONNX file's inputs as the user's model has them: symbolic dims, a batch axis anywhere or
none, scalars, state tensors, every tensor dtype the engines take, values given by the user.

What the graph leaves open is filled from what the user says, the way `benchmark_app -shape`,
`trtexec --shapes` and `onnxruntime_perf_test -f` do:

- `--shape NAME=DIMS`, e.g. `images=?x3x640x640`: `?` marks the batch axis, which the sweep's
  batch size fills; `scalar` (or an empty DIMS) is a 0-d input. A symbolic dim is resolved by
  its name across inputs: `height` given for one input is `height` in every input.
- `--batch-axis NAME=K`: the batch is dim K of that input (a state tensor `[2, batch, 128]`).
- `--input NAME=VALUE` (a number) or `NAME=FILE.npy`: that input's data, the same for every
  call and every batch size (`sr=16000`).

The batch axis of an input is, in this order: the `?` of its shape, its `--batch-axis`, the
dim named like a batch (`batch`, `batch_size`, `N`, ...; one name for the whole model), or an
unnamed dynamic first dim. A model with no batch axis in any input runs at batch 1 only.

Everything here runs in the parent before any worker (a problem is one line, exit 2) and again
in the worker to build the same inputs. Integer inputs the user does not give are drawn from
[0, 2) (`InputSpec.low/high`), floats from a standard normal, booleans from {0, 1}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.errors import UserError
from inferbench.models.base import InputSpec

#: ONNX TensorProto element types -> numpy dtype names (the ones ONNX Runtime and OpenVINO take
#: from numpy; bfloat16 and strings have no numpy dtype of their own).
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}
_UNSUPPORTED_DTYPES = {8: "string", 16: "bfloat16", 14: "complex64", 15: "complex128"}
#: Symbolic dim names read as the batch (case-insensitive).
BATCH_NAMES = frozenset({"batch", "batch_size", "batchsize", "bs", "n", "b", "nbatch", "num_batch"})

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class GraphInput:
    """One graph input as the file declares it."""

    name: str
    elem_type: int
    dims: tuple[Dim, ...]

    def text(self) -> str:
        shown = ["?" if d is None else str(d) for d in self.dims]
        return f"{self.name} [{', '.join(shown)}]"


@dataclass(frozen=True)
class InputOptions:
    """What the user said about inputs, by input name (applies to every ONNX model of a sweep
    that has an input of that name)."""

    shapes: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, str], ...] = ()
    batch_axes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:  # JSON gives lists back: keep it hashable
        object.__setattr__(self, "shapes", tuple((str(n), str(s)) for n, s in self.shapes))
        object.__setattr__(self, "values", tuple((str(n), str(v)) for n, v in self.values))
        object.__setattr__(self, "batch_axes", tuple((str(n), int(k)) for n, k in self.batch_axes))

    @property
    def names(self) -> set[str]:
        return {n for n, _ in self.shapes} | {n for n, _ in self.values} | {n for n, _ in self.batch_axes}

    def __bool__(self) -> bool:
        return bool(self.shapes or self.values or self.batch_axes)


@dataclass(frozen=True)
class ResolvedInputs:
    specs: tuple[InputSpec, ...]
    batched: bool  # some input has a batch axis; else batch 1 only

    def batch_problem(self, batch_size: int) -> str | None:
        if self.batched or batch_size == 1:
            return None
        return "its inputs have no batch axis (every dim is fixed), so it runs at batch 1 only"


def load_graph(path: Path) -> Any:
    """An ONNX file's graph (external weight files are not read), loaded once for every
    question asked of it: its inputs, outputs and precision."""
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def graph_inputs(graph: Any) -> list[GraphInput]:
    """The inputs of an ONNX graph that are not initializers."""
    initializers = {init.name for init in graph.initializer}
    found = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[Dim] = []
        for d in tensor.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        found.append(GraphInput(value.name, int(tensor.elem_type), tuple(dims)))
    return found


def parse_shape(text: str) -> tuple[int | None, ...]:
    """`?x3x640x640` -> (None, 3, 640, 640); `scalar` or `` -> ()."""
    text = text.strip().lower()
    if text in ("", "scalar", "()"):
        return ()
    if "," in text:
        raise UserError(
            f"--shape {text!r}: several shapes are a shape axis: give them on the command line "
            "(--shape NAME=A,B) or as [sweep] shapes in a profile"
        )
    dims: list[int | None] = []
    for part in re.split(r"[x*]", text):
        part = part.strip()
        if part == "?":
            dims.append(None)
        elif part.isdigit() and int(part) > 0:
            dims.append(int(part))
        else:
            raise UserError(f"bad --shape {text!r}: each dim is a positive integer or ? (the batch axis)")
    if dims.count(None) > 1:
        raise UserError(f"bad --shape {text!r}: at most one ? (the batch axis)")
    return tuple(dims)


def parse_value(name: str, text: str, dtype: str) -> np.ndarray:
    """A number, a .npy file, or the array `name` of a .npz file, as an array of the input's
    dtype. A file shaped like the input, batch axis included, is data (`resolve`)."""
    if text.endswith((".npy", ".npz")):
        path = Path(text)
        if not path.is_file():
            raise UserError(f"--input {name}={text}: file not found")
        try:
            array = _load_array(path, name)
        except (ValueError, OSError) as exc:
            raise UserError(f"--input {name}={text}: not a readable {path.suffix} file ({exc})") from None
        if array.dtype != np.dtype(dtype):
            raise UserError(f"--input {name}={text}: dtype {array.dtype}, but the model takes {dtype}")
        return array
    try:
        number = float(text) if dtype.startswith("float") else int(text)
    except ValueError:
        raise UserError(f"--input {name}={text}: not a number of the model's dtype {dtype}") from None
    return np.asarray(number, dtype=dtype)


def _load_array(path: Path, name: str) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False))
    with np.load(path, allow_pickle=False) as arrays:
        if name not in arrays.files:
            raise ValueError(f"it holds no array named {name} (arrays: {', '.join(arrays.files)})")
        return np.asarray(arrays[name])


def npz_names(path: Path) -> list[str]:
    """The arrays a .npz file holds: `--input FILE.npz` gives each to the input of its name."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return list(arrays.files)
    except (ValueError, OSError) as exc:
        raise UserError(f"--input {path}: not a readable .npz file ({exc})") from None


def resolve(label: str, inputs: list[GraphInput], options: InputOptions) -> ResolvedInputs:
    """The model's InputSpecs, or UserError naming the input, its dims and the flag that fixes
    it. Names in `options` that this model lacks are the caller's to judge (another model of
    the sweep may have them)."""
    shapes = {name: parse_shape(text) for name, text in options.shapes}
    axes = dict(options.batch_axes)
    by_name = {gi.name: gi for gi in inputs}
    dtypes = {gi.name: _dtype(label, gi) for gi in inputs}
    values = {n: parse_value(n, text, dtypes[n]) for n, text in options.values if n in by_name}
    # A file shaped like the input, with its batch axis, is data: samples along that axis.
    provisional = _batch_symbol(inputs, shapes, axes, {})
    data = {
        n: v
        for n, v in values.items()
        if v.ndim
        and v.ndim == len(by_name[n].dims)
        and _batch_axis(label, by_name[n], shapes.get(n), axes.get(n), provisional, False) is not None
    }
    constants = {n: v for n, v in values.items() if n not in data}
    symbols = _symbols(label, inputs, shapes, values)
    batch_symbol = _batch_symbol(inputs, shapes, axes, constants)
    specs = []
    for gi in inputs:
        shape, array = shapes.get(gi.name), data.get(gi.name)
        axis = _batch_axis(label, gi, shape, axes.get(gi.name), batch_symbol, gi.name in constants)
        if array is not None and axis is not None:
            dims = tuple(d for k, d in enumerate(array.shape) if k != axis)
        else:
            dims = _dims(label, gi, shape, axis, symbols, values.get(gi.name))
            array = None
        value = constants.get(gi.name)
        specs.append(InputSpec(gi.name, dims, dtypes[gi.name], batch_axis=axis, value=value, data=array))
    return ResolvedInputs(tuple(specs), batched=any(s.batch_axis is not None for s in specs))


def _dtype(label: str, gi: GraphInput) -> str:
    if gi.elem_type in ONNX_DTYPES:
        return ONNX_DTYPES[gi.elem_type]
    kind = _UNSUPPORTED_DTYPES.get(gi.elem_type, f"element type {gi.elem_type}")
    raise UserError(
        f"model {label}: input {gi.text()} is {kind}, which InferBench cannot generate yet; "
        "give its data with --input"
    )


def _symbols(
    label: str,
    inputs: list[GraphInput],
    shapes: dict[str, tuple[int | None, ...]],
    values: dict[str, np.ndarray],
) -> dict[str, int]:
    """Symbolic dim name -> size, from the shapes and values the user gave."""
    found: dict[str, int] = {}
    for gi in inputs:
        given: tuple[int | None, ...] | None = shapes.get(gi.name)
        if gi.name in values:
            given = tuple(values[gi.name].shape)
        if given is None:
            continue
        if gi.dims and len(given) != len(gi.dims):
            raise UserError(
                f"model {label}: input {gi.text()} has {len(gi.dims)} dims; "
                f"--shape/--input gave {len(given)} ({'x'.join('?' if d is None else str(d) for d in given)})"
            )
        for declared, size in zip(gi.dims, given, strict=False):
            if size is None:
                continue
            if isinstance(declared, int) and declared != size:
                raise UserError(
                    f"model {label}: input {gi.text()} fixes a dim to {declared}; --shape/--input gave {size}"
                )
            if isinstance(declared, str):
                if found.setdefault(declared, size) != size:
                    raise UserError(
                        f"model {label}: dim {declared!r} was given as {found[declared]} and as {size}"
                    )
    return found


def _batch_symbol(
    inputs: list[GraphInput],
    shapes: dict[str, tuple[int | None, ...]],
    axes: dict[str, int],
    values: dict[str, np.ndarray],
) -> str | None:
    """The symbolic name of the batch: named by the user's `?` or --batch-axis, else batch-like."""
    for gi in inputs:
        shape = shapes.get(gi.name)
        at = shape.index(None) if shape and None in shape else axes.get(gi.name)
        if at is not None and at < len(gi.dims) and isinstance(gi.dims[at], str):
            return str(gi.dims[at])
    for gi in inputs:
        if gi.name in values:
            continue
        for dim in gi.dims:
            if isinstance(dim, str) and dim.lower() in BATCH_NAMES:
                return dim
    return None


def _batch_axis(
    label: str,
    gi: GraphInput,
    shape: tuple[int | None, ...] | None,
    axis: int | None,
    batch_symbol: str | None,
    has_value: bool,
) -> int | None:
    if has_value:
        return None
    if shape is not None and None in shape:
        at = shape.index(None)
        if at < len(gi.dims) and isinstance(gi.dims[at], int):
            raise UserError(
                f"model {label}: input {gi.text()} fixes dim {at} to {gi.dims[at]}; "
                "it cannot be the batch axis (?)"
            )
        return at
    if axis is not None:
        if not 0 <= axis < len(gi.dims):
            raise UserError(
                f"model {label}: --batch-axis {gi.name}={axis}, but {gi.text()} has {len(gi.dims)} dims"
            )
        if isinstance(gi.dims[axis], int):
            raise UserError(
                f"model {label}: --batch-axis {gi.name}={axis} names a dim fixed to {gi.dims[axis]}"
            )
        return axis
    if shape is not None:
        return None  # the user gave every dim: no batch axis in this input
    if batch_symbol is not None and batch_symbol in gi.dims:
        return gi.dims.index(batch_symbol)
    if batch_symbol is None and gi.dims and gi.dims[0] is None:
        return 0  # an unnamed dynamic first dim: the usual exported batch
    return None


def _dims(
    label: str,
    gi: GraphInput,
    shape: tuple[int | None, ...] | None,
    axis: int | None,
    symbols: dict[str, int],
    value: np.ndarray | None,
) -> tuple[int, ...]:
    """The input's dims without its batch axis, every one known."""
    if value is not None:
        return tuple(value.shape)
    dims: list[int] = []
    unknown: list[str] = []
    for k, declared in enumerate(gi.dims):
        if k == axis:
            continue
        given = shape[k] if shape is not None else None
        if given is not None:
            dims.append(given)
        elif isinstance(declared, int):
            dims.append(declared)
        elif isinstance(declared, str) and declared in symbols:
            dims.append(symbols[declared])
        else:
            unknown.append("?" if declared is None else str(declared))
            dims.append(0)
    if unknown:
        example = _example_shape(gi, axis)
        raise UserError(
            f"model {label}: input {gi.text()} has unknown dims {', '.join(unknown)}; give them with "
            f"--shape {gi.name}={example or 'scalar'} (? = the batch axis)"
        )
    return tuple(dims)


def _example_shape(gi: GraphInput, axis: int | None) -> str:
    """A --shape for the error message: `?` on the batch axis (or on a dynamic first dim when
    none is known), fixed dims as they are, each open dim a placeholder to replace."""
    if axis is None and gi.dims and not isinstance(gi.dims[0], int):
        axis = 0
    parts = []
    for k, dim in enumerate(gi.dims):
        if k == axis:
            parts.append("?")
        elif isinstance(dim, int):
            parts.append(str(dim))
        elif isinstance(dim, str) and re.fullmatch(r"[A-Za-z_]\w{0,15}", dim):
            parts.append(dim.upper())
        else:
            parts.append(f"D{k}")
    return "x".join(parts) or "scalar"
