"""Third-party backends: an entry point in the `inferbench.backends` group is all it takes."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from inferbench.backends import BUILTIN_BACKENDS, backend_names, load_backend
from inferbench.backends.base import Backend
from inferbench.errors import UserError
from inferbench.sweep.runner import run_sweep
from tests.conftest import fake_sweep


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution on sys.path whose metadata registers a backend, as pip would install it."""
    site = tmp_path / "site"
    dist = site / "acme_engine-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-engine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[inferbench.backends]\nacme = acme_engine:AcmeBackend\n")
    (site / "acme_engine.py").write_text(
        "from tests.fakes import FakeBackend\n\nclass AcmeBackend(FakeBackend):\n    name = 'acme'\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # for the worker processes
    importlib.invalidate_caches()
    return "acme"


def test_entry_point_backend_is_listed_and_loaded(installed_plugin: str) -> None:
    assert installed_plugin in backend_names()
    cls = load_backend(installed_plugin)
    assert issubclass(cls, Backend) and cls.name == "acme"
    assert "acme_engine" not in BUILTIN_BACKENDS  # the core was not edited


@pytest.mark.slow
def test_entry_point_backend_runs_in_a_sweep(installed_plugin: str, tmp_path: Path) -> None:
    records = run_sweep(
        fake_sweep([installed_plugin], batch_sizes=(1,)),
        tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    assert [r["status"] for r in records] == ["ok"]


def test_unknown_and_broken_backends_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown backend 'nope'"):
        load_backend("nope")
    with pytest.raises(UserError, match="cannot be loaded"):
        load_backend("tests.fakes:NoSuchClass")
    with pytest.raises(UserError, match="not a Backend subclass"):
        load_backend("tests.fakes:numpy_model")


def test_importing_bench_imports_no_engine() -> None:
    import subprocess

    code = (
        "import inferbench, inferbench.cli, inferbench.sweep.runner, inferbench.backends, inferbench.models; "
        "import sys; "
        "engines = ('onnxruntime', 'openvino', 'tensorrt', 'transformers'); "
        "loaded = [m for m in engines if m in sys.modules]; "
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
