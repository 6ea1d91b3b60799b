"""The nightly check fails closed: a failed history append, a newest point that is not
tonight's, and a cell that failed tonight each make it fail instead of judging yesterday."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inferbench.cli import main
from inferbench.history import db
from inferbench.history.store import load_points
from tests.history_runs import BASE_TIME, CNN, MLP, env, make_run

REPO = Path(__file__).resolve().parents[1]
TONIGHT = BASE_TIME + dt.timedelta(days=30)


def _nights(results: Path, count: int, profile: str = "nightly") -> list[Path]:
    """`count` flat nights of both cells, one day apart."""
    return [
        make_run(
            results,
            f"night-{night:03d}",
            {MLP: 2.0 * (1 + 0.002 * (-1) ** night), CNN: 5.0},
            environment=env(when=BASE_TIME + dt.timedelta(days=night)),
            profile=profile,
        )
        for night in range(count)
    ]


def _history(tmp_path: Path, nights: int = 10) -> str:
    url = str(tmp_path / "history.sqlite")
    paths = [str(p) for p in _nights(tmp_path / "results", nights)]
    assert main(["history", "import", "--history", url, *paths]) == 0
    return url


def _check(url: str, *extra: str) -> int:
    return main(["history", "--history", url, "--check", "--no-html", *extra])


def test_check_sees_a_newest_point_that_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _history(tmp_path)
    tonight = make_run(
        tmp_path / "results",
        "night-999",
        {MLP: 2.0, CNN: 5.0},
        environment=env(when=TONIGHT),
        statuses={MLP: "error"},
    )
    assert main(["history", "import", "--history", url, str(tonight)]) == 0
    capsys.readouterr()
    # The mlp series holds ok points only: without the status check it would judge night 9.
    assert _check(url) == 1
    err = capsys.readouterr().err
    assert "BROKEN" in err and "mlp onnxruntime fp32 b1" in err and "night-999" in err and "error" in err
    assert "tiny-cnn" not in err.split("BROKEN", 1)[1]  # the verdict's lines, after the table
    assert _check(url, "--model", "tiny-cnn") == 0
    assert _check(url, "--metric", "throughput") == 1  # the status check is the same for every metric


def test_a_cell_failing_from_its_first_night_is_not_a_breakage(tmp_path: Path) -> None:
    url = str(tmp_path / "history.sqlite")
    for night in range(3):
        run = make_run(
            tmp_path / "results",
            f"night-{night}",
            {MLP: 2.0, CNN: 5.0},
            environment=env(when=BASE_TIME + dt.timedelta(days=night)),
            statuses={CNN: "unsupported"},
        )
        assert main(["history", "import", "--history", url, str(run)]) == 0
    assert _check(url) == 0  # compare's rule: still unsupported is not broken


def test_expect_run_fails_when_tonights_run_is_not_the_newest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _history(tmp_path)
    results = tmp_path / "results"
    tonight = make_run(results, "tonight", {MLP: 2.0, CNN: 5.0}, environment=env(when=TONIGHT))
    capsys.readouterr()
    # Its append was lost: the newest points are night 9's, and the check says so.
    assert _check(url, "--expect-run", "tonight") == 2
    assert "run 'tonight' has no recorded cell" in capsys.readouterr().err
    assert main(["history", "append", "--history", url, str(tonight)]) == 0
    assert _check(url, "--expect-run", "tonight") == 0
    # A later run is the newest: the check would judge its points, not tonight's.
    an_hour_on = env(when=TONIGHT + dt.timedelta(hours=1))
    later = make_run(results, "later", {MLP: 2.0, CNN: 5.0}, environment=an_hour_on)
    assert main(["history", "append", "--history", url, str(later)]) == 0
    capsys.readouterr()
    assert _check(url, "--expect-run", "tonight") == 2
    assert "'later'" in capsys.readouterr().err and _check(url, "--expect-run", "later") == 0
    # A cell the previous run measured and tonight's lacks is broken, as in compare.
    dropped = make_run(results, "dropped", {MLP: 2.0}, environment=env(when=TONIGHT + dt.timedelta(days=1)))
    assert main(["history", "append", "--history", url, str(dropped)]) == 0
    capsys.readouterr()
    assert _check(url, "--expect-run", "dropped") == 1
    assert "tiny-cnn openvino int8 b8 t2" in capsys.readouterr().err
    assert main(["history", "--history", url, "--expect-run", "dropped"]) == 2  # needs --check


def test_history_append_fails_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "results", "run-1", {MLP: 2.0})
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    for broken, code in ((str(blocker / "history.sqlite"), 4), ("postgresql://nobody@127.0.0.1:1/none", 2)):
        assert main(["history", "append", "--history", broken, str(run)]) == code
        assert "history" in capsys.readouterr().err
    assert main(["history", "append", "--history", str(tmp_path / "h.sqlite"), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    url = str(tmp_path / "h.sqlite")
    assert main(["history", "append", "--history", url, str(run)]) == 0
    assert main(["history", "--history", url, "append", str(run)]) == 0  # again: nothing added
    engine = db.connect(url)
    try:
        points = load_points(engine)
    finally:
        engine.dispose()
    assert len(points) == 1 and points["git_commit"].iloc[0] is not None  # a run's append, not an import


# The nightly recipe with a stand-in for `run` that writes tonight's folder (and, like the real
# one, appends it with only a warning on failure unless --no-history); every other command real.
FAKE_PY = """
import datetime as dt, os, sys
from pathlib import Path
args = sys.argv[1:]
assert args[:2] == ["-m", "inferbench"], args
args = args[2:]
if args[0] == "run":
    from tests.history_runs import CNN, MLP, env, make_run
    run_id = args[args.index("--run-id") + 1] if "--run-id" in args else "nightly-run"
    profile = args[args.index("--profile") + 1]
    when = dt.datetime.fromisoformat(os.environ["FAKE_RUN_TIME"])
    cells = {MLP: 2.0, CNN: 5.0}
    run_dir = make_run(Path("results"), run_id, cells, environment=env(when=when), profile=profile)
    if "--no-history" not in args:
        from inferbench.history.commands import record_run, resolve_url
        record_run(run_dir, resolve_url(None))
    sys.exit(0)
from inferbench.cli import main
sys.exit(main(args))
"""


def _make_nightly(work: Path, history: Path) -> subprocess.CompletedProcess[str]:
    fake = work / "fake-python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_PY}")
    fake.chmod(0o755)
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "INFERBENCH_HISTORY": str(history),
        "FAKE_RUN_TIME": TONIGHT.isoformat(),
    }
    return subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "-o", "setup", "nightly", "HW=cpu", f"PY={fake}"],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_nightly_recipe_fails_when_the_append_fails(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    paths = [str(p) for p in _nights(tmp_path / "old", 10, profile="gate-cpu")]
    assert main(["history", "import", "--history", str(history), *paths]) == 0
    refused = tmp_path / "refused.sqlite"
    shutil.copy(history, refused)
    with sqlite3.connect(refused) as conn:  # readable, but every new row is refused
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON results BEGIN SELECT RAISE(ABORT, 'quota exceeded'); END"
        )
    conn.close()
    (tmp_path / "a").mkdir()
    failed = _make_nightly(tmp_path / "a", refused)
    assert failed.returncode != 0, failed.stderr
    assert "history not recorded" in failed.stderr and "quota exceeded" in failed.stderr

    (tmp_path / "b").mkdir()
    passed = _make_nightly(tmp_path / "b", history)
    assert passed.returncode == 0, passed.stderr
    engine = db.connect(str(history))
    try:
        newest = load_points(engine).iloc[-1]
    finally:
        engine.dispose()
    assert str(newest["run_id"]).startswith("nightly-") and newest["profile"] == "gate-cpu"
