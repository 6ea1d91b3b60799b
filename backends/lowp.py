"""What really ran in bf16/int8: the share of compute read back from the engine.

A bf16 or int8 row means little if only one layer ran in that precision. Each engine is asked
what it executed:

- OpenVINO: the compiled model's runtime graph, the runtime precision of each compute layer
  (convolutions, fully connected, matmuls, RNNs, attention; snippets Subgraphs only where
  nothing else computes); share of layers.
- ONNX Runtime: the graph after ONNX Runtime's own optimizations (what the session executes),
  integer compute ops (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, ...) against
  all compute ops (Conv, MatMul, Gemm and their fused forms); share of ops. A QDQ graph that
  ORT runs as DequantizeLinear -> fp32 Conv -> QuantizeLinear counts as fp32 here.
- torch eager and TorchScript: every compute operator dispatched during one inference
  (after autocast has chosen dtypes), weighted by its FLOPs, classified by its operand dtype
  (bf16) or by being a quantized kernel (int8).
- PT2E (torch-compile int8): compute nodes of the converted graph that inductor lowers, int8
  when their weight comes through a dequantize node; share of nodes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

#: OpenVINO runtime layer types whose precision tells what the arithmetic ran in.
OV_COMPUTE_LAYERS = frozenset(
    {"Convolution", "FullyConnected", "MatMul", "RNNSeq", "RNNCell", "MHA", "ScaledAttn", "Deconvolution"}
)
#: Snippets-fused blocks: a whole small MLP can become one, but so can an element-wise chain,
#: so they count only in a graph with no other compute layer.
OV_SUBGRAPH = "Subgraph"
OV_LOW = {"bf16": frozenset({"bf16"}), "int8": frozenset({"i8", "u8"})}

#: ONNX Runtime ops that compute in integers / in floating point.
ORT_INT_COMPUTE = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QGemm",
        "QAttention",
        "DynamicQuantizeLSTM",
        "QLinearConvTranspose",
    }
)
ORT_FLOAT_COMPUTE = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "FusedConv",
        "FusedMatMul",
        "FusedGemm",
        "NchwcConv",
        "Attention",
        "MultiHeadAttention",
        "LSTM",
        "GRU",
        "RNN",
    }
)


def ratio(low: float, total: float) -> float | None:
    return low / total if total > 0 else None


def openvino_share(runtime_ops: list[tuple[str, str]], precision: str) -> tuple[float | None, dict[str, int]]:
    """Share of compute layers that ran in `precision`, from (layerType, runtimePrecision)
    pairs of the runtime graph; also the per-precision counts of compute layers."""
    counts: Counter[str] = Counter(p for kind, p in runtime_ops if kind in OV_COMPUTE_LAYERS)
    if not counts:
        counts = Counter(p for kind, p in runtime_ops if kind == OV_SUBGRAPH)
    low = sum(n for p, n in counts.items() if p in OV_LOW.get(precision, ()))
    return ratio(low, sum(counts.values())), dict(counts)


def ort_share(op_types: list[str]) -> tuple[float | None, dict[str, int]]:
    """Share of integer compute ops in an optimized ONNX Runtime graph's op types."""
    counts = Counter(op for op in op_types if op in ORT_INT_COMPUTE | ORT_FLOAT_COMPUTE)
    low = sum(n for op, n in counts.items() if op in ORT_INT_COMPUTE)
    return ratio(low, sum(counts.values())), dict(counts)


# -- torch ---------------------------------------------------------------------------------------

_MATMUL_K = {  # op name -> index of the argument whose last dim is the reduction size
    "mm": 0,
    "matmul": 0,
    "bmm": 0,
    "linear": 0,
    "addmm": 1,
    "baddbmm": 1,
    "addbmm": 1,
    "linear_dynamic": 0,
    "linear_dynamic_fp16": 0,
    "_linear_pointwise": 0,
}
_CONV = {
    "convolution",
    "_convolution",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose2d",
    "mkldnn_convolution",
}
_RNN = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "quantized_lstm": 4, "quantized_gru": 3}
_ATTENTION = {
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math",
}


def _shape(x: Any) -> tuple[int, ...] | None:
    shape = getattr(x, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def op_flops(name: str, args: tuple[Any, ...], out: Any) -> float | None:
    """FLOPs of one compute operator from its operand and result shapes; None if `name` is not a
    compute operator (element-wise work is not counted)."""
    out0 = out[0] if isinstance(out, list | tuple) and out else out
    out_shape = _shape(out0)
    if name in _MATMUL_K:
        k_shape = _shape(args[_MATMUL_K[name]]) if len(args) > _MATMUL_K[name] else None
        if out_shape is None or not k_shape:
            return 1.0
        return 2.0 * math.prod(out_shape) * k_shape[-1]
    if name in _CONV:
        weight = _shape(args[1]) if len(args) > 1 else None
        if out_shape is None or weight is None or len(weight) < 3:
            return 1.0
        return 2.0 * math.prod(out_shape) * math.prod(weight[1:])
    if name in _RNN:
        return _rnn_flops(name, args, out_shape)
    if name in _ATTENTION:
        q, k = (_shape(a) for a in args[:2])
        if not q or not k:
            return 1.0
        return 4.0 * math.prod(q[:-1]) * k[-2] * q[-1]
    return None


def _rnn_flops(name: str, args: tuple[Any, ...], out_shape: tuple[int, ...] | None) -> float:
    """2 * gates * hidden * (input + hidden) per layer, direction and step, from the input and
    output shapes (aten's lstm/gru argument layout: input, hx, params, biases, layers, ...,
    bidirectional, batch_first)."""
    inp = _shape(args[0])
    try:
        layers, bidirectional = int(args[4]), bool(args[7])
    except (IndexError, TypeError, ValueError):
        return 1.0
    if inp is None or out_shape is None or len(inp) != 3:
        return 1.0
    directions = 2 if bidirectional else 1
    hidden = out_shape[-1] // directions
    tokens = inp[0] * inp[1]
    total = 0.0
    for layer in range(layers):
        size_in = inp[-1] if layer == 0 else hidden * directions
        total += 2.0 * _RNN[name] * hidden * (size_in + hidden) * directions * tokens
    return total


def _is_quantized_op(namespace: str, name: str, args: tuple[Any, ...]) -> bool:
    if namespace == "quantized" or name.startswith("quantized_") or namespace == "onednn":
        return True
    return any(getattr(a, "is_quantized", False) for a in args)


def _float_dtype(args: tuple[Any, ...]) -> str | None:
    for a in args:
        dtype = getattr(a, "dtype", None)
        if dtype is not None and getattr(dtype, "is_floating_point", False):
            return str(dtype).removeprefix("torch.")
    return None


def torch_dispatch_share(call: Callable[[], Any], precision: str) -> tuple[float | None, dict[str, float]]:
    """Run `call()` once under a dispatch mode and return the FLOP share of compute operators
    that ran in `precision` (bf16: operands in bfloat16; int8: quantized kernels), with the
    FLOPs per precision (GFLOP)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    flops: dict[str, float] = {}

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            namespace = func.namespace
            name = func.overloadpacket.__name__
            work = op_flops(name, tuple(args), out)
            if work is not None:
                if _is_quantized_op(namespace, name, tuple(args)):
                    kind = "int8"
                else:
                    kind = _float_dtype(tuple(args)) or "other"
                flops[kind] = flops.get(kind, 0.0) + work
            return out

    with Counting():
        call()
    low = flops.get({"bf16": "bfloat16"}.get(precision, precision), 0.0)
    return ratio(low, sum(flops.values())), {k: v / 1e9 for k, v in flops.items()}


def pt2e_share(graph_module: Any) -> tuple[float | None, dict[str, float]]:
    """FLOP share of the compute nodes of a PT2E-converted graph whose operands come through a
    dequantize node: the ones inductor lowers to int8 oneDNN kernels (everything else, an LSTM
    the quantizer skips for example, stays fp32). FLOPs from the nodes' recorded shapes."""
    flops: dict[str, float] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        packet = getattr(node.target, "overloadpacket", None)
        name = getattr(packet, "__name__", "")
        args = tuple(_meta_value(a, graph_module) for a in node.args)
        work = op_flops(name, args, node.meta.get("val"))
        if work is None:
            continue
        quantized = any("dequantize" in str(getattr(a, "target", "")) for a in _flat(node.args))
        kind = "int8" if quantized else "fp32"
        flops[kind] = flops.get(kind, 0.0) + work
    return ratio(flops.get("int8", 0.0), sum(flops.values())), {k: v / 1e9 for k, v in flops.items()}


def _flat(args: Any) -> list[Any]:
    found = []
    for a in args:
        found.extend(_flat(a) if isinstance(a, list | tuple) else [a])
    return found


def _meta_value(arg: Any, graph_module: Any) -> Any:
    """A node's recorded value (a fake tensor with its shape); for the Q/DQ nodes PT2E inserts,
    which record none, the value they (de)quantize (same shape); for a constant, itself."""
    for _ in range(4):
        meta = getattr(arg, "meta", None)
        if not isinstance(meta, dict):
            return arg
        if getattr(arg, "op", "") == "get_attr":
            return getattr(graph_module, str(arg.target), arg)
        if "val" in meta:
            return meta["val"]
        if not getattr(arg, "args", None):
            return arg
        arg = arg.args[0]
    return arg
