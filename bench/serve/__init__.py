"""Serving under load, engine-agnostic: open-loop arrival schedules (`schedule`), the dispatcher
that sends each request at its scheduled time through a dynamic batcher to N in-flight slots or
an engine's own asynchronous API (`dispatch`, with its records in `run` and a virtual-time
replay in `simulate`), whether the dispatcher kept its schedule (`harness`), the verdict at one
rate against a p99 latency SLO by LoadGen's early-stopping rule (`verdict`), and the search for
the highest rate that passes (`peak`).

The worker's serve mode calls, per cell: `make_schedule` -> `serve` (or `simulate`) ->
`judge`, inside a `measure_at(rate)` that `find_peak` drives. Nothing here imports an engine.
"""
