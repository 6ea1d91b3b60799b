"""Group-sequential looks for `inferbench ab`: stop a cell once it is decided, with error rates
that hold however often the cell was looked at.

Testing after every round and stopping at the first significant answer inflates the error rate:
a nominal 5% paired t-test looked at after each of 20 rounds errs about a quarter of the time.
A group-sequential design spends the error rate over the looks instead. A spending function
alpha(tau) says how much of alpha may be spent by "time" tau in [0, 1], and each look's critical
value spends exactly the increment, given that the earlier looks did not stop (Lan & DeMets
1983, "Discrete sequential boundaries for clinical trials", Biometrika 70:659-663). Ours is of
the O'Brien-Fleming type, alpha(tau) = 2 - 2 Phi(z[1 - alpha/2] / sqrt(tau)) (Lan & DeMets 1983,
after O'Brien & Fleming 1979, Biometrics 35:549-556): early looks spend almost nothing, so only a
clear answer stops a cell after a few rounds, and the last look keeps nearly all of alpha, close
to a fixed-sample test.

- A look's information is its number of clean rounds. Sums of independent rounds behave like
  Brownian motion observed at n_1 < n_2 < ...: the statistics of two looks are correlated as
  sqrt(n_i / n_j). The critical values come from the recursive numerical integration of
  Armitage, McPherson & Rowe (1969, "Repeated significance tests on accumulating data", JRSS A
  132:235-244): the density of the not-yet-stopped paths, carried from look to look.
- tau, the share of alpha a look may spend, is given by the caller (`inferbench.ab.core`: the larger
  of rounds run / the most rounds and time used / the budget, and 1 at a cell's last look). It
  must not depend on the cell's own results; calendar time qualifies (Lan & DeMets 1989,
  "Group sequential procedures: calendar versus information time", Stat Med 8:1191-1198).
- Looking again at the same clean rounds with a later tau replaces that look: its boundary can
  only come down, so the paths stopped are those of the replaced design, whose error is exact.
- The noise is estimated from the rounds themselves, so a look's critical value is used as its
  nominal significance level and read off Student's t at the look's degrees of freedom (the
  significance-level approach for an unknown variance, Jennison & Turnbull 2000, "Group
  Sequential Methods with Applications to Clinical Trials", Chapman & Hall/CRC).
- The interval shown at a look is the repeated confidence interval at that look's level
  (Jennison & Turnbull 1989, "Interim analyses: the repeated confidence interval approach",
  JRSS B 51:305-361): the intervals of all looks hold together, so the one a cell stopped on does.

Each side of a cell's question (slower by more than the threshold; not slower by that much) is
its own one-sided design, computed as if the other boundary did not stop anything: the other
side only ends paths early, so the error of each stays at or below its alpha (non-binding).
tests/test_sequential.py checks the error rates on simulated rounds under optional stopping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from inferbench.cell.stoprule import next_look

#: A look: (clean rounds so far, spending time tau in (0, 1]).
Look = tuple[int, float]
Looks = tuple[Look, ...]
#: Clean rounds at the first look; later looks come at geometrically spaced counts (`look_due`).
FIRST_LOOK = 3
#: The recursion's grid: points per look (odd, for Simpson's rule) and the lower cut-off in
#: standard deviations (paths that far below the boundary never come back to it).
_POINTS = 301
_LOW_SD = 9.0


def spent(alpha: float, tau: float) -> float:
    """The O'Brien-Fleming-type spending function: alpha that may be spent by time tau."""
    from scipy.stats import norm

    if tau <= 0:
        return 0.0
    if tau >= 1:
        return alpha
    return float(2 * norm.sf(norm.isf(alpha / 2) / math.sqrt(tau)))


def look_due(looks: Looks, rounds: int) -> bool:
    """Whether `rounds` clean rounds call for a look: the first at FIRST_LOOK, each later one at
    1.5 times the rounds of the one before (3, 5, 8, 12, 18, 27, ...), as the timed loop's
    precision rule looks (`inferbench.cell.stoprule`). Every look costs a little of alpha and every
    Student-t approximation adds a little error, so a handful of looks, not one a round: on
    simulated rounds a look every round made the false-alarm rate 1.3 times alpha, these 1.1."""
    return rounds >= (next_look(looks[-1][0], FIRST_LOOK) if looks else FIRST_LOOK)


def add_look(looks: Looks, rounds: int, tau: float) -> Looks:
    """The looks after one at `rounds` clean rounds and time `tau`. A look with no clean round
    since the last one replaces it with the later tau; none is taken below two rounds."""
    if rounds < 2:
        return looks
    tau = min(1.0, max(tau, looks[-1][1] if looks else 0.0))
    if looks and looks[-1][0] >= rounds:
        return (*looks[:-1], (looks[-1][0], tau))
    return (*looks, (rounds, tau))


def nominal_level(alpha: float, looks: Sequence[Look]) -> float:
    """The one-sided significance level of the last look: the test rejects there when its
    p-value is below this (alpha itself for one look at tau = 1)."""
    return _nominal_level(alpha, tuple(looks))


@lru_cache(maxsize=4096)
def _nominal_level(alpha: float, looks: Looks) -> float:
    from scipy.special import ndtr

    return float(ndtr(-critical_values(alpha, looks)[-1]))


def critical_values(alpha: float, looks: Looks) -> tuple[float, ...]:
    """Standard-normal critical values of the looks (inf where a look spends nothing)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1; got {alpha}")
    return _design(alpha, tuple(looks))[0]


#: The design up to a look: its critical values, and the grid and density of the paths that go on.
_Design = tuple[tuple[float, ...], np.ndarray, np.ndarray]


@lru_cache(maxsize=1024)
def _design(alpha: float, looks: Looks) -> _Design:
    """Built look by look on the cached design of the looks before (a cell adds one a round)."""
    from scipy.stats import norm

    if not looks:
        raise ValueError("no look")
    n, tau = looks[-1]
    target = spent(alpha, tau) - (spent(alpha, looks[-2][1]) if len(looks) > 1 else 0.0)
    if len(looks) == 1:
        value = float(norm.isf(target)) if target > 0 else math.inf
        grid, density = _continuing(n, value * math.sqrt(n), None, None, n)
        return (value,), grid, density
    values, grid, density = _design(alpha, looks[:-1])
    step = n - looks[-2][0]
    if step <= 0:
        raise ValueError(f"looks must have increasing rounds; got {looks}")
    bound = _boundary(grid, density, step, target)
    grid, density = _continuing(n, bound, grid, density, step)
    return (*values, bound / math.sqrt(n)), grid, density


def _simpson(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and Simpson weights on [low, high]."""
    points = np.linspace(low, high, _POINTS)
    weights = np.ones(_POINTS)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return points, weights * (high - low) / (3 * (_POINTS - 1))


def _continuing(
    info: float, bound: float, grid: np.ndarray | None, density: np.ndarray | None, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Grid (points, weights) below `bound` at information `info`, and the density there of
    the paths that have not stopped: at the first look the normal density, later the previous
    look's density carried forward by a normal step of variance `step`."""
    from scipy.stats import norm

    sd = math.sqrt(info)
    high = min(bound, _LOW_SD * sd)  # no boundary (inf): the whole upper tail goes on
    points, weights = _simpson(-_LOW_SD * sd, high)
    if grid is None or density is None:
        return np.stack([points, weights]), norm.pdf(points, scale=sd)
    x, w = grid
    kernel = norm.pdf((points[:, None] - x[None, :]) / math.sqrt(step)) / math.sqrt(step)
    return np.stack([points, weights]), kernel @ (w * density)


def _boundary(grid: np.ndarray, density: np.ndarray, step: float, target: float) -> float:
    """The boundary (on the sum's scale) that the paths still going cross with probability
    `target` after a normal step of variance `step` (inf when nothing is to be spent)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if target <= 0:
        return math.inf
    x, w = grid
    mass = w * density

    def excess(bound: float) -> float:
        return float(mass @ norm.sf((bound - x) / math.sqrt(step))) - target

    low, high = float(x[0]), float(x[-1]) + 40 * math.sqrt(step)
    if excess(low) <= 0:  # cannot spend that much any more: every path left stops
        return low
    return float(brentq(excess, low, high, xtol=1e-10, rtol=1e-12))
