"""The precision an ONNX file arrives in: a QDQ or QOperator graph from quantization-aware
training or another quantizer is int8 already; an fp16 (or bf16) export computes in that
type. Such a model runs as it is, at that precision only, and is never quantized or cast again
on top (which would measure a different model)."""

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


#: Operators whose weights say what type a graph computes in.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention"})
#: ONNX element types of half-width floats.
HALF_TYPES = {10: "fp16", 16: "bf16"}


def graph_precision(graph: Any) -> str:
    """'int8 (QDQ, from the model)', 'int8 (QOperator, from the model)', 'fp16 (from the
    model)', or '' for an fp32 graph. Weight-only graphs (DequantizeLinear on weights, or fp16
    weights Cast up, activations left in fp32) are compressed weights, not low-precision
    compute: '' as well, since the engines compute them in fp32."""
    ops = Counter(node.op_type for node in graph.node)
    if any(ops[name] for name in INTEGER_OPS):
        return "int8 (QOperator, from the model)"
    if ops["QuantizeLinear"] and ops["DequantizeLinear"]:
        return "int8 (QDQ, from the model)"
    half = _half_compute(graph)
    return f"{half} (from the model)" if half else ""


def _half_compute(graph: Any) -> str:
    """'fp16' or 'bf16' when most weights that Conv/MatMul/Gemm-like operators take directly
    are of that type (an fp16 export); '' otherwise."""
    weights = {init.name: (init.data_type, _count(init.dims)) for init in graph.initializer}
    elements: Counter[int] = Counter()
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS:
            for name in node.input:
                if name in weights:
                    kind, count = weights[name]
                    elements[kind] += count
    total = sum(elements.values())
    for kind, name in HALF_TYPES.items():
        if total and elements[kind] * 2 > total:
            return name
    return ""


def _count(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count


def base_precision(described: str) -> str:
    """'int8 (QDQ, from the model)' -> 'int8'."""
    return described.split(" ", 1)[0] if described else ""
