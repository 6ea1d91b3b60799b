from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferbench.config import MeasureConfig, SweepConfig

FAST_MEASURE = MeasureConfig(
    warmup_iterations=1,
    warmup_seconds=0.0,
    min_iterations=5,
    min_seconds=0.0,
    max_seconds=2.0,
    input_sets=2,
    timeout_seconds=60.0,
    tail_samples=50,
    precision=0.0,  # the tail rule: a fixed sample count (the precision rule has its own tests)
    bootstrap_resamples=200,
)
NUMPY_MODEL = "tests.fakes:numpy_model"


def fake_sweep(backends: list[str], **kwargs: object) -> SweepConfig:
    defaults: dict[str, object] = {
        "models": (NUMPY_MODEL,),
        "backends": tuple(backends),
        "batch_sizes": (1, 2),
        "threads": (1,),
        "measure": FAST_MEASURE,
        "name": "fake",
    }
    defaults.update(kwargs)
    return SweepConfig(**defaults)  # type: ignore[arg-type]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "results" / "run-1"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One throw-away PostgreSQL server for the session (skipped, with the reason, if none)."""
    from tests.pg import postgres_server, server_binaries

    bindir, why = server_binaries()
    if bindir is None:
        pytest.skip(why)
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same history tests against the embedded SQLite file and a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    from tests.pg import create_database

    base = request.getfixturevalue("pg_server")
    return create_database(base, f"t_{uuid.uuid4().hex[:12]}")
