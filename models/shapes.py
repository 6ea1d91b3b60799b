"""The shape axis: the input sizes a sweep varies, like batch sizes.

One point of the axis is written as text, the way it appears in a cell's `shape` column:

- `seq_len=32`: a built-in transformer's (or a factory's) sequence length (`--seq-len`);
- `image_size=384`: a built-in vision model's (or a factory's) square image size (`--image-size`);
- `input_ids=?x32`: an ONNX file's input shape, as `--shape NAME=DIMS` takes it; several
  inputs in one point are joined with `;` (`input_ids=?x32;attention_mask=?x32`). A dim
  named in two inputs is one value (inferbench.models.onnx_inputs), so one input often says all.

Engines rank differently at 32 and 512 tokens, so users choose by how an engine scales with the
input, not with the batch alone. The model's default shape is the empty text: cells keep the
keys they had before the axis existed, and old runs still match in `compare`.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferbench.errors import UserError
from inferbench.models.onnx_inputs import parse_shape

#: Size parameters a model factory may take, with what they mean.
PARAMETERS = {"seq_len": "sequence length", "image_size": "image size"}


@dataclass(frozen=True)
class SizeRange:
    """A built-in model's default for a size parameter and the sizes it can take."""

    default: int
    low: int
    high: int
    why: str


#: Built-in models and the size parameters they take.
BUILTIN_SIZES: dict[str, dict[str, SizeRange]] = {
    "bert-base": {"seq_len": SizeRange(128, 1, 512, "its position embeddings")},
    "minilm": {"seq_len": SizeRange(128, 1, 512, "its position embeddings")},
    "resnet50": {"image_size": SizeRange(224, 32, 1024, "five stride-2 stages")},
}


@dataclass(frozen=True)
class ShapePoint:
    """One point of the shape axis: size parameters and ONNX input shapes, each sorted."""

    sizes: tuple[tuple[str, int], ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        parts = [f"{k}={v}" for k, v in self.sizes] + [f"{k}={v}" for k, v in self.inputs]
        return ";".join(parts)


def parse_point(text: str) -> ShapePoint:
    """`seq_len=32`, `image_size=384`, `NAME=DIMS`, or several joined with `;`; "" is the
    default shape. A bad point is a UserError naming it."""
    sizes: dict[str, int] = {}
    inputs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(
                f"shape {text!r}: expected NAME=VALUE (seq_len=128, image_size=224, input=?x3x224x224)"
            )
        if name in sizes or name in inputs:
            raise UserError(f"shape {text!r}: {name} given twice")
        if name in PARAMETERS:
            sizes[name] = _positive(text, name, value.strip())
        else:
            parse_shape(value.strip())  # a malformed DIMS fails here, naming itself
            inputs[name] = value.strip()
    return ShapePoint(tuple(sorted(sizes.items())), tuple(sorted(inputs.items())))


def _positive(text: str, name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"shape {text!r}: {name} must be a positive integer; got {value!r}")
    return number


def canonical(text: str) -> str:
    """The one spelling of a point (parts sorted, spaces dropped), so equal points are one key."""
    return parse_point(text).text


def sweep_points(seq_lens: list[int], image_sizes: list[int], shapes: list[str]) -> tuple[str, ...]:
    """The shape axis from `--seq-len`, `--image-size` and multi-valued `--shape NAME=A,B`
    (several inputs with several values each move together, value by value)."""
    points = [f"seq_len={n}" for n in seq_lens] + [f"image_size={n}" for n in image_sizes]
    by_input = [(name, values) for name, values in (_split(s) for s in shapes)]
    counts = {len(values) for _, values in by_input}
    if len(counts) > 1:
        given = ", ".join(f"{name} {len(values)}" for name, values in by_input)
        raise UserError(f"--shape inputs with several values must give as many each; got {given}")
    if by_input:
        points += [";".join(f"{name}={values[i]}" for name, values in by_input) for i in range(counts.pop())]
    return tuple(canonical(p) for p in points)


def _split(text: str) -> tuple[str, list[str]]:
    name, _, dims = text.partition("=")
    return name, [d.strip() for d in dims.split(",")]


def builtin_problem(model: str, point: ShapePoint) -> str | None:
    """Why built-in `model` cannot take `point`, or None."""
    takes = BUILTIN_SIZES.get(model, {})
    if point.inputs:
        names = ", ".join(n for n, _ in point.inputs)
        return f"{model} is a built-in model: its inputs ({names}) are sized with {_flags(takes)}"
    for name, value in point.sizes:
        size = takes.get(name)
        if size is None:
            return f"{model} takes no {PARAMETERS[name]}" + (f" (it takes {_flags(takes)})" if takes else "")
        if not size.low <= value <= size.high:
            return (
                f"{model} takes a {PARAMETERS[name]} from {size.low} to {size.high} ({size.why}); got {value}"
            )
    return None


def _flags(takes: dict[str, SizeRange]) -> str:
    return " or ".join(f"--{name.replace('_', '-')}" for name in takes) or "no size flag"


def builtin_label(model: str, text: str) -> str:
    """A point as the cell's `shape`: "" where it is the built-in model's default shape."""
    if not text:
        return ""
    point = parse_point(text)
    takes = BUILTIN_SIZES.get(model, {})
    if point.inputs or not point.sizes:
        return point.text
    if all(name in takes and takes[name].default == value for name, value in point.sizes):
        return ""
    return point.text
