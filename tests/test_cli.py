"""CLI: bad input is one line on stderr and exit code 2; a smoke sweep runs end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from inferbench.cli import main


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback, no usage dump
    assert lines[0].startswith("inferbench: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--model", "resnet5"], "unknown model 'resnet5'; choose one of resnet50"),
        (["run", "--backend", "tensorflow"], "unknown backend 'tensorflow'; choose one of torch"),
        (["run", "--precision", "fp8"], "precision must be one of fp32, bf16, fp16, int8; got 'fp8'"),
        (["run", "--batch-size", "0"], "batch size must be a positive integer; got 0"),
        (["run", "--batch-size", "eight"], "batch sizes must be integers; got eight"),
        (["run", "--profile", "nosuch"], "unknown profile 'nosuch'"),
        (["run", "--model", "missing/model.onnx"], "model file not found: missing/model.onnx"),
        (["run", "--model", "no_such_pkg.mod:factory"], "not importable"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str, tmp_path: Path
) -> None:
    line = _error_line(
        capsys,
        [*argv, "--results-dir", str(tmp_path)] if argv[0] == "run" and "--bogus-flag" not in argv else argv,
    )
    assert expected in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["history", "--batch-size", "1,x"], "batch sizes must be integers; got 1, x"),
        (["history", "--threads", "many"], "threads must be integers; got many"),
        (["history", "--min-change", "big"], "expected a percentage like 1% or 0.01; got 'big'"),
        (["ab", "--base", "HEAD", "--max-regression", "lots"], "expected a percentage like 5% or 0.05"),
        (["ab", "--base", "HEAD", "--threshold", "p99=ten"], "expected a percentage like 5% or 0.05"),
        (["ab", "--base", "HEAD", "--batch-size", "b"], "batch sizes must be integers; got b"),
    ],
)
def test_run_ab_and_history_share_value_parsing_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    extra = ["--history", str(tmp_path / "h.sqlite"), "--no-html"] if argv[0] == "history" else []
    assert expected in _error_line(capsys, [*argv, *extra])


def test_malformed_profile_and_broken_onnx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text("[sweep]\nmodels = [\n")
    assert "malformed profile" in _error_line(capsys, ["run", "--profile", str(profile)])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07this is not a protobuf model")
    line = _error_line(
        capsys,
        ["run", "--profile", "smoke", "--model", str(broken), "--results-dir", str(tmp_path)],
    )
    assert "broken ONNX model" in line


def test_existing_run_is_not_overwritten(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cells = tmp_path / "r1" / "cells"
    cells.mkdir(parents=True)
    (cells / "x.json").write_text("{}")
    line = _error_line(
        capsys, ["run", "--profile", "smoke", "--run-id", "r1", "--results-dir", str(tmp_path)]
    )
    assert "already holds results" in line


def test_list_shows_backends_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "torch",
        "torchscript",
        "torch-compile",
        "onnxruntime",
        "openvino",
        "resnet50",
        "smoke",
    ):
        assert name in out


@pytest.mark.slow
def test_smoke_profile_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            "--run-id",
            "smoke-1",
            "--results-dir",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    frame = pd.read_csv(tmp_path / "smoke-1" / "results.csv")
    # smoke = mlp x (torch, onnxruntime) x fp32 x batch (1, 4) x (latency, throughput)
    assert len(frame) == 8
    assert set(frame["status"]) == {"ok"}
    assert list(frame["mode"]) == ["latency"] * 4 + ["throughput"] * 4
    assert (frame["latency_p50_ms"] > 0).all()
    assert (frame["latency_p50_ci_low_ms"] <= frame["latency_p50_ms"]).all()
    assert (frame["throughput_ci_low_sps"] <= frame["throughput_ci_high_sps"]).all()
    assert (frame.loc[frame["mode"] == "throughput", "streams"] == 1).all()  # one thread, one stream
    assert frame["timing_scope"].str.startswith("host call").all()
    assert (frame["max_abs_err"] < 1e-4).all()
    assert (frame["flops_per_sample"] == 2 * (64 * 128 + 128 * 10)).all()
    # The console wraps long paths at 80 columns: where depends on the temporary folder's name.
    assert "results.csv" in "".join(capsys.readouterr().err.split())


def test_doctor_prints_the_precision_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "native bf16:" in out and "native int8 dot product:" in out
    assert "NOT_IMPLEMENTED" in out  # the onnxruntime bf16 gap, with its reason


def test_doctor_says_what_each_cap_reaches(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "capped by ONEDNN_MAX_CPU_ISA=AVX2 (honoured by torch, openvino)" in out
    assert "capped by ATEN_CPU_CAPABILITY=avx2 (torch's own ATen kernels only)" in out


@pytest.mark.slow
def test_real_a_a_two_smoke_runs_do_not_regress(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two runs of the same code, each cell in 3 processes, compared: no regression (exit 0).

    The threshold is far wider than the 5% default: CI runners are shared machines whose level
    drifts between runs minutes apart (up to ~17% measured on the 2-core Zen 5 VM, 58% on the
    Zen 3 one for an 11 us call); the gate's 5% belongs on a dedicated, quiet runner."""
    profile = tmp_path / "aa.toml"
    profile.write_text(
        '[sweep]\nmodels = ["mlp"]\nbackends = ["torch", "onnxruntime"]\nbatch_sizes = [1]\n'
        "threads = [1]\n[measure]\nwarmup_iterations = 20\nwarmup_seconds = 0.1\n"
        "min_iterations = 200\nmin_seconds = 0.2\nmax_iterations = 2000\nrepeats = 3\nprecision = 0.0\n"
        # The interference probe stays on, as in any run: a neighbour that slows one side's
        # processes (1.58x on one cell was seen once, with other work on the VM) makes that
        # cell `interfered`, which compare calls inconclusive, never a change.
    )
    for run in ("a1", "a2"):
        assert (
            main(
                [
                    "run",
                    "--profile",
                    str(profile),
                    "--run-id",
                    run,
                    "--results-dir",
                    str(tmp_path),
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    "--no-report",
                ]
            )
            == 0
        )
    # 80%: the cells are 10-70 us calls, and on the 2-vCPU Zen 3 VM (2026-12-01) all three
    # processes of one run landed at 1.58x the other run's (onnxruntime mlp b1: 11.3 vs 17.8 us)
    # with nothing flagged: separate runs of such short calls differ by process placement, which
    # `ab`'s interleaved rounds exist for (issue 30).
    code = main(["compare", str(tmp_path / "a1"), str(tmp_path / "a2"), "--max-regression", "80%"])
    err = capsys.readouterr().err
    # Never a regression; on a busy shared machine 3 processes a side can be too few to decide
    # at 20%, or a disturbed cell is inconclusive (exit 3): an honest answer, not a false alarm.
    assert code in (0, 3), err
    assert "REGRESSION" not in err
    compared = (tmp_path / "a2" / "compare.csv").read_text()
    assert compared.count(",process\n") + compared.count(",process,") >= 2 * 3  # process-level units


def test_backend_option_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(
        capsys,
        [
            "run",
            "--profile",
            "smoke",
            "--backend-option",
            "torch.bf16_mode=half",
            "--results-dir",
            str(tmp_path),
        ],
    )
    assert "torch option bf16_mode must be one of autocast, full; got 'half'" in line
    line = _error_line(
        capsys,
        ["run", "--profile", "smoke", "--backend-option", "torch.speed=max", "--results-dir", str(tmp_path)],
    )
    assert "backend torch has no option 'speed'" in line
    line = _error_line(
        capsys, ["run", "--profile", "smoke", "--backend-option", "bf16_mode", "--results-dir", str(tmp_path)]
    )
    assert "expects BACKEND.KEY=VALUE" in line
