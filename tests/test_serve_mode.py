"""Serve mode as a mode of the sweep (issue 29): its settings, its worker step on fake and real
engines, its row, and the other modes' cells left as they were."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.backends import load_backend
from inferbench.cell import serving
from inferbench.cell.interference import InterferenceProbe, Thresholds
from inferbench.cell.spec import WorkerSpec
from inferbench.cell.worker import run_guarded
from inferbench.commands.selection import add_setting_arguments, add_sweep_arguments, selection_from_args
from inferbench.config import AccuracyConfig, Cell, ServeConfig, load_profile
from inferbench.errors import UserError
from inferbench.models import ModelRef
from inferbench.serve.dispatch import SlotEngine
from inferbench.serve.run import NO_BATCHING, ServeRun
from inferbench.serve.verdict import HARNESS_LIMITED, OUTCOMES, PASS, UNDECIDED, min_queries
from inferbench.status import HARNESS_LIMITED as HARNESS_LIMITED_STATUS
from inferbench.status import STATUSES
from inferbench.store.record import CSV_COLUMNS, FIELDS
from inferbench.sweep.runner import run_sweep
from tests.conftest import FAST_MEASURE, fake_sweep

SLEEP = "tests.fakes:SleepBackend"
# A generous SLO: its 5% lag allowance (5 ms) holds on a busy 2-vCPU machine.
SERVE = ServeConfig(slo_ms=100.0, queries=459, max_trials=3, slots=1)
TRIAL_KEYS = {
    "rate_qps",
    "outcome",
    "queries",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "achieved_qps",
    "goodput_qps",
    "dispatch_lag_p99_ms",
    "mean_batch",
}
POLICY_KEYS = {
    "max_batch",
    "max_wait_ms",
    "max_qps_at_slo",
    "first_unmet_qps",
    "upper_outcome",
    "reason",
    "trials",
}


# -- settings --------------------------------------------------------------------------------


def test_serve_is_a_mode_with_its_own_cells() -> None:
    config = fake_sweep([SLEEP], batch_sizes=(1,), modes=("latency", "serve"), serve=SERVE)
    latency, serve = config.cells()
    assert (latency.mode, serve.mode) == ("latency", "serve")
    assert serve.key == latency.key + "__serve"


def test_serve_settings_hash_only_serve_cells() -> None:
    plain = fake_sweep([SLEEP], batch_sizes=(1,), modes=("latency", "throughput"))
    both = fake_sweep([SLEEP], batch_sizes=(1,), modes=("latency", "throughput", "serve"), serve=SERVE)
    for cell in plain.cells():  # the other modes' settings (and so their hashes) are unchanged
        assert both.cell_settings(cell, {}) == plain.cell_settings(cell, {})
    serve_cell = next(c for c in both.cells() if c.mode == "serve")
    settings = both.cell_settings(serve_cell, {})
    assert settings["serve.slo_ms"] == 100 and settings["serve.max_batch"] == (1,)


def test_trial_queries_default_to_loadgens_minimum_with_one_over_the_bound() -> None:
    assert ServeConfig(slo_ms=10).trial_queries == 662
    assert ServeConfig(slo_ms=10, percentile=0.9).trial_queries == min_queries(1, 0.9)
    assert ServeConfig(slo_ms=10, queries=500).trial_queries == 500
    assert ServeConfig(slo_ms=10, queries=500).query_cap == 2000
    assert ServeConfig(slo_ms=10, queries=100).query_cap == 662  # enough to pass with one over


def test_serve_settings_are_checked_on_construction() -> None:
    with pytest.raises(UserError, match="serve mode needs a latency target"):
        fake_sweep([SLEEP], modes=("serve",))
    with pytest.raises(UserError, match=r"serve\.max_batch must be integers >= 1; got 0"):
        ServeConfig(slo_ms=10, max_batch=(1, 0))
    with pytest.raises(UserError, match=r"serve\.arrival must be one of"):
        ServeConfig(slo_ms=10, arrival="weibull")
    assert ServeConfig(slo_ms=10, max_batch=[1, 4]).max_batch == (1, 4)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"serve\.engine_api must be one of auto, slots; got 'threads'"):
        ServeConfig(slo_ms=10, engine_api="threads")


def test_flags_merge_over_the_profiles_serve_table() -> None:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    add_setting_arguments(parser, inputs=False)
    flags = ["--mode", "serve", "--slo-ms", "50", "--arrival", "gamma", "--burstiness", "0.5"]
    flags += ["--max-batch", "1,4,8", "--max-wait-ms", "0,2.5", "--serve-queries", "700"]
    args = parser.parse_args(flags)
    selection = selection_from_args(args)
    profile = fake_sweep([SLEEP], serve=ServeConfig(slo_ms=10, seed=7, slots=2))
    config = profile.with_overrides(selection)
    assert config.modes == ("serve",)
    assert config.serve == ServeConfig(
        slo_ms=50.0,
        arrival="gamma",
        burstiness=0.5,
        max_batch=(1, 4, 8),
        max_wait_ms=(0.0, 2.5),
        queries=700,
        seed=7,  # the profile's, where no flag says otherwise
        slots=2,
    )
    assert selection_from_args(parser.parse_args([])).serve is None


def test_the_worker_spec_carries_serve_settings_for_serve_cells_only(tmp_path: Path) -> None:
    spec = WorkerSpec(
        cell=Cell("mlp", "torch", "fp32", 1, 1, "serve"),
        model_ref=ModelRef("mlp", "builtin"),
        measure=FAST_MEASURE,
        cache_dir=tmp_path,
        serve=replace(SERVE, max_batch=(1, 4)),
    )
    assert WorkerSpec.from_dict(spec.to_dict()) == spec
    latency = replace(spec, cell=replace(spec.cell, mode="latency"))
    assert "serve" not in latency.to_dict()


def test_the_record_declares_the_serve_fields_after_the_older_columns() -> None:
    new = [
        "slo_ms",
        "serve_percentile",
        "arrival",
        "burstiness",
        "max_qps_at_slo",
        "max_qps_first_unmet",
        "serve_upper_outcome",
        "best_max_batch",
        "best_max_wait_ms",
        "serve_harness_limited",
        "dispatch_lag_p99_ms",
        "goodput_qps",
        "serve_p99_ms",
    ]
    assert list(CSV_COLUMNS[-len(new) :]) == new
    assert "serve_policies" in FIELDS and "serve_policies" not in CSV_COLUMNS
    assert HARNESS_LIMITED_STATUS == HARNESS_LIMITED and HARNESS_LIMITED_STATUS in STATUSES


# -- the worker step -------------------------------------------------------------------------


class _FixedBatch:
    name = "fixed"
    variable_batch = False


def test_a_fixed_batch_engine_runs_no_merged_batches() -> None:
    largest, reason = serving.largest_batch(_FixedBatch(), {1: ["a"], 2: ["b"]}, 1)
    assert largest == 1 and "prepared for one batch size" in reason


def _spec(tmp_path: Path, model: str, backend: str, serve: ServeConfig, kind: str = "builtin") -> WorkerSpec:
    return WorkerSpec(
        cell=Cell(model, backend, "fp32", 1, 1, "serve"),
        model_ref=ModelRef(model, kind),
        measure=replace(FAST_MEASURE, max_seconds=5.0, warmup_seconds=0.05),
        cache_dir=tmp_path,
        accuracy=AccuracyConfig(eval_samples=4),
        serve=serve,
    )


def _capture_runs(monkeypatch: pytest.MonkeyPatch) -> list[ServeRun]:
    """Every ServeRun the worker's dispatcher makes (the real one, wrapped)."""
    runs: list[ServeRun] = []
    real = serving.serve

    def recording(*args: Any, **kwargs: Any) -> ServeRun:
        run = real(*args, **kwargs)
        runs.append(run)
        return run

    monkeypatch.setattr(serving, "serve", recording)
    return runs


def _check_row(record: dict[str, Any], serve: ServeConfig, runs: list[ServeRun]) -> None:
    assert record["status"] in ("ok", HARNESS_LIMITED_STATUS), record.get("reason")
    assert set(record) <= set(FIELDS)
    policies = record["serve_policies"]
    first_wait = serve.max_wait_ms[0]
    assert [(p["max_batch"], p["max_wait_ms"]) for p in policies] == [
        (b, 0.0 if b == 1 and w == first_wait else float(w))
        for b in serve.max_batch
        for w in serve.max_wait_ms
    ]  # max_batch 1 never waits: it runs once, with no wait, and its other waits are skipped
    for policy in policies:
        assert set(policy) == POLICY_KEYS
        for trial in policy["trials"]:
            assert TRIAL_KEYS <= set(trial) and trial["outcome"] in OUTCOMES
            assert trial["queries"] >= serve.trial_queries
    assert record["slo_ms"] == serve.slo_ms and record["arrival"] == serve.arrival
    if record["status"] == HARNESS_LIMITED_STATUS:
        pytest.skip(f"the machine could not drive the load: {record['reason']}")
    assert record["max_qps_at_slo"] > 0
    best = next(
        p
        for p in policies
        if (p["max_batch"], p["max_wait_ms"]) == (record["best_max_batch"], record["best_max_wait_ms"])
    )
    assert (
        best["max_qps_at_slo"] == max(p["max_qps_at_slo"] or 0 for p in policies) == record["max_qps_at_slo"]
    )
    at_peak = next(t for t in best["trials"] if t["rate_qps"] == record["max_qps_at_slo"])
    assert at_peak["outcome"] == PASS and at_peak["p99_ms"] == record["serve_p99_ms"] <= serve.slo_ms
    assert record["dispatch_lag_p99_ms"] == at_peak["dispatch_lag_p99_ms"]
    assert record["serve_harness_limited"] == (record["serve_upper_outcome"] == HARNESS_LIMITED)
    # The serve core's invariants on every trial the worker ran: latency counts from the
    # scheduled time, which is never after the send, the batch's start or its completion.
    for run in runs:
        scheduled, sent = np.asarray(run.scheduled_ns), np.asarray(run.sent_ns)
        start, end = np.asarray(run.start_ns), np.asarray(run.end_ns)
        assert (sent >= scheduled).all() and (start >= sent).all() and (end >= start).all()
        assert run.latencies_ns == list(end - scheduled)
        assert max(run.batch_sizes) <= run.policy.max_batch
    peak_latencies = np.asarray(record["latencies_ns"]) / 1e6
    assert float(np.percentile(peak_latencies, 99)) == pytest.approx(record["serve_p99_ms"])


@pytest.mark.slow
def test_a_serve_cell_on_a_fixed_batch_fake_skips_merging_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = replace(SERVE, max_batch=(1, 4), start_qps=200.0)
    runs = _capture_runs(monkeypatch)
    record = run_guarded(_spec(tmp_path, "tests.fakes:numpy_model", SLEEP, serve, "factory"))
    merging = record["serve_policies"][1]
    assert merging["trials"] == [] and "cannot merge requests" in merging["reason"]
    _check_row(record, serve, runs)
    assert record["best_max_batch"] == 1


def test_an_undecided_trial_is_not_extended_past_the_cells_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial LoadGen's rule leaves UNDECIDED is run again longer, but only while that fits
    the cell's time: a minilm cell timed out when two extended trials ran past it."""

    @dataclass(frozen=True)
    class Undecided:
        outcome: str = UNDECIDED
        reason: str = "needs more queries"
        more_queries: int = 100

    monkeypatch.setattr(serving, "judge", lambda run, slo_ms, percentile: Undecided())
    runs = _capture_runs(monkeypatch)
    config = ServeConfig(slo_ms=100.0, queries=50, min_seconds=0.0)
    probe = InterferenceProbe(Thresholds(50.0, 50.0))
    asked: list[int] = []

    def fits(rate: float, queries: int) -> bool:
        asked.append(queries)
        return queries <= 50  # the first trial fits, its extension to 150 does not

    trials = serving._Trials(SlotEngine(lambda slot, size: None), NO_BATCHING, config, probe, fits)
    assert trials.can_try(5000.0)
    assert trials.measure_at(5000.0).outcome == UNDECIDED
    assert [run.count for run in runs] == [50] and asked == [50, 150]
    roomy = serving._Trials(
        SlotEngine(lambda slot, size: None), NO_BATCHING, config, probe, lambda r, q: True
    )
    roomy.measure_at(5000.0)  # with time left it is extended up to the query cap
    assert [run.count for run in runs][1:] == [50, 150, 250, 350, 450, 550, 650, 662]  # the cap: 662


def test_policies_share_the_time_left() -> None:
    deadline = time.perf_counter() + 100.0
    half = serving._fits(deadline, sharing=2)  # this policy and one after it: about 50 s each
    assert half(1.0, 40) and not half(1.0, 60)
    whole = serving._fits(deadline, sharing=1)
    assert whole(1.0, 90) and not whole(1.0, 110)


def test_a_serve_cell_where_no_policy_passes_names_no_best_policy(tmp_path: Path) -> None:
    # Every call sleeps 1 ms, ten times the SLO: no policy is searched, none is best.
    serve = replace(SERVE, slo_ms=0.1, max_batch=(1, 4))
    record = run_guarded(_spec(tmp_path, "tests.fakes:numpy_model", SLEEP, serve, "factory"))
    assert record["status"] == "ok" and record["max_qps_at_slo"] is None
    assert record["best_max_batch"] is None and record["best_max_wait_ms"] is None
    assert record["max_qps_first_unmet"] is None  # no rate was tried
    reasons = [p["reason"] for p in record["serve_policies"]]
    assert "over the 0.1 ms SLO before any queueing" in reasons[0] and "cannot merge requests" in reasons[1]


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize(
    ("backend", "engine_api", "driven_by"),
    [
        ("torch", "auto", "slot thread"),
        ("onnxruntime", "auto", "slot thread"),
        ("openvino", "auto", "AsyncInferQueue.start_async"),  # the engine's own asynchronous API
        ("openvino", "slots", "slot thread"),
    ],
)
def test_a_serve_cell_on_a_real_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, engine_api: str, driven_by: str
) -> None:
    available = load_backend(backend).availability()
    if not available.ok:
        pytest.skip(available.reason)
    serve = replace(SERVE, max_batch=(1, 4), max_wait_ms=(1.0,), start_qps=300.0, engine_api=engine_api)
    runs = _capture_runs(monkeypatch)
    record = run_guarded(_spec(tmp_path, "mlp", backend, serve))
    assert driven_by in record["details"]["serve"]["engine_api"]
    _check_row(record, serve, runs)
    assert record["accuracy_checked"] and record["rel_l2_err"] <= record["accuracy_threshold"]
    merged = [max(run.batch_sizes) for run in runs if run.policy.max_batch == 4]
    assert merged and max(merged) > 1  # the engine really ran merged batches


@pytest.mark.slow
def test_a_sweep_with_serve_cells_leaves_the_other_modes_as_they_were(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = fake_sweep([SLEEP], batch_sizes=(1,), modes=("latency",))
    both = fake_sweep(
        [SLEEP], batch_sizes=(1,), modes=("latency", "serve"), serve=replace(SERVE, start_qps=200.0)
    )
    alone = run_sweep(plain, tmp_path / "plain", cache_dir=cache)
    mixed = run_sweep(both, tmp_path / "mixed", cache_dir=cache)
    latency = next(r for r in mixed if r["mode"] == "latency")
    assert (latency["cell_key"], latency["settings_hash"]) == (
        alone[0]["cell_key"],
        alone[0]["settings_hash"],
    )
    assert not any(k in latency for k in ("slo_ms", "max_qps_at_slo", "serve_policies"))
    served = next(r for r in mixed if r["mode"] == "serve")
    assert served["cell_key"].endswith("__serve") and served["status"] in ("ok", HARNESS_LIMITED_STATUS)
    assert served["settings_hash"] != latency["settings_hash"]
    header = (tmp_path / "mixed" / "results.csv").read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)


def test_the_serve_cpu_profile_asks_a_serving_question() -> None:
    config = load_profile("serve-cpu")
    assert "serve" in config.modes and config.serve.slo_ms == 200.0
    assert {"onnxruntime", "openvino"} <= set(config.backends)
    assert set(config.precisions) == {"fp32", "int8"}
    assert config.serve.slots == 1 and config.serve.max_batch == (1, 4)  # latency-bound, and merged
    # The search's floor below its start: a trial there lasts at most measure.max_seconds.
    assert config.serve.trial_queries / config.measure.max_seconds < 25
