"""Cell statuses and the groups the runner, compare and report act on.

- `ok`: measured, and (for every precision) within its accuracy threshold.
- `accuracy-fail`: measured, but its outputs are off the FP32 reference by more than the
  threshold; the numbers are shown, never presented as a clean result.
- `unsupported`: the engine cannot run this model/precision; the reason says why.
- `unavailable`: the engine is not installed or has no device here; the reason names the fix.
- `error`: the engine raised or its worker died; `timeout`: the worker was killed at the deadline.
- `harness-limited`: a serve cell whose every trial found the load generator unable to keep
  its own schedule (inferbench.serve.harness): not a result, and never a failure of the engine;
  the reason says where the dispatcher fell behind.
"""

from __future__ import annotations

OK = "ok"
ACCURACY_FAIL = "accuracy-fail"
UNSUPPORTED = "unsupported"
UNAVAILABLE = "unavailable"
ERROR = "error"
TIMEOUT = "timeout"
#: Left out of a sweep run under `--budget`: it did not fit the time (the reason says so).
SKIPPED = "skipped"
#: Serve mode: the dispatcher could not drive any rate it tried (the reason says why).
HARNESS_LIMITED = "harness-limited"

STATUSES = (OK, ACCURACY_FAIL, UNSUPPORTED, UNAVAILABLE, ERROR, TIMEOUT, SKIPPED, HARNESS_LIMITED)

#: Cells that were timed: their numbers exist.
MEASURED = frozenset({OK, ACCURACY_FAIL})
#: Cells that tried and failed: in a comparison, ok -> one of these is a regression.
FAILED = frozenset({ERROR, TIMEOUT, ACCURACY_FAIL})
#: Cells that never ran at all.
NOT_RUN = frozenset({UNSUPPORTED, UNAVAILABLE, SKIPPED})
#: Statuses `--resume` runs again; every other recorded cell is kept as it is. `unavailable`
#: is retried because the fix (installing the engine, a free GPU) often comes between sessions;
#: `skipped` because a resume is how a budgeted sweep goes on; `harness-limited` because a
#: quieter machine may drive the load it could not.
RETRY_ON_RESUME = frozenset({ERROR, TIMEOUT, UNAVAILABLE, SKIPPED, HARNESS_LIMITED})
