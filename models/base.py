"""What a benchmarkable model is: a torch module or an ONNX file, plus how to make its inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

_DTYPES = {
    name: np.dtype(name)
    for name in (
        "float32",
        "float16",
        "float64",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
}


@dataclass(frozen=True)
class InputSpec:
    """One model input; `shape` excludes the batch dimension, which sits at `batch_axis`
    (None: the input has no batch dimension, the same for every batch size). `value`, when
    given, is the input's data (the user's `--input`), used as it is for every call. `data`,
    when given, is the user's real data: samples along the batch axis (`--input images=x.npy`
    holding [N, 3, 640, 640]), from which each call's batch is cut (`ModelDef.make_inputs`)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int = 0  # integer inputs are drawn from [low, high)
    high: int = 2
    batch_axis: int | None = 0
    value: np.ndarray | None = field(default=None, compare=False, hash=False, repr=False)
    data: np.ndarray | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {self.dtype!r}")

    def shape_at(self, batch_size: int) -> tuple[int, ...]:
        """The full shape of a call at `batch_size`."""
        if self.batch_axis is None:
            return self.shape
        return (*self.shape[: self.batch_axis], batch_size, *self.shape[self.batch_axis :])

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        if self.value is not None:
            return np.array(self.value, copy=True)
        shape = self.shape_at(batch_size)
        kind = _DTYPES[self.dtype].kind
        if kind == "f":
            return rng.standard_normal(shape, dtype=np.float32).astype(self.dtype, copy=False)
        if kind == "b":
            return rng.integers(0, 2, shape).astype(np.bool_)
        return rng.integers(self.low, self.high, shape).astype(_DTYPES[self.dtype])


InputMaker = Callable[[int, int], dict[str, np.ndarray]]
#: What a set of inputs is for: timed runs, calibration of static quantization, or the accuracy
#: evaluation set. Models with real data keep the three pools apart (`ModelDef.input_pools`).
PURPOSES = ("timed", "calibration", "evaluation")


@dataclass
class ModelDef:
    """A model ready to benchmark.

    `module` is None for ONNX-file models; such models run only on ONNX-capable backends.
    `make_inputs(batch_size, seed, purpose)` returns numpy arrays keyed by input name; models
    with real data (tokenized sentences) override the random default with `input_maker`, and
    with `input_pools` keep calibration and evaluation data disjoint (random inputs differ by
    seed already).
    """

    name: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...] = ("output",)
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    task: str = "other"  # "classification" enables top-1 agreement checks
    seed: int = 0
    # For ORT's transformer optimizer: {"model_type": "bert", "num_heads": 12, "hidden_size": 768}
    transformer: dict[str, Any] | None = None
    input_maker: InputMaker | None = field(default=None, repr=False)
    input_pools: dict[str, InputMaker] = field(default_factory=dict, repr=False)
    # An ONNX file that arrives quantized: its precision from the graph ("int8 (QDQ, from the
    # model)"); it runs as it is. `reference_path`: the user's FP32 model to check it against.
    graph_precision: str = ""
    reference_path: Path | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def make_inputs(self, batch_size: int, seed: int, purpose: str = "timed") -> dict[str, np.ndarray]:
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}")
        maker = self.input_pools.get(purpose) or self.input_maker
        if maker is not None:
            return maker(batch_size, seed)
        rng = np.random.default_rng(seed)
        picked = self._data_samples(batch_size, seed, purpose)
        return {
            spec.name: spec.sample(batch_size, rng)
            if spec.data is None or spec.batch_axis is None
            else np.take(spec.data, picked, axis=spec.batch_axis)
            for spec in self.inputs
        }

    def _data_samples(self, batch_size: int, seed: int, purpose: str) -> np.ndarray:
        """Which of the user's data samples make up a batch, cycled through the purpose's pool:
        calibration takes the second half and evaluation the first, so int8 accuracy is
        checked out of sample (as minilm's sentence pools are); timed calls take them all."""
        sizes = [
            spec.data.shape[spec.batch_axis]
            for spec in self.inputs
            if spec.data is not None and spec.batch_axis is not None
        ]
        if not sizes:
            return np.zeros(0, dtype=np.int64)
        count = min(sizes)  # the inputs' data files hold one count (checked on resolution)
        pool = np.arange(count)
        if count >= 2 and purpose == "evaluation":
            pool = pool[: count // 2]
        elif count >= 2 and purpose == "calibration":
            pool = pool[count // 2 :]
        start = seed * batch_size
        return pool[(start + np.arange(batch_size)) % len(pool)]

    def torch_inputs(self, batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
        import torch

        arrays = self.make_inputs(batch_size, seed)
        return tuple(torch.from_numpy(arrays[name]) for name in self.input_names)


def count_flops(model: ModelDef) -> float | None:
    """FLOPs for one sample: torch's flop counter (matmul, conv, attention) plus recurrent layers.

    torch's counter does not see inside fused RNN kernels, so LSTM/GRU cells are counted
    analytically: 2 * gates * hidden * (input + hidden) per layer, direction and timestep.
    """
    if model.module is None:
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    recurrent = 0

    def rnn_hook(module: torch.nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        nonlocal recurrent
        gates = {torch.nn.LSTM: 4, torch.nn.GRU: 3}.get(type(module), 1)
        x = args[0]
        steps = x.shape[1] if getattr(module, "batch_first", False) else x.shape[0]
        hidden = int(module.hidden_size)  # type: ignore[arg-type]
        directions = 2 if module.bidirectional else 1
        size_in = int(module.input_size)  # type: ignore[arg-type]
        for layer in range(int(module.num_layers)):  # type: ignore[arg-type]
            layer_in = size_in if layer == 0 else hidden * directions
            recurrent += 2 * gates * hidden * (layer_in + hidden) * directions * steps

    handles = [
        m.register_forward_hook(rnn_hook) for m in model.module.modules() if isinstance(m, torch.nn.RNNBase)
    ]
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            model.module(*model.torch_inputs(1, model.seed))
    finally:
        for handle in handles:
            handle.remove()
    total = counter.get_total_flops() + recurrent
    return float(total) if total else None
