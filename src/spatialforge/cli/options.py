"""Shared command-line building blocks: one-line usage errors, defaults in the help, checked values.

Every ``spatialforge`` parser is a :class:`Parser`, so a bad value prints one line naming the flag
(``spatialforge generate: error: argument --seed: must be an integer >= 0, got '-1'``) and exits
with status 2 before any work starts. Value checks live in the argument types below, so a message
always names the flag the user typed, never an internal field.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = [
    "DEVICE_HELP",
    "DTYPES",
    "Parser",
    "comma_list",
    "device",
    "fraction",
    "int_at_least",
    "number_at_least",
]

DTYPES = ("float32", "float16", "bfloat16")
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already says it (``default ...``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or (
            isinstance(default, list | tuple) and not default)
        if "default" in text.lower() or empty:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _fail(what: str, text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""
    what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            _fail(what, text)
        if value < low or (high is not None and value > high):
            _fail(what, text)
        return value

    parse.__name__ = "integer"
    return parse


def number_at_least(low: float, *, strict: bool = False, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number ``>= low`` (``> low`` when ``strict``), at most ``high``."""
    what = f"a number {'>' if strict else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            _fail(what, text)
        if value != value or value in (float("inf"), float("-inf")):
            _fail(what, text)
        if value < low or (strict and value == low) or (high is not None and value > high):
            _fail(what, text)
        return value

    parse.__name__ = "number"
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in ``[0, 1]``."""
    return number_at_least(0.0, high=1.0)(text)


def device(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked later)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_HELP}, got {text!r}")
    return text


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated list without empty items."""
    items = tuple(t.strip() for t in text.split(","))
    if not text.strip() or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list without empty items, got {text!r}")
    return items
