"""Flag-value parsing shared by `run`, `ab` and `history`: one copy, the same one-line errors."""

from __future__ import annotations

import pytest

from inferbench.argtypes import fraction, int_items, items, optional_int_items, optional_items
from inferbench.errors import UserError


def test_items_split_repeats_and_commas_and_drop_blanks() -> None:
    assert items(["a, b", "c", " ,d,"]) == ["a", "b", "c", "d"]
    assert items(None) == []
    assert items([]) == []


def test_optional_items_are_none_only_when_the_flag_is_absent() -> None:
    assert optional_items(None) is None
    assert optional_items([]) is None
    # Given but blank stays an (empty) list: the caller decides what an empty override means.
    assert optional_items([" , "]) == []
    assert optional_int_items(["1,8", "4"], "batch sizes") == [1, 8, 4]
    assert optional_int_items(None, "batch sizes") is None


def test_int_items_name_what_was_wrong() -> None:
    assert int_items(["1", "2,3"], "threads") == [1, 2, 3]
    with pytest.raises(UserError, match=r"^threads must be integers; got 1, two$"):
        int_items(["1,two"], "threads")


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), (" 12.5% ", 0.125), ("0.01", 0.01), ("0", 0.0)])
def test_fraction_reads_percent_or_plain(text: str, value: float) -> None:
    assert fraction(text) == pytest.approx(value)


def test_fraction_error_shows_the_callers_example() -> None:
    with pytest.raises(UserError, match=r"^expected a percentage like 5% or 0\.05; got 'five'$"):
        fraction("five")
    with pytest.raises(UserError, match=r"^expected a percentage like 1% or 0\.01; got 'x%'$"):
        fraction("x%", example_pct=1)
