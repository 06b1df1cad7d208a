"""Declared options: the conversions and messages every config and CLI check relies on."""

from __future__ import annotations

import pytest

from bmslogger.options import (
    Option,
    OptionProblems,
    parse_duration,
    parse_key_values,
    resolve_options,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("500ms", 0.5), ("1h", 3600.0), ("2.5", 2.5), (10, 10.0),
     ("1d", 86400.0)],
)
def test_parse_duration_accepts_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-3s", "", True, [1], "1y"])
def test_parse_duration_rejects_with_example(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_int_from_text_accepts_hex_and_checks_range() -> None:
    opt = Option("address", "int", 1, min=1, max=16)
    assert opt.convert("0x10", from_text=True) == 16
    with pytest.raises(ValueError, match="from 1 to 16, got 17"):
        opt.convert("17", from_text=True)
    with pytest.raises(ValueError, match="expected an integer"):
        opt.convert("16")  # a TOML string is not an integer


def test_bool_is_not_an_int_and_int_is_not_a_bool() -> None:
    with pytest.raises(ValueError):
        Option("n", "int", 0).convert(True)
    with pytest.raises(ValueError):
        Option("b", "bool", False).convert(1)
    assert Option("b", "bool", False).convert("on", from_text=True) is True


def test_choice_and_lists() -> None:
    choice = Option("mode", "choice", "request", choices=("request", "broadcast"))
    assert choice.convert("BROADCAST", from_text=True) == "broadcast"
    with pytest.raises(ValueError, match="one of 'request', 'broadcast'"):
        choice.convert("listen")
    ints = Option("packs", "int_list", (), min=1, max=15)
    assert ints.convert("1, 2,3", from_text=True) == (1, 2, 3)
    assert ints.convert([4, 5]) == (4, 5)
    with pytest.raises(ValueError):
        ints.convert([0])


def test_resolve_collects_every_problem_and_fills_defaults() -> None:
    declared = (Option("cells", "int", 16, min=1, max=48), Option("name", "str"),
                Option("fast", "bool", False))
    problems = OptionProblems()
    opts = resolve_options(declared, {"cells": 99, "colour": "red"}, problems=problems)
    keys = sorted(k for k, _ in problems.items)
    assert keys == ["cells", "colour", "name"]
    assert dict(problems.items)["colour"].startswith("unknown key (known keys: cells, fast, name)")
    assert dict(problems.items)["name"] == "missing; expected a string"
    assert opts["fast"] is False


def test_secret_options_are_masked_in_repr() -> None:
    opts = resolve_options((Option("token", "str", "", secret=True),), {"token": "hunter2"})
    assert opts.token == "hunter2"
    assert "hunter2" not in repr(opts)


def test_parse_key_values() -> None:
    assert parse_key_values(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_values(["novalue"])
