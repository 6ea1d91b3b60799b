"""Static INT8 quantization of an ONNX file into explicit QuantizeLinear/DequantizeLinear pairs.

ONNX Runtime's quantization tool does the work, calibrated (MinMax) on the model's own inputs.
ONNX Runtime's CPU provider runs the result directly; TensorRT, whose networks are strongly
typed, takes its INT8 from exactly these Q/DQ nodes. The two differ in two settings. TensorRT
accepts only symmetric int8 activations (zero point 0), ONNX Runtime prefers asymmetric uint8.
And TensorRT's ONNX parser takes DequantizeLinear only on int8/fp8/int4(/fp4) inputs (onnx-tensorrt
docs/operators.md), so Conv/Gemm biases must stay float: ONNX Runtime's quantizer would otherwise
store each as an int32 initializer feeding a DequantizeLinear (its `QuantizeBias`, default on),
and the parser rejects the graph (onnx/onnx-tensorrt#850, microsoft/onnxruntime#17738).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from inferbench.store.artifacts import arrays_digest, file_digest, obtain


@dataclass(frozen=True)
class QdqSettings:
    """How the quantizer is configured; `tag` names the artifact and keys its cache entry."""

    tag: str = "static-qdq"
    activation_type: str = "uint8"  # "int8": symmetric activations, the only kind TensorRT takes
    # Op types whose inputs get Q/DQ pairs; empty = every op type the quantizer knows.
    op_types: tuple[str, ...] = ()
    # False: biases stay float initializers (no int32 DequantizeLinear), as TensorRT needs.
    quantize_bias: bool = True


#: ONNX Runtime CPU: per-channel int8 weights, asymmetric uint8 activations.
ORT_CPU = QdqSettings()
#: TensorRT (and ORT's TensorRT provider): symmetric int8 activations, Q/DQ on the compute ops,
#: where TensorRT fuses them into int8 kernels; float biases, the only kind its parser accepts.
TENSORRT = QdqSettings(
    tag="static-qdq-s8",
    activation_type="int8",
    op_types=("Conv", "MatMul", "Gemm"),
    quantize_bias=False,
)


#: Per-channel Q/DQ needs DequantizeLinear's `axis`, which opset 13 introduced: the quantizer
#: writes it into an older graph anyway, and ONNX Runtime then refuses the model
#: ("Unrecognized attribute: axis"; PP-OCRv4's detector, opset 11, did so).
PER_CHANNEL_OPSET = 13


def _with_opset(path: Path, folder: Path, opset: int) -> Path:
    """`path`, or a copy converted up to `opset` in `folder` when its default domain is older."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return path
    upgraded = folder / "opset-upgraded.onnx"
    onnx.save(version_converter.convert_version(model, opset), str(upgraded))
    return upgraded


def static_qdq(
    path: Path,
    folder: Path,
    batches: list[dict[str, np.ndarray]],
    calibration_samples: int,
    settings: QdqSettings = ORT_CPU,
) -> tuple[Path, bool]:
    """Statically quantized copy of `path`, published under `folder` and keyed by the source's
    bytes, ONNX Runtime's version, the settings and the calibration data; returns (path,
    from_cache)."""
    import onnxruntime
    from onnxruntime import quantization as q

    parts = {
        "artifact": "static-qdq",
        "source": file_digest(path),
        "onnxruntime": onnxruntime.__version__,
        "settings": asdict(settings),
        "per_channel": True,
        "min_opset": PER_CHANNEL_OPSET,
        "calibration": arrays_digest(batches),
        "calibration_samples": calibration_samples,
    }
    symmetric = settings.activation_type == "int8"
    filename = f"model.int8-{settings.tag}.onnx"

    def quantize(tmp: Path) -> None:
        prepped = tmp / "preprocessed.onnx"
        q.quant_pre_process(
            str(_with_opset(path, tmp, PER_CHANNEL_OPSET)), str(prepped), skip_symbolic_shape=True
        )
        extra: dict[str, bool] = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
        if not settings.quantize_bias:
            extra["QuantizeBias"] = False
        q.quantize_static(
            str(prepped),
            str(tmp / filename),
            CalibrationReader(batches),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types) or None,
            per_channel=True,
            activation_type=q.QuantType.QInt8 if symmetric else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            extra_options=extra or None,
        )
        prepped.unlink()
        (tmp / "opset-upgraded.onnx").unlink(missing_ok=True)

    out, cached = obtain(folder, f"int8-{settings.tag}", parts, quantize)
    return out / filename, cached


class CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of input dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)
