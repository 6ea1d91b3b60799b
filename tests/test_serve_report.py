"""Serve mode as the answer, the report, compare and `ab` read it: the engine, precision and
batching policy that serve the most requests/s within the SLO; harness-limited cells never win
and are named; each serve cell's latency-vs-load chart with its SLO line and knee; and
`max_qps_at_slo` as a gating metric (higher is better), never a regression from a side whose
load generator fell behind. Records are built as the runner stores them (synthetic_runs)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.ab.core import AbOptions, paired_rows, round_value
from inferbench.compare.core import CompareOptions, compare_records, exit_code
from inferbench.compare.runs import compare_runs
from inferbench.config import Cell
from inferbench.errors import EXIT_OK, EXIT_REGRESSION, EXIT_UNDECIDED
from inferbench.report.answer import answer_frame, answers
from inferbench.report.answer_text import answer_lines, answer_rows
from inferbench.report.charts import figures
from inferbench.report.page import write_report
from inferbench.report.serving import serve_chart, serve_figure
from inferbench.report.summary import summary_markdown
from inferbench.status import HARNESS_LIMITED, OK
from inferbench.store.runfolder import SCHEMA_VERSION
from inferbench.tools.synthetic_runs import write_run

ENV = Path(__file__).parent / "golden" / "pre-inferbench-run" / "env.json"


def _trials(peak: float, slo_ms: float = 50.0) -> list[dict[str, Any]]:
    """A search's trials around `peak`: passing at and below it, failing above."""
    rates = [peak / 4, peak / 2, peak, peak * 1.05, peak * 2]
    trials = []
    for rate in rates:
        p99 = slo_ms * 0.9 * rate / peak if rate <= peak else slo_ms * 2  # over the SLO past the peak
        trials.append(
            {
                "rate_qps": rate,
                "outcome": "pass" if rate <= peak else "fail",
                "queries": 2000,
                "p50_ms": p99 / 3,
                "p90_ms": p99 / 1.5,
                "p99_ms": p99,
                "p999_ms": p99 * 1.2,
                "achieved_qps": rate,
                "goodput_qps": rate,
                "dispatch_lag_p99_ms": 0.05,
                "mean_batch": 1.5,
            }
        )
    return trials


def _policy(max_batch: int, max_wait_ms: float, peak: float, outcome: str = "fail") -> dict[str, Any]:
    return {
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "max_qps_at_slo": peak,
        "first_unmet_qps": peak * 1.05,
        "upper_outcome": outcome,
        "reason": "",
        "trials": _trials(peak),
    }


def serve_record(
    backend: str,
    precision: str,
    peak: float | None,
    run_id: str = "run",
    *,
    status: str = OK,
    policies: list[dict[str, Any]] | None = None,
    limited: bool = False,
    unmet: float | None = None,
    model: str = "mlp",
) -> dict[str, Any]:
    """A serve cell's record as the runner stores it: the best policy's peak and its bracket,
    every policy with its trials."""
    cell = Cell(model, backend, precision, 1, 2, mode="serve")
    policies = policies if policies is not None else ([_policy(1, 0.0, peak)] if peak else [])
    best = max(policies, key=lambda p: p["max_qps_at_slo"]) if policies else None
    record: dict[str, Any] = {
        **asdict(cell),
        "status": status,
        "reason": "dispatch lag p99 over 5% of the SLO at every rate" if status == HARNESS_LIMITED else "",
        "cell_key": cell.key,
        "run_id": run_id,
        "schema_version": SCHEMA_VERSION,
        "repeats": 1,
        "capped": False,
        "accuracy_checked": True,
        "rel_l2_err": 1e-3 if precision == "int8" else 1e-7,
        "slo_ms": 50.0,
        "serve_percentile": 99.0,
        "arrival": "poisson",
        "burstiness": None,
        "max_qps_at_slo": peak,
        "max_qps_first_unmet": unmet if unmet is not None else (peak * 1.05 if peak else None),
        "serve_upper_outcome": HARNESS_LIMITED if limited else "fail",
        "best_max_batch": best["max_batch"] if best else None,
        "best_max_wait_ms": best["max_wait_ms"] if best else None,
        "serve_harness_limited": limited,
        "dispatch_lag_p99_ms": 0.05,
        "goodput_qps": peak,
        "serve_p99_ms": 40.0,
        "serve_policies": policies,
    }
    return record


def _run() -> list[dict[str, Any]]:
    return [
        serve_record("torch", "fp32", 400.0),
        serve_record(
            "onnxruntime",
            "int8",
            830.0,
            policies=[_policy(1, 0.0, 600.0), _policy(4, 2.0, 830.0), _policy(8, 5.0, 700.0)],
        ),
        # Faster on paper, but the dispatcher fell behind at its upper end: not a result.
        serve_record("openvino", "int8", 2000.0, limited=True),
        # The dispatcher could not drive any rate: the status says so.
        serve_record("openvino", "fp32", None, status=HARNESS_LIMITED, policies=[]),
        # Faster, but off the FP32 reference by more than the threshold.
        serve_record("onnxruntime", "fp32", 900.0, status="accuracy-fail"),
    ]


# ---------------------------------------------------------------- the answer


def test_the_answer_picks_the_engine_precision_and_policy_with_the_most_qps_at_the_slo() -> None:
    (answer,) = answers(answer_frame(_run()))
    assert answer.mode == "serve" and not answer.lower_is_better
    winner = answer.winner
    assert winner is not None
    assert (winner.backend, winner.precision, winner.policy) == (
        "onnxruntime",
        "int8",
        "max_batch 4 / wait 2 ms",
    )
    assert winner.value == 830.0 and winner.ci_high == pytest.approx(830 * 1.05)
    assert winner.speedup_vs_eager_fp32 == pytest.approx(830 / 400)
    assert answer.runner_up is not None and answer.runner_up.name == "torch fp32, no batching"
    assert not answer.within_noise  # brackets [830, 871] and [400, 420] are apart
    line = "\n".join(answer_lines([answer]))
    assert "onnxruntime int8, max_batch 4 / wait 2 ms: 830 QPS at p99 ≤ 50 ms (2.08x torch fp32)" in line


def test_harness_limited_cells_never_win_and_are_named() -> None:
    (answer,) = answers(answer_frame(_run()))
    assert answer.winner is not None and answer.winner.backend == "onnxruntime"
    assert answer.excluded == {"accuracy-fail": 1, HARNESS_LIMITED: 2}
    assert answer.harness_limited == ("openvino int8", "openvino fp32")
    (row,) = answer_rows([answer])
    assert row["excluded"] == "1 accuracy-fail, 2 harness-limited (openvino int8, openvino fp32)"
    assert row["p50 / throughput [95% CI] / QPS at SLO"] == "830 QPS at p99 ≤ 50 ms (not met at 872)"
    assert "harness-limited (openvino int8, openvino fp32)" in "\n".join(answer_lines([answer]))


def test_a_cell_left_out_for_accuracy_is_not_named_harness_limited_too() -> None:
    """Each left-out cell is counted under its first reason and named under that one only:
    an accuracy-fail cell whose dispatcher also fell behind is one accuracy-fail."""
    run = [*_run()[:-1], serve_record("onnxruntime", "fp32", None, status="accuracy-fail", limited=True)]
    (answer,) = answers(answer_frame(run))
    assert answer.excluded == {"accuracy-fail": 1, HARNESS_LIMITED: 2}
    assert answer.harness_limited == ("openvino int8", "openvino fp32")


def test_a_harness_limited_eager_cell_is_no_reference() -> None:
    records = [serve_record("torch", "fp32", 400.0, limited=True), serve_record("onnxruntime", "int8", 830.0)]
    (answer,) = answers(answer_frame(records))
    assert answer.winner is not None and answer.winner.speedup_vs_eager_fp32 is None
    assert "(" not in "\n".join(answer_lines([answer])).split("QPS at p99 ≤ 50 ms")[1].split(";")[0]


def test_nothing_meeting_the_slo_is_said() -> None:
    (answer,) = answers(answer_frame([serve_record("torch", "fp32", None, unmet=25.0)]))
    assert answer.winner is None and answer.excluded == {"no rate met the SLO": 1}


def test_latency_answers_are_unchanged_beside_serve_cells() -> None:
    from inferbench.tools.synthetic_runs import synthetic_record

    latency = [
        synthetic_record(Cell("mlp", "torch", "fp32", 1, 2), 10.0, "run"),
        synthetic_record(Cell("mlp", "onnxruntime", "int8", 1, 2), 4.0, "run"),
    ]
    alone = answer_lines(answers(answer_frame(latency)))
    beside = answer_lines(answers(answer_frame([*latency, *_run()])))
    assert beside[: len(alone)] == alone
    assert any("serve" in line for line in beside[len(alone) :])


# ---------------------------------------------------------------- the report


def test_the_chart_has_the_best_policys_curves_the_slo_line_and_the_knee() -> None:
    record = _run()[1]
    chart = serve_chart(record, "title")
    assert chart.best is not None and chart.best.label == "max_batch 4 / wait 2 ms"
    assert chart.best.rate_qps == sorted(chart.best.rate_qps)
    assert (chart.slo_ms, chart.knee_qps) == (50.0, 830.0)
    assert [c.label for c in chart.others] == ["no batching", "max_batch 8 / wait 5 ms"]
    spec = serve_figure(chart).to_plotly_json()
    by_name = {t["name"]: t for t in spec["data"]}
    slo = by_name["SLO: p99 ≤ 50 ms"]
    assert list(slo["y"]) == [50.0, 50.0]
    assert list(slo["x"]) == [150.0, 1660.0]  # across every policy's rates: 600 / 4 to 830 x 2
    knee = by_name["knee: 830 QPS at p99 ≤ 50 ms"]
    assert list(knee["x"]) == [830.0] and list(knee["y"]) == [chart.best.p99_ms[2]]
    assert [s["x0"] for s in spec["layout"]["shapes"]] == [830.0]
    assert {"p50, max_batch 4 / wait 2 ms", "p99, max_batch 4 / wait 2 ms"} <= set(by_name)
    assert by_name["p99, max_batch 8 / wait 5 ms"]["visible"] == "legendonly"


def test_each_serve_cell_gets_its_chart_and_none_of_the_engine_charts() -> None:
    records = _run()
    names = [name for name, _ in figures(answer_frame(records), records)]
    serve_keys = [r["cell_key"] for r in records if r["serve_policies"]]
    assert names == [f"{key}-serve" for key in serve_keys]


def test_the_report_shows_the_peak_the_policy_and_the_serve_rule(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", _run(), json.loads(ENV.read_text()))
    html_path, md_path = write_report(run_dir, tmp_path / "reports")
    page = html_path.read_text()
    assert '<th class="">max_qps_at_slo</th>' in page and "max_batch 4 / wait 2 ms" in page
    assert "Serve mode: the most requests per second" in page
    assert "latency vs offered load" in page
    summary = md_path.read_text()
    assert "| max_qps_at_slo |" in summary and "best policy" in summary
    left_out = summary.split("## Measured but left out of the answer")[1].split("##")[0]
    assert left_out.count(HARNESS_LIMITED) >= 2  # both harness-limited cells, with why
    assert "2 harness-limited (openvino int8, openvino fp32)" in summary


def test_the_summary_of_a_run_with_serve_rows_is_markdown_summary_too() -> None:
    text = summary_markdown(answer_frame(_run()), {}, "run")
    assert "p50 / throughput [95% CI] / QPS at SLO" in text


# ---------------------------------------------------------------- compare and ab


def _pair(base_peak: float, new_peak: float, **new: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [serve_record("onnxruntime", "int8", base_peak, "base")], [
        serve_record("onnxruntime", "int8", new_peak, "new", **new)
    ]


def test_compare_flags_a_20_percent_drop_in_max_qps_at_slo() -> None:
    base, new = _pair(1000.0, 800.0)
    frame, _ = compare_records(base, new, CompareOptions())
    (row,) = frame.to_dict("records")
    assert (row["metric"], row["verdict"], row["gating"], row["regression"]) == (
        "max_qps_at_slo",
        "regression",
        True,
        True,
    )
    assert row["ratio"] == pytest.approx(0.8) and row["unit"] == "search"
    assert exit_code(frame) == EXIT_REGRESSION


def test_compare_passes_an_unchanged_peak_and_an_improvement() -> None:
    for new_peak, verdict in ((1000.0, "no change"), (1300.0, "improvement")):
        frame, _ = compare_records(*_pair(1000.0, new_peak), CompareOptions())
        assert list(frame["verdict"]) == [verdict] and exit_code(frame) == EXIT_OK


@pytest.mark.parametrize(
    "new",
    [{"limited": True}, {"status": HARNESS_LIMITED, "policies": []}],
    ids=["peak at the harness's limit", "status harness-limited"],
)
def test_a_harness_limited_side_is_inconclusive_never_a_regression(new: dict[str, Any]) -> None:
    frame, _ = compare_records(*_pair(1000.0, 500.0, **new), CompareOptions())
    (row,) = frame.to_dict("records")
    assert row["verdict"] == "inconclusive" and row["inconclusive"]
    assert not row["regression"] and not row["broken"]
    assert "harness-limited (new)" in row["note"]
    assert exit_code(frame) == EXIT_UNDECIDED


def test_compare_of_run_folders_writes_the_serve_verdict(tmp_path: Path) -> None:
    env = json.loads(ENV.read_text())
    base, new = _pair(1000.0, 800.0)
    write_run(tmp_path / "base", base, env, {"name": "serve"})
    write_run(tmp_path / "new", new, env, {"name": "serve"})
    frame, _, md = compare_runs(tmp_path / "base", tmp_path / "new", CompareOptions())
    assert exit_code(frame) == EXIT_REGRESSION
    text = md.read_text()
    assert "max_qps_at_slo" in text and "One peak search per side" in text
    assert "Serve-mode cells gate on max_qps_at_slo" in text
    assert "max_qps_at_slo (requests/s)" in (tmp_path / "new" / "compare.html").read_text()


def test_round_value_reads_max_qps_at_slo() -> None:
    assert round_value(serve_record("torch", "fp32", 830.0), "max_qps_at_slo") == 830.0
    assert math.isnan(round_value(serve_record("torch", "fp32", None), "max_qps_at_slo"))


def _rounds(
    base_peak: float, head_peak: float, n: int, **head: Any
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    rng = np.random.default_rng(3)
    noisy = [float(np.exp(rng.normal(0, 0.02))) for _ in range(2 * n)]
    return {
        "m": {
            "base": [serve_record("onnxruntime", "int8", base_peak * noisy[i]) for i in range(n)],
            "head": [serve_record("onnxruntime", "int8", head_peak * noisy[n + i], **head) for i in range(n)],
        }
    }


CELLS = {"m": asdict(Cell("mlp", "onnxruntime", "int8", 1, 2, mode="serve"))}


def test_ab_gates_on_max_qps_at_slo_in_paired_rounds() -> None:
    frame = paired_rows(_rounds(1000.0, 800.0, 8), CELLS, AbOptions(rounds=8))
    (row,) = frame.to_dict("records")
    assert (row["metric"], row["verdict"], row["unit"], row["n_base"]) == (
        "max_qps_at_slo",
        "regression",
        "round",
        8,
    )
    assert row["ratio"] == pytest.approx(0.8, rel=0.05)
    assert exit_code(frame) == EXIT_REGRESSION
    same = paired_rows(_rounds(1000.0, 1000.0, 8), CELLS, AbOptions(rounds=8))
    assert list(same["verdict"]) == ["no change"] and exit_code(same) == EXIT_OK


def test_ab_leaves_harness_limited_rounds_out_and_is_inconclusive_on_a_harness_limited_side() -> None:
    results = _rounds(1000.0, 500.0, 8, limited=True)
    frame = paired_rows(results, CELLS, AbOptions(rounds=8))
    (row,) = frame.to_dict("records")
    assert row["verdict"] == "inconclusive" and not row["regression"]
    assert "8 harness-limited of 8 rounds, left out" in row["note"]
    assert exit_code(frame) == EXIT_UNDECIDED
    results["m"]["head"][3] = serve_record("onnxruntime", "int8", None, status=HARNESS_LIMITED, policies=[])
    status = paired_rows(results, CELLS, AbOptions(rounds=8))
    (row,) = status.to_dict("records")
    assert (row["metric"], row["verdict"], row["broken"]) == ("status", "inconclusive", False)
    assert exit_code(status) == EXIT_UNDECIDED
