"""Small ONNX files with the signatures users' models have (issue 26): symbolic spatial dims,
every dim symbolic, a batch in the second dim of a state input, an int64 scalar the graph
checks, a fixed batch of 1, a float16 input. Built with onnx.helper, no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17


def _save(graph: object, path: Path, opset: int = OPSET) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_graph(name: str, input_dims: list[object]) -> object:
    """input [*, 3, *, *] -> Conv 3->4 (3x3, same) -> GlobalAveragePool -> Flatten -> [*, 4]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", [name, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["out"]),
    ]
    batch = input_dims[0]
    return helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4])],
        [weight, bias],
    )


def detector(path: Path) -> Path:
    """YOLO-style: images [batch, 3, height, width]."""
    return _save(_conv_graph("images", ["batch", 3, "height", "width"]), path)


def all_symbolic(path: Path) -> Path:
    """OCR-style: x [N, C, H, W], every dim symbolic."""
    return _save(_conv_graph("x", ["N", "C", "H", "W"]), path)


def fixed_batch(path: Path, opset: int = OPSET) -> Path:
    """images [1, 3, 16, 16]: the batch is fixed to 1."""
    return _save(_conv_graph("images", [1, 3, 16, 16]), path, opset)


def streaming(path: Path) -> Path:
    """VAD-style: input [batch, 8]; state [2, batch, 8] (the batch in the second dim); sr, an
    int64 scalar the graph checks: with sr != 16000 the Reshape to [-1, 7] fails."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(16000, dtype=np.int64), "rate"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
        numpy_helper.from_array(np.array([7], dtype=np.int64), "seven"),
    ]
    nodes = [
        helper.make_node("Equal", ["sr", "rate"], ["ok"]),
        helper.make_node("Cast", ["ok"], ["ok_i"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["ok_i", "zero_axis"], ["ok_1"]),
        helper.make_node("Add", ["seven", "ok_1"], ["width"]),  # 8 when sr == 16000, else 7
        helper.make_node("Concat", ["minus_one", "width"], ["shape"], axis=0),
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["out"]),
        helper.make_node("Add", ["state", "state"], ["state_out"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "zero_axis"))
    graph = helper.make_graph(
        nodes,
        "vad",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "batch", 8]),
        ],
        inits,
    )
    return _save(graph, path)


def half_input(path: Path) -> Path:
    """x [batch, 8] in float16, cast to float32 before a MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x32", "w"], ["out"]),
        ],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [weight],
    )
    return _save(graph, path)


def half_conv(path: Path) -> Path:
    """An fp16 export: images [batch, 3, 16, 16] and the conv's weights in float16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"], pads=[1, 1, 1, 1])],
        "half_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["batch", 4, 16, 16])],
        [weight],
    )
    return _save(graph, path)


def tokens(path: Path) -> Path:
    """NLP-style: input_ids and attention_mask [batch, sequence], int64: embedding, masked mean
    over the sequence, a projection. The sequence length is the user's to choose."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "embedding"),
        numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["out"]),
    ]
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    return _save(graph, path)


def quantized(fp32: Path, path: Path, shape: tuple[int, ...] = (1, 3, 16, 16)) -> Path:
    """`fp32` quantized to a QDQ graph by ONNX Runtime's static quantizer, as a user's model
    arrives from quantization-aware training or another tool."""
    import onnx
    from onnxruntime import quantization as q

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    rng = np.random.default_rng(3)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    q.quantize_static(str(fp32), str(path), Reader(), quant_format=q.QuantFormat.QDQ)
    return path
