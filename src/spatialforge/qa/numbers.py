"""Say numbers the way a person would: "about 1.5 metres", "roughly 40 centimetres", "a bit over 3 feet".

Rules (tested in tests/test_numbers.py):
- units follow the magnitude: millimetres below 1 cm, centimetres below 1 m, metres above
  (inches below 3 ft, feet above, in imperial);
- 1-2 significant figures: 4 cm, 37 cm, 1.5 m, 12 m, 8 inches, 15 inches, 3.5 feet (half feet
  below 10 ft);
- the hedge tells which way the rounding went: "a bit over X" when the truth is more than 2.5 %
  above X, "just under X" when it is more than 2.5 % below, otherwise "about/roughly/around X";
- the structured value of a QA pair stays exact; only the words are rounded.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["UNIT_SYSTEMS", "round_sig", "say_clock", "say_length", "say_ratio"]

UNIT_SYSTEMS = ("metric", "imperial", "mixed")
_HEDGES = ("about", "roughly", "around", "approximately")
_FOOT = 0.3048
_INCH = 0.0254


def round_sig(x: float, sig: int = 2) -> float:
    """Round ``x`` to ``sig`` significant figures."""
    if x == 0 or not math.isfinite(x):
        return x
    digits = sig - int(math.floor(math.log10(abs(x)))) - 1
    return round(x, digits)


def _fmt(x: float) -> str:
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return text if text != "-0" else "0"


def _hedge(true: float, said: float, rng: np.random.Generator, tol: float = 0.025) -> str:
    rel = (true - said) / said if said else 0.0
    if rel > tol:
        return "a bit over"
    if rel < -tol:
        return "just under"
    return _HEDGES[int(rng.integers(len(_HEDGES)))]


def _unit(amount: float, singular: str, plural: str) -> str:
    return singular if amount == 1 else plural


def _metric(metres: float) -> tuple[float, str]:
    if metres < 0.01:
        mm = max(round_sig(metres * 1000, 1), 1.0)
        return mm / 1000, f"{_fmt(mm)} {_unit(mm, 'millimetre', 'millimetres')}"
    cm = round_sig(metres * 100, 2) if metres >= 0.1 else float(round(metres * 100))
    if cm < 100:
        return cm / 100, f"{_fmt(cm)} {_unit(cm, 'centimetre', 'centimetres')}"
    m = round(metres, 1) if metres < 10 else round_sig(metres, 2)
    if m >= 10:
        m = float(round(m))
    return m, f"{_fmt(m)} {_unit(m, 'metre', 'metres')}"


def _imperial(metres: float) -> tuple[float, str]:
    inches = metres / _INCH
    if inches < 35.5:
        said = float(round(inches)) if inches >= 5 else max(round(inches * 2) / 2, 0.5)
        if said >= 10:
            said = round_sig(said, 2)
        return said * _INCH, f"{_fmt(said)} {_unit(said, 'inch', 'inches')}"
    feet = metres / _FOOT
    said = round(feet * 2) / 2 if feet < 10 else round_sig(feet, 2)
    if said >= 10:
        said = float(round(said))
    return said * _FOOT, f"{_fmt(said)} {_unit(said, 'foot', 'feet')}"


def say_length(metres: float, units: str, rng: np.random.Generator) -> str:
    """Human phrasing of a length, hedge included, e.g. ``"about 1.5 metres"``.

    ``units`` is ``"metric"``, ``"imperial"`` or ``"mixed"`` (each answer draws one of the two).
    """
    if units not in UNIT_SYSTEMS:
        raise ValueError(f"units must be one of {UNIT_SYSTEMS}, got {units!r}")
    if not math.isfinite(metres) or metres < 0:
        raise ValueError(f"length must be a finite non-negative number of metres, got {metres!r}")
    if units == "mixed":
        units = "metric" if rng.random() < 0.5 else "imperial"
    said_m, words = _metric(metres) if units == "metric" else _imperial(metres)
    return f"{_hedge(metres, said_m, rng)} {words}"


def say_ratio(ratio: float, rng: np.random.Generator) -> str:
    """Hedged ratio without the word "times", e.g. ``"about 2.5"``."""
    said = round(ratio * 2) / 2 if ratio < 10 else round_sig(ratio, 2)
    said = max(said, 1.0)
    return f"{_hedge(ratio, said, rng, tol=0.05)} {_fmt(said)}"


def say_clock(hour: int) -> str:
    """``"3 o'clock"`` for hours 1..12."""
    if not 1 <= int(hour) <= 12:
        raise ValueError(f"clock hour must be in 1..12, got {hour!r}")
    return f"{int(hour)} o'clock"
