"""The precision an ONNX file arrives in: a QDQ or QOperator graph from quantization-aware
training or another quantizer is int8 already. Such a model runs as it is, at that precision
only, and is never quantized again on top (which would measure a different model)."""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Operators that compute on integers (ONNX Runtime's QOperator format and integer kernels).
INTEGER_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "DynamicQuantizeLSTM",
        "QAttention",
    }
)


def graph_precision(graph: Any) -> str:
    """'int8 (QDQ, from the model)', 'int8 (QOperator, from the model)', or '' for a float
    graph. Weight-only graphs (DequantizeLinear on weights, activations left in float) are
    int8 weights, not int8 compute: '' as well, since the engines compute them in float."""
    ops = Counter(node.op_type for node in graph.node)
    if any(ops[name] for name in INTEGER_OPS):
        return "int8 (QOperator, from the model)"
    if ops["QuantizeLinear"] and ops["DequantizeLinear"]:
        return "int8 (QDQ, from the model)"
    return ""


def base_precision(described: str) -> str:
    """'int8 (QDQ, from the model)' -> 'int8'."""
    return described.split(" ", 1)[0] if described else ""
