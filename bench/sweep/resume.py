"""What `--resume` keeps: finished cells measured under the settings of this sweep.

A cell's numbers depend on more than its key (model, backend, precision, batch, threads,
mode): backend options (`torch.bf16_mode=full` against autocast), streams, pinning, and the
measurement and accuracy settings. Each record carries those settings and their hash
(`settings_hash`). Resuming under other settings would put cells of two different
experiments under one run id, so it is refused, naming the differences; the cell key (and
with it the file names and `compare`'s matching of old baselines) stays as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferbench.config import settings_difference
from inferbench.errors import UserError
from inferbench.status import RETRY_ON_RESUME
from inferbench.store.runfolder import load_cells

#: Differences named in the refusal before it says "and N more".
SHOWN_DIFFERENCES = 4


def kept_cells(
    run_dir: Path, settings: dict[str, dict[str, Any]], hashes: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The records of `run_dir` to keep, by cell key. `settings`/`hashes` are this sweep's,
    per cell key. Cells to be retried (error, timeout, unavailable) are run again whatever
    their settings; cells outside this sweep are kept as they are (they carry their own
    settings). Raises UserError when a finished cell of this sweep was measured otherwise."""
    records = {r["cell_key"]: r for r in load_cells(run_dir)}
    differences: dict[str, None] = {}  # ordered set
    conflicting = []
    for key, record in records.items():
        if key not in hashes or record.get("status") in RETRY_ON_RESUME:
            continue
        if record.get("settings_hash") == hashes[key]:
            continue
        conflicting.append(key)
        recorded = record.get("settings")
        if recorded is None:
            differences["settings not recorded (measured before they were)"] = None
        else:
            differences.update(dict.fromkeys(settings_difference(recorded, settings[key])))
    if conflicting:
        named = list(differences)
        more = len(named) - SHOWN_DIFFERENCES
        listed = "; ".join(named[:SHOWN_DIFFERENCES]) + (f"; and {more} more" if more > 0 else "")
        raise UserError(
            f"--resume: {len(conflicting)} finished cell(s) of {run_dir.name} were measured under "
            f"other settings (recorded -> now: {listed}); rerun with those settings, "
            "or start a new run (another --run-id)"
        )
    return records


def record_stands(previous: dict[str, Any] | None, redo_interfered: bool = False) -> bool:
    """Whether an earlier session's record of a cell stands (not one to retry, nor a disturbed
    one when those are to be measured again). Until it is replaced it stays in the CSV."""
    if previous is None or previous["status"] in RETRY_ON_RESUME:
        return False
    return not (redo_interfered and previous.get("interfered"))
