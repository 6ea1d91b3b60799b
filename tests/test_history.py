"""History database: append, import, query, migrations and `history --check`, each against the
embedded SQLite file and a real PostgreSQL server (skipped with the reason when none)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from inferbench.cli import main
from inferbench.config import Cell
from inferbench.errors import UserError
from inferbench.history import db
from inferbench.history.commands import record_run, resolve_url
from inferbench.history.fingerprint import NODE_VAR, Commit, machine_from_env, node_name, project_commit
from inferbench.history.store import Filters, append_run, load_points
from tests.history_runs import BASE_TIME, CNN, MLP, env, make_run

COMMIT = Commit("a" * 40, False)


def _nightly(results: Path, values: list[float], cell: Cell = MLP, cpu: str = "Test CPU 9000") -> list[Path]:
    """One run folder per night, p50 of `cell` from `values`; CNN stays flat at 5 ms."""
    runs = []
    for night, value in enumerate(values):
        when = BASE_TIME + dt.timedelta(days=night)
        runs.append(
            make_run(
                results,
                f"night-{night:03d}-{cpu[:4]}",
                {cell: value, CNN: 5.0 * (1 + 0.002 * (-1) ** night)},
                environment=env(cpu=cpu, when=when),
            )
        )
    return runs


def test_two_sweeps_round_trip(history_url: str, tmp_path: Path) -> None:
    first = make_run(tmp_path, "run-1", {MLP: 2.0, CNN: 5.0}, settings_hash="s1")
    second = make_run(tmp_path, "run-2", {MLP: 2.1, CNN: 5.2}, settings_hash="s1")
    engine = db.connect(history_url)
    try:
        assert append_run(engine, first, commit=COMMIT) == 2
        assert append_run(engine, second, commit=Commit("b" * 40, True)) == 2
        assert append_run(engine, second, commit=COMMIT) == 0  # appending again adds nothing
        points = load_points(engine)
        mlp_only = load_points(engine, Filters(models=("mlp",), batch_sizes=(1,)))
        none = load_points(engine, Filters(machine="no such machine"))
        other_profile = load_points(engine, Filters(profiles=("gate-cpu",)))
    finally:
        engine.dispose()
    assert len(points) == 4 and len(none) == 0 and len(other_profile) == 0
    assert list(mlp_only["run_id"]) == ["run-1", "run-2"]
    assert list(mlp_only["latency_p50_ms"]) == [2.0, 2.1]
    row = points[points["run_id"] == "run-2"].iloc[0]
    assert row["git_commit"] == "b" * 40 and bool(row["git_dirty"]) is True
    assert row["profile"] == "nightly" and row["settings_hash"] == "s1"
    assert row["fingerprint"] == machine_from_env(env()).history_fingerprint
    assert row["run_path"] == str(second.resolve())
    assert set(points["cell_key"]) == {MLP.key, CNN.key}
    assert list(points[points["run_id"] == "run-1"]["cell_key"]) == [MLP.key, CNN.key]  # sweep order
    assert row["run_time"] == BASE_TIME.replace(tzinfo=None)


def test_import_old_run_folders_through_the_cli(history_url: str, tmp_path: Path) -> None:
    runs = _nightly(tmp_path / "results", [2.0, 2.0, 2.0])
    (tmp_path / "results" / "README.md").write_text("not a run")
    paths = [str(p) for p in sorted((tmp_path / "results").iterdir())]
    assert main(["history", "import", "--history", history_url, *paths]) == 0
    assert main(["history", "--history", history_url, "import", *paths]) == 0  # idempotent
    engine = db.connect(history_url)
    try:
        points = load_points(engine)
    finally:
        engine.dispose()
    assert len(points) == 2 * len(runs)
    assert points["git_commit"].isna().all()  # today's checkout says nothing about old runs
    assert sorted(set(points["run_id"])) == [p.name for p in runs]


def test_only_non_run_folders_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "h.sqlite")
    assert main(["history", "import", "--history", url, str(tmp_path)]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_check_exit_codes(history_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = [2.0 * (1 + 0.01 * ((i * 7) % 5 - 2) / 2) for i in range(12)]
    _nightly(tmp_path / "results", flat)
    paths = [str(p) for p in (tmp_path / "results").iterdir()]
    assert main(["history", "import", "--history", history_url, *paths]) == 0
    html = tmp_path / "history.html"
    assert main(["history", "--history", history_url, "--check", "--out", str(html)]) == 0
    assert html.is_file()
    # Tonight the mlp cell is 15% slower: the newest point starts a step for the worse.
    night = make_run(
        tmp_path / "results",
        "night-999",
        {MLP: 2.3, CNN: 5.0},
        environment=env(when=BASE_TIME + dt.timedelta(days=30)),
    )
    assert main(["history", "import", "--history", history_url, str(night)]) == 0
    capsys.readouterr()
    assert main(["history", "--history", history_url, "--check", "--no-html"]) == 1
    err = capsys.readouterr().err
    assert (
        "REGRESSION" in err
        and "mlp onnxruntime fp32 b1" in err
        and "tiny-cnn" not in err.split("REGRESSION")[-1]
    )
    # Faster is not a regression: throughput went down only for the slower cell.
    assert main(["history", "--history", history_url, "--check", "--no-html", "--model", "tiny-cnn"]) == 0
    assert main(["history", "--history", history_url, "--check", "--no-html", "--metric", "throughput"]) == 1
    # Usage errors are 2, never 1.
    assert main(["history", "--history", history_url, "--check", "--metric", "p42"]) == 2
    assert main(["history", "--history", history_url, "--check", "--min-change", "lots"]) == 2
    assert main(["history", "--history", history_url, "--check", "--batch-size", "one"]) == 2
    assert main(["history", "--history", history_url, "--check", "--model", "nope"]) == 2


def test_missing_history_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--history", str(tmp_path / "none.sqlite"), "--check"]) == 2
    assert "no history at" in capsys.readouterr().err


def test_machines_never_share_a_series(history_url: str, tmp_path: Path) -> None:
    from inferbench.history.changepoints import METRICS
    from inferbench.history.series import build_series

    _nightly(tmp_path / "a", [2.0] * 5, cpu="Fast CPU")
    _nightly(tmp_path / "b", [4.0] * 5, cpu="Slow CPU")
    engine = db.connect(history_url)
    try:
        for folder in (tmp_path / "a", tmp_path / "b"):
            for run in sorted(folder.iterdir()):
                append_run(engine, run, commit=COMMIT)
        points = load_points(engine, Filters(models=("mlp",)))
        slow = load_points(engine, Filters(machine="slow"))
    finally:
        engine.dispose()
    series = build_series(points, METRICS["p50"])
    assert len(series) == 2
    assert {tuple(s.points["latency_p50_ms"]) for s in series} == {(2.0,) * 5, (4.0,) * 5}
    assert all(not s.steps for s in series)  # 2 ms -> 4 ms between machines is not a step
    assert set(slow["machine"].str.split(",").str[0]) == {"Slow CPU"}


def test_schema_is_versioned_and_migrated(history_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = db.connect(history_url)
    try:
        with engine.connect() as conn:
            assert db.current_version(conn) == db.SCHEMA_VERSION

        def add_note_column(conn: sa.Connection) -> None:
            conn.execute(sa.text("ALTER TABLE runs ADD COLUMN note TEXT"))

        monkeypatch.setitem(db.MIGRATIONS, db.SCHEMA_VERSION, add_note_column)
        with engine.begin() as conn:
            db.migrate(conn, target=db.SCHEMA_VERSION + 1)
        with engine.connect() as conn:
            assert db.current_version(conn) == db.SCHEMA_VERSION + 1
            assert "note" in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    finally:
        engine.dispose()
    # A database newer than this inferbench is refused, not misread.
    with pytest.raises(UserError, match="newer than this inferbench"):
        db.connect(history_url)


def test_a_broken_history_never_loses_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path, "run-1", {MLP: 2.0})
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with caplog.at_level(logging.WARNING):
        assert record_run(run, str(blocker / "history.sqlite")) is None
        assert record_run(run, "postgresql://nobody@127.0.0.1:1/none") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.startswith("history not recorded") for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert record_run(run, str(tmp_path / "ok.sqlite")) == 1


def test_urls_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERBENCH_HISTORY", raising=False)
    assert resolve_url(None, tmp_path) == str(tmp_path / "history.sqlite")
    monkeypatch.setenv("INFERBENCH_HISTORY", "postgresql://u:secret@db/h")
    assert resolve_url(None) == "postgresql://u:secret@db/h"
    assert resolve_url("other.sqlite") == "other.sqlite"
    assert db.normalize_url("postgresql://u@db/h") == "postgresql+psycopg://u@db/h"
    assert db.normalize_url("x/h.sqlite") == "sqlite:///x/h.sqlite"
    assert "secret" not in db.safe_url("postgresql://u:secret@db/h")
    for bad in ("nosuchdb+driver://", "postgresql://u@h:notaport/db", "sqlite://relative"):
        with pytest.raises(UserError, match=r"history: (cannot use|not a database URL)"):
            db.connect(bad)


def test_fingerprint_and_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = machine_from_env(env())
    assert machine_from_env(env(memory_gb=23.45)).fingerprint == base.fingerprint  # jitter, same box
    assert machine_from_env(env(cpu="Other CPU")).fingerprint != base.fingerprint
    assert len(base.fingerprint) == 12 and base.label.startswith("Test CPU 9000, 2 CPUs, 23 GiB, avx2+fma")
    # Identical nodes are one machine class (rows' host) but different machines in the history;
    # an env.json naming no host keeps the history fingerprint recorded before the host was
    # part of it (the value the earlier code gave this env.json).
    nodes = [machine_from_env(env(host=name)) for name in ("node-1", "node-2")]
    assert len({n.history_fingerprint for n in nodes} | {base.history_fingerprint}) == 3
    assert (
        {n.fingerprint for n in nodes} == {base.fingerprint} == {base.history_fingerprint} == {"0a1cecadbf9a"}
    )
    assert nodes[0].history_label.endswith(", avx2+fma, on node-1") and nodes[0].label == base.label
    monkeypatch.setenv(NODE_VAR, "k8s-node-7")  # a pod's host name is new each run; its node is not
    assert node_name() == "k8s-node-7"
    assert project_commit(tmp_path) == Commit(None, None)  # not a git checkout
    here = project_commit()
    assert here.sha is None or (len(here.sha) == 40 and here.dirty in (True, False))


def test_a_folder_recorded_before_hosts_is_not_recorded_again(history_url: str, tmp_path: Path) -> None:
    import json

    run = make_run(tmp_path, "old-run", {MLP: 2.0, CNN: 5.0})  # env.json without a host
    engine = db.connect(history_url)
    try:
        assert append_run(engine, run, commit=COMMIT) == 2
        # The same folder as today's env capture would describe it, host and all.
        (run / "env.json").write_text(json.dumps(env(host="node-1")))
        assert append_run(engine, run, commit=COMMIT) == 0
        fresh = make_run(tmp_path, "new-run", {MLP: 2.0}, environment=env(host="node-1"))
        assert append_run(engine, fresh, commit=COMMIT) == 1
        points = load_points(engine)
    finally:
        engine.dispose()
    by_run = dict(zip(points["run_id"], points["fingerprint"], strict=False))
    assert by_run["old-run"] == machine_from_env(env()).history_fingerprint  # old points keep theirs
    assert by_run["new-run"] == machine_from_env(env(host="node-1")).history_fingerprint
