"""Parsing of flag values shared by every subcommand (`run`, `ab`, `history`, ...).

One copy, so that a bad value reads the same whichever command it was given to; each
failure is a `UserError`, which `main` turns into one line and exit 2.
"""

from __future__ import annotations

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
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        hint = f"{example_pct}% or {example_pct / 100:g}"
        raise UserError(f"expected a percentage like {hint}; got {text!r}") from None
