"""Answer selection on hand-made frames: who wins, who may not, ties, and nothing passing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inferbench.report.answer import Answer, answers, exclusion, falsy, truthy
from inferbench.report.answer_text import answer_lines, answer_rows
from inferbench.report.summary import summary_markdown
from inferbench.store.runfolder import to_frame


def _cell(backend: str, precision: str, p50: float, **extra: Any) -> dict[str, Any]:
    """A latency-mode cell of model m at batch 1 with a +-2% interval."""
    row: dict[str, Any] = {
        "model": "m",
        "backend": backend,
        "precision": precision,
        "batch_size": 1,
        "threads": 2,
        "mode": "latency",
        "status": "ok",
        "latency_p50_ms": p50,
        "latency_p50_ci_low_ms": p50 * 0.98,
        "latency_p50_ci_high_ms": p50 * 1.02,
        "throughput_sps": 1e3 / p50,
        "rel_l2_err": 0.0 if precision == "fp32" else 0.01,
        "cosine": 1.0,
        "engine_precision": precision,
        "cell_key": f"m__{backend}__{precision}",
    }
    row.update(extra)
    return row


def _frame(*rows: dict[str, Any]) -> pd.DataFrame:
    """Through storage.to_frame like a real run, plus any column it does not know yet."""
    frame = to_frame(list(rows))
    for col in {k for r in rows for k in r} - set(frame.columns):
        frame[col] = [r.get(col) for r in rows]
    return frame


def _only(frame: pd.DataFrame) -> Answer:
    found = answers(frame)
    assert len(found) == 1
    return found[0]


def test_fastest_passing_cell_wins_with_speedups() -> None:
    answer = _only(
        _frame(
            _cell("torch", "fp32", 10.0),
            _cell("onnxruntime", "fp32", 8.0),
            _cell("openvino", "int8", 4.0, lowp_share=0.93),
            _cell("onnxruntime", "int8", 5.0),
        )
    )
    assert answer.winner is not None and answer.winner.name == "openvino int8"
    assert answer.winner.speedup_vs_eager_fp32 == pytest.approx(2.5)
    assert answer.winner.speedup_vs_best_fp32 == pytest.approx(2.0)
    assert answer.winner.best_fp32 == "onnxruntime fp32"
    assert answer.winner.ran == "int8 (93% low precision)"
    assert answer.winner.accuracy == {"rel_l2_err": 0.01, "cosine": 1.0}
    assert answer.runner_up is not None and answer.runner_up.name == "onnxruntime int8"
    assert not answer.within_noise  # [3.92, 4.08] and [4.9, 5.1] do not overlap
    assert answer.excluded == {} and answer.not_run == {}


@pytest.mark.parametrize(
    "flag",
    [
        {"status": "accuracy-fail", "reason": "rel_l2_err 0.4 > 0.25"},
        {"capped": True},
        {"capped": "True"},  # as read back from a CSV
        {"interfered": True},
        {"lowp_flagged": True},
        {"accuracy_checked": False},
    ],
)
def test_faster_flagged_or_failing_cell_does_not_win(flag: dict[str, Any]) -> None:
    fast = _cell("openvino", "int8", 2.0, **flag)
    answer = _only(_frame(_cell("torch", "fp32", 10.0), fast, _cell("onnxruntime", "int8", 5.0)))
    assert answer.winner is not None and answer.winner.name == "onnxruntime int8"
    assert answer.runner_up is not None and answer.runner_up.name == "torch fp32"
    assert sum(answer.excluded.values()) == 1
    assert exclusion(fast) is not None


def test_speedup_over_a_flagged_eager_cell_is_still_given() -> None:
    answer = _only(_frame(_cell("torch", "fp32", 10.0, capped=True), _cell("openvino", "fp32", 4.0)))
    assert answer.winner is not None and answer.winner.speedup_vs_eager_fp32 == pytest.approx(2.5)
    assert answer.runner_up is None and answer.excluded == {"capped": 1}


def test_missing_flag_columns_count_as_not_flagged() -> None:
    flags = ["interfered", "lowp_flagged", "accuracy_checked", "lowp_share"]
    # A CSV written before these columns existed.
    frame = _frame(_cell("torch", "fp32", 10.0), _cell("openvino", "int8", 4.0)).drop(columns=flags)
    winner = _only(frame).winner
    assert winner is not None and winner.name == "openvino int8" and winner.lowp_share is None
    # A blank accuracy_checked is "unknown", not "unchecked".
    assert exclusion(_cell("openvino", "int8", 4.0, accuracy_checked=float("nan"))) is None


def test_ties_go_to_the_more_accurate_cell_then_to_sweep_order() -> None:
    answer = _only(
        _frame(
            _cell("torch", "fp32", 10.0),
            _cell("onnxruntime", "int8", 5.0, rel_l2_err=0.02),
            _cell("openvino", "int8", 5.0, rel_l2_err=0.01),
        )
    )
    assert answer.winner is not None and answer.winner.name == "openvino int8"
    assert answer.runner_up is not None and answer.runner_up.name == "onnxruntime int8"
    assert answer.within_noise  # same p50, overlapping intervals: the order is within noise
    same = _only(_frame(_cell("a", "fp32", 5.0), _cell("b", "fp32", 5.0)))
    assert same.winner is not None and same.winner.backend == "a"  # sweep order
    assert "(within noise, within-process only)" in answer_rows([answer])[0]["runner-up"]


def _two(**runner_up: Any) -> Answer:
    """10 ms against 10.5 ms, each with a +-2% interval: apart inside one process each."""
    return _only(
        _frame(_cell("torch", "fp32", 10.0, **runner_up), _cell("onnxruntime", "fp32", 10.5, **runner_up))
    )


def test_within_noise_without_repeats_says_it_is_within_process_only() -> None:
    answer = _two()
    assert not answer.within_noise and answer.noise == "within-process"
    assert answer_rows([answer])[0]["runner-up"].endswith("(apart, within-process only)")
    assert "(apart, within-process only)" in answer_lines([answer])[1]


def test_within_noise_with_repeats_uses_the_process_to_process_spread() -> None:
    # Three processes that spanned 8% of their median: a fresh one may land 4% either side.
    answer = _two(repeats=3, process_p50_spread_pct=8.0)
    assert answer.within_noise and answer.noise == "between-process"
    assert answer.winner is not None and answer.winner.band == pytest.approx((9.6, 10.4))
    assert answer_rows([answer])[0]["runner-up"].endswith("(within noise, between-process)")
    # Processes that agreed closely keep the interval (already bootstrapped over processes).
    tight = _two(repeats=3, process_p50_spread_pct=1.0)
    assert not tight.within_noise and tight.noise == "between-process"
    assert tight.winner is not None and tight.winner.band == pytest.approx((9.8, 10.2))


def test_a_calibrated_runner_spread_widens_a_single_process_interval() -> None:
    answer = _two(calibrated_spread_pct=6.0)  # [9.8, 10.2] +- 0.3 reaches [10.29, 10.71] - 0.315
    assert answer.within_noise and answer.noise == "between-process (calibrated)"
    assert "(within noise, between-process (calibrated))" in answer_rows([answer])[0]["runner-up"]
    repeats_win = _two(repeats=3, process_p50_spread_pct=8.0, calibrated_spread_pct=0.0)
    assert repeats_win.noise == "between-process"  # measured beats calibrated


def test_the_judgement_covers_only_what_both_cells_cover() -> None:
    answer = _only(
        _frame(
            _cell("torch", "fp32", 10.0, repeats=3, process_p50_spread_pct=30.0),
            _cell("onnxruntime", "fp32", 10.5),
        )
    )
    assert answer.within_noise and answer.noise == "within-process"  # one side has one process
    assert answer_rows([answer])[0]["runner-up"].endswith("(within noise, within-process only)")


def test_throughput_mode_uses_the_throughput_spread() -> None:
    def tput(backend: str, sps: float, spread: float) -> dict[str, Any]:
        return _cell(
            backend,
            "fp32",
            1.0,
            mode="throughput",
            throughput_sps=sps,
            throughput_ci_low_sps=sps - 1,
            throughput_ci_high_sps=sps + 1,
            repeats=2,
            process_throughput_spread_pct=spread,
            process_p50_spread_pct=0.0,
        )

    assert _only(_frame(tput("torch", 100.0, 10.0), tput("openvino", 105.0, 10.0))).within_noise
    assert not _only(_frame(tput("torch", 100.0, 1.0), tput("openvino", 105.0, 1.0))).within_noise


def test_model_with_nothing_passing() -> None:
    answer = _only(
        _frame(
            _cell("torch", "fp32", 10.0, status="error", reason="boom"),
            _cell("openvino", "int8", 4.0, status="accuracy-fail"),
            _cell("onnxruntime", "int8", 5.0, status="unsupported", reason="no int8"),
            _cell("torchscript", "fp32", 9.0, capped=True),
        )
    )
    assert answer.winner is None and answer.runner_up is None
    assert answer.excluded == {"accuracy-fail": 1, "capped": 1}
    assert answer.not_run == {"error": 1, "unsupported": 1}
    # The capped cell is the only one measured and otherwise fine: shown, but not as a winner.
    assert answer.provisional is not None and answer.provisional.backend == "torchscript"
    row = answer_rows([answer])[0]
    assert row["fastest"] == "not decided (capped): fastest torchscript fp32"
    assert row["did not run"] == "1 error, 1 unsupported"
    bare = _only(
        _frame(
            _cell("openvino", "int8", 4.0, status="accuracy-fail"),
            _cell("torch", "fp32", 9.0, interfered=True),
        )
    )
    assert bare.winner is None and bare.provisional is None
    assert answer_rows([bare])[0]["fastest"] == "nothing passed"


def test_capped_cells_never_win_but_lead_when_nothing_else_was_measured() -> None:
    both = _only(_frame(_cell("torch", "fp32", 10.0), _cell("openvino", "int8", 2.0, capped=True)))
    assert both.winner is not None and both.winner.backend == "torch" and both.provisional is None
    flagged_twice = _only(_frame(_cell("openvino", "int8", 2.0, capped=True, interfered=True)))
    assert flagged_twice.provisional is None  # interference is not a precision question
    leader = _only(
        _frame(_cell("torch", "fp32", 10.0, capped=True), _cell("openvino", "int8", 2.0, capped=True))
    )
    assert leader.provisional is not None and leader.provisional.backend == "openvino"
    assert leader.provisional.speedup_vs_eager_fp32 == pytest.approx(5.0)
    row = answer_rows([leader])[0]
    assert row["fastest"] == "not decided (capped): fastest openvino int8"
    assert row["vs eager FP32"] == "5.00x" and row["p50 / throughput [95% CI]"].startswith("2 ms")
    line = answer_lines([leader])[1]
    assert "not decided (capped): fastest openvino int8: 2 ms" in line and "5.00x vs eager FP32" in line


def test_throughput_mode_prefers_more_samples_per_second_and_its_interval() -> None:
    def tput(backend: str, sps: float) -> dict[str, Any]:
        return _cell(
            backend,
            "fp32",
            1.0,
            mode="throughput",
            throughput_sps=sps,
            throughput_ci_low_sps=sps - 1,
            throughput_ci_high_sps=sps + 1,
        )

    answer = _only(_frame(tput("torch", 100.0), tput("openvino", 300.0)))
    assert answer.winner is not None and answer.winner.name == "openvino fp32"
    assert answer.winner.speedup_vs_eager_fp32 == pytest.approx(3.0)
    assert answer_rows([answer])[0]["p50 / throughput [95% CI]"] == "300 samples/s [299, 301]"


def test_one_answer_per_model_batch_and_mode_in_sweep_order() -> None:
    rows = [
        _cell("torch", "fp32", 10.0, model=model, batch_size=batch, mode=mode)
        for model in ("b", "a")
        for batch in (1, 8)
        for mode in ("latency", "throughput")
    ]
    found = answers(_frame(*rows))
    assert [(a.model, a.batch_size, a.mode) for a in found][:3] == [
        ("b", 1, "latency"),
        ("b", 1, "throughput"),
        ("b", 8, "latency"),
    ]
    assert len(found) == 8


@pytest.mark.parametrize(
    ("value", "is_true", "is_false"),
    [
        (True, True, False),
        ("True", True, False),
        ("false", False, True),
        (0, False, True),
        (float("nan"), False, False),
        (None, False, False),
        ("", False, False),
    ],
)
def test_csv_booleans(value: Any, is_true: bool, is_false: bool) -> None:
    assert truthy(value) is is_true
    assert falsy(value) is is_false


GOLDEN = Path(__file__).parent / "golden" / "summary.md"


def _golden_frame() -> pd.DataFrame:
    return _frame(
        _cell("torch", "fp32", 10.0),
        _cell("onnxruntime", "fp32", 8.0),
        _cell(
            "openvino", "int8", 3.0, status="accuracy-fail", reason="rel_l2_err 0.4 > 0.25", rel_l2_err=0.4
        ),
        _cell("openvino", "bf16", 3.5, capped=True, rel_l2_err=0.004),
        _cell("onnxruntime", "int8", 4.0, lowp_share=0.97, top1_agreement=1.0),
        _cell("torch-compile", "int8", 4.1, rel_l2_err=0.02),
        _cell("torchscript", "int8", float("nan"), status="unsupported", reason="no int8 kernels"),
        _cell("torch", "fp32", 40.0, model="lstm", batch_size=8, status="error", reason="worker died"),
        _cell("openvino", "fp32", 30.0, model="lstm", batch_size=8, interfered=True),
    )


def test_summary_markdown_matches_golden_file() -> None:
    env = {"cpu": {"model": "Golden CPU", "logical_cpus": 2, "native_bf16": True, "native_int8_dot": True}}
    text = summary_markdown(_golden_frame(), env, "golden-run")
    if os.environ.get("INFERBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_run_ends_with_the_answer_not_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    from inferbench.commands.run import _print_summary

    _print_summary(_golden_frame().to_dict("records"))
    err = capsys.readouterr().err
    assert "Answer" in err
    assert "b1 latency: onnxruntime int8: 4 ms [3.92, 4.08]; 2.50x vs eager FP32" in err
    assert "b8 latency: nothing passed; left out: 1 interference; did not run: 1 error" in err
    assert "torchscript" not in err  # the unsupported cell is counted, not listed
    assert "accuracy-fail 1" in err and "unsupported 1" in err
