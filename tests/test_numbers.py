"""How lengths, ratios and clock hours are put into words (spatialforge.qa.numbers)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from spatialforge.qa.numbers import UNIT_SYSTEMS, round_sig, say_clock, say_length, say_ratio

_FOOT = 0.3048
_INCH = 0.0254
_UNIT_M = {
    "millimetre": 1e-3, "millimetres": 1e-3,
    "centimetre": 1e-2, "centimetres": 1e-2,
    "metre": 1.0, "metres": 1.0,
    "inch": _INCH, "inches": _INCH,
    "foot": _FOOT, "feet": _FOOT,
}
_SINGULAR = {"millimetre", "centimetre", "metre", "inch", "foot"}
_NEUTRAL_HEDGES = ("about", "roughly", "around", "approximately")
_PHRASE = re.compile(
    r"^(about|roughly|around|approximately|a bit over|just under) (\d+(?:\.\d+)?) "
    r"(millimetres?|centimetres?|metres?|inch|inches|foot|feet)$"
)
_SWEEP = [float(v) for v in np.geomspace(0.05, 50.0, 500)]


def parse(phrase: str) -> tuple[str, float, str, str]:
    """(hedge, number, unit word, number text) of a say_length phrase; fails on any other shape."""
    m = _PHRASE.match(phrase)
    assert m, f"unexpected phrasing: {phrase!r}"
    return m.group(1), float(m.group(2)), m.group(3), m.group(2)


def said_metres(phrase: str) -> float:
    _, num, unit, _ = parse(phrase)
    return num * _UNIT_M[unit]


def sig_digits(text: str) -> int:
    """Significant digits of a decimal numeral ("150" -> 2, "1.5" -> 2, "0.5" -> 1, "10" -> 1)."""
    return len(text.replace(".", "").strip("0"))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- helpers of the test itself

def test_sig_digits_helper():
    assert sig_digits("150") == 2
    assert sig_digits("1.5") == 2
    assert sig_digits("0.5") == 1
    assert sig_digits("10") == 1
    assert sig_digits("123") == 3
    assert sig_digits("2.25") == 3


# ---------------------------------------------------------------- round_sig

@pytest.mark.parametrize(("x", "sig", "expected"), [
    (1.46, 2, 1.5), (1234.0, 2, 1200.0), (0.001234, 2, 0.0012), (-37.4, 1, -40.0), (9.96, 2, 10.0),
    (12.3, 2, 12.0), (0.37, 1, 0.4),
])
def test_round_sig(x, sig, expected):
    assert round_sig(x, sig) == pytest.approx(expected)


def test_round_sig_passes_zero_and_non_finite_through():
    assert round_sig(0.0) == 0.0
    assert math.isnan(round_sig(float("nan")))
    assert round_sig(float("inf")) == float("inf")


# ---------------------------------------------------------------- metric units by magnitude

@pytest.mark.parametrize(("metres", "unit", "number"), [
    (0.004, "millimetres", 4.0),
    (0.37, "centimetres", 37.0),
    (1.46, "metres", 1.5),
    (12.3, "metres", 12.0),
    (0.05, "centimetres", 5.0),
    (0.234, "centimetres", 23.0),
    (3.04, "metres", 3.0),
    (57.0, "metres", 57.0),
])
def test_metric_unit_follows_magnitude(metres, unit, number):
    _, num, word, text = parse(say_length(metres, "metric", rng()))
    assert word == unit
    assert num == number
    if metres >= 10:
        assert "." not in text, "metres above 10 are whole numbers"


def test_metric_units_switch_at_1cm_and_1m():
    assert parse(say_length(0.008, "metric", rng()))[2] == "millimetres"
    assert parse(say_length(0.02, "metric", rng()))[2] == "centimetres"
    assert parse(say_length(0.8, "metric", rng()))[2] == "centimetres"
    assert parse(say_length(1.2, "metric", rng()))[2] == "metres"


def test_metric_one_or_two_significant_figures_on_sweep():
    r = rng(1)
    for v in _SWEEP:
        _, num, unit, text = parse(say_length(v, "metric", r))
        assert 1 <= sig_digits(text) <= 2, (v, text, unit)
        if v < 0.095:  # under 10 cm: whole centimetres
            assert unit.startswith("centimetre") and num == int(num), (v, text, unit)


def test_metric_below_10cm_is_whole_centimetres():
    for v in np.linspace(0.0105, 0.094, 60):
        _, num, unit, text = parse(say_length(float(v), "metric", rng()))
        assert unit.startswith("centimetre")
        assert "." not in text
        assert abs(num - v * 100) <= 0.5 + 1e-9


def test_metric_within_5_percent_on_sweep():
    r = rng(2)
    for v in _SWEEP:
        if v < 0.1:
            continue
        said = said_metres(say_length(v, "metric", r))
        assert abs(said - v) / v <= 0.05 + 1e-9, (v, said)


@pytest.mark.parametrize("units", ["metric", "imperial"])
def test_hedge_agrees_with_rounding_direction_on_sweep(units):
    r = rng(3)
    seen = set()
    for v in _SWEEP:
        phrase = say_length(v, units, r)
        hedge = parse(phrase)[0]
        said = said_metres(phrase)
        seen.add(hedge)
        if hedge == "a bit over":
            assert v > said, phrase
            assert (v - said) / said > 0.025 - 1e-9, phrase
        elif hedge == "just under":
            assert v < said, phrase
            assert (said - v) / said > 0.025 - 1e-9, phrase
        else:
            assert hedge in _NEUTRAL_HEDGES
            assert abs(v - said) / said <= 0.025 + 1e-9, phrase
    # the sweep is dense enough to need every kind of hedge
    assert {"a bit over", "just under"} <= seen
    assert seen & set(_NEUTRAL_HEDGES)


@pytest.mark.parametrize(("metres", "hedge"), [
    (1.5, "neutral"), (1.49, "neutral"), (1.46, "just under"), (1.54, "a bit over"),
    (1.26, "just under"), (0.37, "neutral"), (0.126, "just under"), (12.0, "neutral"), (12.4, "a bit over"),
])
def test_metric_hedge_examples(metres, hedge):
    got = parse(say_length(metres, "metric", rng()))[0]
    if hedge == "neutral":
        assert got in _NEUTRAL_HEDGES
    else:
        assert got == hedge


# Regression: _metric once returned the millimetre count instead of metres as the said value, so every
# length under 1 cm was hedged "just under".
@pytest.mark.parametrize(("metres", "hedge"), [
    (0.004, "neutral"), (0.0045, "a bit over"), (0.007, "neutral"), (0.0035, "just under"),
])
def test_millimetre_hedge_agrees_with_rounding(metres, hedge):
    got = parse(say_length(metres, "metric", rng()))[0]
    if hedge == "neutral":
        assert got in _NEUTRAL_HEDGES
    else:
        assert got == hedge


def test_millimetres_are_one_significant_figure():
    for v, expected in ((0.004, 4.0), (0.0062, 6.0), (0.0019, 2.0), (0.0003, 1.0)):
        _, num, unit, _ = parse(say_length(v, "metric", rng()))
        assert unit.startswith("millimetre")
        assert num == expected


# ---------------------------------------------------------------- imperial

def test_imperial_units_and_precision_on_sweep():
    r = rng(4)
    for v in _SWEEP:
        _, num, unit, text = parse(say_length(v, "imperial", r))
        said = num * _UNIT_M[unit]
        if v >= 0.1:
            assert abs(said - v) / v <= 0.10 + 1e-9, (v, text, unit)
        else:  # 2-4 inches: half-inch resolution
            assert abs(said - v) <= 0.25 * _INCH + 1e-9, (v, text, unit)
        inches = v / _INCH
        if inches < 35:  # below 3 ft
            assert unit in ("inch", "inches"), (v, text, unit)
        elif v > 3 * _FOOT:
            assert unit in ("foot", "feet"), (v, text, unit)
        if unit == "feet" and num < 10:
            assert (num * 2) == int(num * 2), f"half feet below 10 ft: {text}"
        if unit == "feet" and num >= 10:
            assert num == int(num) and sig_digits(text) <= 2, text
        if unit.startswith("inch") and num >= 5:
            assert num == int(num) and sig_digits(text) <= 2, text


@pytest.mark.parametrize(("metres", "unit", "number"), [
    (0.2, "inches", 8.0), (0.38, "inches", 15.0), (1.07, "feet", 3.5), (1.5, "feet", 5.0),
    (4.0, "feet", 13.0), (0.0254, "inch", 1.0), (0.0381, "inches", 1.5),
])
def test_imperial_examples(metres, unit, number):
    _, num, word, _ = parse(say_length(metres, "imperial", rng()))
    assert (word, num) == (unit, number)


def test_singular_forms():
    assert parse(say_length(1.0, "metric", rng()))[1:3] == (1.0, "metre")
    assert parse(say_length(0.01, "metric", rng()))[1:3] == (1.0, "centimetre")
    assert parse(say_length(0.001, "metric", rng()))[1:3] == (1.0, "millimetre")
    assert parse(say_length(_INCH, "imperial", rng()))[1:3] == (1.0, "inch")
    assert parse(say_length(2.0, "metric", rng()))[2] == "metres"
    assert parse(say_length(2 * _INCH, "imperial", rng()))[2] == "inches"


def test_number_agrees_with_singular_or_plural_everywhere():
    r = rng(5)
    values = [float(v) for v in np.geomspace(0.0005, 60.0, 800)] + [_FOOT, 1.0, 0.01, 0.001, _INCH]
    for v in values:
        for units in ("metric", "imperial"):
            phrase = say_length(v, units, r)
            _, num, unit, _ = parse(phrase)
            assert (unit in _SINGULAR) == (num == 1.0), phrase
            assert not re.search(r"(?<![\d.])1 (feet|inches|metres|centimetres|millimetres)$", phrase), phrase


# ---------------------------------------------------------------- mixed and determinism

def test_mixed_draws_both_systems_and_is_deterministic():
    def draws(seed):
        r = rng(seed)
        return [say_length(1.37, "mixed", r) for _ in range(60)]

    out = draws(11)
    units = {parse(p)[2] for p in out}
    assert units & {"metre", "metres", "centimetres"}
    assert units & {"inches", "feet", "foot", "inch"}
    assert draws(11) == out
    assert draws(12) != out


def test_metric_and_imperial_are_deterministic_for_a_seed():
    a = [say_length(v, "metric", rng(9)) for v in _SWEEP[:50]]
    b = [say_length(v, "metric", rng(9)) for v in _SWEEP[:50]]
    assert a == b


# ---------------------------------------------------------------- invalid input

@pytest.mark.parametrize("units", ["furlongs", "Metric", "", "si"])
def test_invalid_units_raise(units):
    assert units not in UNIT_SYSTEMS
    with pytest.raises(ValueError, match="units"):
        say_length(1.0, units, rng())


@pytest.mark.parametrize("metres", [-0.1, -1e-9, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("units", ["metric", "imperial", "mixed"])
def test_invalid_lengths_raise(metres, units):
    with pytest.raises(ValueError):
        say_length(metres, units, rng())


# ---------------------------------------------------------------- ratios and clocks

def test_say_ratio_has_no_times_and_rounds_to_halves_below_10():
    r = rng(6)
    for ratio in np.geomspace(1.0, 40.0, 300):
        text = say_ratio(float(ratio), r)
        assert "times" not in text
        m = re.match(r"^(about|roughly|around|approximately|a bit over|just under) (\d+(?:\.\d+)?)$", text)
        assert m, text
        said = float(m.group(2))
        if ratio < 9.75:
            assert said * 2 == int(said * 2), text
            assert abs(said - ratio) <= 0.25 + 1e-9, text
        else:
            assert sig_digits(m.group(2)) <= 2, text
            assert abs(said - ratio) / ratio <= 0.05 + 1e-9, text
        if m.group(1) == "a bit over":
            assert ratio > said
        if m.group(1) == "just under":
            assert ratio < said


@pytest.mark.parametrize(("ratio", "number"), [
    (2.3, "2.5"), (2.0, "2"), (1.7, "1.5"), (3.8, "4"), (25.0, "25"),
])
def test_say_ratio_examples(ratio, number):
    assert say_ratio(ratio, rng()).split()[-1] == number


@pytest.mark.parametrize("hour", range(1, 13))
def test_say_clock_valid(hour):
    assert say_clock(hour) == f"{hour} o'clock"


@pytest.mark.parametrize("hour", [0, 13, -3, 24])
def test_say_clock_out_of_range_raises(hour):
    with pytest.raises(ValueError):
        say_clock(hour)
