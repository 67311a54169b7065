"""The question catalogue: every question type, its meaning, its exact value, and its templates.

A type's ``evaluate(subjects, ctx)`` returns the exact structured value for the subjects in role
order (A, B[, C]), or a :class:`Skip` naming why the question must not be asked (near-tie, too
small to measure, view-dependent disagreement). Values follow docs/conventions.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from spatialforge.core.types import SceneObject
from spatialforge.qa.templates import choices as _choices
from spatialforge.qa.templates import predicates as _predicates
from spatialforge.qa.templates import quantitative as _quantitative

__all__ = ["CATALOG", "EvalContext", "QuestionType", "Skip", "catalog_summary", "get_type"]

Kind = Literal["quantitative", "yes_no", "choice"]


@dataclass(frozen=True)
class Skip:
    """The question must not be asked; ``reason`` is counted in the run manifest."""

    reason: str


@dataclass(frozen=True)
class EvalContext:
    """Thresholds that decide when a question is clear-cut enough to ask."""

    margin_m: float = 0.10
    margin_rel: float = 0.15
    min_length_m: float = 0.05


@dataclass(frozen=True)
class QuestionType:
    id: str
    kind: Kind
    arity: int
    meaning: str
    unit: str
    needs_gravity: bool
    needs_size: bool
    axis: str | None
    evaluate: Callable[[tuple[SceneObject, ...], EvalContext], Any]
    questions: tuple[str, ...]
    answers: tuple[str, ...] = ()
    yes: tuple[str, ...] = ()
    no: tuple[str, ...] = ()
    needs_footprint: bool = False

    @property
    def qualitative(self) -> bool:
        return self.kind != "quantitative"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "category": "qualitative" if self.qualitative else "quantitative",
            "arity": self.arity,
            "meaning": self.meaning,
            "unit": self.unit,
            "needs_gravity": self.needs_gravity,
            "needs_well_observed_objects": self.needs_size,
            "needs_observed_footprint": self.needs_footprint,
            "question_templates": len(self.questions),
        }
        if self.kind == "yes_no":
            out["answer_templates"] = {"yes": len(self.yes), "no": len(self.no)}
        else:
            out["answer_templates"] = len(self.answers)
        return out


# ---------------------------------------------------------------- quantities and comparisons

def _x(o: SceneObject) -> float:
    return float(o.center[0])


def _z(o: SceneObject) -> float:
    return float(o.center[2])


def _dist(o: SceneObject) -> float:
    return float(o.camera_distance)


def _height(o: SceneObject) -> float:
    return float(o.height)


def _width(o: SceneObject) -> float:
    return float(o.width)


def _volume(o: SceneObject) -> float:
    return float(o.volume)


@dataclass(frozen=True)
class _Quantity:
    get: Callable[[SceneObject], float]
    position: bool  # absolute margin (positions, distances) vs relative margin (sizes)
    image_x: bool = False  # must agree with the image-column order
    power: int = 1  # volume compares with (1 + margin_rel) ** 2


_Q = {
    "x": _Quantity(_x, True, image_x=True),
    "z": _Quantity(_z, True),
    "dist": _Quantity(_dist, True),
    "height": _Quantity(_height, False),
    "width": _Quantity(_width, False),
    "volume": _Quantity(_volume, False, power=2),
}


def _order(q: _Quantity, a: SceneObject, b: SceneObject, ctx: EvalContext) -> int | Skip:
    """+1 if a's quantity is clearly larger, -1 if clearly smaller, else Skip('tie')."""
    va, vb = q.get(a), q.get(b)
    if q.position:
        if abs(va - vb) < ctx.margin_m:
            return Skip("tie")
    else:
        lo, hi = min(va, vb), max(va, vb)
        if hi < lo * (1.0 + ctx.margin_rel) ** q.power or hi - lo < 0.02:
            return Skip("tie")
    sign = 1 if va > vb else -1
    if q.image_x:
        du = a.image_centroid[0] - b.image_centroid[0]
        if du * sign <= 0:
            return Skip("view_disagreement")
    return sign


def _predicate(qname: str, larger: bool) -> Callable[[tuple[SceneObject, ...], EvalContext], Any]:
    q = _Q[qname]

    def evaluate(s: tuple[SceneObject, ...], ctx: EvalContext) -> bool | Skip:
        o = _order(q, s[0], s[1], ctx)
        return o if isinstance(o, Skip) else (o > 0) == larger

    return evaluate


def _choice(qname: str, larger: bool) -> Callable[[tuple[SceneObject, ...], EvalContext], Any]:
    q = _Q[qname]

    def evaluate(s: tuple[SceneObject, ...], ctx: EvalContext) -> int | Skip:
        o = _order(q, s[0], s[1], ctx)
        if isinstance(o, Skip):
            return o
        return s[0].id if (o > 0) == larger else s[1].id

    return evaluate


def _length(v: float, ctx: EvalContext) -> float | Skip:
    return v if v >= ctx.min_length_m else Skip("too_small")


def _positive_offset(v: float, ctx: EvalContext, image_ok: bool = True) -> float | Skip:
    if not image_ok:
        return Skip("view_disagreement")
    return v if v >= max(ctx.margin_m, ctx.min_length_m) else Skip("tie")


def _distance(s, ctx):
    return _length(float(np.linalg.norm(s[0].center - s[1].center)), ctx)


def _horizontal_distance(s, ctx):
    d = s[0].center - s[1].center
    return _length(float(math.hypot(d[0], d[1])), ctx)


def _vertical_distance(s, ctx):
    v = abs(_z(s[0]) - _z(s[1]))
    return v if v >= max(ctx.margin_m, ctx.min_length_m) else Skip("too_small")


def _single(get: Callable[[SceneObject], float]):
    return lambda s, ctx: _length(get(s[0]), ctx)


def _left_offset(s, ctx):
    return _positive_offset(_x(s[1]) - _x(s[0]), ctx, s[0].image_centroid[0] < s[1].image_centroid[0])


def _right_offset(s, ctx):
    return _positive_offset(_x(s[0]) - _x(s[1]), ctx, s[0].image_centroid[0] > s[1].image_centroid[0])


def _behind_offset(s, ctx):
    return _positive_offset(_dist(s[0]) - _dist(s[1]), ctx)


def _front_offset(s, ctx):
    return _positive_offset(_dist(s[1]) - _dist(s[0]), ctx)


def _height_difference(s, ctx):
    ha, hb = _height(s[0]), _height(s[1])
    if ha < hb * (1.0 + ctx.margin_rel) or ha - hb < ctx.min_length_m:
        return Skip("tie")
    return ha - hb


def _above_offset(s, ctx):
    return _positive_offset(_z(s[0]) - _z(s[1]), ctx)


def _height_ratio(s, ctx):
    ha, hb = _height(s[0]), _height(s[1])
    if ha < hb * max(1.2, 1.0 + ctx.margin_rel):
        return Skip("tie")
    return ha / hb


def clock_hour(dx: float, dy: float) -> tuple[int, float]:
    """Clock hour (1..12) of the horizontal direction (dx right, dy forward); 12 = forward.

    Also returns the angular distance (degrees) to the nearest boundary between two hours.
    """
    angle = math.degrees(math.atan2(dx, dy)) % 360.0
    hour = int(round(angle / 30.0)) % 12
    offset = abs(angle - 30.0 * round(angle / 30.0))
    return (12 if hour == 0 else hour), 15.0 - offset


def _clock(s, ctx):
    d = s[1].center - s[0].center
    if math.hypot(d[0], d[1]) < 2 * ctx.margin_m:
        return Skip("too_small")
    hour, to_boundary = clock_hour(float(d[0]), float(d[1]))
    if to_boundary < 5.0:
        return Skip("tie")
    return hour


def _closer_to(s, ctx):
    a, b, c = s
    da = float(np.linalg.norm(a.center - c.center))
    db = float(np.linalg.norm(b.center - c.center))
    if abs(da - db) < ctx.margin_m:
        return Skip("tie")
    return a.id if da < db else b.id


# ---------------------------------------------------------------- the catalogue

_M = "m"

# id: (kind, arity, unit, needs_gravity, needs_size, axis, evaluate, meaning)
_SPECS: dict[str, tuple] = {
    # quantitative
    "distance": ("quantitative", 2, _M, False, True, None, _distance,
                 "3D distance between the centres of A and B, in metres"),
    "horizontal_distance": ("quantitative", 2, _M, True, True, None, _horizontal_distance,
                            "distance between A's and B's centres projected on the ground plane, in metres"),
    "vertical_distance": ("quantitative", 2, _M, True, True, None, _vertical_distance,
                          "absolute difference of A's and B's centre heights, in metres"),
    "width": ("quantitative", 1, _M, True, True, None, _single(_width),
              "A's width: the larger horizontal side of its upright box, in metres"),
    "height": ("quantitative", 1, _M, True, True, None, _single(_height),
               "A's height: its vertical extent, in metres"),
    "depth": ("quantitative", 1, _M, True, True, None, _single(lambda o: float(o.depth)),
              "A's depth: the smaller horizontal side of its upright box, in metres"),
    "camera_distance": ("quantitative", 1, _M, False, True, None, _single(_dist),
                        "distance from the camera centre to A's centre, in metres"),
    "left_offset": ("quantitative", 2, _M, True, True, "x", _left_offset,
                    "how much further left A is than B along the camera's horizontal right axis, in metres"),
    "right_offset": ("quantitative", 2, _M, True, True, "x", _right_offset,
                     "how much further right A is than B along the camera's horizontal right axis, in metres"),
    "behind_offset": ("quantitative", 2, _M, False, True, "dist", _behind_offset,
                      "how much farther from the camera A is than B (difference of camera distances), in metres"),
    "front_offset": ("quantitative", 2, _M, False, True, "dist", _front_offset,
                     "how much closer to the camera A is than B (difference of camera distances), in metres"),
    "height_difference": ("quantitative", 2, _M, True, True, None, _height_difference,
                          "how much taller A is than B (A's height minus B's), in metres"),
    "above_offset": ("quantitative", 2, _M, True, True, "z", _above_offset,
                     "how much higher A's centre is than B's centre, in metres"),
    "height_ratio": ("quantitative", 2, "ratio", True, True, None, _height_ratio,
                     "A's height divided by B's height (A is the taller)"),
    "clock_direction": ("quantitative", 2, "clock", True, False, None, _clock,
                        "clock hour (1-12) of B's centre seen from A's centre, facing away from the camera "
                        "(12 = straight away from the camera, 3 = the camera's right)"),
}
for _name, _qname, _larger, _axis, _grav, _size, _meaning in (
    ("left", "x", False, "x", False, False, "A is to the left of B as seen from the camera"),
    ("right", "x", True, "x", False, False, "A is to the right of B as seen from the camera"),
    ("above", "z", True, "z", True, False, "A's centre is higher than B's along gravity"),
    ("below", "z", False, "z", True, False, "A's centre is lower than B's along gravity"),
    ("behind", "dist", True, "dist", False, False, "A is farther from the camera than B"),
    ("front", "dist", False, "dist", False, False, "A is closer to the camera than B"),
    ("tall", "height", True, None, True, True, "A is taller than B (vertical extent)"),
    ("short", "height", False, None, True, True, "A is shorter than B (vertical extent)"),
    ("wide", "width", True, None, True, True, "A is wider than B (larger horizontal side)"),
    ("thin", "width", False, None, True, True, "A is thinner than B (larger horizontal side)"),
    ("big", "volume", True, None, True, True, "A is bigger than B (box volume)"),
    ("small", "volume", False, None, True, True, "A is smaller than B (box volume)"),
):
    _SPECS[f"{_name}_predicate"] = ("yes_no", 2, "bool", _grav, _size, _axis, _predicate(_qname, _larger),
                                    f"yes/no: {_meaning}")
for _name, _qname, _larger, _axis, _grav, _size, _meaning in (
    ("left", "x", False, "x", False, False, "the one further left as seen from the camera"),
    ("right", "x", True, "x", False, False, "the one further right as seen from the camera"),
    ("above", "z", True, "z", True, False, "the one whose centre is higher along gravity"),
    ("below", "z", False, "z", True, False, "the one whose centre is lower along gravity"),
    ("tall", "height", True, None, True, True, "the taller one"),
    ("short", "height", False, None, True, True, "the shorter one"),
    ("close", "dist", False, "dist", False, False, "the one closer to the camera"),
    ("far", "dist", True, "dist", False, False, "the one farther from the camera"),
    ("wide", "width", True, None, True, True, "the wider one (larger horizontal side)"),
    ("thin", "width", False, None, True, True, "the thinner one (larger horizontal side)"),
    ("big", "volume", True, None, True, True, "the bigger one (box volume)"),
    ("small", "volume", False, None, True, True, "the smaller one (box volume)"),
):
    _SPECS[f"{_name}_choice"] = ("choice", 2, "object", _grav, _size, _axis, _choice(_qname, _larger),
                                 f"choice between A and B: {_meaning}; value = its object id")
# 3D centre-to-centre distances need well-measured boxes, as for the `distance` question: the centre of a
# mostly hidden object (a table seen by two legs) can be off by more than the tie margin
_SPECS["closer_to_choice"] = ("choice", 3, "object", False, True, None, _closer_to,
                              "choice between A and B: the one whose centre is closer to C's centre; "
                              "value = its object id")


# Types whose value needs the object's horizontal footprint, which is observable only when the
# top is seen from above (see GeometryConfig.min_top_elevation_deg).
FOOTPRINT_TYPES = frozenset({"width", "depth", "wide_predicate", "thin_predicate", "big_predicate",
                             "small_predicate", "wide_choice", "thin_choice", "big_choice", "small_choice"})


def _build() -> dict[str, QuestionType]:
    out: dict[str, QuestionType] = {}
    sources = {**_quantitative.TEMPLATES, **_predicates.TEMPLATES, **_choices.TEMPLATES}
    for tid, (kind, arity, unit, grav, size, axis, fn, meaning) in _SPECS.items():
        tpl = sources[tid]
        out[tid] = QuestionType(
            id=tid, kind=kind, arity=arity, meaning=meaning, unit=unit, needs_gravity=grav,
            needs_size=size, axis=axis, evaluate=fn, questions=tuple(tpl["questions"]),
            answers=tuple(tpl.get("answers", ())), yes=tuple(tpl.get("yes", ())), no=tuple(tpl.get("no", ())),
            needs_footprint=tid in FOOTPRINT_TYPES,
        )
    return out


CATALOG: dict[str, QuestionType] = _build()


def get_type(type_id: str) -> QuestionType:
    try:
        return CATALOG[type_id]
    except KeyError:
        raise KeyError(f"unknown question type {type_id!r}; see `spatialforge catalog`") from None


def catalog_summary() -> list[dict[str, Any]]:
    """Every type id with its kind, meaning and template counts (``spatialforge catalog --json``)."""
    return [t.to_dict() for t in CATALOG.values()]
