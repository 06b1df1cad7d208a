"""Declared options: what a plugin accepts, and the checks that turn raw values into typed ones.

Device plugins, sinks and simulators declare their settings as a tuple of `Option`s
instead of writing validation code. The same declaration checks a TOML table (where values
already have types), a `--option key=value` on the command line and a `sim://x?key=value`
query (where everything is a string), produces `describe`/README tables, and never lets an
unknown key through. Errors are `ValueError` messages saying what was expected; the caller
adds the file and key path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

_REQUIRED = object()

KINDS = ("str", "path", "int", "float", "bool", "duration", "choice", "int_list", "str_list")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as \"30s\" or \"5m\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(
                f"expected a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\", got {value!r}"
            )
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as \"30s\" or \"5m\", got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Option:
    """One setting a plugin accepts.

    kind is one of ``str``, ``path`` (a file or folder; the config loader makes a relative
    one relative to the config file's folder), ``int``, ``float``, ``bool``, ``duration``
    (seconds, from "30s"-style strings), ``choice`` (one of `choices`), ``int_list``,
    ``str_list``.
    Integers accept ``0x40``-style strings where they come from text. `secret` values are
    never printed or logged.
    """

    name: str
    kind: str
    default: Any = _REQUIRED
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    secret: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"option {self.name}: a choice needs choices")

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def expected(self) -> str:
        """A short phrase for error messages and docs: what a valid value looks like."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = {
            "str": "a string",
            "path": "a file or folder path",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "duration": 'a duration such as "30s" or "5m"',
            "int_list": "a list of integers",
            "str_list": "a list of strings",
        }[self.kind]
        if self.min is not None and self.max is not None:
            text += f" from {_num(self.min)} to {_num(self.max)}"
        elif self.min is not None:
            text += f" of at least {_num(self.min)}"
        elif self.max is not None:
            text += f" of at most {_num(self.max)}"
        return text

    def convert(self, value: Any, from_text: bool = False) -> Any:
        """Return the typed value, or raise ValueError saying what was expected.

        from_text: the value came from a command line or URL, so "16", "0x40", "true"
        and "1,2,3" are read as the option's type.
        """
        kind = self.kind
        if kind == "duration":
            out: Any = parse_duration(value)
        elif kind == "bool":
            out = _to_bool(value, from_text)
        elif kind == "int":
            out = _to_int(value, from_text)
        elif kind == "float":
            out = _to_float(value, from_text)
        elif kind in ("str", "path"):
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {_show(value)}")
            out = value
        elif kind == "choice":
            out = value
            if from_text and isinstance(value, str):
                for choice in self.choices:
                    if str(choice).lower() == value.lower():
                        out = choice
            if out not in self.choices or isinstance(out, bool) != any(
                isinstance(c, bool) for c in self.choices if c == out
            ):
                raise ValueError(f"expected {self.expected()}, got {_show(value)}")
            return out
        elif kind in ("int_list", "str_list"):
            items: Iterable[Any]
            if from_text and isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = value
            else:
                raise ValueError(f"expected {self.expected()}, got {_show(value)}")
            if kind == "int_list":
                out = tuple(_to_int(v, from_text) for v in items)
                for v in out:
                    self._check_range(v)
                return out
            out = tuple(items)
            if not all(isinstance(v, str) for v in out):
                raise ValueError(f"expected {self.expected()}, got {_show(value)}")
            return out
        else:  # pragma: no cover - guarded in __post_init__
            raise AssertionError(kind)
        self._check_range(out)
        return out

    def _check_range(self, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            too_low = self.min is not None and value < self.min
            too_high = self.max is not None and value > self.max
            if too_low or too_high:
                raise ValueError(f"expected {self.expected()}, got {_show(value)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _to_bool(value: Any, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {_show(value)}")


def _to_int(value: Any, from_text: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if from_text and isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {_show(value)}")


def _to_float(value: Any, from_text: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if from_text and isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {_show(value)}")


class Options(Mapping[str, Any]):
    """Validated, read-only settings; ``opts.board`` and ``opts["board"]`` both work."""

    __slots__ = ("_secret", "_values")

    def __init__(self, values: Mapping[str, Any], secret: Iterable[str] = ()) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_secret", frozenset(secret))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Options are read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def masked(self) -> dict[str, Any]:
        """The values with every secret one shown as ``***``: safe for logs and summaries."""
        return {k: ("***" if k in self._secret and v else v) for k, v in self._values.items()}

    def __repr__(self) -> str:
        return f"Options({self.masked()!r})"


@dataclass
class OptionProblems:
    """Problems found while checking a table: (key, message) pairs, all of them."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def resolve_options(
    declared: Iterable[Option],
    raw: Mapping[str, Any],
    from_text: bool = False,
    problems: OptionProblems | None = None,
) -> Options:
    """Check `raw` against `declared`: unknown keys, missing required keys, types, ranges.

    Collects every problem into `problems` when given (the config loader wants them all at
    once); otherwise raises ValueError with the first one.
    """
    collect = problems if problems is not None else OptionProblems()
    by_name = {o.name: o for o in declared}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        opt = by_name.get(key)
        if opt is None:
            known = ", ".join(sorted(by_name)) or "none"
            collect.add(key, f"unknown key (known keys: {known})")
            continue
        try:
            values[key] = opt.convert(value, from_text=from_text)
        except ValueError as err:
            collect.add(key, str(err))
    for opt in by_name.values():
        if opt.name not in raw:
            if opt.required:
                collect.add(opt.name, f"missing; expected {opt.expected()}")
            else:
                values[opt.name] = opt.default
    if problems is None and collect:
        key, message = collect.items[0]
        raise ValueError(f"{key}: {message}")
    return Options(values, secret=(o.name for o in by_name.values() if o.secret))


def parse_key_values(pairs: Iterable[str]) -> dict[str, str]:
    """``["cells=16", "fault=checksum"]`` from the command line into a dict; ValueError if a
    pair has no ``=``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out
