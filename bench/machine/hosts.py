"""Which machines measured a run, so that rows from different hardware stay apart.

A run from one machine holds one `host` (the machine fingerprint history keys on); a run merged
from shards that ran on several machines can hold several. Latencies from two CPUs are not
one population: ranking, averaging or comparing them together answers a question about the
hardware, not about the engines. So everything that picks, ranks or matches cells adds the
host to its keys, but only when a run holds more than one: a one-host run (the usual case)
looks exactly as it always did, and an older run without the column is one host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from inferbench.history.fingerprint import machine_from_env

HOST = "host"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NaN: a blank CSV cell
        return ""
    return str(value)


def host_of(row: dict[str, Any]) -> str:
    """The row's host fingerprint, or "" when the row does not say (older runs)."""
    return _text(row.get(HOST))


def hosts_in(rows: pd.DataFrame | Iterable[dict[str, Any]]) -> list[str]:
    """The distinct hosts of a run's rows, in order of first appearance (blanks left out)."""
    if isinstance(rows, pd.DataFrame):
        values: Iterable[Any] = rows[HOST] if HOST in rows.columns else []
    else:
        values = (row.get(HOST) for row in rows)
    seen: dict[str, None] = {}
    for value in values:
        if text := _text(value):
            seen.setdefault(text)
    return list(seen)


def several_hosts(rows: pd.DataFrame | Iterable[dict[str, Any]]) -> bool:
    return len(hosts_in(rows)) > 1


def keys_with_host(keys: Sequence[str], rows: pd.DataFrame | Iterable[dict[str, Any]]) -> list[str]:
    """`keys`, plus the host when the rows come from several machines."""
    return [*keys, HOST] if several_hosts(rows) else list(keys)


def with_host(records: list[dict[str, Any]], env: dict[str, Any]) -> list[dict[str, Any]]:
    """Records from before the host column, given the host of their run's environment."""
    if not env or all(host_of(r) for r in records):
        return records
    host = machine_from_env(env).fingerprint
    return [r if host_of(r) else {**r, HOST: host} for r in records]


def envs_by_host(envs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each machine's environment, by fingerprint (the latest one of a machine wins, as a
    resumed run's latest session does in `storage.load_run`)."""
    return {machine_from_env(env).fingerprint: env for env in envs}


def host_labels(envs: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Fingerprint -> a readable name ('AMD EPYC, 2 CPUs, 23 GiB, avx2+fma')."""
    return {fp: machine_from_env(env).label for fp, env in envs_by_host(envs).items()}


def host_title(host: str, labels: dict[str, str]) -> str:
    """'host 3fa2c1d0e9ab (AMD EPYC, 2 CPUs, ...)', or just the fingerprint without a label."""
    name = f"host {host or 'unknown'}"
    return f"{name} ({labels[host]})" if host in labels else name
