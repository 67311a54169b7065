"""Value checks and message wording shared by the perception stages and backends (pure Python).

One checker per kind of value, so every stage words a bad value the same way:

* :func:`check_number` - a finite real number (not a bool, not a string) within optional bounds:
  every threshold, margin and similarity cut of the perception path;
* :func:`positive_int` - an integer option >= 1 (batch sizes, token and word limits);
* :func:`count` - ``"1 image"`` / ``"3 images"`` for messages.

Options read from a config are checked with :class:`~spatialforge.errors.ConfigError`; values
passed at call time (per image) with ``ValueError`` (``error=ValueError``), which the photo runner
records against the image instead of stopping the run.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from spatialforge._text import count  # re-exported for the perception modules
from spatialforge.errors import ConfigError

__all__ = ["check_number", "count", "positive_int"]


def check_number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
                 strict_low: bool = False, note: str = "", error: type[Exception] = ConfigError) -> float:
    """``value`` as a float when it is a finite real number in the bounds; ``error`` naming ``what`` otherwise.

    ``low`` / ``high`` are inclusive (``strict_low``: ``value > low``); ``None`` leaves that side open.
    ``note`` is appended to the requirement in the message (e.g. ``" (a probability; > 1 keeps nothing)"``).

    >>> check_number(0.25, "box_threshold", low=0.0)
    0.25
    """
    if low is None and high is None:
        need = "a finite number"
    elif high is None:
        need = f"a finite number {'>' if strict_low else '>='} {low:g}"
    elif low is None:
        need = f"a finite number <= {high:g}"
    else:
        need = f"a number in {'(' if strict_low else '['}{low:g}, {high:g}]"
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise error(f"{what} must be {need}{note}, got {value!r}")
    return float(value)


def positive_int(value: Any, what: str, *, error: type[Exception] = ConfigError) -> int:
    """An option that must be an integer >= 1 (``error`` otherwise; ``True`` is not an integer)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise error(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


