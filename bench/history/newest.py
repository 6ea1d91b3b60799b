"""What `history --check` looks at besides steps: whether the newest point of each cell was
measured at all, and whether the newest points are the run the check was meant to judge.

Series hold `ok` points only, so without these a cell that failed tonight would be judged on
yesterday's point and pass. The rule is compare's: a cell that was `ok` and is anything else
now (error, timeout, accuracy-fail, unavailable, skipped, or missing from the run) is broken.
"""

from __future__ import annotations

import pandas as pd

from inferbench.errors import UserError
from inferbench.history.series import cell_title
from inferbench.status import OK


def broken_cells(points: pd.DataFrame) -> list[str]:
    """One line per cell (on one machine) whose newest point is not `ok` after an `ok` one."""
    found = []
    for (_, fingerprint), group in points.groupby(["cell_key", "fingerprint"], sort=False):
        newest = group.iloc[-1]
        if newest["status"] != OK and (group["status"] == OK).any():
            found.append(
                f"{cell_title(newest)} on {fingerprint}: the newest point (run {newest['run_id']}) "
                f"is {newest['status']}, after ok points"
            )
    return found


def missing_from_run(points: pd.DataFrame, run_id: str, where: str) -> list[str]:
    """Check that `run_id` (tonight's) holds the newest points of its machines: a UserError
    when it is not recorded or a later run is, and one line per cell that its machine's
    previous run measured (`ok`) and it lacks. `where` names the history in messages."""
    ours = points[points["run_id"] == run_id]
    if ours.empty:
        raise UserError(
            f"history check: run {run_id!r} has no recorded cell matching the filters in {where} "
            "(its append failed or never ran), so the newest points are an older run's"
        )
    lines = []
    for fingerprint, mine in ours.groupby("fingerprint", sort=False):
        machine = points[(points["fingerprint"] == fingerprint) & (points["run_id"] != run_id)]
        newer = machine[machine["run_time"] > mine["run_time"].max()]
        if not newer.empty:
            raise UserError(
                f"history check: run {newer['run_id'].iloc[-1]!r} on {fingerprint} is newer than "
                f"{run_id!r}, so the newest points are not {run_id!r}'s"
            )
        before = machine[machine["run_time"] < mine["run_time"].min()]
        if before.empty:
            continue  # the machine's first run: nothing it could have dropped
        previous = before[before["run_id"] == before["run_id"].iloc[-1]]
        dropped = previous[(previous["status"] == OK) & ~previous["cell_key"].isin(mine["cell_key"])]
        for _, row in dropped.iterrows():
            lines.append(
                f"{cell_title(row)} on {fingerprint}: ok in run {row['run_id']}, missing from {run_id}"
            )
    return lines
