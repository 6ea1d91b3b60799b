"""Was this cell measured alone? CPU counters read around the timed window.

A number measured while something else computed on the same cores is not a property of the
code: in the default sweep a busy neighbour once made resnet50 67x slower, and no row said so.
So the worker reads, at the start and end of its timed window:

- the busy time of the CPUs it may run on (`/proc/stat`, per CPU), minus its own CPU time
  (`/proc/self/stat`, all threads): what the *rest of the machine* used of those cores;
- steal time on those CPUs (the hypervisor ran someone else's VM);
- its own user and system time (a high kernel share means page faults, syscalls, migrations);
- its involuntary context switches (`getrusage`: it was runnable and got preempted).

`interference_pct` and `steal_pct` are shares of the window's capacity on the worker's CPUs
(wall time x number of CPUs in its affinity mask). A window over `interference_max_pct` or
`steal_max_pct` is `interfered`; the runner re-measures such a cell a bounded number of times.
The counters are tick-based (usually 10 ms), so the shares are coarse for windows under ~1 s.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")


@dataclass(frozen=True)
class Counters:
    """CPU counters at one instant; times in clock ticks."""

    wall_ns: int
    busy: int  # all non-idle, non-steal time on the watched CPUs, every process
    steal: int
    own_user: int
    own_system: int
    nivcsw: int


@dataclass(frozen=True)
class Thresholds:
    interference_max_pct: float = 10.0
    steal_max_pct: float = 5.0


def _cpu_lines(text: str, cpus: Iterable[int]) -> tuple[int, int]:
    """(busy, steal) ticks summed over the given CPUs' lines of /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = steal = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        # user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
        v = [int(x) for x in rest.split()]
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7] if len(v) > 7 else 0
    return busy, steal


def _own_times(text: str) -> tuple[int, int]:
    """(utime, stime) ticks of this process, every thread, from /proc/self/stat."""
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    return int(fields[11]), int(fields[12])


def read_counters(cpus: Iterable[int]) -> Counters:
    busy, steal = _cpu_lines(PROC_STAT.read_text(), cpus)
    user, system = _own_times(PROC_SELF_STAT.read_text())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Counters(time.monotonic_ns(), busy, steal, user, system, usage.ru_nivcsw)


def window_stats(before: Counters, after: Counters, n_cpus: int, ticks_per_s: float) -> dict[str, float]:
    """The interference columns for one window between two readings."""
    capacity = (after.wall_ns - before.wall_ns) / 1e9 * ticks_per_s * max(1, n_cpus)
    own_user, own_sys = after.own_user - before.own_user, after.own_system - before.own_system
    others = max(0, (after.busy - before.busy) - own_user - own_sys)  # the two are sampled apart
    steal = max(0, after.steal - before.steal)
    own = own_user + own_sys
    return {
        # Capped: over a short window a tick or two of sampling error can pass 100%.
        "interference_pct": min(100.0, 100 * others / capacity) if capacity > 0 else 0.0,
        "steal_pct": min(100.0, 100 * steal / capacity) if capacity > 0 else 0.0,
        "sys_pct": 100 * own_sys / own if own else 0.0,
        "nivcsw": float(after.nivcsw - before.nivcsw),
    }


def is_interfered(stats: dict[str, Any], limits: Thresholds) -> bool:
    return bool(
        (stats.get("interference_pct") or 0) > limits.interference_max_pct
        or (stats.get("steal_pct") or 0) > limits.steal_max_pct
    )


class InterferenceProbe:
    """`start()` and `stop()` around a timed window; `result()` gives the row's columns.

    Several windows (throughput mode's timed run is one) accumulate: the result covers all."""

    def __init__(
        self,
        limits: Thresholds | None = None,
        read: Callable[[Iterable[int]], Counters] = read_counters,
    ) -> None:
        self.limits = limits or Thresholds()
        self._read = read
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._start: Counters | None = None
        self._windows: list[tuple[Counters, Counters]] = []
        self.available = PROC_STAT.is_file() and PROC_SELF_STAT.is_file()

    def start(self) -> None:
        if self.available:
            self._start = self._read(self._cpus)

    def stop(self) -> None:
        if self.available and self._start is not None:
            self._windows.append((self._start, self._read(self._cpus)))
            self._start = None

    def result(self) -> dict[str, Any]:
        """Columns for the record; empty when the counters are not readable (not Linux)."""
        if not self._windows:
            return {}
        first, last = self._windows[0][0], self._windows[-1][1]
        if len(self._windows) > 1:  # sum the windows, skipping the gaps between them
            sums = [sum(getattr(b, f) - getattr(a, f) for a, b in self._windows) for f in _FIELDS]
            first = Counters(0, 0, 0, 0, 0, 0)
            last = Counters(*sums)
        stats: dict[str, Any] = window_stats(first, last, len(self._cpus), self._ticks)
        stats["interfered"] = is_interfered(stats, self.limits)
        return stats


_FIELDS = ("wall_ns", "busy", "steal", "own_user", "own_system", "nivcsw")
