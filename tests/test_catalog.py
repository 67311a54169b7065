"""The question catalogue: its types, templates and the geometric meaning of every value."""

from __future__ import annotations

import math
import string

import numpy as np
import pytest

from spatialforge.core.types import Box3D, SceneObject
from spatialforge.qa.catalog import (
    CATALOG,
    FOOTPRINT_TYPES,
    EvalContext,
    QuestionType,
    Skip,
    catalog_summary,
    clock_hour,
    get_type,
)

CAM = np.array([0.0, 0.0, 1.5])  # camera centre in the canonical frame
FX, CX, CY = 500.0, 320.0, 240.0
CTX = EvalContext()  # margin 10 cm / 15 %, min length 5 cm


def obj(oid: int, x: float, y: float, z: float = 0.5, *, w: float = 0.3, d: float = 0.2, h: float = 0.3,
        u: float | None = None, caption: str = "thing") -> SceneObject:
    """Hand-built object: footprint sides (w, d) with w along x, height h; image column from x (or ``u``)."""
    c = np.array([x, y, z], dtype=float)
    half = np.array([w, d, h]) / 2
    return SceneObject(
        id=oid, caption=caption, box=Box3D(c, np.array([w, d, h]), 0.0), aabb_min=c - half, aabb_max=c + half,
        width=max(w, d), depth=min(w, d), height=h, camera_distance=float(np.linalg.norm(c - CAM)),
        n_points=500, pixel_count=400,
        image_centroid=(CX + FX * x / y if u is None else u, CY - FX * (z - 1.5) / y),
        image_bbox=(0, 0, 10, 10), truncated=False, occluded_fraction=0.0, size_reliable=True,
        footprint_reliable=True,
    )


def ev(type_id: str, *subjects: SceneObject, ctx: EvalContext = CTX):
    return CATALOG[type_id].evaluate(tuple(subjects), ctx)


def fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


# ---------------------------------------------------------------- the catalogue's shape

REQUIRED = {
    **{t: "quantitative"
       for t in ("distance", "horizontal_distance", "vertical_distance", "width", "height")},
    **{f"{n}_predicate": "yes_no"
       for n in ("left", "right", "above", "below", "behind", "front", "tall", "short", "wide", "thin", "big",
                 "small")},
    **{f"{n}_choice": "choice" for n in ("left", "right", "above", "below", "tall", "short", "close", "far")},
}


def test_catalog_size_and_required_kinds():
    assert len(CATALOG) >= 38
    for tid, kind in REQUIRED.items():
        assert tid in CATALOG, tid
        assert CATALOG[tid].kind == kind, tid


def test_catalog_ids_and_arity():
    for tid, t in CATALOG.items():
        assert isinstance(t, QuestionType)
        assert t.id == tid
        assert t.kind in ("quantitative", "yes_no", "choice")
        assert t.arity in (1, 2, 3)
        assert t.meaning
        if t.kind == "yes_no":
            assert t.arity == 2 and t.unit == "bool"
        if t.kind == "choice":
            assert t.arity >= 2 and t.unit == "object"
        if t.kind == "quantitative":
            assert t.unit in ("m", "ratio", "clock")
    for tid in ("distance", "horizontal_distance", "vertical_distance"):
        assert CATALOG[tid].arity == 2
    for tid in ("width", "height", "depth"):
        assert CATALOG[tid].arity == 1
    assert CATALOG["closer_to_choice"].arity == 3


def test_get_type():
    assert get_type("distance") is CATALOG["distance"]
    with pytest.raises(KeyError, match="nope"):
        get_type("nope")


def test_footprint_types_flagged():
    assert set(CATALOG) >= FOOTPRINT_TYPES
    for tid, t in CATALOG.items():
        assert t.needs_footprint == (tid in FOOTPRINT_TYPES), tid
    assert {"width", "depth", "wide_predicate", "big_choice"} <= FOOTPRINT_TYPES
    assert "height" not in FOOTPRINT_TYPES and "tall_predicate" not in FOOTPRINT_TYPES


def test_gravity_flags():
    for tid in ("above_predicate", "below_predicate", "above_choice", "vertical_distance", "height",
                "horizontal_distance", "above_offset", "clock_direction"):
        assert CATALOG[tid].needs_gravity, tid
    for tid in ("distance", "behind_predicate", "front_predicate", "close_choice", "camera_distance"):
        assert not CATALOG[tid].needs_gravity, tid


@pytest.mark.parametrize("tid", sorted(CATALOG))
def test_template_counts_and_uniqueness(tid):
    t = CATALOG[tid]
    assert len(t.questions) >= 20
    assert len(set(t.questions)) == len(t.questions), "duplicate question template"
    if t.kind == "yes_no":
        assert len(t.yes) >= 10 and len(t.no) >= 10
        assert len(set(t.yes)) == len(t.yes) and len(set(t.no)) == len(t.no)
        assert not set(t.yes) & set(t.no)
        assert t.answers == ()
    else:
        assert len(t.answers) >= 10
        assert len(set(t.answers)) == len(t.answers), "duplicate answer template"
        assert t.yes == () and t.no == ()


@pytest.mark.parametrize("tid", sorted(CATALOG))
def test_templates_format_with_engine_placeholders(tid):
    t = CATALOG[tid]
    roles = "ABC"[:t.arity]
    names = {r: f"the <{r}>" for r in roles}
    for q in t.questions:
        assert fields(q) == set(roles), (q, fields(q))  # every subject is mentioned, nothing else
        text = q.format(**names)
        assert all(f"the <{r}>" in text for r in roles)
        assert q.rstrip().endswith("?"), q
    if t.kind == "quantitative":
        for a in t.answers:
            assert "value" in fields(a), a
            assert fields(a) <= set(roles) | {"value"}, a
            assert "{value}" not in a.format(**names, value="about 1 metre")
            assert a.rstrip().endswith("."), a
    elif t.kind == "choice":
        for a in t.answers:
            assert "X" in fields(a), a
            assert fields(a) <= {"X", "Y", "C"} & (set("XY") | set(roles)), a
            a.format(**names, X="the <X>", Y="the <Y>")
            assert a.rstrip().endswith("."), a
    else:
        for a in t.yes + t.no:
            assert fields(a) <= set(roles), a
            a.format(**names)
            assert a.rstrip().endswith("."), a


_YES_WORDS = ("Yes", "Correct", "Indeed", "That's right", "Yep", "Absolutely", "Right")
_NO_WORDS = ("No", "Nope", "Actually", "Not", "Incorrect", "Wrong")


@pytest.mark.parametrize("tid", sorted(t for t in CATALOG if CATALOG[t].kind == "yes_no"))
def test_yes_no_answers_start_with_their_polarity(tid):
    t = CATALOG[tid]
    for a in t.yes:
        assert a.startswith(_YES_WORDS) and not a.startswith(_NO_WORDS), a
    for a in t.no:
        assert a.startswith(_NO_WORDS) and not a.startswith(_YES_WORDS), a


def test_catalog_summary_matches_types():
    summary = catalog_summary()
    assert [e["id"] for e in summary] == list(CATALOG)
    for e in summary:
        t = CATALOG[e["id"]]
        assert e["kind"] == t.kind
        assert e["meaning"] == t.meaning and e["meaning"]
        assert e["arity"] == t.arity
        assert e["question_templates"] == len(t.questions)
        assert e["category"] == ("quantitative" if t.kind == "quantitative" else "qualitative")
        assert e["needs_gravity"] == t.needs_gravity
        assert e["needs_observed_footprint"] == t.needs_footprint
        if t.kind == "yes_no":
            assert e["answer_templates"] == {"yes": len(t.yes), "no": len(t.no)}
        else:
            assert e["answer_templates"] == len(t.answers)


# ---------------------------------------------------------------- conventions of the values

def test_left_predicate_uses_x_and_image_columns():
    a, b = obj(1, -0.5, 2.0), obj(2, 0.5, 2.0)
    assert a.image_centroid[0] < b.image_centroid[0]
    assert ev("left_predicate", a, b) is True
    assert ev("left_predicate", b, a) is False
    assert ev("right_predicate", b, a) is True
    assert ev("right_predicate", a, b) is False
    assert ev("left_choice", a, b) == 1 and ev("left_choice", b, a) == 1
    assert ev("right_choice", a, b) == 2 and ev("right_choice", b, a) == 2


def test_left_right_skip_when_image_order_disagrees():
    a = obj(1, -0.5, 2.0, u=400.0)  # metrically left, but to the right in the picture
    b = obj(2, 0.5, 2.0, u=300.0)
    for tid in ("left_predicate", "right_predicate", "left_choice", "right_choice"):
        assert ev(tid, a, b) == Skip("view_disagreement"), tid
        assert ev(tid, b, a) == Skip("view_disagreement"), tid
    assert ev("left_offset", a, b) == Skip("view_disagreement")
    assert ev("right_offset", b, a) == Skip("view_disagreement")


def test_behind_and_front_use_camera_distance():
    near, far = obj(1, 0.1, 1.5), obj(2, -0.1, 3.5)
    assert ev("behind_predicate", far, near) is True
    assert ev("behind_predicate", near, far) is False
    assert ev("front_predicate", near, far) is True
    assert ev("front_predicate", far, near) is False
    assert ev("close_choice", near, far) == 1 and ev("close_choice", far, near) == 1
    assert ev("far_choice", near, far) == 2 and ev("far_choice", far, near) == 2


def test_behind_uses_distance_not_forward_coordinate():
    # b has the larger forward y, but a is much farther from the camera (far off to the side)
    a, b = obj(1, -4.0, 2.0), obj(2, 0.0, 2.5)
    assert a.camera_distance > b.camera_distance + 1.0
    assert ev("behind_predicate", a, b) is True
    assert ev("front_predicate", b, a) is True


def test_above_below_use_z():
    hi, lo = obj(1, 0.0, 2.0, 1.2), obj(2, 0.3, 2.0, 0.4)
    assert ev("above_predicate", hi, lo) is True
    assert ev("above_predicate", lo, hi) is False
    assert ev("below_predicate", lo, hi) is True
    assert ev("below_predicate", hi, lo) is False
    assert ev("above_choice", lo, hi) == 1
    assert ev("below_choice", lo, hi) == 2


def test_tall_uses_height_not_width():
    wide_short = obj(1, -0.5, 2.0, w=1.2, d=0.5, h=0.3)
    narrow_tall = obj(2, 0.5, 2.0, w=0.2, d=0.2, h=0.9)
    assert ev("tall_predicate", narrow_tall, wide_short) is True
    assert ev("tall_predicate", wide_short, narrow_tall) is False
    assert ev("short_predicate", wide_short, narrow_tall) is True
    assert ev("tall_choice", wide_short, narrow_tall) == 2
    assert ev("short_choice", wide_short, narrow_tall) == 1
    # ... and wide/thin use the width
    assert ev("wide_predicate", wide_short, narrow_tall) is True
    assert ev("wide_predicate", narrow_tall, wide_short) is False
    assert ev("thin_predicate", narrow_tall, wide_short) is True
    assert ev("wide_choice", narrow_tall, wide_short) == 1
    assert ev("thin_choice", narrow_tall, wide_short) == 2


def test_wide_uses_larger_horizontal_side():
    # a's footprint is 0.8 x 0.1 (long along y), b's is 0.4 x 0.4: a is wider though b has the larger x side
    a = obj(1, -0.5, 2.0, w=0.1, d=0.8, h=0.3)
    b = obj(2, 0.5, 2.0, w=0.4, d=0.4, h=0.3)
    assert a.width == 0.8 and a.depth == 0.1
    assert ev("wide_predicate", a, b) is True
    assert ev("thin_predicate", b, a) is True


def test_big_uses_volume():
    # tall and wide but very thin vs. a compact cube of larger volume
    slab = obj(1, -0.5, 2.0, w=0.8, d=0.05, h=1.0)  # 0.04 m^3
    cube = obj(2, 0.5, 2.0, w=0.5, d=0.5, h=0.5)  # 0.125 m^3
    assert ev("tall_predicate", slab, cube) is True and ev("wide_predicate", slab, cube) is True
    assert ev("big_predicate", cube, slab) is True
    assert ev("big_predicate", slab, cube) is False
    assert ev("small_predicate", slab, cube) is True
    assert ev("big_choice", slab, cube) == 2
    assert ev("small_choice", slab, cube) == 1


def test_near_ties_are_skipped():
    a, b = obj(1, 0.0, 2.0, 0.5), obj(2, 0.05, 2.0, 0.55, h=0.32, w=0.31)
    for tid in ("left_predicate", "right_predicate", "above_predicate", "below_predicate", "tall_predicate",
                "short_predicate", "wide_predicate", "big_predicate", "behind_predicate", "front_predicate",
                "left_choice", "tall_choice", "close_choice"):
        assert ev(tid, a, b) == Skip("tie"), tid
        assert ev(tid, b, a) == Skip("tie"), tid
    # just beyond the margin the same relations are asked
    c = obj(3, 0.12, 2.0, 0.62)
    assert ev("left_predicate", a, c) is True
    assert ev("above_predicate", c, a) is True


def test_relative_margin_for_sizes():
    a, b = obj(1, 0.0, 2.0, h=1.0), obj(2, 1.0, 2.0, h=1.12)  # 12 % taller: inside the 15 % margin
    assert ev("tall_predicate", b, a) == Skip("tie")
    c = obj(3, 1.0, 2.0, h=1.2)  # 20 % taller
    assert ev("tall_predicate", c, a) is True


def test_negation_is_the_opposite_relation():
    rng = np.random.default_rng(0)
    pairs = (("left", "right"), ("above", "below"), ("behind", "front"), ("tall", "short"), ("wide", "thin"),
             ("big", "small"))
    for _ in range(200):
        a = obj(1, *rng.uniform([-2, 1, 0], [2, 5, 2]), w=rng.uniform(0.1, 1), d=rng.uniform(0.1, 1),
                h=rng.uniform(0.1, 1))
        b = obj(2, *rng.uniform([-2, 1, 0], [2, 5, 2]), w=rng.uniform(0.1, 1), d=rng.uniform(0.1, 1),
                h=rng.uniform(0.1, 1))
        for p, q in pairs:
            vp, vq = ev(f"{p}_predicate", a, b), ev(f"{q}_predicate", a, b)
            if isinstance(vp, Skip):
                assert vq == vp
            else:
                assert vp is (not vq)
                assert ev(f"{p}_predicate", b, a) is vq


# ---------------------------------------------------------------- quantitative values

def test_distance_is_centre_distance():
    a, b = obj(1, -0.5, 2.0, 0.2), obj(2, 0.7, 3.0, 1.1)
    assert ev("distance", a, b) == pytest.approx(math.sqrt(1.2 ** 2 + 1.0 ** 2 + 0.9 ** 2))
    assert ev("distance", b, a) == pytest.approx(ev("distance", a, b))


def test_horizontal_distance_ignores_z():
    a, b = obj(1, -0.5, 2.0, 0.2), obj(2, 0.7, 3.0, 1.1)
    assert ev("horizontal_distance", a, b) == pytest.approx(math.hypot(1.2, 1.0))
    b_low = obj(3, 0.7, 3.0, 0.2)
    assert ev("horizontal_distance", a, b_low) == pytest.approx(ev("horizontal_distance", a, b))


def test_vertical_distance_is_abs_dz():
    a, b = obj(1, -0.5, 2.0, 0.2), obj(2, 0.7, 3.0, 1.1)
    assert ev("vertical_distance", a, b) == pytest.approx(0.9)
    assert ev("vertical_distance", b, a) == pytest.approx(0.9)
    assert isinstance(ev("vertical_distance", a, obj(3, 2.0, 4.0, 0.23)), Skip)


def test_small_lengths_are_skipped():
    a, b = obj(1, 0.0, 2.0), obj(2, 0.02, 2.01)
    assert ev("distance", a, b) == Skip("too_small")
    assert ev("height", obj(3, 0.0, 2.0, h=0.03)) == Skip("too_small")


def test_width_depth_height():
    o = obj(1, 0.0, 2.0, w=0.25, d=0.6, h=0.4)
    assert ev("width", o) == pytest.approx(0.6)  # the larger horizontal side
    assert ev("depth", o) == pytest.approx(0.25)  # the smaller one
    assert ev("height", o) == pytest.approx(0.4)


def test_camera_distance_value():
    o = obj(1, 1.0, 2.0, 0.5)
    assert ev("camera_distance", o) == pytest.approx(math.sqrt(1 + 4 + 1))


def test_left_and_right_offsets():
    a, b = obj(1, -0.6, 2.0), obj(2, 0.4, 2.0)
    assert ev("left_offset", a, b) == pytest.approx(1.0)  # xB - xA
    assert ev("right_offset", b, a) == pytest.approx(1.0)
    assert isinstance(ev("left_offset", b, a), Skip)
    assert isinstance(ev("right_offset", a, b), Skip)


def test_behind_and_front_offsets():
    a, b = obj(1, 0.0, 4.0, 1.5), obj(2, 0.0, 2.5, 1.5)
    assert ev("behind_offset", a, b) == pytest.approx(1.5)  # distA - distB
    assert ev("front_offset", b, a) == pytest.approx(1.5)
    assert ev("behind_offset", b, a) == Skip("tie")
    assert ev("front_offset", a, b) == Skip("tie")


def test_above_offset_and_height_difference():
    a, b = obj(1, 0.0, 2.0, 1.3, h=0.9), obj(2, 1.0, 2.0, 0.4, h=0.3)
    assert ev("above_offset", a, b) == pytest.approx(0.9)
    assert isinstance(ev("above_offset", b, a), Skip)
    assert ev("height_difference", a, b) == pytest.approx(0.6)
    assert ev("height_difference", b, a) == Skip("tie")


def test_height_ratio():
    a, b = obj(1, 0.0, 2.0, h=0.9), obj(2, 1.0, 2.0, h=0.3)
    assert ev("height_ratio", a, b) == pytest.approx(3.0)
    assert ev("height_ratio", b, a) == Skip("tie")
    assert ev("height_ratio", obj(3, 0, 2.0, h=0.33), b) == Skip("tie")  # only 10 % taller


# ---------------------------------------------------------------- clock directions

@pytest.mark.parametrize(("dx", "dy", "hour"), [
    (0, 1, 12), (1, 0, 3), (0, -1, 6), (-1, 0, 9),
    (math.sin(math.radians(30)), math.cos(math.radians(30)), 1),
    (math.sin(math.radians(-60)), math.cos(math.radians(-60)), 10),
    (1, -1, 4.5),
])
def test_clock_hour(dx, dy, hour):
    got, to_boundary = clock_hour(dx, dy)
    if hour == 4.5:  # exactly between 4 and 5
        assert got in (4, 5) and to_boundary == pytest.approx(0.0)
    else:
        assert got == hour
        assert to_boundary == pytest.approx(15.0)


def test_clock_direction_value():
    a = obj(1, 0.0, 2.0)
    assert ev("clock_direction", a, obj(2, 1.0, 2.0)) == 3  # B to the camera's right of A
    assert ev("clock_direction", a, obj(2, 0.0, 3.0)) == 12  # B farther from the camera
    assert ev("clock_direction", a, obj(2, -1.0, 2.0)) == 9
    assert ev("clock_direction", a, obj(2, 0.0, 1.0)) == 6
    assert ev("clock_direction", a, obj(2, 1.0, 3.0)) == Skip("tie")  # 45 deg: between 1 and 2
    assert ev("clock_direction", a, obj(2, 0.05, 2.05)) == Skip("too_small")


# ---------------------------------------------------------------- closer-to

def test_closer_to_choice_picks_object_nearer_to_c():
    c = obj(3, 0.0, 2.0)
    near_c, far_c = obj(1, 0.4, 2.0), obj(2, -1.5, 3.0)
    assert ev("closer_to_choice", near_c, far_c, c) == 1
    assert ev("closer_to_choice", far_c, near_c, c) == 1
    # nearer to the camera is irrelevant: only the distance to C counts
    cam_near = obj(4, -1.0, 1.0)
    assert cam_near.camera_distance < near_c.camera_distance
    assert ev("closer_to_choice", cam_near, near_c, c) == 1
    tie = obj(5, -0.41, 2.0)
    assert ev("closer_to_choice", near_c, tie, c) == Skip("tie")


def test_centre_distance_types_need_well_measured_boxes():
    # the centre of a mostly hidden object (a table seen by two legs) can be off by more than the tie
    # margin, so every question built on 3D centre-to-centre distances asks for reliable sizes
    for tid in ("distance", "closer_to_choice"):
        assert CATALOG[tid].needs_size, tid
