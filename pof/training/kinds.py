"""The kinds of value a config field holds: each parses its command-line text and checks
its type and range (one validator per value kind, used by :mod:`pof.training.config`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ..core.masks import check_choice, check_range, parse_nm, parse_sparsity
from ..errors import ConfigError, PofError


class Kind:
    """How a config value is parsed from text (``parse``) and checked (``check``)."""

    def parse(self, text: str) -> Any:
        return text

    def check(self, name: str, value: Any) -> Any:
        return value


class Str(Kind):
    def __init__(self, choices: Sequence[str] = (), optional: bool = False,
                 pattern: str | None = None, what: str = "") -> None:
        self.choices, self.optional, self.pattern, self.what = tuple(choices), optional, \
            pattern, what

    def parse(self, text: str) -> Any:
        return None if self.optional and text.lower() in ("none", "null") else text

    def check(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.choices:
            try:
                check_choice(name, value, self.choices)
            except PofError as e:
                raise ConfigError(str(e)) from None
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{name} must be {self.what}, got {value!r}")
        return value


class Number(Kind):
    """A finite int or float in ``[lo, hi]`` (``lo_open``: ``lo`` itself excluded)."""

    def __init__(self, integer: bool = False, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, optional: bool = False) -> None:
        self.integer, self.lo, self.hi = integer, lo, hi
        self.lo_open, self.hi_open, self.optional = lo_open, hi_open, optional

    def parse(self, text: str) -> Any:
        if self.optional and text.lower() in ("none", "null", ""):
            return None
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            kind = "a whole number" if self.integer else "a number"
            raise ConfigError(f"expected {kind}, got {text!r}") from None

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(x for x in (lo, hi) if x)

    def check(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        kind = "a whole number" if self.integer else "a number"
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            raise ConfigError(f"{name} must be {kind} {self._range()}, got {value!r}".strip())
        lo_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        hi_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if lo_bad or hi_bad:
            raise ConfigError(f"{name} must be {self._range()}, got {value!r}")
        return value if self.integer else float(value)


class Bool(Kind):
    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def parse(self, text: str) -> Any:
        t = text.lower()
        if self.optional and t in ("none", "auto", "null"):
            return None
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected true/false, got {text!r}")

    def check(self, name: str, value: Any) -> Any:
        if (value is None and self.optional) or isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")


class StrList(Kind):
    def parse(self, text: str) -> Any:
        return [x for x in text.split(",") if x]

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        return list(value)


class Sparsity(Kind):
    """A target sparsity ``0.7``, or a range ``"0.3:0.9"`` / ``[0.3, 0.9]`` (kept as a list)."""

    def parse(self, text: str) -> Any:
        try:
            return parse_sparsity(text, ranged=True)
        except PofError as e:
            raise ConfigError(str(e)) from None

    def check(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and ":" not in value:
            raise ConfigError(f"{name} must be a number in [0, 1) or a range lo:hi, "
                              f"got {value!r}")
        s = check_range(value)
        return list(s) if isinstance(s, tuple) else s


class Pattern(Kind):
    """An N:M pattern ``"2:4"`` (kept as ``"N:M"``), or None."""

    def parse(self, text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else text

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be an N:M pattern such as 2:4, got {value!r}")
        try:
            n, m = parse_nm(value)
        except PofError as e:
            raise ConfigError(str(e)) from None
        return f"{n}:{m}"


class Mapping(Kind):
    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name} must be a mapping of keyword: value, got {value!r}")
        return dict(value)


class Model(Kind):
    def check(self, name: str, value: Any) -> Any:
        from ..models import list_models

        Str().check(name, value)
        if value not in list_models():
            raise ConfigError(f"unknown model {value!r}; available: {', '.join(list_models())}")
        return value
