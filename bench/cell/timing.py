"""A cell's warm-up and timed loop in each mode, as record fields: the latencies and their
summary, the stopping rule's outcome, the interference seen, and (throughput mode) the counted
rate. The engine is prepared and its inputs are in its own format before these start."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferbench.cell.interference import InterferenceProbe, Thresholds
from inferbench.cell.measure import backend_iteration, measure, measure_throughput
from inferbench.cell.rate import counted_rate
from inferbench.cell.serving import ServeResult, serve_policies
from inferbench.cell.stats import latency_intervals, summarize
from inferbench.config import MeasureConfig, ServeConfig
from inferbench.store.record import CellRecord, as_record


def time_latency(backend: Any, natives: list[Any], batch_size: int, config: MeasureConfig) -> CellRecord:
    """Latency mode: one request in flight; the timed region is run + synchronize, and the
    engine's own time for the call is read after it."""
    probe = _probe(config)
    result = measure(
        backend_iteration(backend, natives), config, engine_time=backend.engine_time_ns, window=probe
    )
    record = as_record(
        {
            **probe.result(),
            "latencies_ns": result.latencies_ns,
            "warmup_iterations": result.warmup.iterations,
            "warmup_s": result.warmup.seconds,
            "warmup_stable": result.warmup.stable,
            "capped": result.capped,
            "p50_half_width_pct": None if result.p50_half_width is None else 100 * result.p50_half_width,
            "p99_reliable": result.tail_ok,
            **summarize(result.latencies_ns, batch_size),
            **latency_intervals([result.latencies_ns], batch_size, config.bootstrap_resamples),
        }
    )
    if result.device_ns:
        # The engine's own clock for the same calls (CUDA events, OpenVINO's request latency):
        # the gap to latency_p50_ms is what the Python call and the harness add.
        record["engine_latencies_ns"] = result.device_ns
        record["engine_p50_ms"] = float(np.median(result.device_ns)) / 1e6
    return record


def time_throughput(backend: Any, natives: list[Any], batch_size: int, config: MeasureConfig) -> CellRecord:
    """Throughput mode: the engine kept saturated with concurrent requests; the rate is counted
    (inferbench.cell.rate), each request's latency is what it waited under that load."""

    def saturate(seconds: float, min_requests: int) -> Any:
        return backend.run_throughput(natives, batch_size, seconds, min_requests)

    probe = _probe(config)
    warmup, run = measure_throughput(saturate, config, window=probe)
    latencies = [end - start for start, end in zip(run.starts_ns, run.ends_ns, strict=True)]
    rate = counted_rate(run)
    low, high = rate.interval
    record = as_record(
        {
            "latencies_ns": latencies,
            "warmup_iterations": warmup.iterations,
            "warmup_s": warmup.seconds,
            "warmup_stable": warmup.stable,
            "capped": len(latencies) < config.min_iterations
            or bool(config.rate_precision and rate.half_width > config.rate_precision),
            "throughput_half_width_pct": 100 * rate.half_width,
            "p99_reliable": len(latencies) >= config.tail_samples,
            "streams": run.streams,
            **probe.result(),
            # Request latency under load: what each request waited, not the engine's best case.
            **summarize(latencies, batch_size),
            **latency_intervals([latencies], batch_size, config.bootstrap_resamples),
        }
    )
    # Counted completions per stream over its busy time (inferbench.cell.rate), never from latency.
    record.update({"throughput_sps": rate.sps, "throughput_ci_low_sps": low, "throughput_ci_high_sps": high})
    record["throughput_slices_sps"] = rate.group_sps
    # The plain count over the whole wall time, edge effect included, as a cross-check.
    record["throughput_wall_sps"] = run.samples / run.wall_seconds
    return record


def time_serve(
    backend: Any,
    natives: dict[int, list[Any]],
    batch_size: int,
    config: MeasureConfig,
    serve: ServeConfig,
    started: float | None = None,
) -> ServeResult:
    """Serve mode: open-loop arrivals at a p99 SLO, each batching policy's peak rate found and
    the best reported (inferbench.cell.serving). `natives` holds the input sets at every merged
    size `b * batch_size` the policies may form."""
    return serve_policies(backend, natives, batch_size, config, serve, started=started)


def _probe(config: MeasureConfig) -> InterferenceProbe:
    return InterferenceProbe(Thresholds(config.interference_max_pct, config.steal_max_pct))
