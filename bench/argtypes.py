"""Parsing of flag values shared by every subcommand (`run`, `ab`, `history`, ...).

One copy, so that a bad value reads the same whichever command it was given to; each
failure is a `UserError`, which `main` turns into one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from inferbench.errors import UserError


def items(values: Sequence[str] | None) -> list[str]:
    """Values of a repeatable flag, each also comma-separated, stripped, blanks dropped:
    `-m a,b -m c` -> ['a', 'b', 'c']."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def int_items(values: Sequence[str] | None, what: str) -> list[int]:
    """`items` as integers; `what` names them in the error ("batch sizes")."""
    texts = items(values)
    try:
        return [int(v) for v in texts]
    except ValueError:
        raise UserError(f"{what} must be integers; got {', '.join(texts)}") from None


def optional_items(values: Sequence[str] | None) -> list[str] | None:
    """`items`, but None when the flag was not given, so a profile's own list stands."""
    return items(values) if values else None


def optional_int_items(values: Sequence[str] | None, what: str) -> list[int] | None:
    """`int_items`, but None when the flag was not given."""
    return int_items(values, what) if values else None


def fraction(text: str, example_pct: int = 5) -> float:
    """A share given as a percentage ("5%") or a plain fraction ("0.05"); `example_pct`
    is the value the error message shows as a hint."""
    raw = text.strip()
    hint = f"{example_pct}% or {example_pct / 100:g}"
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserError(f"expected a percentage like {hint}; got {text!r}") from None
    if not math.isfinite(value):  # float() reads "nan" and "inf", which no comparison rejects
        raise UserError(f"expected a finite percentage like {hint}; got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argparse `type` for a plain number: float() also takes "nan" and "inf", and NaN
    passes every range check written as `if value <= 0: fail`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return value


def thread_counts(values: Sequence[str] | None, usable: int) -> list[int] | None:
    """`optional_int_items` for thread counts: each 0 (every usable core) up to `usable`."""
    counts = optional_int_items(values, "threads")
    for t in counts or ():
        if not 0 <= t <= usable:
            raise UserError(f"threads must be between 0 (all cores) and the {usable} usable core(s); got {t}")
    return counts


def assignments(values: Sequence[str], flag: str, form: str) -> list[tuple[str, str]]:
    """`NAME=VALUE` flag values as stripped pairs; `form` is the shape the error shows when one
    is malformed: `assignments(["p99=10%"], "--threshold", "METRIC=PCT")` -> [("p99", "10%")]."""
    pairs = []
    for value in values:
        name, sep, text = value.partition("=")
        if not (sep and name.strip()):
            raise UserError(f"{flag} expects {form}; got {value!r}")
        pairs.append((name.strip(), text.strip()))
    return pairs


def threshold_pairs(values: Sequence[str]) -> list[tuple[str, str]]:
    """`--threshold METRIC=PCT` values (`compare`, `ab`) as (metric, text) pairs; each text
    becomes a number by `fraction`."""
    return assignments(values, "--threshold", "METRIC=PCT (e.g. p99=10%)")


def backend_options(values: Sequence[str]) -> dict[str, dict[str, str]] | None:
    """`--backend-option BACKEND.KEY=VALUE` values by backend, then key; None when none given."""
    form = "BACKEND.KEY=VALUE (e.g. torch.bf16_mode=full)"
    options: dict[str, dict[str, str]] = {}
    for target, value in assignments(values, "--backend-option", form):
        backend, dot, key = target.rpartition(".")
        if not (dot and backend and key):
            raise UserError(f"--backend-option expects {form}; got {target + '=' + value!r}")
        options.setdefault(backend, {})[key] = value
    return options or None


def budget(text: str) -> str:
    """An argparse `type` for `--budget`: a positive, finite duration like 15m (a long digit
    string reads as infinity); kept as text, parsed again where it is used."""
    from inferbench.sweep.budget import parse_budget

    if not math.isfinite(parse_budget(text)):
        raise UserError(f"budget must be a finite duration like 15m, 90s or 1h30m; got {text!r}")
    return text
