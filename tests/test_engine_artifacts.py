"""Real engines on tiny models: no stale artifact after an edit, no torn artifact under two
concurrent sweeps, and the share of compute that really ran in bf16/int8."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from inferbench.backends import load_backend
from inferbench.backends.base import Backend
from inferbench.machine.capability import this_cpu
from inferbench.models import InputSpec, ModelDef, ModelRef, build_model, resolve_model

pytestmark = pytest.mark.engine

USER_NET = """
import torch

class UserNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(y) * 2

def build(seed=0):
    torch.manual_seed(seed)
    net = UserNet().eval()
    with torch.no_grad():
        net.fc.weight.mul_(SCALE)
    return net, {"x": ((3, 8, 8), "float32")}
"""


def _backend(name: str, cache_dir: Path) -> Backend:
    cls = load_backend(name)
    if not cls.availability().ok:
        pytest.skip(cls.availability().reason)
    return cls(threads=1, cache_dir=cache_dir)


def _user_model(folder: Path, source: str) -> ModelDef:
    (folder / "usernet_edit.py").write_text(textwrap.dedent(source))
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    sys.modules.pop("usernet_edit", None)
    return build_model(ModelRef("usernet_edit:build", "factory"), seed=0)


def _eager(model: ModelDef, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    assert model.module is not None
    with torch.inference_mode():
        return model.module(torch.from_numpy(inputs["x"])).numpy()


CELLS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]


def test_edited_model_never_meets_its_old_artifacts(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    versions = {
        "original": USER_NET.replace("SCALE", "1.0"),
        "weights": USER_NET.replace("SCALE", "3.0"),
        # Identical outputs from a different graph: x * 2 -> x + x.
        "graph": USER_NET.replace("SCALE", "3.0").replace("self.fc(y) * 2", "self.fc(y) + self.fc(y)"),
    }
    seen: dict[tuple[str, str], set[Path]] = {cell: set() for cell in CELLS}
    for version, source in versions.items():
        model = _user_model(tmp_path, source)
        inputs = model.make_inputs(2, 7)
        for name, precision in CELLS:
            backend = _backend(name, cache)
            info = backend.prepare(model, precision, 2)
            assert info.artifact is not None
            assert info.artifact_cached is False, (version, name, precision)  # built for this model
            assert info.artifact not in seen[(name, precision)]
            seen[(name, precision)].add(info.artifact)
            if precision == "fp32":  # the engine runs the edited model, not the old one
                out = backend.to_numpy(backend.run(backend.to_native(inputs)))[0]
                np.testing.assert_allclose(out, _eager(model, inputs), atol=1e-4)
            backend.close()
    # Unchanged model: every artifact from the cache.
    model = _user_model(tmp_path, versions["graph"])
    for name, precision in CELLS:
        assert _backend(name, cache).prepare(model, precision, 2).artifact_cached is True


CONCURRENT_SWEEP = """
import json, sys, time
from pathlib import Path
from inferbench.backends import load_backend
from inferbench.models import build_model, resolve_model

cache, start = Path(sys.argv[1]), float(sys.argv[2])
model = build_model(resolve_model("tiny-cnn"))
time.sleep(max(0.0, start - time.time()))
found = {}
for name, precision in [("onnxruntime", "int8"), ("openvino", "int8"), ("openvino", "fp32")]:
    info = load_backend(name)(1, cache).prepare(model, precision, 2)
    found[f"{name}/{precision}"] = [str(info.artifact), info.artifact_cached]
print(json.dumps(found))
"""


@pytest.mark.slow
def test_two_concurrent_sweeps_share_one_cache(tmp_path: Path) -> None:
    for name in ("onnxruntime", "openvino"):
        _backend(name, tmp_path)  # skips when an engine is missing
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SWEEP, str(tmp_path / "cache"), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for key in results[0]:
        (path_a, cached_a), (path_b, cached_b) = results[0][key], results[1][key]
        assert path_a == path_b, key  # one artifact, the same for both
        if key.endswith("int8"):
            assert sorted([cached_a, cached_b]) == [False, True], key  # built once, then waited for
        else:  # the FP32 IR was built on the way to the int8 one
            assert cached_a and cached_b
    # ONNX export, QDQ model, OpenVINO IR, NNCF IR: four artifacts, each whole, no leftovers.
    assert len(list((tmp_path / "cache").rglob("MANIFEST.json"))) == 4
    assert not list((tmp_path / "cache").rglob(".*.tmp-*"))


def _lowp_share(backend: Backend, model: ModelDef, precision: str, batch: int) -> float | None:
    """As the worker does it: prepare, the first inference, then what ran (prepare's reading or
    one observed run)."""
    info = backend.prepare(model, precision, batch)
    native = backend.to_native(model.make_inputs(batch, 3))
    backend.run(native)
    return backend.lowp(info, native, precision)[0]


def _tiny_lstm() -> ModelDef:
    import torch

    from inferbench.models.small import LSTMClassifier

    torch.manual_seed(0)
    return ModelDef(
        name="tiny-lstm",
        module=LSTMClassifier(50, 16, 32, 4).eval(),
        inputs=(InputSpec("tokens", (12,), dtype="int64", high=50),),
        output_names=("logits",),
        task="classification",
    )


LOWP = [
    (backend, precision)
    for backend in ("torch", "torchscript", "torch-compile", "onnxruntime", "openvino")
    for precision in ("bf16", "int8")
]


@pytest.mark.parametrize(("backend_name", "precision"), LOWP)
def test_lowp_share_is_read_from_each_cpu_engine(backend_name: str, precision: str, tmp_path: Path) -> None:
    """On tiny models whose every compute op can run in bf16/int8, the engines must say so
    (share 1). OpenVINO fuses mlp into one snippets block: it gets tiny-cnn's convolutions."""

    backend = _backend(backend_name, tmp_path)
    ref = resolve_model("tiny-cnn" if backend_name == "openvino" else "mlp")
    if backend.unsupported_reason(ref, precision):
        pytest.skip(f"{backend_name} has no {precision}")
    if backend_name == "torch-compile" and precision == "int8":
        pytest.importorskip("torchao")
    _skip_unless_native(backend, precision)
    share = _lowp_share(backend, build_model(ref), precision, 2)
    assert share == pytest.approx(1.0)


def _skip_unless_native(backend: Backend, precision: str) -> None:
    """The capability model says whether this CPU computes the precision natively for this
    engine; where it does not, the sweep refuses the cell and there is no share to read."""
    found = backend.cpu_support(this_cpu(), precision)
    if found is not None and not found.runs:
        pytest.skip(f"{backend.name} {precision} is {found.level} on this CPU: {found.why}")


@pytest.mark.parametrize(
    ("backend_name", "precision"),
    [("torch", "bf16"), ("torch-compile", "bf16"), ("openvino", "int8")],
)
def test_lowp_share_exposes_an_lstm_left_in_fp32(backend_name: str, precision: str, tmp_path: Path) -> None:
    """Autocast keeps LSTMs in fp32 and OpenVINO's int8 keeps its RNN sequences in f32: a
    bf16/int8 label would hide that; the share shows it."""
    backend = _backend(backend_name, tmp_path)
    _skip_unless_native(backend, precision)
    share = _lowp_share(backend, _tiny_lstm(), precision, 1)
    assert share is not None and 0 <= share < 0.5


def test_torchscript_transformer_share_is_observed_after_the_first_run(tmp_path: Path) -> None:
    """TorchScript's profiling (first) run rejects a Python dispatch mode: the share is read on a
    later run, as the worker does, and the traced encoder runs wholly in bf16."""
    from tests.test_engines import _tiny_bert

    share = _lowp_share(_backend("torchscript", tmp_path), _tiny_bert(), "bf16", 1)
    assert share == pytest.approx(1.0)
