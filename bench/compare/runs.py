"""`inferbench compare BASE NEW`: two stored runs read, checked for a matching environment,
compared and written out (compare.csv, compare.md, compare.html).

The comparison itself, its options and its decision rules are the compare core
(`inferbench.compare.core`: import them from there); what the outputs say is
`inferbench.compare.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from inferbench.compare.core import CompareOptions, compare_records, moved_cells
from inferbench.compare.env import RunView, load_view
from inferbench.compare.envcheck import mismatch_line
from inferbench.compare.report import write_outputs
from inferbench.errors import UserError
from inferbench.machine.hosts import envs_by_host, several_hosts, with_host
from inferbench.store.runfolder import load_host_envs


@dataclass(frozen=True)
class Comparison:
    """Two stored runs compared: the verdict rows, the cells in one run only, the notes the
    outputs carry, and both runs as read (for the page's environments and distributions)."""

    frame: pd.DataFrame
    unmatched: pd.DataFrame
    notes: tuple[str, ...]
    base: RunView
    new: RunView


def compare_dirs(
    base_dir: Path, new_dir: Path, options: CompareOptions, *, allow_mismatch: bool = False
) -> Comparison:
    """Compare two run directories (nothing written).

    Runs measured on different CPUs, engine versions, thread or measurement settings are
    refused (UserError, one line naming the difference) unless `allow_mismatch`."""
    base_dir, new_dir = _run_dir(base_dir), _run_dir(new_dir)
    base, new = load_view(base_dir), load_view(new_dir)
    base = replace(base, records=with_host(base.records, base.env))
    new = replace(new, records=with_host(new.records, new.env))
    if several_hosts(base.records) or several_hosts(new.records):
        problem = _per_host_mismatch(
            load_host_envs(base_dir), load_host_envs(new_dir), base.settings, new.settings
        )
        moved = moved_cells(base.records, new.records)
        if moved:
            more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
            problem = "; ".join(filter(None, [problem, f"cells on another host: {moved[0]}{more}"]))
    else:
        problem = mismatch_line(base.env, new.env, base.settings, new.settings)
    if problem and not allow_mismatch:
        raise UserError(f"{problem} (--allow-mismatch compares anyway)")
    frame, unmatched = compare_records(base.records, new.records, options)
    single = bool(len(frame)) and "unit" in frame and (frame["unit"] == "iteration").any()
    notes = [f"Compared despite a mismatch: {problem}."] if problem else []
    if single:
        notes.append(SINGLE_PROCESS_CAVEAT)
    if bool(len(frame)) and "unit" in frame and (frame["unit"] == "search").any():
        notes.append(ONE_SEARCH_CAVEAT)
    return Comparison(frame, unmatched, tuple(notes), base, new)


def compare_runs(
    base_dir: Path,
    new_dir: Path,
    options: CompareOptions,
    out_dir: Path | None = None,
    *,
    allow_mismatch: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Compare two run directories; writes compare.csv, compare.md and compare.html into
    out_dir (default NEW). Mismatched runs are refused as in `compare_dirs`."""
    c = compare_dirs(base_dir, new_dir, options, allow_mismatch=allow_mismatch)
    out = out_dir or _run_dir(new_dir)
    md = write_outputs(
        c.frame, c.unmatched, options, out, c.base.name, c.new.name, list(c.notes), views=(c.base, c.new)
    )
    return c.frame, c.unmatched, md


SINGLE_PROCESS_CAVEAT = (
    "**One process per side.** The intervals cover the noise within each process only. A new "
    "process can land a few percent higher or lower (memory layout, frequency, neighbours), and "
    "that shift is not in these intervals: a change smaller than the process-to-process spread "
    "can neither be confirmed nor ruled out. A large change (several times that spread) is "
    "real. For a gate, use `inferbench ab` (interleaved fresh processes, paired), or runs with "
    "`--repeats 3` or more."
)

ONE_SEARCH_CAVEAT = (
    "**One peak search per side (serve cells).** A serve cell's `max_qps_at_slo` is bracketed by "
    "the next rate its search tried, which did not meet the SLO; its interval is that bracket, "
    "the search's resolution, not how far another run's search could land. For a gate, use "
    "`inferbench ab`, whose paired rounds measure that spread."
)


def _per_host_mismatch(
    base_envs: list[dict[str, Any]],
    new_envs: list[dict[str, Any]],
    base_settings: dict[str, Any],
    new_settings: dict[str, Any],
) -> str:
    """The first difference between the environments of one machine on both sides (each host
    against itself, never against another one), or of the settings when no host is shared."""
    base_by, new_by = envs_by_host(base_envs), envs_by_host(new_envs)
    shared = [h for h in base_by if h in new_by]
    found = [mismatch_line(base_by[h], new_by[h], base_settings, new_settings) for h in shared]
    if not shared:
        found = [mismatch_line({}, {}, base_settings, new_settings)]
    return next((line for line in found if line), "")


def _run_dir(path: Path) -> Path:
    """Accept a run directory or its results.csv (the raw samples are read from beside it)."""
    if path.is_file() and path.name == "results.csv":
        path = path.parent
    if not path.exists():
        raise UserError(f"no such run: {path}")
    return path
