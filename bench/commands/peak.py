"""`inferbench peak`: this machine's compute and memory ceilings, measured once and cached."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inferbench.argtypes import thread_counts
from inferbench.commands.base import Command, Subparsers, console
from inferbench.config import resolve_threads


class Peak(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        parser = cls.add_parser(
            subparsers, "peak", help="measure (once, then cached) this machine's compute and memory ceilings"
        )
        parser.add_argument("--threads", action="append", help="thread count(s) (default: all cores)")
        parser.add_argument("--refresh", action="store_true", help="measure again even if cached")
        parser.add_argument("--cache-dir", type=Path, help="cache (default .cache/inferbench)")

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        threads = thread_counts(args.threads, resolve_threads(0))
        return peak_command(threads or [0], refresh=args.refresh, cache_dir=args.cache_dir)


def peak_command(threads: list[int], *, refresh: bool = False, cache_dir: Path | None = None) -> int:
    from rich.table import Table

    from inferbench.machine.peak import PEAK_KEYS, get_peaks
    from inferbench.sweep.runner import default_cache_dir

    table = Table("threads", "FP32 GFLOP/s", "BF16 GFLOP/s", "INT8 GOP/s", "memory GB/s", "source")
    for t in dict.fromkeys(resolve_threads(t) for t in threads):
        peaks = get_peaks(cache_dir or default_cache_dir(), t, refresh=refresh, announce=console.print)
        if peaks["cached"]:
            console.print(f"threads={t}: from the cache ({peaks.get('measured_at')}); --refresh re-measures")
        table.add_row(
            str(t),
            *(_ceiling_text(peaks, precision, key) for precision, key in PEAK_KEYS.items()),
            f"{peaks['memory_gbps']:.1f}",
            "cache" if peaks["cached"] else "measured now",
        )
    console.print(table)
    return 0


def _ceiling_text(peaks: dict[str, Any], precision: str, key: str) -> str:
    """A ceiling, or what stands in its place: an emulated rate (never a ceiling), or '-'."""
    if peaks.get(key):
        return f"{peaks[key]:.0f}"
    emulated = (peaks.get("emulated") or {}).get(precision)
    if emulated and emulated.get("gflops"):
        return f"emulated: {emulated['gflops']:.2g} ({slowdown_text(peaks, precision)})"
    return "-"


def slowdown_text(peaks: dict[str, Any] | None, precision: str) -> str:
    """How much slower than fp32 an emulated precision runs here, from the cached ceilings."""
    record = ((peaks or {}).get("emulated") or {}).get(precision) or {}
    slowdown = record.get("slowdown_vs_fp32")
    return f"{slowdown:g}x slower than fp32" if slowdown else "cost unmeasured: inferbench peak"
