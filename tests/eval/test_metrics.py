"""Tests of spatialforge.eval.metrics: per-question scoring, aggregates, bootstrap CIs, reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spatialforge.eval.metrics import (
    _weighted_median,
    compare_markdown,
    score_item,
    summarize,
    summary_markdown,
    write_summary,
)
from spatialforge.eval.types import BenchmarkItem, ParsedAnswer


def _quant(truth, value, status="ok", *, unit="m", type="distance", bench="bench_a", flags=(), id="q"):
    item = BenchmarkItem(id=id, benchmark=bench, question="How far?", kind="quantitative", type=type,
                         truth=truth, unit=unit)
    return score_item(item, ParsedAnswer(status, value, tuple(flags)), answer_text=f"{value}")


def _yes_no(truth, value, status="ok", *, type="left_of", bench="bench_a", id="y"):
    item = BenchmarkItem(id=id, benchmark=bench, question="Is it left?", kind="yes_no", type=type, truth=truth,
                         unit="bool")
    return score_item(item, ParsedAnswer(status, value), answer_text=str(value))


def _choice(truth, value, status="ok", *, type="closer", bench="bench_a", id="c"):
    item = BenchmarkItem(id=id, benchmark=bench, question="Which?", kind="choice", type=type, truth=truth,
                         unit="option", options=("the mug", "the chair", "the lamp"))
    return score_item(item, ParsedAnswer(status, value), answer_text=str(value))


def _clock(truth, value, status="ok", *, id="k", rounding=None):
    meta = {} if rounding is None else {"clock_rounding": rounding}
    item = BenchmarkItem(id=id, benchmark="bench_a", question="Which direction?", kind="quantitative",
                         type="direction", truth=truth, unit="clock", meta=meta)
    return score_item(item, ParsedAnswer(status, value), answer_text=str(value))


# ------------------------------------------------------------------------------------------- score_item


def test_record_fields_and_json():
    rec = _quant(1.0, 1.1)
    for key in ("id", "benchmark", "type", "kind", "unit", "question", "truth", "answer", "status", "flags",
                "value", "correct", "ratio", "abs_rel_err", "within_2x", "within_1.25x", "within_25pct", "mra",
                "hour", "hour_err", "within_1h"):
        assert key in rec
    json.dumps(rec, allow_nan=False)
    # pred 1.1, truth 1.0: ratio 1.1, rel err 0.1, inside both bands
    assert rec["ratio"] == pytest.approx(1.1)
    assert rec["abs_rel_err"] == pytest.approx(0.1)
    assert rec["within_2x"] is True and rec["within_1.25x"] is True and rec["within_25pct"] is True
    assert rec["correct"] is None and rec["answered"] is True and rec["hour"] is None


def test_qualitative_correctness():
    assert _yes_no(True, True)["correct"] is True
    assert _yes_no(True, False)["correct"] is False
    assert _yes_no(False, None, "refusal")["correct"] is False  # unanswered counts as wrong
    assert _yes_no(False, None, "ambiguous")["correct"] is False
    assert _choice(1, 1)["correct"] is True
    assert _choice(1, 2)["correct"] is False
    assert _choice(0, None, "no_answer")["correct"] is False
    # a bool is not an option index
    rec = _choice(1, True)
    assert rec["correct"] is False and rec["status"] == "no_answer" and "bad_value" in rec["flags"]


@pytest.mark.parametrize(("pred", "in_2x", "in_125", "in_25pct"), [
    (0.5, True, False, False),    # exactly 0.5x: inside [0.5, 2]
    (2.0, True, False, False),    # exactly 2x: inside
    (0.8, True, True, True),      # exactly 1/1.25 x: inside [0.8, 1.25]
    (1.25, True, True, True),     # exactly 1.25x: inside both
    (0.79, True, False, True),    # a factor of 1.266 below: outside 1.25x, inside +-25 %
    (0.75, True, False, True),    # the old +-25 % rule put it inside 1.25x; a factor of 1.33 is not
    (0.74, True, False, False),
    (1.26, True, False, False),
    (0.49, False, False, False),
    (2.01, False, False, False),
    (0.0, False, False, False),
    (-1.0, False, False, False),
])
def test_within_band_boundaries(pred, in_2x, in_125, in_25pct):
    rec = _quant(1.0, pred)
    assert rec["within_2x"] is in_2x
    assert rec["within_1.25x"] is in_125
    assert rec["within_25pct"] is in_25pct


@pytest.mark.parametrize("truth", [0.3, 1.0, 2.7, 40.0])
def test_within_bands_are_multiplicative_and_symmetric(truth):
    # a factor f either way is inside "within f x" exactly when f <= the band's factor
    for factor, key in ((2.0, "within_2x"), (1.25, "within_1.25x")):
        for f in (1.0, 1.1, factor, factor * 1.01):
            inside = f <= factor
            assert _quant(truth, truth * f)[key] is inside, (key, f)
            assert _quant(truth, truth / f)[key] is inside, (key, 1 / f)


def test_band_boundaries_survive_binary_rounding():
    # 0.5 / 0.4, 0.4 / 0.5 and 0.3 / 0.4 are 1.25, 0.8 and 0.75 in decimal; the 1e-9 slack keeps them inside
    assert _quant(0.4, 0.5)["within_1.25x"] is True
    assert _quant(0.5, 0.4)["within_1.25x"] is True
    assert _quant(0.4, 0.3)["within_25pct"] is True
    assert _quant(0.3, 0.6)["within_2x"] is True
    assert _quant(0.3, 0.15)["within_2x"] is True


@pytest.mark.parametrize(("pred", "mra"), [
    (1.0, 1.0),    # rel err 0: every tolerance 0.50..0.05 passes -> 10/10
    (1.04, 1.0),   # rel err 0.04 < 0.05 (theta 0.95) -> 10/10
    (1.1, 0.8),    # rel err 0.1 < 1 - theta for theta 0.50..0.85 (8 values); 0.1 < 0.1 fails -> 8/10
    (0.9, 0.8),    # symmetric below the truth
    (1.2, 0.6),    # rel err 0.2 < 1 - theta for theta 0.50..0.75 (6 values) -> 0.6
    (1.45, 0.1),   # rel err 0.45 < 0.5 only (theta 0.50) -> 0.1
    (1.5, 0.0),    # rel err 0.5: 0.5 < 0.5 is false -> 0
    (3.0, 0.0),
])
def test_mra_hand_examples(pred, mra):
    assert _quant(1.0, pred)["mra"] == pytest.approx(mra)


def test_mra_scales_with_truth():
    # truth 4 m, pred 5 m: rel err 0.25 -> theta 0.50..0.70 (0.25 < 0.5, 0.45, 0.4, 0.35, 0.3) -> 5/10
    assert _quant(4.0, 5.0)["mra"] == pytest.approx(0.5)


def test_unanswered_quantitative():
    rec = _quant(1.0, None, "refusal")
    assert rec["answered"] is False
    assert rec["within_2x"] is False and rec["within_1.25x"] is False
    assert rec["mra"] == 0.0
    assert rec["ratio"] is None and rec["abs_rel_err"] is None


def test_range_counts_as_answered_with_flag():
    rec = _quant(2.0, 2.5, "range")  # midpoint of "2-3 m"
    assert rec["answered"] is True and rec["status"] == "range"
    assert "range" in rec["flags"]
    assert rec["ratio"] == pytest.approx(1.25)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_non_finite_value_is_unanswered(bad):
    rec = _quant(1.0, bad)
    assert rec["answered"] is False and rec["status"] == "no_answer"
    assert "non_finite" in rec["flags"]
    assert rec["value"] is None and rec["within_2x"] is False and rec["mra"] == 0.0
    json.dumps(rec, allow_nan=False)


def test_answered_status_without_value():
    rec = _quant(1.0, None, "ok")
    assert rec["answered"] is False and "no_value" in rec["flags"]


def test_invalid_truth():
    rec = _quant(0.0, 1.0)
    assert rec["invalid_truth"] is True
    assert rec["ratio"] is None and rec["within_2x"] is None and rec["mra"] is None
    assert _quant(-2.0, 1.0)["invalid_truth"] is True


@pytest.mark.parametrize(("truth", "pred", "err"), [
    (12, 1, 1),    # across 12: one hour
    (1, 12, 1),
    (3, 3, 0),
    (11, 1, 2),
    (3, 9, 6),
    (2, 10, 4),
    (12, 12.0, 0),
])
def test_clock_circular_distance(truth, pred, err):
    rec = _clock(truth, pred)
    assert rec["hour_err"] == err
    assert rec["correct"] is (err == 0)
    assert rec["within_1h"] is (err <= 1)
    assert rec["ratio"] is None and rec["within_2x"] is None


def test_clock_unanswered():
    rec = _clock(3, None, "no_answer")
    assert rec["correct"] is False and rec["within_1h"] is False and rec["hour_err"] is None


@pytest.mark.parametrize(("value", "nearest", "up"), [
    (10.0, 10, 10),           # a whole hour is itself either way
    (10 + 20 / 60, 10, 11),   # 10:20: nearest 10; the benchmark's sector (10, 11] -> 11
    (10.5, 11, 11),           # 10:30 (or "between 10 and 11")
    (10 + 40 / 60, 11, 11),   # 10:40
    (11.25, 11, 12),          # across 12
    (12.5, 1, 1),
    (0.25, 12, 1),            # 12:15 read as 0.25
])
def test_clock_rounding_conventions(value, nearest, up):
    # spatialforge's own data: the nearest hour (the default); SpatialRGPT-Bench: the next whole hour
    assert _clock(nearest, value)["hour"] == nearest and _clock(nearest, value)["correct"] is True
    assert _clock(nearest, value, rounding="nearest")["hour"] == nearest
    rec = _clock(up, value, rounding="up")
    assert rec["hour"] == up and rec["correct"] is True and rec["hour_err"] == 0
    if nearest != up:
        assert _clock(up, value)["correct"] is False and _clock(up, value)["hour_err"] == 1
        assert _clock(nearest, value, rounding="up")["correct"] is False


def test_clock_rounding_must_be_known():
    with pytest.raises(ValueError, match="clock_rounding"):
        _clock(3, 3.0, rounding="floor")


# ------------------------------------------------------------------------------------------- summarize


def _golden_records():
    return [
        # yes_no: 2 right, 1 wrong, 1 refusal -> accuracy 2/4 = 0.5, answered 3/4
        _yes_no(True, True, id="y1"), _yes_no(False, False, id="y2"), _yes_no(True, False, id="y3"),
        _yes_no(True, None, "refusal", id="y4"),
        # quantitative (m), 4 valid questions:
        #   1.1 / 1.0: rel .1, 2x yes, 1.25x yes, 25% yes, mra .8
        #   2.0 / 1.0: rel 1.0, 2x yes, 1.25x no, 25% no, mra 0
        #   0.25 / 1.0: rel .75, 2x no, 1.25x no, 25% no, mra 0
        #   0.78 / 1.0: rel .22, 2x yes, 1.25x no (a factor 1.28), 25% yes, mra .6 (.22 < .5 .45 .4 .35 .3 .25)
        #   unanswered: fails everything, mra 0
        # -> within_2x 3/5 = .6, within_1.25x 1/5 = .2, within_25pct 2/5 = .4, mra 1.4/5 = .28, answered 4/5
        # -> rel errs {.1, 1.0, .75, .22}: median (.22 + .75) / 2 = .485, mean 2.07/4 = .5175
        _quant(1.0, 1.1, id="d1"), _quant(1.0, 2.0, id="d2"), _quant(1.0, 0.25, id="d3"),
        _quant(1.0, 0.78, id="d6"), _quant(1.0, None, "no_answer", id="d4"),
        # truth 0: invalid, excluded from the ratio metrics
        _quant(0.0, 1.0, id="d5"),
        # ambiguous choice
        _choice(0, None, "ambiguous", type="closer", id="c1"),
    ]


def test_summary_golden_values():
    s = summarize(_golden_records(), n_boot=200, seed=3)
    o = s["overall"]
    assert o["n"] == 11
    # qualitative = 4 yes_no + 1 choice: correct 2 / 5
    assert o["qualitative"]["n"] == 5
    assert o["qualitative"]["accuracy"]["value"] == pytest.approx(0.4)
    assert o["qualitative"]["answered"]["value"] == pytest.approx(3 / 5)
    q = o["quantitative"]
    assert q["n"] == 6 and q["invalid_truth"] == 1
    assert q["answered"]["value"] == pytest.approx(0.8) and q["answered"]["n"] == 5
    assert q["within_2x"]["value"] == pytest.approx(0.6)
    assert q["within_1.25x"]["value"] == pytest.approx(0.2)
    assert q["within_25pct"]["value"] == pytest.approx(0.4) and q["within_25pct"]["n"] == 5
    assert q["mra"]["value"] == pytest.approx(0.28)
    assert q["abs_rel_err_median"]["value"] == pytest.approx(0.485) and q["abs_rel_err_median"]["n"] == 4
    assert q["abs_rel_err_mean"]["value"] == pytest.approx(2.07 / 4)
    # answered overall: y1 y2 y3 d1 d2 d3 d6 d5 = 8 / 11
    assert o["answered"]["value"] == pytest.approx(8 / 11)
    assert o["counts"]["refusal"] == 1 and o["counts"]["ambiguous"] == 1 and o["counts"]["invalid_truth"] == 1
    assert o["refusal_rate"]["value"] == pytest.approx(1 / 11)
    assert o["ambiguous_rate"]["value"] == pytest.approx(1 / 11)
    assert o["clock"]["n"] == 0 and o["clock"]["accuracy"]["value"] is None


def test_per_type_and_kind_grouping():
    s = summarize(_golden_records(), n_boot=50)
    assert set(s["by_type"]) == {"left_of", "distance", "closer"}
    assert list(s["by_kind"]) == ["quantitative", "yes_no", "choice"]
    assert s["by_type"]["left_of"]["n"] == 4
    assert s["by_type"]["left_of"]["qualitative"]["accuracy"]["value"] == pytest.approx(0.5)
    assert s["by_kind"]["yes_no"]["answered"]["value"] == pytest.approx(0.75)
    assert s["by_type"]["distance"]["quantitative"]["mra"]["value"] == pytest.approx(0.28)
    assert s["by_type"]["distance"]["qualitative"]["accuracy"]["value"] is None
    assert "by_benchmark" not in s  # one benchmark only


def test_by_benchmark():
    recs = [_yes_no(True, True, bench="a", id="1"), _yes_no(True, False, bench="b", id="2"),
            _yes_no(True, True, bench="b", id="3")]
    s = summarize(recs, n_boot=50)
    assert set(s["by_benchmark"]) == {"a", "b"}
    assert s["by_benchmark"]["a"]["overall"]["qualitative"]["accuracy"]["value"] == pytest.approx(1.0)
    assert s["by_benchmark"]["b"]["overall"]["qualitative"]["accuracy"]["value"] == pytest.approx(0.5)
    assert "left_of" in s["by_benchmark"]["b"]["by_type"]


def test_clock_summary():
    # errors: 0, 1 (12 vs 1), 2, unanswered -> exact 1/4, within 1h 2/4, answered 3/4
    recs = [_clock(3, 3, id="1"), _clock(12, 1, id="2"), _clock(11, 1, id="3"), _clock(5, None, "refusal", id="4")]
    c = summarize(recs, n_boot=100)["overall"]["clock"]
    assert c["n"] == 4
    assert c["accuracy"]["value"] == pytest.approx(0.25)
    assert c["within_1h"]["value"] == pytest.approx(0.5)
    assert c["answered"]["value"] == pytest.approx(0.75)


def test_empty_records_give_null_metrics():
    s = summarize([], n_boot=100)
    o = s["overall"]
    assert o["n"] == 0
    assert o["answered"] == {"value": None, "ci": None, "n": 0}
    assert o["quantitative"]["mra"]["value"] is None
    assert s["by_type"] == {} and s["by_kind"] == {}
    json.dumps(s, allow_nan=False)
    assert "—" in summary_markdown(s)


def test_single_question_type_has_degenerate_ci():
    recs = [_yes_no(True, True, id="1"), _yes_no(True, False, id="2"), _quant(1.0, 1.1, type="height", id="3")]
    h = summarize(recs, n_boot=200)["by_type"]["height"]["quantitative"]
    assert h["mra"]["value"] == pytest.approx(0.8)
    assert h["mra"]["ci"] == pytest.approx([0.8, 0.8])
    assert h["abs_rel_err_median"]["ci"] == pytest.approx([0.1, 0.1])


def _bernoulli(n_right, n_wrong):
    return ([_yes_no(True, True, id=f"r{i}") for i in range(n_right)]
            + [_yes_no(True, False, id=f"w{i}") for i in range(n_wrong)])


def test_bootstrap_ci_width_for_known_bernoulli():
    # n = 400, p = 0.5: SE = sqrt(.25 / 400) = .025 -> 95% width ~ 2 * 1.96 * .025 = .098
    acc = summarize(_bernoulli(200, 200), n_boot=1000, seed=0)["overall"]["qualitative"]["accuracy"]
    lo, hi = acc["ci"]
    assert acc["value"] == pytest.approx(0.5) and acc["n"] == 400
    assert lo <= acc["value"] <= hi
    assert hi - lo == pytest.approx(0.098, abs=0.02)


def test_ci_contains_point_estimates():
    s = summarize(_golden_records() + _bernoulli(30, 10), n_boot=500, seed=1)
    metrics = [s["overall"]["answered"], s["overall"]["qualitative"]["accuracy"]]
    metrics += [v for k, v in s["overall"]["quantitative"].items() if isinstance(v, dict)]
    for m in metrics:
        lo, hi = m["ci"]
        assert lo - 1e-12 <= m["value"] <= hi + 1e-12


def test_deterministic_for_a_seed():
    recs = _golden_records() + _bernoulli(20, 7)
    a = summarize(recs, n_boot=300, seed=7)
    b = summarize(recs, n_boot=300, seed=7)
    c = summarize(recs, n_boot=300, seed=8)
    assert a == b
    assert a["overall"]["qualitative"]["accuracy"]["ci"] != c["overall"]["qualitative"]["accuracy"]["ci"]
    assert a["overall"]["qualitative"]["accuracy"]["value"] == c["overall"]["qualitative"]["accuracy"]["value"]


def test_summary_from_json_records_matches():
    recs = _golden_records()
    loaded = json.loads(json.dumps(recs))
    assert summarize(loaded, n_boot=100, seed=2) == summarize(recs, n_boot=100, seed=2)


def test_no_bootstrap():
    acc = summarize(_bernoulli(3, 1), n_boot=0)["overall"]["qualitative"]["accuracy"]
    assert acc == {"value": 0.75, "ci": None, "n": 4}


@pytest.mark.parametrize("kw", [{"n_boot": -1}, {"n_boot": 1.5}, {"seed": -3}, {"confidence": 1.0},
                                {"confidence": 0.0}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        summarize(_bernoulli(1, 1), **kw)


def test_weighted_median_matches_repeated_values():
    rng = np.random.default_rng(0)
    v = np.sort(rng.random(7))
    counts = rng.multinomial(7, np.full(7, 1 / 7), size=50).astype(float)
    got = _weighted_median(v, counts)
    want = [np.median(np.repeat(v, c.astype(int))) for c in counts]
    np.testing.assert_allclose(got, want)
    assert np.isnan(_weighted_median(v, np.zeros((1, 7))))[0]


# ------------------------------------------------------------------------------------------- reports


def test_summary_markdown_contains_numbers():
    s = summarize(_golden_records(), n_boot=100, seed=0)
    md = summary_markdown(s, title="my model")
    assert "## my model" in md
    for header in ("accuracy", "answered", "within 2x", "within 1.25x", "within ±25%", "MRA", "median rel err"):
        assert header in md
    q = s["overall"]["quantitative"]["mra"]
    assert f"{q['value']:.2f} [{q['ci'][0]:.2f}, {q['ci'][1]:.2f}]" in md
    assert "| overall | 11 |" in md
    assert "type: left_of" in md and "kind: yes_no" in md
    assert "0.40 [" in md  # qualitative accuracy 2/5
    assert "clock" not in md.split("\n")[2]  # no clock question: the clock columns are left out


def test_compare_markdown_one_column_per_model():
    s1 = summarize(_golden_records(), n_boot=50)
    s2 = summarize(_bernoulli(3, 1), n_boot=50)
    md = compare_markdown({"model-a": s1, "model|b": s2})
    header = next(line for line in md.splitlines() if line.startswith("| scope"))
    cells = [c.strip() for c in header.strip("|").split(" | ")]
    assert cells == ["scope", "metric", "model-a", "model\\|b"]
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert all(line.count(" | ") == 3 for line in rows)
    assert any(line.startswith("| overall | accuracy | 0.40") and "0.75" in line for line in rows)
    assert any(line.startswith("| type: distance | MRA | 0.28") and line.endswith("— |") for line in rows)
    with pytest.raises(ValueError):
        compare_markdown({})


def test_compare_markdown_overall_alone_or_with_the_breakdowns_asked_for():
    s1 = summarize(_golden_records(), n_boot=0)
    s2 = summarize(_bernoulli(3, 1), n_boot=0)
    overall = compare_markdown({"a": s1, "b": s2}, breakdowns=())
    assert "| overall | accuracy |" in overall
    assert "type:" not in overall and "kind:" not in overall and overall.count("| scope |") == 1
    by_type = compare_markdown({"a": s1, "b": s2}, breakdowns=("type",))
    assert by_type.count("| scope |") == 2 and "## Model comparison by type" in by_type
    assert "| type: distance | MRA |" in by_type and "kind:" not in by_type
    both = compare_markdown({"a": s1, "b": s2}, breakdowns=("type", "kind"))
    assert both.index("## Model comparison by kind") < both.index("## Model comparison by type")
    assert "No benchmark breakdown" in compare_markdown({"a": s2}, breakdowns=("benchmark",))
    with pytest.raises(ValueError, match="scene"):
        compare_markdown({"a": s1}, breakdowns=("scene",))


def test_write_summary(tmp_path):
    s = summarize(_golden_records(), n_boot=50)
    jp, mp = write_summary(s, tmp_path / "out", name="run1")
    assert jp.name == "run1.json" and mp.name == "run1.md"
    assert json.loads(jp.read_text()) == json.loads(json.dumps(s))
    assert "within 2x" in mp.read_text()
    bad = {"overall": {"answered": {"value": math.nan}}}
    with pytest.raises(ValueError):
        write_summary(bad, tmp_path / "bad")
    assert not (tmp_path / "bad" / "summary.json").exists()
