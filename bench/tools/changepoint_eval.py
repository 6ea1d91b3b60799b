"""Hit and false-alarm rates of the history change-point detector on synthetic series.

    python -m inferbench.tools.changepoint_eval [--series 200] [--seed 0]

Each series is a metric with Gaussian noise of `--noise` (relative, 2% by default); the
stepped ones get a `--step` (3%) rise after `--before` points, followed by k points. A hit is
a change-point within `--tolerance` points of the true step; a false alarm is any change-point
on a flat series. `--check` rows give what `inferbench history --check` would do: how often a
step is reported within k points, and how often a flat series fails the check at its end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from inferbench.history.changepoints import change_points, new_regression


def _series(rng: np.random.Generator, n: int, noise: float, step_at: int | None, step: float) -> np.ndarray:
    x = 10.0 * (1 + noise * rng.standard_normal(n))
    if step_at is not None:
        x[step_at:] *= 1 + step
    return x


def evaluate(series: int, noise: float, step: float, before: int, tolerance: int, seed: int) -> list[str]:
    lines = []
    started = time.perf_counter()
    calls = 0
    for after in (1, 3, 5, 10, 20):
        rng = np.random.default_rng(seed)
        hits = alarms = 0
        for _ in range(series):
            x = _series(rng, before + after, noise, before, step)
            hits += any(abs(c - before) <= tolerance for c in change_points(x))
            # The check, night by night: did it fire on some night from the step to now?
            alarms += any(new_regression(x[: before + k + 1], True) for k in range(after))
            calls += 1 + after
        lines.append(
            f"{step:.0%} step, {after:2d} point(s) after it: change-point found {hits / series:5.1%}, "
            f"check fired by then {alarms / series:5.1%}"
        )
    for n in (10, 40, 100):
        rng = np.random.default_rng(seed + 1)
        false = checks = 0
        for _ in range(series):
            x = _series(rng, n, noise, None, step)
            false += bool(change_points(x))
            checks += new_regression(x, True) is not None
            calls += 2
        lines.append(
            f"flat, {n:3d} points: any change-point {false / series:5.1%}, "
            f"check fails on the newest point {checks / series:5.1%}"
        )
    per_call = 1000 * (time.perf_counter() - started) / calls
    lines.append(
        f"{series} series per row, noise {noise:.0%}, tolerance ±{tolerance}; {per_call:.2f} ms/call"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--step", type=float, default=0.03)
    parser.add_argument("--before", type=int, default=30)
    parser.add_argument("--tolerance", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for line in evaluate(args.series, args.noise, args.step, args.before, args.tolerance, args.seed):
        print(line)


if __name__ == "__main__":
    main()
