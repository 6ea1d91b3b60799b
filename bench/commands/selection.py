"""The selection flags of `run` and `ab`: defined once here, read once into a `Selection`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferbench.argtypes import (
    assignments,
    backend_options,
    int_items,
    items,
    optional_int_items,
    optional_items,
)
from inferbench.config import Selection
from inferbench.errors import UserError

_AXIS_FLAGS = (
    # flag, short form, help
    ("--model", "-m", "model(s), repeat or comma-separate"),
    ("--backend", "-b", "backend(s)"),
    ("--precision", "-p", "fp32, bf16, int8"),
    ("--batch-size", None, "batch size(s)"),
    ("--threads", None, "intra-op threads (0 = all cores)"),
    ("--mode", None, "latency (one request in flight), throughput, serve (open-loop load at a p99 SLO)"),
)
# Serve mode's flags: (flag, ServeConfig field, how to read it, help).
_SERVE_FLAGS = (
    ("--slo-ms", "slo_ms", "number", "serve mode's latency target: p99 within MS, from the scheduled time"),
    ("--arrival", "arrival", "text", "serve arrivals: poisson (default), constant, gamma"),
    ("--burstiness", "burstiness", "number", "gamma arrivals' shape (1 = Poisson, below 1 bursty)"),
    ("--max-batch", "max_batch", "ints", "dynamic batching: most requests merged per call, e.g. 1,4,8"),
    ("--max-wait-ms", "max_wait_ms", "numbers", "dynamic batching: most a batch waits to fill, e.g. 0,2,5"),
    ("--serve-queries", "queries", "int", "requests per serve trial (default: LoadGen's minimum, 662)"),
    ("--serve-slots", "slots", "int", "requests in flight in serve mode (default: the engine's streams)"),
)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """What to sweep: the axes, and the flags that decide which cells may run and how."""
    for flag, short, what in _AXIS_FLAGS:
        parser.add_argument(*(f for f in (flag, short) if f), action="append", help=what)
    parser.add_argument("--pin", action="store_true", help="pin each worker to its first THREADS cores")
    parser.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow --threads above the cores this process may use (measures time-slicing)",
    )
    parser.add_argument(
        "--allow-emulated",
        action="store_true",
        help="measure precisions this CPU only emulates (default: unsupported rows; see inferbench doctor)",
    )
    group = parser.add_argument_group("serve mode (--mode serve): the SLO, arrivals and batching policies")
    for flag, _, _, what in _SERVE_FLAGS:
        group.add_argument(flag, help=what)


def add_setting_arguments(parser: argparse.ArgumentParser, *, inputs: bool) -> None:
    """How the cells are set up: with `inputs`, the shape axis and an ONNX file's inputs;
    always, the backends' options."""
    if inputs:
        _add_input_arguments(parser)
    parser.add_argument(
        "--backend-option",
        action="append",
        default=[],
        metavar="BACKEND.KEY=VALUE",
        help="e.g. torch.bf16_mode=full (see `inferbench doctor`)",
    )


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    sizes = parser.add_argument_group("the shape axis: input sizes swept like batch sizes")
    sizes.add_argument(
        "--seq-len",
        action="append",
        default=[],
        help="sequence length(s) of bert-base, minilm, e.g. 32,128,512",
    )
    sizes.add_argument(
        "--image-size", action="append", default=[], help="image size(s) of resnet50, e.g. 224,384"
    )
    group = parser.add_argument_group("an ONNX file's inputs (by input name; repeat each flag)")
    group.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="e.g. images=?x3x640x640 (? = batch); several (?x32,?x128) sweep a shape axis",
    )
    group.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a number (sr=16000), FILE.npy (samples along the batch axis are real data), or FILE.npz",
    )
    group.add_argument(
        "--batch-axis", action="append", default=[], metavar="NAME=K", help="the batch is dim K, e.g. state=1"
    )
    group.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="[MODEL=]FP32.onnx",
        help="the FP32 model a quantized ONNX file is checked against",
    )


def selection_from_args(args: argparse.Namespace) -> Selection:
    """The selection the flags give; a flag not given (or not defined by the command, as
    `ab`'s lack of input flags) leaves the profile's value."""
    return Selection(
        models=_tuple(optional_items(args.model)),
        backends=_tuple(optional_items(args.backend)),
        precisions=_tuple(optional_items(args.precision)),
        batch_sizes=_tuple(optional_int_items(args.batch_size, "batch sizes")),
        threads=_tuple(optional_int_items(args.threads, "threads")),
        modes=_tuple(optional_items(args.mode)),
        pin=args.pin or None,
        allow_emulated=args.allow_emulated or None,
        # None unless given: an `ab` base side whose config predates the flag still accepts it.
        oversubscribe=args.oversubscribe or None,
        **_input_tables(args),
        backend_options=backend_options(args.backend_option),
        serve=_serve_settings(args),
    )


def _serve_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """Serve mode's flags given, by `ServeConfig` field (checked there, one line each)."""
    found: dict[str, Any] = {}
    for flag, name, kind, _ in _SERVE_FLAGS:
        text = getattr(args, _dest(flag), None)
        if text is None:
            continue
        if kind == "text":
            found[name] = text.strip()
        else:
            values: list[Any] = (
                int_items([text], flag)
                if kind in ("ints", "int")
                else [_number(v, flag) for v in items([text])]
            )
            found[name] = tuple(values) if kind in ("ints", "numbers") else _one(values, flag)
    return found or None


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _one(values: list[Any], flag: str) -> Any:
    if len(values) != 1:
        raise UserError(f"{flag} takes one value; got {len(values)}")
    return values[0]


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number; got {text!r}")
    return value


def _tuple(values: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)


def _input_tables(args: argparse.Namespace) -> dict[str, Any]:
    """--seq-len, --image-size, --shape, --input, --batch-axis and --reference as the sweep's
    shape axis and input tables (only those given)."""
    from inferbench.models.shapes import sweep_points

    found: dict[str, Any] = {}
    given = assignments(getattr(args, "shape", []), "--shape", "NAME=DIMS (e.g. images=?x3x640x640)")
    shapes = {name: dims for name, dims in given if "," not in dims}
    axis = sweep_points(
        optional_int_items(getattr(args, "seq_len", []), "sequence lengths") or [],
        optional_int_items(getattr(args, "image_size", []), "image sizes") or [],
        [f"{name}={dims}" for name, dims in given if "," in dims],
    )
    if axis:
        found["shapes"] = tuple(axis)
    values = {  # files by absolute path: workers start elsewhere
        name: str(Path(text).resolve()) if text.endswith((".npy", ".npz")) else text
        for name, text in _input_assignments(getattr(args, "input", []))
    }
    axes = {}
    for name, text in assignments(getattr(args, "batch_axis", []), "--batch-axis", "NAME=K (e.g. state=1)"):
        if not text.isdigit():
            raise UserError(f"--batch-axis expects NAME=K with K a dim index (0, 1, ...); got {name}={text}")
        axes[name] = int(text)
    references = {}
    for item in getattr(args, "reference", []):
        name, sep, path = item.rpartition("=")
        references[name.strip() if sep else ""] = str(Path(path.strip()).resolve())
    tables = (
        ("input_shapes", shapes),
        ("input_values", values),
        ("batch_axes", axes),
        ("references", references),
    )
    for key, table in tables:
        if table:
            found[key] = table
    return found


def _input_assignments(items: Sequence[str]) -> list[tuple[str, str]]:
    """--input NAME=VALUE pairs; a bare FILE.npz gives each of its arrays to the input of its name."""
    from inferbench.models.onnx_inputs import npz_names

    pairs = []
    for item in items:
        if "=" not in item and item.endswith(".npz"):
            path = Path(item)
            if not path.is_file():
                raise UserError(f"--input {item}: file not found")
            pairs += [(name, item) for name in npz_names(path)]
        else:
            form = "NAME=VALUE, NAME=FILE.npy or FILE.npz (e.g. sr=16000)"
            pairs += assignments([item], "--input", form)
    return pairs
