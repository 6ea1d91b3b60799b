"""The group-sequential looks of `inferbench ab`: the design's critical values against published
ones and a simulation, and the error rates of the whole rule (Yuen's estimate, Student t, the
looks) on simulated rounds stopped early, by decision or by the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferbench.compare.sequential import add_look, critical_values, look_due, nominal_level, spent
from inferbench.compare.verdict import (
    IMPROVEMENT,
    INCONCLUSIVE,
    NO_CHANGE,
    REGRESSION,
    Estimate,
    decide,
    decide_sequential,
    paired_estimate,
)


def test_critical_values_match_the_published_obrien_fleming_type_design() -> None:
    """Five equally spaced looks, one-sided 2.5%: the Lan-DeMets O'Brien-Fleming-type boundary
    as R's gsDesign gives it (spending function sfLDOF)."""
    looks = tuple((k, k / 5) for k in range(1, 6))
    expected = (4.877, 3.357, 2.680, 2.290, 2.031)
    assert critical_values(0.025, looks) == pytest.approx(expected, abs=2e-3)
    # One look at the end is the fixed-sample test.
    assert nominal_level(0.05, ((10, 1.0),)) == pytest.approx(0.05)
    assert spent(0.05, 0.0) == 0.0 and spent(0.05, 1.0) == 0.05


def test_the_boundary_spends_alpha_on_simulated_paths() -> None:
    """Looks at uneven information (3, 5, 8, 12, 20 rounds) and spending times: Brownian paths
    cross some look's boundary alpha of the time, and each look spends its increment."""
    looks = ((3, 0.15), (5, 0.25), (8, 0.4), (12, 0.6), (20, 1.0))
    values = np.array(critical_values(0.05, looks))
    rng = np.random.default_rng(0)
    paths = rng.standard_normal((200_000, 20)).cumsum(axis=1)
    n = np.array([n for n, _ in looks])
    z = paths[:, n - 1] / np.sqrt(n)
    crossed = z >= values
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    assert crossed.any(axis=1).mean() == pytest.approx(0.05, abs=0.002)
    spent_by_look = [(first == k).mean() for k in range(len(looks))]
    increments = np.diff([0.0, *(spent(0.05, tau) for _, tau in looks)])
    assert spent_by_look == pytest.approx(increments, abs=0.0015)


def test_looks_are_geometric_and_a_look_without_new_rounds_replaces_the_last() -> None:
    looks: tuple[tuple[int, float], ...] = ()
    due = []
    for rounds in range(1, 31):
        if look_due(looks, rounds):
            looks = add_look(looks, rounds, rounds / 30)
            due.append(rounds)
    assert due == [3, 5, 8, 12, 18, 27]
    # The last look again (an interfered round added nothing): same rounds, the later tau.
    assert add_look(looks, 27, 1.0) == (*looks[:-1], (27, 1.0))
    # Its boundary can only come down: a final look never spends less than the interim one.
    assert nominal_level(0.05, add_look(looks, 27, 1.0)) > nominal_level(0.05, looks)
    assert add_look((), 1, 0.1) == ()  # no spread to go on


def _rounds(rng: np.random.Generator, n: int, slower: float, sigma: float = 0.02) -> tuple[np.ndarray, ...]:
    """n paired rounds: the head's per-round log ratio is normal around log(slower)."""
    base = np.full(n, 10.0)
    return base, base * np.exp(rng.normal(math.log(slower), sigma, n))


def _sequential(
    base: np.ndarray,
    head: np.ndarray,
    threshold: float,
    last: int,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> str:
    """The rule as `ab` runs it: a look whenever one is due, stop at the first decided look;
    `last` is the round the run ends at (the budget), where the last look spends what is left."""
    n_max, looks = len(base), ()
    for rounds in range(2, last + 1):
        final = rounds == last
        if not (final or look_due(looks, rounds)):
            continue
        looks = add_look(looks, rounds, 1.0 if final else rounds / n_max)
        estimate = paired_estimate(base[:rounds], head[:rounds], higher_is_better=False)
        verdict = decide_sequential([estimate], [threshold], [looks], alpha=alpha, confidence=confidence)[
            0
        ].verdict
        if verdict != INCONCLUSIVE:
            return verdict
    return INCONCLUSIVE


def _naive(base: np.ndarray, head: np.ndarray, threshold: float, last: int) -> str:
    """A fixed-sample test repeated after every round, stopping at the first answer."""
    for rounds in range(2, last + 1):
        estimate = paired_estimate(base[:rounds], head[:rounds], higher_is_better=False)
        verdict = decide([estimate], [threshold])[0].verdict
        if verdict != INCONCLUSIVE:
            return verdict
    return INCONCLUSIVE


#: A threshold of (almost) zero puts A/A rounds at the edge of "no regression": the least
#: favourable case, where the false-alarm rate of the regression test is largest.
EDGE = 1e-12
TRIALS = 3000


@pytest.mark.slow
@pytest.mark.parametrize("n_max", [20, 30])
def test_false_alarms_stay_at_alpha_under_optional_stopping(n_max: int) -> None:
    """Simulated A/A runs stopped at the first decided look, and cut by a budget at a random
    round: false regressions at most alpha (5%) plus the simulation's error (3000 trials: a
    standard error of 0.4%). Testing after every round instead errs three to four times as often."""
    rng = np.random.default_rng(n_max)
    alarms = naive_alarms = 0
    for trial in range(TRIALS):
        base, head = _rounds(rng, n_max, slower=1.0)
        last = int(rng.integers(3, n_max + 1))
        alarms += _sequential(base, head, EDGE, last) == REGRESSION
        if trial < TRIALS // 3:
            naive_alarms += _naive(base, head, EDGE, last) == REGRESSION
    assert alarms / TRIALS <= 0.05 + 0.012
    assert naive_alarms / (TRIALS // 3) > 0.12  # the problem the design solves


def test_false_alarms_when_every_round_is_run() -> None:
    """No budget cut: every undecided cell runs all 20 rounds. The rate stays near alpha; what is
    above it is Yuen's t approximation at 8+ rounds (the same at a fixed n), not the looks."""
    rng = np.random.default_rng(1)
    alarms = sum(_sequential(*_rounds(rng, 20, slower=1.0), EDGE, 20) == REGRESSION for _ in range(TRIALS))
    assert alarms / TRIALS <= 0.05 + 0.015


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_a_slowdown_at_the_threshold_rarely_passes(confidence: float) -> None:
    """The other error: a head exactly 5% slower, threshold 5%. Passing it ("not slower by more
    than 5%") happens at most (1 - confidence) / 2 of the time at any look (2.5% at 95%, 10% at
    `make gate`'s 80%), plus the simulation's error; 7.5% slower almost never passes."""
    rng = np.random.default_rng(2)
    passed = clearly_slower = 0
    for _ in range(TRIALS):
        last = int(rng.integers(3, 21))
        base, head = _rounds(rng, 20, slower=1.05)
        passed += _sequential(base, head, 0.05, last, confidence=confidence) in (NO_CHANGE, IMPROVEMENT)
        base, head = _rounds(rng, 20, slower=1.075)
        verdict = _sequential(base, head, 0.05, last, confidence=confidence)
        clearly_slower += verdict in (NO_CHANGE, IMPROVEMENT)
    assert passed / TRIALS <= (1 - confidence) / 2 + 0.012
    assert clearly_slower / TRIALS <= 0.005


def test_a_lower_confidence_passes_more_unchanged_cells_and_alarms_no_more() -> None:
    """`make gate`'s 80% against 95%, on the same simulated A/A rounds (4% noise, a budget of
    8 rounds): more unchanged cells pass within the budget, and no more false alarms (the FAIL
    boundary is alpha's alone)."""
    rng = np.random.default_rng(3)
    verdicts: dict[float, list[str]] = {0.95: [], 0.8: []}
    for _ in range(TRIALS // 3):
        base, head = _rounds(rng, 8, slower=1.0, sigma=0.04)
        for confidence, found in verdicts.items():
            found.append(_sequential(base, head, 0.05, 8, confidence=confidence))
    passes = {c: sum(v in (NO_CHANGE, IMPROVEMENT) for v in found) for c, found in verdicts.items()}
    assert passes[0.8] > passes[0.95] + len(verdicts[0.8]) // 10
    alarms = {c: found.count(REGRESSION) for c, found in verdicts.items()}
    assert alarms[0.8] <= alarms[0.95]  # a pass ends a path: it can only alarm less


def test_clear_answers_stop_early_and_unclear_ones_do_not() -> None:
    """A quiet A/A cell passes, and a clearly slower one fails, long before the most rounds; a
    noisy cell stays open to the end."""
    rng = np.random.default_rng(3)

    def stopped_at(base: np.ndarray, head: np.ndarray) -> int:
        looks: tuple[tuple[int, float], ...] = ()
        for rounds in range(2, 31):
            if look_due(looks, rounds):
                looks = add_look(looks, rounds, rounds / 30)
                estimate = paired_estimate(base[:rounds], head[:rounds], higher_is_better=False)
                if decide_sequential([estimate], [0.05], [looks])[0].verdict != INCONCLUSIVE:
                    return rounds
        return 30

    assert stopped_at(*_rounds(rng, 30, 1.0, sigma=0.01)) <= 12
    assert stopped_at(*_rounds(rng, 30, 1.30, sigma=0.02)) <= 8
    assert stopped_at(*_rounds(rng, 30, 1.0, sigma=0.20)) == 30


def test_one_sided_pass_where_the_two_sided_rule_was_undecided() -> None:
    """4% faster, interval about [0.93, 0.99]: not slower than 5%, so a pass. The old rule needed
    the interval inside ±5% and called it undecided (it is not faster by a significant 5% either)."""
    faster = Estimate(math.log(0.96), 0.015, df=9, n=10)
    (fixed,) = decide([faster], [0.05])
    assert fixed.verdict == NO_CHANGE and fixed.ci_low < 1 / 1.05 and fixed.ci_high < 1.05
    (sequential,) = decide_sequential([faster], [0.05], [((10, 1.0),)])
    assert sequential.verdict == NO_CHANGE and sequential.ci_high < 1.05
    # Much faster, significantly: an improvement, a pass too.
    assert decide([Estimate(math.log(0.8), 0.01, df=9, n=10)], [0.05])[0].verdict == IMPROVEMENT


def test_fail_when_the_lower_bound_is_above_the_threshold() -> None:
    slower = Estimate(math.log(1.15), 0.01, df=9, n=10)
    for decision in (
        decide([slower], [0.05])[0],
        decide_sequential([slower], [0.05], [((10, 1.0),)])[0],
    ):
        assert decision.verdict == REGRESSION and decision.ci_low > 1.05 and decision.q_value < 0.05
    # Slower, but the interval reaches below 1.05: neither a pass nor a fail.
    unsure = Estimate(math.log(1.06), 0.02, df=9, n=10)
    assert decide_sequential([unsure], [0.05], [((10, 1.0),)])[0].verdict == INCONCLUSIVE


def test_an_early_look_needs_far_stronger_evidence_than_the_last() -> None:
    """The same estimate at 5 of 30 rounds and as the last look: the early interval is wider and
    its MDE larger, and a q-value below alpha means the boundary was crossed."""
    estimate = Estimate(math.log(1.12), 0.02, df=4, n=5)
    early = decide_sequential([estimate], [0.05], [((3, 0.1), (5, 5 / 30))])[0]
    last = decide_sequential([estimate], [0.05], [((3, 0.1), (5, 1.0))])[0]
    assert early.ci_high - early.ci_low > last.ci_high - last.ci_low
    assert early.mde_pct > last.mde_pct
    assert (early.verdict, last.verdict) == (INCONCLUSIVE, REGRESSION)
    assert early.q_value >= 0.05 > last.q_value


def test_an_interval_past_the_threshold_that_is_no_regression_says_why() -> None:
    """Three gating cells, one 10% slower: its 95% interval lies wholly above 1.05, but a
    regression must hold at alpha over the three tests at once (Holm: alpha / 3 for the
    smallest p-value), which it does not yet. The row says so instead of leaving a reader to
    square `inconclusive` with [1.052, ...]."""
    from inferbench.compare.core import CompareOptions, judge

    slower = Estimate(math.log(1.10), 0.02, 10, 11)
    steady = Estimate(0.0, 0.02, 10, 11)
    rows = [{"metric": "p50", "mode": "latency", "note": ""} for _ in range(3)]
    frame = judge(rows, [slower, steady, steady], CompareOptions())
    assert frame["verdict"].tolist() == [INCONCLUSIVE, NO_CHANGE, NO_CHANGE]
    assert frame["ci_low"][0] > 1.05
    assert "short of the alpha 0.05 over 3 gating tests" in frame["note"][0]
    assert frame["note"][1] == ""
    # The same cell alone (one gating test) is a regression, with nothing to explain.
    alone = judge(rows[:1], [slower], CompareOptions())
    assert alone["verdict"][0] == REGRESSION and alone["note"][0] == ""
