"""The sweep's models by the names its cells use, resolved and checked before any work starts:
`--shape`, `--input` and `--batch-axis` must name inputs of the sweep's ONNX files, and
`--reference` a model of the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferbench.config import SweepConfig
from inferbench.errors import UserError
from inferbench.models import ModelRef, resolve_model
from inferbench.models.shapes import parse_point


def resolve_models(config: SweepConfig) -> dict[str, ModelRef]:
    """The sweep's models by the name its cells use, each checked; input shapes and values
    must each name an input of some ONNX model of the sweep (checked first: a misspelt name
    is the likelier fault than the dims it left open)."""
    options = config.input_options()
    shaped = {name for text in config.shapes for name, _ in parse_point(text).inputs}
    if options or shaped:
        files = [Path(m) for m in config.models if m.endswith(".onnx") and Path(m).is_file()]
        if not files:
            raise UserError(
                "--shape, --input and --batch-axis describe ONNX files' inputs; none in this sweep"
            )
        known = {gi.name for path in files for gi in _declared_inputs(path)}
        unknown = sorted((options.names | shaped) - known)
        if unknown:
            raise UserError(
                f"no ONNX model of this sweep has an input named {', '.join(map(repr, unknown))} "
                f"(inputs: {', '.join(sorted(known))})"
            )
    labels = config.model_labels()
    references = _references(config, labels)
    return {
        label: resolve_model(m, options, references.get(label), config.shapes) for m, label in labels.items()
    }


def _references(config: SweepConfig, labels: dict[str, str]) -> dict[str, str]:
    """--reference by model name; a bare one belongs to the sweep's one ONNX file that arrives
    quantized."""
    from inferbench.models.onnx_inputs import load_graph
    from inferbench.models.onnx_precision import graph_precision

    given = dict(config.references)
    unknown = sorted(set(given) - set(labels.values()) - {""})
    if unknown:
        raise UserError(f"--reference names no model of this sweep: {', '.join(unknown)}")
    if "" in given:
        quantized = [
            label
            for m, label in labels.items()
            if m.endswith(".onnx") and Path(m).is_file() and graph_precision(load_graph(Path(m)))
        ]
        if len(quantized) != 1:
            found = ", ".join(quantized) or "none"
            raise UserError(
                f"--reference without a model name needs exactly one quantized ONNX model in the sweep "
                f"(found: {found}); use --reference NAME=FP32.onnx"
            )
        given[quantized[0]] = given.pop("")
    return given


def _declared_inputs(path: Path) -> list[Any]:
    from inferbench.models.onnx_inputs import graph_inputs, load_graph

    try:
        return graph_inputs(load_graph(path))
    except Exception:  # a broken file: resolve_model names the problem
        return []
