"""Points (the affordance "where would you hold ...?" questions): the reader, the mask encoding, the scores."""

from __future__ import annotations

import numpy as np
import pytest

from spatialforge.eval.answers import parse_answer, parse_point
from spatialforge.eval.metrics import score_item, summarize, summary_markdown
from spatialforge.eval.models.base import build_prompt
from spatialforge.eval.models.baselines import PriorModel
from spatialforge.eval.types import BenchmarkItem, ParsedAnswer
from spatialforge.io.dataset import decode_mask_rle, encode_mask_rle, rle_contains, rle_problem

SIZE = (640, 480)


def _pixel(text, size=SIZE):
    got = parse_point(text, size)
    assert got.status == "ok", (text, got)
    return got.value["pixel"], got.value["point_3d"], got.flags


@pytest.mark.parametrize("text", [
    "(412, 230)", "[412, 230]", "pixel (412, 230)", "At pixel (412,230).", "(412 px, 230 px)", "(412, 230) px",
    "x=412, y=230", "x = 412 px, y = 230 px", "x: 412 and y: 230", "u=412, v=230", "at pixel 412, 230",
    "The handle: **(412, 230)**", "(x, y) = (412, 230)", "<think>It could be (10, 20).</think> (412, 230)",
    "The handle at (412, 230), i.e. x=412, y=230.",  # the same point twice counts once
])
def test_image_points_in_plain_formats(text):
    pixel, point, _ = _pixel(text)
    assert pixel == [412.0, 230.0] and point is None


def test_qwen_json_and_boxes():
    fenced = '```json\n[\n\t{"point_2d": [412, 230], "label": "the handle of the mug"}\n]\n```'
    pixel, point, flags = _pixel(fenced)
    assert pixel == [412.0, 230.0] and point is None and "json" in flags
    pixel, _, flags = _pixel('[{"bbox_2d": [400, 200, 424, 260], "label": "handle"}]')
    assert pixel == [412.0, 230.0] and {"json", "box"} <= set(flags)
    pixel, point, _ = _pixel('{"point_2d": [412, 230], "point_3d": [0.42, 1.1, 0.75]}')
    assert pixel == [412.0, 230.0] and point == [0.42, 1.1, 0.75]
    two = parse_point('[{"point_2d": [412, 230]}, {"point_2d": [100, 50]}]', SIZE)
    assert two.status == "ambiguous" and "multiple" in two.flags


def test_molmo_points_are_percent_of_the_image():
    pixel, _, flags = _pixel('<point x="64.4" y="48.0" alt="mug handle">mug handle</point>')
    assert pixel == pytest.approx([0.644 * 640, 0.48 * 480]) and "percent" in flags
    same = parse_point('<points x1="64.4" y1="48.0" x2="64.4" y2="48.0" alt="h">h</points>', SIZE)
    assert same.status == "ok"
    several = parse_point('<points x1="64.4" y1="48.0" x2="10.0" y2="20.0" alt="h">h</points>', SIZE)
    assert several.status == "ambiguous"
    # without the image size a percent cannot become a pixel: not read, and the reply says why
    blind = parse_point('<point x="64.4" y="48.0" alt="h">h</point>')
    assert blind.status == "no_answer" and "no_image_size" in blind.flags


def test_fractions_of_the_image_need_its_size():
    pixel, _, flags = _pixel("(0.5, 0.25)")
    assert pixel == [320.0, 120.0] and "normalized" in flags
    assert parse_point("(0.5, 0.25)").status == "no_answer"
    assert _pixel("(0, 1)")[0] == [0.0, 1.0]  # whole numbers are pixels


@pytest.mark.parametrize("text, metres", [
    ("(0.42, 1.10, 0.75) m", [0.42, 1.1, 0.75]),
    ("the 3D point (-0.53, 1.45, 0.82) metres", [-0.53, 1.45, 0.82]),
    ("(42, 110, 75) cm", [0.42, 1.1, 0.75]),
    ("(420 mm, 1100 mm, 750 mm)", [0.42, 1.1, 0.75]),
    ("x=0.42 m, y=1.10 m, z=0.75 m", [0.42, 1.1, 0.75]),
    ("x = 42 cm, y = 110 cm and z = 75 cm", [0.42, 1.1, 0.75]),
    ("the 3D point (42, 110, 75) in cm", [0.42, 1.1, 0.75]),  # "in <unit>" after the tuple ...
    ("(420, 1100, 750) in millimeters", [0.42, 1.1, 0.75]),
    ("3D point in cm: (42, 110, 75)", [0.42, 1.1, 0.75]),  # ... and before it
    ("in inches (10, 20, 30)", [0.254, 0.508, 0.762]),
])
def test_3d_points_in_any_length_unit(text, metres):
    got = parse_point(text, SIZE)
    assert got.status == "ok" and got.value["pixel"] is None
    assert got.value["point_3d"] == pytest.approx(metres)


def test_a_triple_without_unit_is_metres_and_in_is_not_inches():
    got = parse_point("The point (0.42, 1.1, 0.75) in the gravity frame.", SIZE)
    assert got.value["point_3d"] == pytest.approx([0.42, 1.1, 0.75]) and "unit_assumed" in got.flags
    # a pair with a length unit is a 2D length, not an image point; nor is a bare triple the pair of its first two
    assert parse_point("(0.4, 1.1) m", SIZE).status == "no_answer"
    assert parse_point("the point 0.42, 1.10, 0.75 m", SIZE).status == "no_answer"
    assert parse_point("at pixel 412, 230.5", SIZE).value["pixel"] == [412.0, 230.5]
    assert parse_point("(412, 230) in pixels", SIZE).value["pixel"] == [412.0, 230.0]
    assert parse_point("at (412, 230) in the image", SIZE).value["pixel"] == [412.0, 230.0]
    assert parse_point("(0.4, 1.1) in m", SIZE).status == "no_answer"


def test_the_reference_answer_parses_back_exactly():
    got = parse_point("By its handle: at pixel (164, 109), the 3D point (-0.526, 1.449, 0.822) m.", SIZE)
    assert got.status == "ok" and got.value == {"pixel": [164.0, 109.0], "point_3d": [-0.526, 1.449, 0.822]}


def test_refusals_ambiguity_and_no_answer():
    for text in ("I cannot tell where the handle is from this image.", "Sorry, the mug's handle is not visible.",
                 "I'm not able to determine that."):
        assert parse_point(text, SIZE).status == "refusal", text
    hedged = parse_point("I'm not sure, but I'd guess (412, 230).", SIZE)
    assert hedged.status == "ok" and "hedged" in hedged.flags
    stated_in_refusal = parse_point("I cannot tell whether it is (412, 230).", SIZE)
    assert stated_in_refusal.status == "refusal" and "value_in_refusal" in stated_in_refusal.flags
    assert parse_point("Either (100, 200) or (300, 400).", SIZE).status == "ambiguous"
    assert parse_point("(0.4, 1.1, 0.7) m or (0.9, 1.1, 0.7) m", SIZE).status == "ambiguous"
    assert parse_point("Hold it by the handle.", SIZE).status == "no_answer"
    assert parse_point("<think>(412, 230)", SIZE).status == "no_answer"  # an unclosed chain gave no answer yet


def test_parse_answer_dispatches_points_and_checks_arguments():
    got = parse_answer('<point x="50" y="50" alt="x">x</point>', "point", "point", image_size=(100, 80))
    assert got.value["pixel"] == [50.0, 40.0]
    with pytest.raises(ValueError, match="point"):
        parse_answer("x", "nonsense", "m")
    with pytest.raises(ValueError, match="image_size"):
        parse_point("(1, 2)", (0, 10))
    with pytest.raises(TypeError):
        parse_point(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- the mask encoding


def test_rle_round_trip_and_lookup():
    rng = np.random.default_rng(3)
    masks = [rng.random((7, 5)) > 0.6, np.ones((3, 4), bool), np.zeros((4, 3), bool), np.zeros((0, 0), bool)]
    first_on = np.zeros((2, 2), bool)
    first_on[0, 0] = True
    masks.append(first_on)
    for m in masks:
        rle = encode_mask_rle(m)
        assert rle_problem(rle) is None and rle["size"] == list(m.shape)
        assert np.array_equal(decode_mask_rle(rle), m)
        for v in range(m.shape[0]):
            for u in range(m.shape[1]):
                assert rle_contains(rle, u, v) == bool(m[v, u])
        assert not rle_contains(rle, -1, 0) and not rle_contains(rle, m.shape[1], 0)
    # COCO's layout: column by column, starting with a background run
    assert encode_mask_rle(np.array([[0, 1], [1, 1]], bool)) == {"size": [2, 2], "counts": [1, 3]}
    assert encode_mask_rle(first_on)["counts"] == [0, 1, 3]


def test_rle_problems_are_named():
    assert "size" in rle_problem({"size": [2], "counts": [4]})
    assert "add up" in rle_problem({"size": [2, 2], "counts": [1, 2]})
    assert "whole numbers" in rle_problem({"size": [2, 2], "counts": [1, -1, 4]})
    assert rle_problem(None) is not None
    with pytest.raises(ValueError, match="bad mask encoding"):
        decode_mask_rle({"size": [2, 2], "counts": [3]})


# ------------------------------------------------------------------------------------------- scores


def _item(mask=None, size=(8, 6), truth=None, **meta):
    if mask is None:
        mask = np.zeros(size[::-1], bool)
        mask[2:4, 3:6] = True  # rows 2-3, columns 3-5
    meta = {"image_size": size, "mask": encode_mask_rle(mask), **meta}
    return BenchmarkItem(id="s-a000", benchmark="b", question="Where would you hold the mug to pour?", kind="point",
                         type="afford_hold_point", truth=truth or {"pixel": (4, 3), "point_3d": (0.1, 1.0, 0.5)},
                         unit="point", meta=meta)


def test_a_point_item_needs_its_truth_and_unit():
    with pytest.raises(ValueError, match="point"):
        BenchmarkItem(id="x", benchmark="b", question="q", kind="point", type="t", truth=1.0, unit="point")
    with pytest.raises(ValueError, match="unit point"):
        BenchmarkItem(id="x", benchmark="b", question="q", kind="point", type="t",
                      truth={"pixel": (1, 2), "point_3d": (0, 0, 0)}, unit="m")


def test_point_scores():
    item = _item()
    right = score_item(item, parse_point("(5, 2), the 3D point (0.1, 1.0, 0.53) m", (8, 6)))
    assert right["in_mask"] is True and right["correct"] is True
    assert right["pixel_error"] == pytest.approx(2 ** 0.5) and right["error_m"] == pytest.approx(0.03)
    outside = score_item(item, parse_point("(2, 3)", (8, 6)))
    assert outside["in_mask"] is False and outside["correct"] is False and outside["error_m"] is None
    rounded = score_item(item, ParsedAnswer("ok", {"pixel": [5.6, 2.4], "point_3d": None}))
    assert rounded["in_mask"] is False  # (5.6, 2.4) is pixel (6, 2): outside
    off_image = score_item(item, ParsedAnswer("ok", {"pixel": [40, -3], "point_3d": None}))
    assert off_image["in_mask"] is False
    refusal = score_item(item, parse_point("I can't tell.", (8, 6)))
    assert refusal["answered"] is False and refusal["in_mask"] is False and refusal["correct"] is False
    only_3d = score_item(item, parse_point("(0.1, 1.0, 0.5) m", (8, 6)))
    assert only_3d["answered"] and only_3d["in_mask"] is False and only_3d["error_m"] == pytest.approx(0.0)
    junk = score_item(item, ParsedAnswer("ok", {"pixel": [float("nan"), 1.0], "point_3d": None}))
    assert junk["status"] == "no_answer" and "non_finite" in junk["flags"]
    no_mask = _item()
    no_mask = BenchmarkItem(**{**no_mask.__dict__, "meta": {"image_size": (8, 6)}})
    assert score_item(no_mask, parse_point("(5, 2)"))["invalid_truth"] is True


def test_point_summary_and_report():
    item = _item()
    texts = ["(5, 2), (0.1, 1.0, 0.5) m", "(4, 3), (0.1, 1.0, 0.6) m", "(0, 0), (0.1, 1.02, 0.5) m", "I can't tell.",
             "(4, 2)"]
    recs = [score_item(item, parse_point(t, (8, 6)), t) for t in texts]
    point = summarize(recs, n_boot=0)["overall"]["point"]
    assert point["n"] == 5
    assert point["in_mask"]["value"] == pytest.approx(3 / 5)
    assert point["answered"]["value"] == pytest.approx(4 / 5)
    assert point["answered_3d"]["value"] == pytest.approx(3 / 5)
    assert point["within_5cm"]["value"] == pytest.approx(2 / 5)  # 0 and 2 cm in; 10 cm, refused, no 3D out
    assert point["error_m_median"]["value"] == pytest.approx(0.02)
    assert point["error_m_mean"]["value"] == pytest.approx(0.04)
    md = summary_markdown(summarize(recs, n_boot=0))
    assert "in mask" in md and "median 3D err (cm)" in md and "| 2.00 |" in md  # 0.02 m shown as 2.00 cm
    # reports without points are unchanged: no point columns
    yes_no = BenchmarkItem(id="y", benchmark="b", question="Is it?", kind="yes_no", type="t", truth=True,
                           unit="bool")
    plain = summary_markdown(summarize([score_item(yes_no, parse_answer("Yes.", "yes_no", "bool"))], n_boot=0))
    assert "in mask" not in plain and "3D err" not in plain


def test_prompt_and_prior_for_points():
    item = _item(size=(640, 480), mask=np.zeros((480, 640), bool))
    prompt = build_prompt(item)
    assert prompt.startswith(item.question) and "pixel coordinates (x, y)" in prompt and "640 x 480" in prompt
    assert "metres" in build_prompt(item, with_image=False) and "No image is available" in build_prompt(
        item, with_image=False)
    answer = PriorModel().answer_one(item)
    assert answer.text == "(320, 240)" and answer.meta["prior"] == "image_centre"
    assert parse_point(answer.text, (640, 480)).value["pixel"] == [320.0, 240.0]
    sizeless = BenchmarkItem(**{**item.__dict__, "meta": {"mask": item.meta["mask"]}})
    assert parse_point(PriorModel().answer_one(sizeless).text).status == "refusal"
    assert PriorModel().describe()["point"] == "image centre"


def test_the_point_instruction_is_fingerprinted_with_the_point_items_only(monkeypatch):
    from spatialforge.eval import runner
    from spatialforge.eval.benchmarks import Benchmark
    from spatialforge.eval.models import base

    yes_no = BenchmarkItem(id="y", benchmark="b", question="Is it?", kind="yes_no", type="t", truth=True, unit="bool")
    points, plain, model = Benchmark("b", [_item(), yes_no]), Benchmark("b", [yes_no]), PriorModel()
    before = (runner._fingerprint(points, model, True), runner._fingerprint(plain, model, True),
              base.prompt_fingerprint("default", base.SYSTEM_PROMPT))
    monkeypatch.setattr(runner, "POINT_INSTRUCTION", "Answer with a point.")
    monkeypatch.setattr(base, "POINT_INSTRUCTION", "Answer with a point.")
    # another point instruction: a run with point questions is not resumed, the others (and every backend's
    # prompt digest, which earlier run folders hold) are unchanged
    assert runner._fingerprint(points, model, True)["items_sha256"] != before[0]["items_sha256"]
    assert runner._fingerprint(plain, model, True) == before[1]
    assert base.prompt_fingerprint("default", base.SYSTEM_PROMPT) == before[2]
