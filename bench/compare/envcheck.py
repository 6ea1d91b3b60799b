"""Were two runs measured alike? The facts that make a latency comparable across runs.

A committed baseline from other hardware is the classic false alarm of a CI gate: the
baseline in this repository was measured on an AMD EPYC, compared on an Intel Xeon, and 14 of
18 cells "regressed" on unchanged code. So a comparison of two stored runs first checks the
CPU (model and ISA), the engines' versions, the thread settings and the measurement settings,
and names the first differences in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Packages whose version changes what a cell measures (the engines and their runtimes).
ENGINE_PACKAGES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "torchao",
    "tensorrt",
    "torch-tensorrt",
)
# Measurement settings that do not change what one process measures: how many processes,
# how long to wait for a hung one, how the interval is computed, when to re-measure.
NEUTRAL_MEASURE = frozenset(
    {
        "repeats",
        "timeout_seconds",
        "bootstrap_resamples",
        "interference_max_pct",
        "steal_max_pct",
        "interference_retries",
    }
)
MISSING = object()


@dataclass(frozen=True)
class Difference:
    """One fact measured differently: `label` names it the way the one-line message does
    ("CPU model", "onnxruntime", "ISA avx512f", "measure.min_seconds"), so the compare page can
    highlight the same rows the refusal names."""

    label: str
    base: Any
    new: Any


def find_differences(
    base_env: dict[str, Any],
    new_env: dict[str, Any],
    base_settings: dict[str, Any] | None = None,
    new_settings: dict[str, Any] | None = None,
) -> list[Difference]:
    """Every fact that differs; a fact missing from either side is not compared."""
    found: list[Difference] = []

    def check(label: str, a: Any, b: Any) -> None:
        if a is not MISSING and b is not MISSING and a != b:
            found.append(Difference(label, a, b))

    b_cpu, n_cpu = base_env.get("cpu", {}), new_env.get("cpu", {})
    check("CPU model", b_cpu.get("model", MISSING), n_cpu.get("model", MISSING))
    # threads = 0 means "every CPU the run may use": the count is part of the setting.
    b_n, n_n = usable_cpus(b_cpu), usable_cpus(n_cpu)
    check("CPUs", MISSING if b_n is None else b_n, MISSING if n_n is None else n_n)
    b_isa, n_isa = b_cpu.get("isa") or {}, n_cpu.get("isa") or {}
    for flag in sorted(set(b_isa) & set(n_isa)):
        check(f"ISA {flag}", bool(b_isa[flag]), bool(n_isa[flag]))
    b_pkg, n_pkg = base_env.get("packages") or {}, new_env.get("packages") or {}
    for name in ENGINE_PACKAGES:
        check(name, b_pkg.get(name, MISSING), n_pkg.get(name, MISSING))
    b_thr, n_thr = base_env.get("threads") or {}, new_env.get("threads") or {}
    check("inter-op threads", b_thr.get("inter_op", MISSING), n_thr.get("inter_op", MISSING))
    b_vars, n_vars = b_thr.get("env") or {}, n_thr.get("env") or {}
    for var in sorted(set(b_vars) & set(n_vars)):
        check(var, b_vars[var], n_vars[var])
    b_set, n_set = base_settings or {}, new_settings or {}
    check("pin", b_set.get("pin", MISSING), n_set.get("pin", MISSING))
    b_meas, n_meas = b_set.get("measure") or {}, n_set.get("measure") or {}
    for key in sorted((set(b_meas) & set(n_meas)) - NEUTRAL_MEASURE):
        check(f"measure.{key}", b_meas[key], n_meas[key])
    return found


def usable_cpus(cpu: dict[str, Any]) -> int | None:
    """The CPUs the run could use: its affinity mask, else the machine's logical CPUs."""
    affinity = cpu.get("affinity")
    count = len(affinity) if affinity else cpu.get("logical_cpus")
    return int(count) if count else None


def differences(
    base_env: dict[str, Any],
    new_env: dict[str, Any],
    base_settings: dict[str, Any] | None = None,
    new_settings: dict[str, Any] | None = None,
) -> list[str]:
    """Human-readable differences, the ISA flags that differ grouped in one item."""
    found: list[str] = []
    isa: list[str] = []
    for d in find_differences(base_env, new_env, base_settings, new_settings):
        if not d.label.startswith("ISA "):
            found.append(f"{d.label} {d.base!r} vs {d.new!r}")
            continue
        isa.append(f"{d.label[4:]} {'only in base' if d.base else 'only in new'}")
        if len(isa) > 1:  # the ISA flags come one after another: extend their item
            found.pop()
        found.append("ISA " + ", ".join(isa))
    return found


def mismatch_line(
    base_env: dict[str, Any],
    new_env: dict[str, Any],
    base_settings: dict[str, Any] | None = None,
    new_settings: dict[str, Any] | None = None,
) -> str:
    """One line naming what differs, or "" when the runs are comparable."""
    found = differences(base_env, new_env, base_settings, new_settings)
    if not found:
        return ""
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return "BASE and NEW were measured differently: " + "; ".join(found[:3]) + more
