"""The variance-sources campaign's arithmetic (bench/tools/variance_sources.py), on made-up rounds."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferbench.ab.core import clean_pairs
from inferbench.ab.rounds import pair_processes
from inferbench.tools.variance_sources import (
    ALTERNATING,
    FORKED,
    GROUP,
    SETTINGS,
    grouped,
    launcher,
    markdown,
    noises,
    table,
    with_setting,
)


def _record(value: float, interfered: bool = False, status: str = "ok") -> dict[str, Any]:
    return {
        "status": status,
        "latency_min_ms": value,
        "latency_p50_ms": 1.1 * value,
        "interfered": interfered,
    }


def test_a_setting_is_merged_into_its_profile_sections_without_touching_the_profile() -> None:
    profile = {"sweep": {"models": ["lstm"], "pin": False}, "measure": {"min_seconds": 0.5}}
    merged = with_setting(profile, {"sweep": {"pin": True}, "measure": {"max_seconds": 4.0}})
    assert merged == {
        "sweep": {"models": ["lstm"], "pin": True},
        "measure": {"min_seconds": 0.5, "max_seconds": 4.0},
    }
    assert profile["sweep"]["pin"] is False


def test_pairs_leave_out_failed_and_interfered_rounds_unless_kept() -> None:
    by_side = {
        "base": [_record(1.0), _record(1.0, interfered=True), _record(1.0, status="error")],
        "head": [_record(1.1), _record(1.1), _record(1.1)],
    }
    assert len(clean_pairs(by_side)) == 1
    assert len(clean_pairs(by_side, keep_interfered=True)) == 2


def test_grouped_rounds_are_the_medians_of_three_processes_per_side() -> None:
    pairs = clean_pairs(
        {
            "base": [_record(v) for v in (1, 5, 2, 7, 7, 7, 9)],
            "head": [_record(v) for v in (3, 3, 4, 1, 1, 1, 9)],
        }
    )
    merged = grouped(pairs)
    assert len(merged) == 2  # the seventh round is left over
    assert merged[0][0]["latency_min_ms"] == 2 and merged[0][1]["latency_min_ms"] == 3
    assert merged[1][0]["latency_min_ms"] == 7 and merged[1][1]["latency_p50_ms"] == 1.1


def test_the_table_compares_settings_in_one_budget() -> None:
    """A noisy setting and a quiet one, plus the two read from as-is: the quiet setting catches a
    smaller slowdown; median-of-3 rounds cost three rounds each, so fewer fit the budget."""
    rng = np.random.default_rng(0)

    def rounds(sigma: float) -> dict[str, list[dict[str, Any]]]:
        return {
            side: [_record(float(np.exp(rng.normal(0, sigma)))) for _ in range(12)]
            for side in ("base", "head")
        }

    records = {"as-is": {"c": rounds(0.10)}, "pinned": {"c": rounds(0.01)}}
    seconds = {"as-is": {"c": 10.0}, "pinned": {"c": 10.0}}
    found = noises(records, seconds)
    assert set(found) == {"as-is", "pinned", "all-rounds", f"median-of-{GROUP}"}
    planned = table(found, budget_s=300, threshold=0.05, confidence=0.95)
    rows = {(r["setting"], r["statistic"]): r for r in planned}
    assert rows["pinned", "min"]["detects_pct"] < rows["as-is", "min"]["detects_pct"]
    assert rows["as-is", "min"]["rounds_in_budget"] == 30
    assert rows[f"median-of-{GROUP}", "min"]["rounds_in_budget"] == 10
    assert rows[f"median-of-{GROUP}", "min"]["clean_rounds"] == 4
    text = markdown(list(rows.values()), 300, 0.05)
    assert "| pinned | c | min |" in text and "5 min budget" in text


def test_the_gate_settings_fork_and_alternate_the_sides_as_ab_does() -> None:
    """`gate` and `gate-longer` are `make gate`'s rounds: forked workers, three a side, run by the
    parent in ab's alternating order through each side's agent."""
    asked: list[tuple[str, str, int]] = []

    class FakeAgent:
        def __init__(self, side: str) -> None:
            self.side = side

        def run(self, key: str, round_index: int) -> dict[str, Any]:
            asked.append((self.side, key, round_index))
            latencies = [1_000_000, 1_100_000]
            return {
                "status": "ok",
                "batch_size": 1,
                "latencies_ns": latencies,
                "latency_p50_ms": 1.05,
                "throughput_sps": 950.0,
            }

    assert {"gate", "gate-longer"} <= FORKED and ALTERNATING == {"gate": 3, "gate-longer": 3}
    assert SETTINGS["gate-longer"]["measure"] == SETTINGS["longer-loops"]["measure"]
    launch = launcher({side: FakeAgent(side) for side in ("base", "head")})  # type: ignore[dict-item]
    pooled = pair_processes("c", 1, launch, ALTERNATING["gate"])
    assert pooled["base"]["repeats"] == pooled["head"]["repeats"] == 3
    assert [side for side, _, _ in asked] == ["head", "base", "base", "head", "head", "base"]
    assert {(key, r) for _, key, r in asked} == {("c", 1)}
