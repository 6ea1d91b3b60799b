"""The words and formatted columns every output of a comparison shares: compare.md and the
terminal table (`inferbench.compare.report`) and compare.html (`inferbench.compare.html`).
Rendering only: what they render was decided by `inferbench.compare.core`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from inferbench.compare.core import KEY, SERVE_METRIC, WITHIN_PROCESS, nothing_timed

if TYPE_CHECKING:
    from inferbench.compare.core import CompareOptions


def headline(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "**UNDECIDED**: nothing was compared (no cell on both sides)"

    def cells(mask: pd.Series) -> int:
        return len(frame[mask].drop_duplicates(subset=KEY))

    regressions = cells(frame["regression"] & ~frame["broken"])
    broken = cells(frame["broken"])
    undecided = cells(frame["inconclusive"])
    if regressions or broken:
        what = [f"{regressions} cell(s) regressed"] if regressions else []
        what += [f"{broken} cell(s) broken or missing"] if broken else []
        return "**FAIL**: " + ", ".join(what)
    if undecided:
        return f"**UNDECIDED**: no regression found, but {undecided} cell(s) are inconclusive"
    if nothing_timed(frame):
        return "**UNDECIDED**: no cell was timed on both sides, and none was fixed"
    # Faster cells are reported, never in the way of a pass.
    faster = cells(frame["gating"] & (frame["verdict"] == "improvement"))
    return "**PASS**: no regression" + (f" ({faster} cell(s) faster)" if faster else "")


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    for column in ("ratio", "ci_low", "ci_high", "mde_pct", "q_value", "note", "verdict"):
        if column not in shown:
            shown[column] = np.nan if column not in ("note", "verdict") else ""
    covers = shown["interval"] if "interval" in shown else [""] * len(shown)
    shown["ratio (CI)"] = [
        (f"{r:.3f} [{lo:.3f}, {hi:.3f}]" + (f" {what}" if what == WITHIN_PROCESS else ""))
        if pd.notna(r)
        else ""
        for r, lo, hi, what in zip(shown["ratio"], shown["ci_low"], shown["ci_high"], covers, strict=True)
    ]
    shown["MDE"] = [f"{m:.1f}%" if pd.notna(m) else "" for m in shown["mde_pct"]]
    shown["note"] = shown["note"].fillna("")
    shown["metric"] = [
        m if g or m == "status" else f"{m} (advisory)"
        for m, g in zip(shown["metric"], shown["gating"], strict=True)
    ]
    return shown


GATE_WORDS = {"p50": "p50", "min": "each process's fastest call (min)"}


def legend(options: CompareOptions, frame: pd.DataFrame | None = None) -> str:
    """What the verdicts mean under these options (Markdown; the HTML page shows it too). A
    frame whose rows name their own gating statistic (`ab --gate-on auto`) says so."""
    thresholds = f"{options.max_regression:.0%}" + "".join(
        f", {m} {t:.0%}" for m, t in options.thresholds.items()
    )
    per_cell = frame is not None and "gate_on" in frame and frame["gate_on"].notna().any()
    gating = (
        "per cell, the statistic its calibration found steadier (p50 or each process's fastest call, "
        "column gate_on)"
        if per_cell
        else GATE_WORDS[options.gate_on]
    )
    return (
        f"Threshold {thresholds}; {gating} gates, and throughput in throughput-mode "
        "cells; the other metrics (a latency-mode cell's throughput is 1/mean of the same calls) are "
        "advisory. The question is one-sided: is NEW worse than BASE by more than the threshold? "
        "**regression** (fails): worse than the threshold, significant at alpha="
        f"{options.alpha} over all gating tests (Holm; `ab`: at each cell's sequential boundary); "
        f"**no change** (passes): the {options.confidence:.0%} interval's worse end lies within the "
        "threshold (the cell may be faster); **improvement** (passes): better than the threshold, "
        "significant; **inconclusive**: neither (too noisy to decide, or disturbed; for a status row, "
        "a side that failed in some rounds only). Ratios are NEW/BASE; an interval marked "
        f"{WITHIN_PROCESS} covers the noise inside one process per side only; "
        "**MDE**: the slowdown this cell would catch 80% of the time at its measured noise "
        "(`ab`: at the look where the cell stopped, whose boundary is strict early on, so a cell "
        "that passed after a few rounds shows a large one)."
    ) + (
        SERVE_LEGEND
        if frame is not None and "metric" in frame and (frame["metric"] == SERVE_METRIC).any()
        else ""
    )


SERVE_LEGEND = (
    " Serve-mode cells gate on max_qps_at_slo, the most requests/s whose p99 latency met the SLO "
    "(higher is better: a ratio below 1 is worse); a side whose load generator could not keep up "
    "(harness-limited) is not a result, and its cell is inconclusive."
)
