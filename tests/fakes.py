"""Fake backends and a numpy-only model: exercise the runner without any engine.

Workers import these by "module:Class" name, the same way as a plugin's entry point.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from inferbench.backends.base import Backend, PrepareInfo
from inferbench.errors import UnsupportedError
from inferbench.models import InputSpec, ModelDef


def numpy_model(seed: int = 0) -> ModelDef:
    """A model with no torch module: the fake backends compute y = 2x in numpy."""
    return ModelDef(name="numpy-model", inputs=(InputSpec("x", (4,)),), seed=seed)


class FakeBackend(Backend):
    name = "fake"
    precisions = frozenset({"fp32", "bf16"})

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        self.calls = 0
        return PrepareInfo(engine_precision=precision, details={"fake": True})

    def run(self, inputs: Any) -> Any:
        self.calls += 1
        return [inputs["x"] * 2]


class SleepBackend(FakeBackend):
    """1 ms per call spent off the GIL, like a native engine: concurrent streams overlap."""

    name = "sleep"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        info = super().prepare(model, precision, batch_size)
        # Where the worker was allowed to run: the runner's pinning shows up here.
        info.details["affinity"] = sorted(os.sched_getaffinity(0))
        return info

    def run(self, inputs: Any) -> Any:
        time.sleep(0.001)
        return [inputs["x"] * 2]


class CrashBackend(FakeBackend):
    """Dies the way a buggy native engine does: a segfault, no Python exception."""

    name = "crash"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable")


class PidBackend(FakeBackend):
    """Says which process measured it; segfaults at batch 2 and hangs at batch 3, so one
    shared worker's group holds a crash, a hang and healthy cells."""

    name = "pid"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        if batch_size == 2:
            os.kill(os.getpid(), signal.SIGSEGV)
        if batch_size == 3:
            time.sleep(3600)
        from inferbench.sweep import forked

        info = super().prepare(model, precision, batch_size)
        info.details["pid"] = os.getpid()
        info.details["forked"] = forked.enabled()  # inherited from a forking parent only
        return info


class HangBackend(FakeBackend):
    name = "hang"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        time.sleep(3600)
        raise AssertionError("unreachable")


class RaiseBackend(FakeBackend):
    name = "raise"

    def run(self, inputs: Any) -> Any:
        raise RuntimeError("engine exploded\nsecond line of detail")


class RefuseBackend(FakeBackend):
    """Finds out only at prepare time that it cannot run the model."""

    name = "refuse"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        raise UnsupportedError("refuse cannot run numpy-model: no kernels for it")


class MissingEngineBackend(FakeBackend):
    name = "missing"
    requires = ("inferbench_no_such_engine",)
    extra = "no-such-engine"


def torch_linear_model(seed: int = 0) -> ModelDef:
    """A torch model, so the worker computes an FP32 eager reference for accuracy checks."""
    import torch

    torch.manual_seed(seed)
    return ModelDef(name="torch-linear", module=torch.nn.Linear(4, 3).eval(), inputs=(InputSpec("x", (4,)),))


def sized_model(seed: int = 0, seq_len: int = 4) -> ModelDef:
    """A factory that takes the shape axis's `seq_len`: a Linear over `seq_len` features."""
    import torch

    torch.manual_seed(seed)
    module = torch.nn.Linear(seq_len, 3).eval()
    return ModelDef(name="sized", module=module, inputs=(InputSpec("x", (seq_len,)),))


class WrongAnswerBackend(FakeBackend):
    """Fast and wrong: returns zeros of the reference's shape."""

    name = "wrong"

    def run(self, inputs: Any) -> Any:
        import numpy as np

        return [np.zeros((inputs["x"].shape[0], 3), dtype=np.float32)]


# Broken model factories: the sweep must refuse each before its first cell.
NOT_A_FACTORY = 42


def raising_factory() -> ModelDef:
    raise RuntimeError("weights file missing")


def wrong_return_factory() -> str:
    return "not a model"


def unbatched_factory() -> tuple[Any, dict[str, Any]]:
    """A module whose output drops the batch dimension (it sums over it)."""
    import torch

    class SumOverBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=0)

    return SumOverBatch(), {"x": ((4,), "float32")}


def hanging_factory() -> ModelDef:
    time.sleep(3600)
    raise AssertionError("unreachable")


class LinearBackend(FakeBackend):
    """Computes `torch_linear_model` in numpy: accurate, the same in every mode."""

    name = "linear"

    def prepare(self, model: ModelDef, precision: str, batch_size: int) -> PrepareInfo:
        self.weight = model.module.weight.detach().numpy().T.copy()
        self.bias = model.module.bias.detach().numpy().copy()
        return super().prepare(model, precision, batch_size)

    def run(self, inputs: Any) -> Any:
        return [inputs["x"] @ self.weight + self.bias]


class ModeDependentBackend(LinearBackend):
    """Like LinearBackend, but off by about 1% in throughput mode: another engine there."""

    name = "mode-dependent"

    def run(self, inputs: Any) -> Any:
        out = super().run(inputs)[0]
        return [out * 1.01 if self.mode == "throughput" else out]


class TorchLikeBackend(FakeBackend):
    """A fake whose compute the capability model judges as torch's (bf16 is emulated where
    torch's would be): the runner's precision check without a real engine."""

    name = "torch-like"
    cpu_engine = "torch"
