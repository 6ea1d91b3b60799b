"""Recorded points grouped into series: one cell, one machine, one set of settings each.

A series never mixes machines (a faster CPU is not a speed-up) nor settings hashes (other
settings are another experiment); its change-points and the `--check` verdict are computed
here once, for the terminal, the HTML page and the exit code alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from inferbench.history.changepoints import (
    CHECK_PENALTY_FACTOR,
    Metric,
    Step,
    new_regression,
    noise_floor,
    steps,
)
from inferbench.status import OK

SERIES_KEY = ("cell_key", "settings_hash", "fingerprint")


@dataclass(frozen=True)
class Series:
    """The history of one cell on one machine: its points (oldest first) and steps."""

    cell_key: str
    fingerprint: str
    machine: str
    settings_hash: str
    points: pd.DataFrame
    steps: tuple[Step, ...]
    regression: Step | None

    @property
    def title(self) -> str:
        return cell_title(self.points.iloc[0])


def cell_title(point: pd.Series) -> str:
    """'mlp onnxruntime fp32 b1 t2' (+ the mode when it is not latency) for one point."""
    mode = "" if point["mode"] == "latency" else f" {point['mode']}"
    return (
        f"{point['model']} {point['backend']} {point['precision']} "
        f"b{point['batch_size']} t{point['threads']}{mode}"
    )


def build_series(
    points: pd.DataFrame,
    metric: Metric,
    *,
    min_change: float = 0.01,
    check_penalty: float = CHECK_PENALTY_FACTOR,
) -> list[Series]:
    """Series of `metric` over the measured (`ok`) points, in the order cells first appear."""
    usable = points[(points["status"] == OK) & points[metric.column].notna()].copy()
    usable["settings_hash"] = usable["settings_hash"].fillna("")
    found = []
    for (cell_key, settings_hash, fingerprint), group in usable.groupby(list(SERIES_KEY), sort=False):
        group = group.reset_index(drop=True)
        values = group[metric.column].astype(float).tolist()
        low = group[metric.ci_low].astype(float).tolist() if metric.ci_low else None
        high = group[metric.ci_high].astype(float).tolist() if metric.ci_high else None
        floor = noise_floor(values, low, high)
        found.append(
            Series(
                cell_key=str(cell_key),
                fingerprint=str(fingerprint),
                machine=str(group["machine"].iloc[0]),
                settings_hash=str(settings_hash),
                points=group,
                steps=tuple(steps(values, metric.higher_is_worse, floor)),
                regression=new_regression(
                    values, metric.higher_is_worse, min_change, floor, penalty_factor=check_penalty
                ),
            )
        )
    return found
