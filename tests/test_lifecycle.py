"""Stops, deadlines, exit codes and broken models: nothing orphaned, no crash read as a verdict."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from inferbench.cli import main
from inferbench.models import ModelRef
from inferbench.store.runfolder import read_csv
from inferbench.sweep.modelcheck import check_models
from inferbench.sweep.procs import RUNNER_PID_ENV, python_command, worker_env

ROOT = Path(__file__).resolve().parent.parent
FAKE = "tests.fakes:FakeBackend"
HANG = "tests.fakes:HangBackend"
PROFILE = f"""
[sweep]
models = ["tests.fakes:numpy_model"]
backends = ["{FAKE}", "{HANG}"]
batch_sizes = [1]
threads = [1]

[measure]
warmup_iterations = 1
warmup_seconds = 0.0
min_iterations = 5
min_seconds = 0.0
max_seconds = 2.0
tail_samples = 50
bootstrap_resamples = 200
timeout_seconds = 300.0
"""


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _pids_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if marker in cmdline and " Z " not in f"{state} ":
            found.append(int(entry.name))
    return found


def _workers_of(runner: int) -> list[int]:
    """Live worker processes the runner started (a fresh one or a shared `--serve` one)."""
    found = []
    for pid in _pids_with("inferbench.cell.worker"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == runner:
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, int]:
    """The CLI on a real sweep: a fake cell that finishes, then one that hangs in its worker;
    returns the runner, the run folder and the hanging cell's worker."""
    profile = tmp_path / "stop.toml"
    profile.write_text(PROFILE)
    run_dir = tmp_path / "results" / "r"
    command = [sys.executable, "-m", "inferbench", "run", "--profile", str(profile), "--run-id", "r"]
    command += ["--results-dir", str(tmp_path / "results"), "--no-report", "--no-progress", "--peak", "off"]
    runner = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hang_spec = Path(f"{run_dir}/work/tests.fakes_numpy_model__{HANG}__fp32__b1__t1.spec.json")
    # The runner ends the finished cell's worker before it writes the next cell's spec.
    _wait_for(
        lambda: (hang_spec.exists() and _workers_of(runner.pid)) or runner.poll() is not None,
        300,
        "the hanging worker",
    )
    assert runner.poll() is None, runner.communicate()
    (worker,) = _workers_of(runner.pid)
    return runner, run_dir, worker


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_mid_cell_kills_worker_and_keeps_cells(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    runner, run_dir, worker = _start_sweep(tmp_path)
    runner.send_signal(signum)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == code
    line = _one_error_line(err)
    assert line.startswith(f"inferbench: stopped by {signum.name}; finished cells are kept in {run_dir}")
    assert "--resume --run-id r" in line
    assert not _alive(worker), "the worker outlived its runner"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # reaped as well as dead: killed with its group, waited for
    frame = read_csv(run_dir)
    assert list(frame["backend"]) == [FAKE] and list(frame["status"]) == ["ok"]


@pytest.mark.slow
def test_worker_ends_itself_when_its_runner_is_killed(tmp_path: Path) -> None:
    runner, _, worker = _start_sweep(tmp_path)
    runner.kill()  # SIGKILL: the runner gets no chance to clean up; the worker must notice
    runner.communicate(timeout=60)
    _wait_for(lambda: not _alive(worker), 60, "the orphaned worker to exit")


@pytest.mark.slow
def test_worker_has_its_own_deadline(tmp_path: Path, cache_dir: Path) -> None:
    from dataclasses import asdict

    from tests.conftest import FAST_MEASURE

    spec = {
        "cell": {
            "model": "tests.fakes:numpy_model",
            "backend": HANG,
            "precision": "fp32",
            "batch_size": 1,
            "threads": 1,
        },
        "model_ref": {"ref": "tests.fakes:numpy_model", "kind": "factory"},
        "measure": asdict(FAST_MEASURE),
        "cache_dir": str(cache_dir),
        "deadline_s": 2.0,
    }
    spec_path, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        python_command("inferbench.cell.worker", str(spec_path), str(out)),
        env=worker_env(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # without its deadline the hang lasts an hour
        start_new_session=True,
    )
    assert done.returncode == -signal.SIGKILL
    assert "own deadline of 2 s passed" in done.stderr
    assert not out.exists()


def test_children_know_their_runner() -> None:
    assert worker_env(1)[RUNNER_PID_ENV] == str(os.getpid())


@pytest.mark.slow
def test_disk_full_while_saving_exits_4_with_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def full(run_dir: Path, record: dict[str, object]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("inferbench.sweep.runner.save_cell", full)
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.replace(f', "{HANG}"', ""))
    argv = ["run", "--profile", str(profile), "--run-id", "r", "--results-dir", str(tmp_path), "--no-report"]
    assert main(argv) == 4
    line = _one_error_line(capsys.readouterr().err)
    log = tmp_path / "r" / "logs" / "runner.log"
    assert (
        line
        == f"inferbench: internal error: OSError: [Errno 28] No space left on device (traceback in {log})"
    )
    assert "Traceback (most recent call last)" in log.read_text()


def test_corrupt_result_file_exits_4(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a log with no run goes
    cells = tmp_path / "run" / "cells"
    cells.mkdir(parents=True)
    (cells / "a.json").write_text('{"cell_key": "a", "status": ')
    assert main(["report", str(tmp_path / "run"), "--reports-dir", str(tmp_path / "reports")]) == 4
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"inferbench: internal error: corrupt result file {cells / 'a.json'}")
    logs = list(tmp_path.glob("inferbench-*.log"))
    assert len(logs) == 1 and str(logs[0]) in line and "JSONDecodeError" in logs[0].read_text()


def test_unexpected_exception_is_4_never_1_or_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def exhausted() -> int:
        raise MemoryError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr("inferbench.commands.listing.list_command", exhausted)
    assert main(["list"]) == 4
    assert _one_error_line(capsys.readouterr().err).startswith("inferbench: internal error: MemoryError")


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "exit codes:" in out and "143 by SIGTERM" in out and "internal error" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("os:system", "building it failed: TypeError: system() missing required argument"),
        ("tests.fakes:raising_factory", "building it failed: RuntimeError: weights file missing"),
        ("tests.fakes:NOT_A_FACTORY", "NOT_A_FACTORY is a int, not a callable factory"),
        ("tests.fakes:wrong_return_factory", "building it failed: ValueError"),
        ("tests.fakes:unbatched_factory", "its output has shape (4,) for a batch of 2"),
    ],
)
def test_broken_factory_fails_before_any_cell(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: str, expected: str
) -> None:
    argv = ["run", "--profile", "smoke", "--model", model, "--backend", FAKE]
    code = main([*argv, "--results-dir", str(tmp_path / "results"), "--no-report", "--peak", "off"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"inferbench: error: model {model} is broken: ")
    assert expected in line and line.endswith("(checked before the sweep; no cell ran)")
    assert not (tmp_path / "results").exists()  # no run folder, no worker, no cell


@pytest.mark.slow
def test_hanging_factory_is_stopped_by_the_timeout() -> None:
    from inferbench.errors import UserError

    with pytest.raises(UserError, match="took longer than 2 s"):
        check_models([ModelRef("tests.fakes:hanging_factory", "factory")], seed=0, timeout_s=2, threads=1)
    assert not _pids_with("tests.fakes:hanging_factory")


@pytest.mark.slow
def test_working_factories_pass_the_check() -> None:
    refs = [ModelRef(r, "factory") for r in ("tests.fakes:numpy_model", "tests.fakes:torch_linear_model")]
    check_models(refs, seed=0, timeout_s=300, threads=1)  # raises on a problem


@pytest.mark.slow
def test_a_second_run_of_one_run_id_is_refused_naming_the_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two runs given one --run-id would share work/ and config.json, and the last writer's
    results.csv would drop the other's rows: the second is refused while the first holds the
    folder's lock, naming it."""
    first_profile, second_profile = tmp_path / "hang.toml", tmp_path / "fake.toml"
    first_profile.write_text(PROFILE.replace(f'"{FAKE}", ', ""))  # holds the folder, never ends
    second_profile.write_text(PROFILE.replace(f', "{HANG}"', ""))
    results, run_dir = tmp_path / "results", tmp_path / "results" / "r"
    options = [
        "--run-id",
        "r",
        "--results-dir",
        str(results),
        "--no-report",
        "--no-progress",
        "--peak",
        "off",
    ]
    command = [sys.executable, "-m", "inferbench", "run", "--profile", str(first_profile), *options]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        spec = run_dir / "work" / f"tests.fakes_numpy_model__{HANG}__fp32__b1__t1.spec.json"
        _wait_for(lambda: spec.exists() or first.poll() is not None, 300, "the first run's cell")
        assert first.poll() is None, first.communicate()
        assert main(["run", "--profile", str(second_profile), *options]) == 2
        line = _one_error_line(capsys.readouterr().err)
        holder = f"(pid {first.pid} on {socket.gethostname()}, started "
        assert line.startswith(f"inferbench: error: {run_dir} is in use by another run {holder}")
        assert json.loads((run_dir / "config.json").read_text())["backends"] == [HANG]  # the first's
        assert not list((run_dir / "cells").glob("*.json")) and not (run_dir / "config-2.json").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143


@pytest.mark.slow
def test_a_run_where_every_cell_errored_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "raise.toml"
    profile.write_text(PROFILE.replace(f'"{FAKE}", "{HANG}"', '"tests.fakes:RaiseBackend"'))
    argv = ["run", "--profile", str(profile), "--run-id", "r", "--results-dir", str(tmp_path), "--no-report"]
    assert main([*argv, "--peak", "off"]) == 4
    assert "no cell produced a number (1 cell(s), none measured)" in capsys.readouterr().err
    assert list(read_csv(tmp_path / "r")["status"]) == ["error"]
