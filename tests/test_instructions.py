"""Instructions per call (`ab --instructions`): the counters, the counted verdict with no noise
model, and a missing count as a note. Counts of work only; nothing here reads a clock."""

from __future__ import annotations

import mmap
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from inferbench.ab import counters as instructions
from inferbench.ab import instructions as ab_instructions
from inferbench.ab.core import AbOptions, paired_rows
from inferbench.ab.instructions import count_rows, count_side, pick_counter
from inferbench.ab.rounds import interleave
from inferbench.ab.sides import Side
from inferbench.compare.core import CompareOptions, exit_code
from inferbench.compare.verdict import IMPROVEMENT, INCONCLUSIVE, NO_CHANGE, REGRESSION, decide_count
from inferbench.config import Cell
from inferbench.errors import UserError

CELL = asdict(Cell("m", "b", "fp32", 1, 1))  # the cell's axes, each as the sweep names it


def _loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


# ---------------------------------------------------------------- the counters


def test_perf_reader_counts_this_threads_events() -> None:
    """The reader's open/enable/read/disable, on a software event every Linux kernel has: touching
    256 fresh pages faults at least once per page."""
    try:
        counter = instructions.PerfCounter(instructions.PERF_TYPE_SOFTWARE, 2)  # PAGE_FAULTS
    except instructions.CounterUnavailable as exc:
        pytest.skip(str(exc))
    pages = mmap.mmap(-1, 256 * mmap.PAGESIZE)
    counter.start()
    for offset in range(0, len(pages), mmap.PAGESIZE):
        pages[offset] = 1
    faults = counter.stop()
    counter.close()
    assert faults >= 256


def test_hardware_instruction_counter_scales_with_the_work() -> None:
    reason = instructions.perf_reason()
    if reason is not None:
        pytest.skip(reason)
    counter = instructions.PerfCounter()
    counts = []
    for n in (100_000, 200_000):
        counter.start()
        _loop(n)
        counts.append(counter.stop())
    counter.close()
    assert 1.8 < counts[1] / counts[0] < 2.2


def test_a_refusal_names_its_cause() -> None:
    assert "no hardware PMU" in instructions._perf_refusal(2)
    assert "perf_event_paranoid" in instructions._perf_refusal(13)


def test_outside_valgrind_a_client_request_answers_its_default() -> None:
    if instructions.on_valgrind():
        pytest.skip("this test process runs under valgrind")
    assert instructions.client_request(instructions.ZERO_STATS, default=7) == 7
    with pytest.raises(instructions.CounterUnavailable, match="valgrind"):
        instructions.CallgrindCounter(Path("unused"))


def test_callgrind_counts_only_the_calls_between_start_and_stop(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (`make valgrind`)")
    script = tmp_path / "count.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(instructions.__file__).parent)!r})\n"
        "import counters as ins\n"
        "def loop(n):\n    t = 0\n    for i in range(n):\n        t += i\n"
        f"c = ins.CallgrindCounter(ins.Path({str(tmp_path / 'cg.out')!r}))\n"
        "small = ins.count_calls(lambda: loop(5000), c, 2, 1)[0]\n"
        "print(small, ins.count_calls(lambda: loop(10000), c, 2, 1)[0])\n"
    )
    out_file = f"--callgrind-out-file={tmp_path / 'cg.out'}"
    done = subprocess.run(
        ["valgrind", *ab_instructions.CALLGRIND_ARGS, out_file, sys.executable, "-P", str(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    small, large = map(float, done.stdout.split())
    assert small > 5000  # a Python loop step is many machine instructions
    assert 1.8 < large / small < 2.2  # the interpreter's start-up is not in either count


def test_callgrind_totals_are_read_from_a_dump(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("version: 1\nevents: Ir\nfn=main\n3 12\nsummary: 12345\ntotals: 12345\n")
    assert instructions.read_callgrind_total(dump) == 12345


class FakeCounter:
    """A counter that counts the calls it brackets, so many instructions each."""

    def __init__(self, per_call: int) -> None:
        self.per_call, self.calls = per_call, 0

    def start(self) -> None:
        self.calls = 0

    def stop(self) -> int:
        return self.calls * self.per_call


def test_count_calls_gives_instructions_per_call_per_batch() -> None:
    counter = FakeCounter(1000)

    def call() -> None:
        counter.calls += 1

    assert instructions.count_calls(call, counter, calls=10, batches=3) == [1000.0, 1000.0, 1000.0]


# ---------------------------------------------------------------- the counted verdict


def test_decide_count_exact_counts_need_no_noise_model() -> None:
    equal = decide_count([1e6] * 3, [1e6] * 3, 0.01)
    assert (equal.verdict, equal.worse_ratio, equal.ci_low, equal.ci_high) == (NO_CHANGE, 1.0, 1.0, 1.0)
    assert decide_count([1e6] * 3, [1.05e6] * 3, 0.01).verdict == REGRESSION
    assert decide_count([1e6] * 3, [1.005e6] * 3, 0.01).verdict == NO_CHANGE  # inside the threshold
    assert decide_count([1e6] * 3, [0.9e6] * 3, 0.01).verdict == IMPROVEMENT


def test_decide_count_a_spread_wider_than_the_margin_is_undecided() -> None:
    assert decide_count([1e6, 1.02e6, 0.98e6], [1.005e6] * 3, 0.01).verdict == INCONCLUSIVE
    # A spread far inside the margin still decides.
    assert decide_count([1e6, 1.0001e6], [1.05e6, 1.0502e6], 0.01).verdict == REGRESSION
    assert decide_count([], [1e6], 0.01).verdict == INCONCLUSIVE


def _answer(per_call: float) -> dict[str, Any]:
    return {"counts": [per_call] * 3, "instructions_per_call": per_call, "counter": "perf"}


def _gate(head_count: dict[str, Any], threshold: str = "1%") -> Any:
    """An A/A in time (same fake rounds both sides) with the given head count of instructions."""

    def launch(side: str, key: str, round_index: int) -> dict[str, Any]:
        p50 = 10.0 * (1 + 0.001 * round_index)  # both sides alike: the timing is a pass
        return {
            "status": "ok",
            "latency_p50_ms": p50,
            "latency_p99_ms": p50,
            "latency_min_ms": p50,
            "throughput_sps": 100 / p50,
        }

    results = interleave(["c"], 6, launch)
    cells = {"c": {**CELL, "model": "c"}}
    options = AbOptions(
        rounds=6, compare=CompareOptions(thresholds={"instructions": float(threshold.rstrip("%")) / 100})
    )
    counts = {"c": {"base": _answer(1e6), "head": head_count}}
    rows, notes = count_rows(counts, cells, options.compare.threshold("instructions"), "perf")
    return paired_rows(results, cells, options, counted=rows), notes


def test_five_percent_more_instructions_fails_the_gate_at_one_percent() -> None:
    frame, notes = _gate(_answer(1.05e6))
    row = frame[frame["metric"] == "instructions"].iloc[0]
    assert row["verdict"] == REGRESSION and row["gating"] and row["ratio"] == pytest.approx(1.05)
    assert frame.loc[frame["metric"] == "p50", "verdict"].iloc[0] == NO_CHANGE
    assert exit_code(frame) == 1 and notes == []
    assert "engine worker threads" in row["note"]  # where the count cannot see


def test_an_equal_count_passes() -> None:
    frame, _ = _gate(_answer(1e6))
    assert frame.loc[frame["metric"] == "instructions", "verdict"].iloc[0] == NO_CHANGE
    assert exit_code(frame) == 0


def test_a_missing_counter_is_a_note_not_an_error() -> None:
    frame, notes = _gate({"reason": "perf_event_open: no PMU"})
    assert "instructions" not in set(frame["metric"])
    assert notes == ["c: instructions not counted (head: perf_event_open: no PMU)"]
    assert exit_code(frame) == 0  # decided by the timing alone


def test_no_counter_on_this_machine_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instructions, "perf_reason", lambda: "perf_event_open: no PMU")
    monkeypatch.setattr(ab_instructions.shutil, "which", lambda name: None)
    assert pick_counter("perf") == (None, "perf_event_open: no PMU")
    counter, why = pick_counter("auto")
    assert counter is None and "valgrind is not installed" in why
    rows, notes, counts = ab_instructions.count_instructions([], {}, {}, ["c"], "auto", 0.01, Path("x"))
    assert rows == [] and notes == [f"Instructions per call not counted: {why}."]
    assert counts["counter"] is None
    assert ab_instructions.count_instructions([], {}, {}, ["c"], "off", 0.01, Path("x")) == ([], [], {})


def test_a_side_whose_counting_process_fails_gives_each_cell_a_reason(tmp_path: Path) -> None:
    side = Side("base", "broken", shutil.which("false") or "/bin/false")
    answers = count_side(side, {"profile": {}, "name": "p", "overrides": {}}, ["a", "b"], "perf", tmp_path)
    assert set(answers) == {"a", "b"}
    assert all("counting process failed" in a["reason"] for a in answers.values())


def test_the_count_has_its_own_threshold() -> None:
    assert CompareOptions().threshold("instructions") == 0.01
    assert CompareOptions(thresholds={"instructions": 0.02}).threshold("instructions") == 0.02
    with pytest.raises(UserError, match="instructions"):
        CompareOptions(thresholds={"instrs": 0.02})
    with pytest.raises(UserError, match="--instructions"):
        AbOptions(instructions="always")


def test_decide_count_one_odd_batch_in_nine_does_not_undecide_it() -> None:
    """The allocator's occasional heap consolidation lands in one batch: quartiles ignore it."""
    base = [1e6] * 8 + [1.08e6]
    assert decide_count(base, [1e6] * 9, 0.01).verdict == NO_CHANGE
    assert decide_count(base, [1.05e6] * 8 + [0.95e6], 0.01).verdict == REGRESSION
