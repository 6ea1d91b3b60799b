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

Resolution, and what the probe cannot see:

- `/proc/stat` counts in clock ticks (USER_HZ, 100/s): one tick of a 4 s window on 2 CPUs is
  0.125% of its capacity, so `interference_pct` and `steal_pct` move in such steps (0.125,
  0.375, ...) and anything under a tick reads 0. The step is in the cell's record as
  `tick_pct`. Finer per-CPU busy time would need `/proc/schedstat` (CONFIG_SCHEDSTATS; the
  2-vCPU VM this was written on has none), so the share of others stays tick-based.
- `run_delay_pct` is the finer reading: the time the worker's own threads were runnable but
  waiting for a CPU (`/proc/self/task/*/schedstat`, nanoseconds, CONFIG_SCHED_INFO), as a share
  of the same capacity. It sees a neighbour in the guest (or too many threads of our own) at
  any window length. It is recorded, not flagged on, because an engine with more runnable
  threads than cores delays itself too. A thread that exits inside the window takes its delay
  with it.
- None of these see a slowdown from outside the guest while the vCPU keeps running: another
  VM on the host's sibling hyperthread, shared caches or memory bandwidth, or a lower clock.
  Steal counts only the time the vCPU was not running at all. A run that is 40% slower with
  `interfered=False` and steal near 0 is that kind (or a different placement of the process);
  only repeats (`--repeats`, `ab`'s rounds) measure it, as process-to-process spread.
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
PROC_SELF_TASKS = Path("/proc/self/task")


@dataclass(frozen=True)
class Counters:
    """CPU counters at one instant; times in clock ticks unless named _ns."""

    wall_ns: int
    busy: int  # all non-idle, non-steal time on the watched CPUs, every process
    steal: int
    own_user: int
    own_system: int
    nivcsw: int
    run_delay_ns: int = 0  # the worker's threads, runnable but not running (0 where unreadable)


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


def run_delay_ns(tasks: Path = PROC_SELF_TASKS) -> int:
    """Nanoseconds this process's threads have waited, runnable, for a CPU: the second field of
    each thread's schedstat (run time, run delay, timeslices); 0 without CONFIG_SCHED_INFO."""
    total = 0
    for stat in tasks.glob("*/schedstat"):
        try:
            fields = stat.read_text().split()
        except OSError:  # the thread exited between the listing and the read
            continue
        total += int(fields[1]) if len(fields) > 1 else 0
    return total


def read_counters(cpus: Iterable[int]) -> Counters:
    busy, steal = _cpu_lines(PROC_STAT.read_text(), cpus)
    user, system = _own_times(PROC_SELF_STAT.read_text())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Counters(time.monotonic_ns(), busy, steal, user, system, usage.ru_nivcsw, run_delay_ns())


def window_stats(before: Counters, after: Counters, n_cpus: int, ticks_per_s: float) -> dict[str, float]:
    """The interference columns for one window between two readings."""
    capacity_ns = (after.wall_ns - before.wall_ns) * max(1, n_cpus)
    capacity = capacity_ns / 1e9 * ticks_per_s
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
        # The step of the two tick-based shares above: what one clock tick is of this window.
        "tick_pct": 100 / capacity if capacity > 0 else 0.0,
        "run_delay_pct": (
            min(100.0, 100 * max(0, after.run_delay_ns - before.run_delay_ns) / capacity_ns)
            if capacity_ns > 0
            else 0.0
        ),
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
            first = Counters(0, 0, 0, 0, 0, 0, 0)
            last = Counters(*sums)
        stats: dict[str, Any] = window_stats(first, last, len(self._cpus), self._ticks)
        stats["interfered"] = is_interfered(stats, self.limits)
        return stats


_FIELDS = ("wall_ns", "busy", "steal", "own_user", "own_system", "nivcsw", "run_delay_ns")
