"""Composite spatial questions: multi-step questions with exact truth, a tool plan and a reasoning trace.

Each :class:`CompositeType` (see :data:`COMPOSITE_TYPES`; definitions in docs/conventions.md, "Composite
questions") has

* ``evaluate(objects, graph, ctx)``: the exact value from the scene graph, or a :class:`Skip` for a near-tie;
* ``plan(subjects, graph)``: the tool calls (``docs/reasoning.md``, ``spatialforge.reason.tools``) a correct
  chain makes, objects named by id. A plan is a fixed list: a helper tool that takes measured numbers
  (``triangle``, ``fits_between``, ``calculate``) gets the values the plan's own ``measure`` calls return,
  computed here with the same definitions as the tools;
* ``conclude(subjects, results)``: the answer computed only from the tool results. It checks that the numbers
  a helper call was given equal what the ``measure`` calls returned (relative 1e-6) and answers ``None``
  otherwise, so a measuring tool that disagrees with the truth makes a scripted chain fail.

:func:`generate_composite` samples questions (``QAPair`` with ``kind="composite"``) deterministically per
(seed, scene id); :func:`reasoning_trace` writes a think/answer chat example grounded in the exact values.
Numbers inside questions (1 m, 0.5 m) are type parameters, phrased in the configured unit system.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from spatialforge.core.types import QAPair, SceneGraph, SceneObject
from spatialforge.errors import ConfigError
from spatialforge.qa.catalog import EvalContext, Skip, clock_hour
from spatialforge.qa.generator import TypeSelection, scene_rng
from spatialforge.qa.numbers import UNIT_SYSTEMS, say_clock, say_length
from spatialforge.qa.refer import resolve_references

__all__ = [
    "COMPOSITE_KIND",
    "COMPOSITE_TYPES",
    "ISOSCELES_TOL",
    "RIGHT_ANGLE_TOL_DEG",
    "CompositeConfig",
    "CompositeType",
    "ToolCall",
    "exact_tool_result",
    "fits_gap",
    "generate_composite",
    "reasoning_trace",
    "say_parameter",
]

COMPOSITE_KIND = "composite"
#: the ``triangle`` tool's tolerances (docs/reasoning.md): two sides equal within 5 % of the longer one,
#: an angle within 5 degrees of 90
ISOSCELES_TOL = 0.05
RIGHT_ANGLE_TOL_DEG = 5.0
_CHECK_REL = 1e-6

ToolCall = tuple[str, dict[str, Any]]
AnswerKind = Literal["yes_no", "choice", "quantitative"]


@dataclass(frozen=True)
class CompositeType:
    """One composite question type (see the module docstring and docs/conventions.md).

    ``arity``: how many objects the question names (roles ``roles``); every type has ``arity >= 1``. Types
    that look at every object of the scene graph (``count_within``, ``midpoint_nearest``) name only A (and B).
    ``candidate_roles``: for choices, the roles whose objects are the answer options (``"X"``: every other
    nameable object, listed after the named ones in ``QAPair.subjects``). ``params``: the numbers the
    question states (``radius_m``), in metres.
    """

    id: str
    arity: int
    meaning: str
    answer_kind: AnswerKind
    unit: str
    questions: tuple[str, ...]
    evaluate: Callable[[tuple[SceneObject, ...], SceneGraph, EvalContext], Any]
    plan: Callable[[tuple[int, ...], SceneGraph], list[ToolCall]]
    conclude: Callable[[tuple[int, ...], list[dict]], Any]
    roles: tuple[str, ...] = ()
    candidate_roles: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    yes: tuple[str, ...] = ()
    no: tuple[str, ...] = ()
    needs_gravity: bool = False
    needs_footprint: bool = False
    params: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": COMPOSITE_KIND, "answer_kind": self.answer_kind, "unit": self.unit,
                "arity": self.arity, "meaning": self.meaning, "needs_gravity": self.needs_gravity,
                "params": dict(self.params), "question_templates": len(self.questions)}


# ----------------------------------------------------------------------------------------------- geometry

def _c(o: SceneObject) -> np.ndarray:
    return np.asarray(o.center, dtype=np.float64)


def _d(a: SceneObject, b: SceneObject) -> float:
    return float(np.linalg.norm(_c(a) - _c(b)))


def _hd(a: SceneObject, b: SceneObject) -> float:
    d = _c(a) - _c(b)
    return float(math.hypot(d[0], d[1]))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0 else min(1.0, max(0.0, float((p - a) @ ab) / denom))
    return float(np.linalg.norm(p - (a + t * ab)))


def _triangle(ab: float, bc: float, ca: float) -> dict[str, Any]:
    """Sides and angles (degrees, at A, B, C) with the tool's isosceles / right verdicts and their margins."""
    def angle(opposite: float, s1: float, s2: float) -> float:
        cos = (s1 * s1 + s2 * s2 - opposite * opposite) / (2 * s1 * s2)
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    angles = [angle(bc, ab, ca), angle(ca, ab, bc), angle(ab, bc, ca)]
    sides = [ab, bc, ca]
    rel = min(abs(sides[i] - sides[j]) / max(sides[i], sides[j]) for i, j in ((0, 1), (1, 2), (0, 2)))
    off90 = min(abs(a - 90.0) for a in angles)
    return {"sides": sides, "angles_deg": angles, "isosceles": rel <= ISOSCELES_TOL,
            "right": off90 <= RIGHT_ANGLE_TOL_DEG, "rel_diff": rel, "off90": off90}


def fits_gap(b: SceneObject, c: SceneObject) -> float:
    """The free gap between B and C: horizontal centre distance minus half of B's and half of C's width."""
    return _hd(b, c) - b.width / 2 - c.width / 2


def _bearing_clock(a: SceneObject, b: SceneObject, c: SceneObject) -> tuple[int, float]:
    """Clock hour of C seen from A when facing B (12 = towards B, 3 = to the right), and degrees to a boundary."""
    f = (_c(b) - _c(a))[:2]
    f = f / float(np.linalg.norm(f))
    right = np.array([f[1], -f[0]])
    v = (_c(c) - _c(a))[:2]
    return clock_hour(float(v @ right), float(v @ f))


# ----------------------------------------------------------------------------------------------- truth

def _band(v: float, threshold: float, rel: float) -> bool:
    """True when ``v`` is inside the tie band (1 - rel, 1 + rel) x threshold."""
    return threshold * (1 - rel) < v < threshold * (1 + rel)


def _tri_eval(which: str) -> Callable:
    def evaluate(s: tuple[SceneObject, ...], graph: SceneGraph, ctx: EvalContext) -> bool | Skip:
        a, b, c = s
        sides = (_d(a, b), _d(b, c), _d(c, a))
        if min(sides) < max(ctx.margin_m, ctx.min_length_m):
            return Skip("too_small")
        t = _triangle(*sides)
        if which == "isosceles":
            return Skip("tie") if _band(t["rel_diff"], ISOSCELES_TOL, ctx.margin_rel) else bool(t["isosceles"])
        return Skip("tie") if _band(t["off90"], RIGHT_ANGLE_TOL_DEG, ctx.margin_rel) else bool(t["right"])
    return evaluate


def _ranked(values: dict[int, float], ctx: EvalContext, largest: bool) -> int | Skip:
    order = sorted(values, key=lambda k: values[k], reverse=largest)
    if len(order) < 2:
        return Skip("too_few_objects")
    if abs(values[order[0]] - values[order[1]]) < ctx.margin_m:
        return Skip("tie")
    return order[0]


def _closest_of(s, graph, ctx):
    *cands, ref = s
    return _ranked({o.id: _d(o, ref) for o in cands}, ctx, largest=False)


def _fits(s, graph, ctx):
    a, b, c = s
    gap = fits_gap(b, c)
    if abs(gap - a.width) < ctx.margin_m:
        return Skip("tie")
    return a.width < gap


def _closer_pair(s, graph, ctx):
    a, b, c, d = s
    d1, d2 = _d(a, b), _d(c, d)
    return Skip("tie") if abs(d1 - d2) < ctx.margin_m else d1 < d2


def _closer_pair_difference(s, graph, ctx):
    a, b, c, d = s
    diff = _d(c, d) - _d(a, b)
    return diff if diff >= max(ctx.margin_m, ctx.min_length_m) else Skip("tie")


def _others(graph: SceneGraph, exclude: Sequence[int]) -> list[SceneObject]:
    return [o for o in graph.objects if o.id not in exclude]


def _midpoint_nearest(s, graph, ctx):
    a, b = s
    mid = (_c(a) + _c(b)) / 2
    return _ranked({o.id: float(np.linalg.norm(_c(o) - mid)) for o in _others(graph, (a.id, b.id))}, ctx, False)


def _count_within(radius: float) -> Callable:
    def evaluate(s, graph, ctx):
        (a,) = s
        dists = [_d(a, o) for o in _others(graph, (a.id,))]
        if any(abs(d - radius) < ctx.margin_m for d in dists):
            return Skip("tie")
        return sum(1 for d in dists if d <= radius)
    return evaluate


def _path_near(radius: float) -> Callable:
    def evaluate(s, graph, ctx):
        a, b, c = s
        if _d(a, b) < max(ctx.margin_m, ctx.min_length_m):
            return Skip("too_small")
        v = _segment_distance(_c(c), _c(a), _c(b))
        return Skip("tie") if abs(v - radius) < ctx.margin_m else v <= radius
    return evaluate


def _extreme(get: Callable[[SceneObject], float]) -> Callable:
    def evaluate(s, graph, ctx):
        vals = {o.id: get(o) for o in s}
        order = sorted(vals, key=lambda k: vals[k], reverse=True)
        if len(order) < 2:
            return Skip("too_few_objects")
        hi, lo = vals[order[0]], vals[order[1]]
        if hi < lo * (1.0 + ctx.margin_rel) or hi - lo < 0.02:
            return Skip("tie")
        return order[0]
    return evaluate


def _sum(get: Callable[[SceneObject, SceneObject], float]) -> Callable:
    return lambda s, graph, ctx: get(*s)


def _clock_after_turning(s, graph, ctx):
    a, b, c = s
    if min(_hd(a, b), _hd(a, c)) < 2 * ctx.margin_m:
        return Skip("too_small")
    hour, to_boundary = _bearing_clock(a, b, c)
    return Skip("tie") if to_boundary < 5.0 else hour


# ----------------------------------------------------------------------------------------------- plans

def _m(quantity: str, a: int, b: int | None = None) -> ToolCall:
    args: dict[str, Any] = {"quantity": quantity, "a": int(a)}
    if b is not None:
        args["b"] = int(b)
    return ("measure", args)


def _num(x: float) -> str:
    return repr(float(x))


def _same(x: float, y: float) -> bool:
    return math.isclose(float(x), float(y), rel_tol=_CHECK_REL, abs_tol=1e-9)


def _value(results: list[dict], i: int) -> float:
    return float(results[i]["value"])


def _tri_plan(s, graph):
    a, b, c = (graph.object(i) for i in s)
    return [_m("distance", s[0], s[1]), _m("distance", s[1], s[2]), _m("distance", s[2], s[0]),
            ("triangle", {"ab": _d(a, b), "bc": _d(b, c), "ca": _d(c, a)})]


def _tri_conclude(key: str) -> Callable:
    def conclude(s, results):
        measured = [_value(results, i) for i in range(3)]
        tri = results[3]
        if not all(_same(x, y) for x, y in zip(measured, tri["sides"], strict=True)):
            return None
        return bool(tri[key])
    return conclude


def _closest_plan(s, graph):
    return [_m("distance", o, s[3]) for o in s[:3]]


def _closest_conclude(s, results):
    vals = [_value(results, i) for i in range(3)]
    return int(s[int(np.argmin(vals))])


def _fits_plan(s, graph):
    a, b, c = (graph.object(i) for i in s)
    return [_m("horizontal_distance", s[1], s[2]), _m("width", s[1]), _m("width", s[2]), _m("width", s[0]),
            ("fits_between", {"width": a.width, "gap": fits_gap(b, c)})]


def _fits_conclude(s, results):
    hd, wb, wc, wa = (_value(results, i) for i in range(4))
    gap = hd - wb / 2 - wc / 2
    fit = results[4]
    if not _same(fit["clearance"], gap - wa):
        return None
    return bool(fit["fits"])


def _pair_plan(s, graph):
    return [_m("distance", s[0], s[1]), _m("distance", s[2], s[3])]


def _pair_conclude(s, results):
    return _value(results, 0) < _value(results, 1)


def _pair_diff_plan(s, graph):
    a, b, c, d = (graph.object(i) for i in s)
    return [*_pair_plan(s, graph), ("calculate", {"expression": f"{_num(_d(c, d))} - {_num(_d(a, b))}"})]


def _pair_diff_conclude(s, results):
    diff = _value(results, 1) - _value(results, 0)
    return float(_value(results, 2)) if _same(_value(results, 2), diff) else None


def _list_plan(s, graph):
    return [("list_objects", {})]


def _centres(results: list[dict]) -> dict[int, np.ndarray]:
    return {int(o["id"]): np.asarray(o["center"], dtype=np.float64) for o in results[0]["objects"]}


def _midpoint_conclude(s, results):
    cs = _centres(results)
    mid = (cs[s[0]] + cs[s[1]]) / 2
    rest = {k: float(np.linalg.norm(v - mid)) for k, v in cs.items() if k not in (s[0], s[1])}
    return min(rest, key=lambda k: rest[k])


def _count_conclude(radius: float) -> Callable:
    def conclude(s, results):
        cs = _centres(results)
        return sum(1 for k, v in cs.items() if k != s[0] and float(np.linalg.norm(v - cs[s[0]])) <= radius)
    return conclude


def _path_plan(s, graph):
    return [("point_segment_distance", {"point": int(s[2]), "a": int(s[0]), "b": int(s[1])})]


def _path_conclude(radius: float) -> Callable:
    return lambda s, results: _value(results, 0) <= radius


def _extreme_plan(quantity: str) -> Callable:
    return lambda s, graph: [_m(quantity, o) for o in s]


def _extreme_conclude(s, results):
    vals = [_value(results, i) for i in range(len(s))]
    return int(s[int(np.argmax(vals))])


def _sum_plan(quantity: str, pairs: Callable[[tuple[int, ...]], list[tuple[int, ...]]]) -> Callable:
    def plan(s, graph):
        calls = [_m(quantity, *p) for p in pairs(s)]
        vals = [_exact_measure(graph, c[1]) for c in calls]
        return [*calls, ("calculate", {"expression": " + ".join(_num(v) for v in vals)})]
    return plan


def _sum_conclude(n: int) -> Callable:
    def conclude(s, results):
        total = sum(_value(results, i) for i in range(n))
        return float(_value(results, n)) if _same(_value(results, n), total) else None
    return conclude


def _clock_conclude(s, results):
    cs = _centres(results)
    a, b, c = cs[s[0]], cs[s[1]], cs[s[2]]
    f = (b - a)[:2]
    f = f / float(np.linalg.norm(f))
    v = (c - a)[:2]
    return clock_hour(float(v @ np.array([f[1], -f[0]])), float(v @ f))[0]


# ----------------------------------------------------------------------------------------------- catalogue

_YES = ("Yes, {S}.", "Yes: {S}.", "Correct, {S}.")
_NO = ("No, {S}.", "No: {S}.", "No. In fact, {S}.")

_RADIUS_COUNT = 1.0
_RADIUS_PATH = 0.5


def _types() -> dict[str, CompositeType]:
    t: list[CompositeType] = [
        CompositeType(
            "isosceles_triangle", 3,
            "yes/no: the centres of A, B and C form an isosceles triangle (two of the three centre-to-centre "
            "distances differ by at most 5 % of the longer one)",
            "yes_no", "bool",
            ("Do {A}, {B} and {C} form an isosceles triangle?",
             "Are two of the distances between {A}, {B} and {C} equal, so that they form an isosceles triangle?",
             "Is the triangle formed by {A}, {B} and {C} isosceles?"),
            _tri_eval("isosceles"), _tri_plan, _tri_conclude("isosceles"), roles=("A", "B", "C"),
            yes=tuple(y.replace("{S}", "two of the sides are about equal") for y in _YES),
            no=tuple(n.replace("{S}", "all three sides differ") for n in _NO)),
        CompositeType(
            "right_triangle", 3,
            "yes/no: the centres of A, B and C form a right triangle (an angle within 5 degrees of 90)",
            "yes_no", "bool",
            ("Do {A}, {B} and {C} form a right triangle?",
             "Is one of the angles of the triangle {A}, {B}, {C} a right angle?",
             "Is the triangle formed by {A}, {B} and {C} right-angled?"),
            _tri_eval("right"), _tri_plan, _tri_conclude("right"), roles=("A", "B", "C"),
            yes=tuple(y.replace("{S}", "one angle is about 90 degrees") for y in _YES),
            no=tuple(n.replace("{S}", "no angle is close to 90 degrees") for n in _NO)),
        CompositeType(
            "closest_of", 4, "choice among A, B and C: the one whose centre is closest to D's centre",
            "choice", "object",
            ("Which of {A}, {B} and {C} is closest to {D}?",
             "Of {A}, {B} and {C}, which one is nearest to {D}?",
             "Among {A}, {B} and {C}, which is the closest to {D}?"),
            _closest_of, _closest_plan, _closest_conclude, roles=("A", "B", "C", "D"),
            candidate_roles=("A", "B", "C"), answers=("{X} is closest to {D}.", "{X}.", "The closest one is {X}.")),
        CompositeType(
            "fits_between", 3,
            "yes/no: A's width is smaller than the gap between B and C (horizontal centre distance of B and C "
            "minus half of B's width and half of C's width)",
            "yes_no", "bool",
            ("Would {A} fit between {B} and {C}?",
             "Is there enough room between {B} and {C} for {A}?",
             "Could {A} be placed in the gap between {B} and {C}?"),
            _fits, _fits_plan, _fits_conclude, roles=("A", "B", "C"), needs_gravity=True,
            yes=tuple(y.replace("{S}", "the gap is wider than {A}") for y in _YES),
            no=tuple(n.replace("{S}", "the gap is narrower than {A}") for n in _NO)),
        CompositeType(
            "closer_pair", 4, "yes/no: the distance between A and B is smaller than the distance between C and D",
            "yes_no", "bool",
            ("Is {A} closer to {B} than {C} is to {D}?",
             "Are {A} and {B} closer together than {C} and {D}?",
             "Is the distance from {A} to {B} shorter than the distance from {C} to {D}?"),
            _closer_pair, _pair_plan, _pair_conclude, roles=("A", "B", "C", "D"),
            yes=tuple(y.replace("{S}", "{A} and {B} are closer together") for y in _YES),
            no=tuple(n.replace("{S}", "{C} and {D} are closer together") for n in _NO)),
        CompositeType(
            "closer_pair_difference", 4,
            "how much closer A is to B than C is to D: distance(C, D) - distance(A, B), in metres (asked when "
            "positive)", "quantitative", "m",
            ("How much closer is {A} to {B} than {C} is to {D}?",
             "By how much is the distance from {A} to {B} shorter than the distance from {C} to {D}?"),
            _closer_pair_difference, _pair_diff_plan, _pair_diff_conclude, roles=("A", "B", "C", "D"),
            answers=("{A} is {value} closer to {B} than {C} is to {D}.", "By {value}.")),
        CompositeType(
            "midpoint_nearest", 2,
            "choice among all other objects: the one whose centre is nearest to the midpoint of A's and B's "
            "centres", "choice", "object",
            ("Which object is nearest to the midpoint between {A} and {B}?",
             "What is closest to the point halfway between {A} and {B}?",
             "Which object lies nearest to the middle of {A} and {B}?"),
            _midpoint_nearest, _list_plan, _midpoint_conclude, roles=("A", "B"), candidate_roles=("X",),
            answers=("{X} is nearest to the midpoint.", "{X}.")),
        CompositeType(
            "count_within", 1, "how many other objects have their centre within radius_m (1 m) of A's centre",
            "quantitative", "count",
            ("How many objects are within {r} of {A}?",
             "How many other objects have their centre within {r} of {A}?",
             "Count the objects that are at most {r} from {A}."),
            _count_within(_RADIUS_COUNT), _list_plan, _count_conclude(_RADIUS_COUNT), roles=("A",),
            answers=("{value}.", "{A} has {value} within {r}."), params={"radius_m": _RADIUS_COUNT}),
        CompositeType(
            "path_passes_near", 3,
            "yes/no: the straight segment between A's and B's centres passes within radius_m (0.5 m) of C's "
            "centre (3D point-to-segment distance)", "yes_no", "bool",
            ("Does the straight path from {A} to {B} pass within {r} of {C}?",
             "If you moved in a straight line from {A} to {B}, would you come within {r} of {C}?",
             "Does the line from {A} to {B} pass closer than {r} to {C}?"),
            _path_near(_RADIUS_PATH), _path_plan, _path_conclude(_RADIUS_PATH), roles=("A", "B", "C"),
            yes=tuple(y.replace("{S}", "it passes within {r} of {C}") for y in _YES),
            no=tuple(n.replace("{S}", "it stays more than {r} away from {C}") for n in _NO),
            params={"radius_m": _RADIUS_PATH}),
        CompositeType(
            "tallest_of", 4, "choice among A, B, C and D: the one with the largest height", "choice", "object",
            ("Which is the tallest of {A}, {B}, {C} and {D}?", "Of {A}, {B}, {C} and {D}, which one is tallest?",
             "Among {A}, {B}, {C} and {D}, which is the tallest?"),
            _extreme(lambda o: float(o.height)), _extreme_plan("height"), _extreme_conclude,
            roles=("A", "B", "C", "D"), candidate_roles=("A", "B", "C", "D"),
            answers=("{X} is the tallest.", "{X}."), needs_gravity=True),
        CompositeType(
            "widest_of", 4, "choice among A, B, C and D: the one with the largest width", "choice", "object",
            ("Which is the widest of {A}, {B}, {C} and {D}?", "Of {A}, {B}, {C} and {D}, which one is widest?",
             "Among {A}, {B}, {C} and {D}, which is the widest?"),
            _extreme(lambda o: float(o.width)), _extreme_plan("width"), _extreme_conclude,
            roles=("A", "B", "C", "D"), candidate_roles=("A", "B", "C", "D"),
            answers=("{X} is the widest.", "{X}."), needs_gravity=True, needs_footprint=True),
        CompositeType(
            "stacked_height", 2, "sum of A's and B's heights, in metres (how tall A stacked on B would be)",
            "quantitative", "m",
            ("If {A} were stacked on top of {B}, how tall would the stack be?",
             "What is the combined height of {A} and {B}?"),
            _sum(lambda a, b: float(a.height + b.height)), _sum_plan("height", lambda s: [(s[0],), (s[1],)]),
            _sum_conclude(2), roles=("A", "B"), needs_gravity=True,
            answers=("The stack would be {value} tall.", "{value}.")),
        CompositeType(
            "route_length", 3, "distance(A, B) + distance(B, C): the length of the route A -> B -> C, in metres",
            "quantitative", "m",
            ("How far is it from {A} to {B} and then on to {C}?",
             "What is the total distance from {A} to {B} and then from {B} to {C}?"),
            _sum(lambda a, b, c: _d(a, b) + _d(b, c)), _sum_plan("distance", lambda s: [(s[0], s[1]), (s[1], s[2])]),
            _sum_conclude(2), roles=("A", "B", "C"), answers=("The route is {value} long.", "{value} in total.")),
        CompositeType(
            "clock_after_turning", 3,
            "clock hour (1-12) of C's centre seen from A's centre when facing B's centre (horizontal plane; 12 = "
            "towards B, 3 = to the right)", "quantitative", "clock",
            ("Standing at {A} and facing {B}, at what clock position is {C}?",
             "If you stand at {A} and turn to face {B}, in which clock direction is {C}?"),
            _clock_after_turning, _list_plan, _clock_conclude, roles=("A", "B", "C"), needs_gravity=True,
            answers=("{C} is at {value}.", "At {value}.")),
    ]
    return {x.id: x for x in t}


COMPOSITE_TYPES: dict[str, CompositeType] = _types()


# ----------------------------------------------------------------------------------------------- exact tools

def _exact_measure(graph: SceneGraph, args: Mapping[str, Any]) -> float:
    a = graph.object(int(args["a"]))
    q = args["quantity"]
    if q in ("width", "depth", "height", "camera_distance"):
        return float(getattr(a, q))
    b = graph.object(int(args["b"]))
    if q == "distance":
        return _d(a, b)
    if q == "horizontal_distance":
        return _hd(a, b)
    if q == "vertical_distance":
        return abs(float(a.center[2] - b.center[2]))
    raise ValueError(f"no exact measure for quantity {q!r}")  # plans use only the quantities above


def exact_tool_result(graph: SceneGraph, call: ToolCall) -> dict[str, Any]:
    """The result a tool gives for ``call``, computed with the interface's definitions (used for the traces)."""
    name, args = call
    if name == "measure":
        return {"quantity": args["quantity"], "value": _exact_measure(graph, args), "unit": "m"}
    if name == "triangle":
        tri = _triangle(float(args["ab"]), float(args["bc"]), float(args["ca"]))
        return {k: tri[k] for k in ("sides", "angles_deg", "isosceles", "right")}
    if name == "fits_between":
        width, gap = float(args["width"]), float(args["gap"])
        return {"fits": width < gap, "clearance": gap - width}
    if name == "calculate":
        terms = args["expression"].replace(" - ", " + -").split(" + ")
        return {"value": sum(float(x) for x in terms)}
    if name == "point_segment_distance":
        p, a, b = (_c(graph.object(int(args[k]))) for k in ("point", "a", "b"))
        return {"value": _segment_distance(p, a, b), "unit": "m"}
    if name == "list_objects":
        return {"objects": [{"id": o.id, "caption": o.caption, "center": _c(o).tolist(), "width": float(o.width),
                             "depth": float(o.depth), "height": float(o.height)} for o in graph.objects]}
    raise ValueError(f"no exact result for tool {name!r}")


# ----------------------------------------------------------------------------------------------- phrasing

_INCH = 0.0254
_FOOT = 0.3048


def say_parameter(metres: float, units: str) -> tuple[str, float]:
    """A question parameter in words and the length that wording means: metric "1 metre" / "50 centimetres",
    imperial "3.3 feet" / "20 inches" (within 1 cm of ``metres``, far inside the tie margin)."""
    if units == "metric":
        if metres >= 1:
            v = round(metres, 1)
            return f"{v:g} metre{'' if v == 1 else 's'}", v
        cm = round(metres * 100)
        return f"{cm} centimetres", cm / 100
    if metres >= 0.9:
        ft = round(metres / _FOOT, 1)
        return f"{ft:g} feet", ft * _FOOT
    inches = round(metres / _INCH)
    return f"{inches} inches", inches * _INCH


def _fmt_len(metres: float, units: str) -> str:
    """An exact measured length for a reasoning step: "1.23 m" / "4.04 ft"."""
    return f"{metres:.2f} m" if units != "imperial" else f"{metres / _FOOT:.2f} ft"


# ----------------------------------------------------------------------------------------------- generator

@dataclass(frozen=True)
class CompositeConfig(TypeSelection):
    """Composite question synthesis settings (``--composite N`` gives ``per_scene``)."""

    _WHAT = "composite"

    per_scene: int = 5
    units: str = "metric"
    margin_m: float = 0.10
    margin_rel: float = 0.15
    min_length_m: float = 0.05
    types: tuple[str, ...] | None = None
    exclude_types: tuple[str, ...] = ()
    attempts_per_question: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.per_scene, bool) or not isinstance(self.per_scene, int) or self.per_scene < 1:
            raise ConfigError(f"composite questions per scene (--composite) must be an integer >= 1, "
                              f"got {self.per_scene!r}")
        self._check_selection()

    @classmethod
    def _catalog(cls) -> dict[str, CompositeType]:
        return COMPOSITE_TYPES


def _pool(t: CompositeType, graph: SceneGraph, objs: list[SceneObject]) -> list[SceneObject]:
    """The objects ``t`` may name: referable, with a well-measured box (and footprint for widths)."""
    if t.needs_gravity and not graph.gravity.reliable:
        return []
    objs = [o for o in objs if o.size_reliable and (o.footprint_reliable or not t.needs_footprint)]
    if t.candidate_roles == ("X",) and len(graph.objects) < t.arity + 2:  # at least two options
        return []
    return objs if len(objs) >= max(t.arity, 1) else []


def _render(t: CompositeType, roles: dict[str, int], refs: Mapping[int, str], value: Any, units: str,
            rng: np.random.Generator) -> tuple[str, str]:
    names = {k: refs[v] for k, v in roles.items()}
    if "radius_m" in t.params:
        names["r"] = say_parameter(t.params["radius_m"], units if units != "mixed" else
                                   ("metric" if rng.random() < 0.5 else "imperial"))[0]
    q = t.questions[int(rng.integers(len(t.questions)))]
    if t.answer_kind == "yes_no":
        pool = t.yes if value else t.no
        a = pool[int(rng.integers(len(pool)))]
        fields = names
    elif t.answer_kind == "choice":
        a = t.answers[int(rng.integers(len(t.answers)))]
        fields = dict(names, X=refs[int(value)])
    else:
        a = t.answers[int(rng.integers(len(t.answers)))]
        if t.unit == "m":
            said = say_length(float(value), units, rng)
        elif t.unit == "clock":
            said = say_clock(int(value))
        else:  # count
            said = f"{int(value)} object{'' if int(value) == 1 else 's'}" if value else "no other objects"
        fields = dict(names, value=said)
    cap = lambda s: s[:1].upper() + s[1:]  # noqa: E731
    return cap(q.format(**names)), cap(a.format(**fields))


def generate_composite(graph: SceneGraph, references: Mapping[int, str] | None = None,
                       config: CompositeConfig | None = None) -> list[QAPair]:
    """Up to ``config.per_scene`` composite questions about ``graph`` (``QAPair.kind == "composite"``).

    ``references``: how each object is named (object id -> text; default: ``qa.refer.resolve_references``
    with the scene rng, as ``generate_qa`` names them). Objects without a reference are never named; an "of
    all" question whose answer has no reference is not asked. Deterministic for (seed, scene id).
    """
    cfg = config or CompositeConfig()
    ctx = cfg.context()
    if references is None:
        refs_full = resolve_references(graph.objects, margin=cfg.margin_m, vertical_ok=graph.gravity.reliable,
                                       rng=scene_rng(cfg.seed, graph.scene_id, "references"))
        references = {k: r.text for k, r in refs_full.items()}
    refs = {int(k): str(v) for k, v in references.items()}
    objs = [o for o in graph.objects if o.id in refs]
    rng = scene_rng(cfg.seed, graph.scene_id, "composite")
    types = [(t, pool) for t in cfg.enabled_types() if (pool := _pool(t, graph, objs))]
    out: list[QAPair] = []
    tried: set[tuple[str, tuple[int, ...]]] = set()
    if not types:
        return out
    for _ in range(cfg.per_scene):
        for _attempt in range(cfg.attempts_per_question):
            t, pool = types[int(rng.integers(len(types)))]
            pick = tuple(pool[int(i)] for i in rng.choice(len(pool), size=t.arity, replace=False))
            key = (t.id, tuple(o.id for o in pick))
            if key in tried:
                continue
            tried.add(key)
            value = t.evaluate(pick, graph, ctx)
            if isinstance(value, Skip):
                continue
            if t.answer_kind == "choice" and int(value) not in refs:
                continue  # the answer cannot be named
            roles = dict(zip(t.roles, (o.id for o in pick), strict=True))
            question, answer = _render(t, roles, refs, value, cfg.units, rng)
            subjects = [o.id for o in pick]
            role_list = list(t.roles)
            if "X" in t.candidate_roles:  # the options are every other nameable object
                extra = [o.id for o in graph.objects if o.id in refs and o.id not in subjects]
                subjects += extra
                role_list += ["X"] * len(extra)
            out.append(QAPair(
                id=f"{graph.scene_id}-c{len(out):03d}", type=t.id, kind=COMPOSITE_KIND,  # type: ignore[arg-type]
                question=question, answer=answer,
                value=float(value) if t.unit == "m" else (bool(value) if t.unit == "bool" else int(value)),
                unit=t.unit, subjects=tuple(subjects), roles=tuple(role_list),
                names=tuple(refs[i] for i in subjects)))
            break
    return out


# ----------------------------------------------------------------------------------------------- traces

def _step_text(call: ToolCall, result: dict[str, Any], names: Mapping[int, str], units: str) -> str:
    name, args = call
    if name == "measure":
        q = args["quantity"].replace("_", " ")
        if "b" in args:
            return f"The {q} between {names[args['a']]} and {names[args['b']]} is {_fmt_len(result['value'], units)}."
        return f"The {q} of {names[args['a']]} is {_fmt_len(result['value'], units)}."
    if name == "triangle":
        s = ", ".join(_fmt_len(v, units) for v in result["sides"])
        a = ", ".join(f"{v:.1f}°" for v in result["angles_deg"])
        iso, right = ("" if result[k] else "not " for k in ("isosceles", "right"))
        return f"With sides {s}, the angles are {a}: the triangle is {iso}isosceles and {right}right-angled."
    if name == "fits_between":
        gap = float(args["gap"])
        return (f"The free gap is {_fmt_len(gap, units)} and the width is {_fmt_len(float(args['width']), units)}, "
                f"so it {'fits' if result['fits'] else 'does not fit'}.")
    if name == "calculate":
        return f"Computing {args['expression']} gives {_fmt_len(float(result['value']), units)}."
    if name == "point_segment_distance":
        return (f"The distance from {names[args['point']]} to the segment from {names[args['a']]} to "
                f"{names[args['b']]} is {_fmt_len(result['value'], units)}.")
    if name == "list_objects":
        parts = [f"{names.get(o['id'], o['caption'])} at ({', '.join(f'{c:.2f}' for c in o['center'])}) m, "
                 f"{_fmt_len(o['width'], units)} wide and {_fmt_len(o['height'], units)} tall"
                 for o in result["objects"]]
        return "The objects: " + "; ".join(parts) + "."
    raise ValueError(f"no step text for tool {name!r}")


def _derived_steps(t: CompositeType, subjects: tuple[int, ...], graph: SceneGraph, names: Mapping[int, str],
                   units: str) -> list[str]:
    """Steps a chain computes itself from a listing of the objects (distances, midpoint, bearing)."""
    objs = {o.id: o for o in graph.objects}
    name = lambda i: names.get(i, objs[i].caption)  # noqa: E731
    if t.id == "count_within":
        a = objs[subjects[0]]
        return [f"{name(o.id)} is {_fmt_len(_d(a, o), units)} from {name(a.id)}." for o in _others(graph, (a.id,))]
    if t.id == "midpoint_nearest":
        a, b = objs[subjects[0]], objs[subjects[1]]
        mid = (_c(a) + _c(b)) / 2
        return [f"{name(o.id)} is {_fmt_len(float(np.linalg.norm(_c(o) - mid)), units)} from the midpoint."
                for o in _others(graph, (a.id, b.id))]
    if t.id == "clock_after_turning":
        a, b, c = (objs[i] for i in subjects[:3])
        f = (_c(b) - _c(a))[:2]
        f = f / float(np.linalg.norm(f))
        v = (_c(c) - _c(a))[:2]
        ahead, right = float(v @ f), float(v @ np.array([f[1], -f[0]]))
        angle = math.degrees(math.atan2(right, ahead)) % 360
        return [f"Facing {name(b.id)}, {name(c.id)} is {_fmt_len(abs(ahead), units)} "
                f"{'ahead' if ahead >= 0 else 'behind'} and {_fmt_len(abs(right), units)} to the "
                f"{'right' if right >= 0 else 'left'}, {angle:.0f}° clockwise from straight ahead."]
    return []


def reasoning_trace(qa: QAPair, graph: SceneGraph, units: str = "metric") -> list[dict[str, Any]]:
    """A chat example (the ``messages`` format of spatialforge datasets and ``spatialforge train``): the user
    turn (image + question) and an assistant turn ``<think>steps</think>`` then the answer, where every step
    states an exact value measured in ``graph`` by the type's plan. ``SpatialForgeError`` if the plan's
    conclusion disagrees with ``qa.value`` (the trace would teach a wrong chain)."""
    t = COMPOSITE_TYPES.get(qa.type)
    if t is None:
        raise ConfigError(f"{qa.id}: {qa.type!r} is not a composite question type")
    if units not in UNIT_SYSTEMS:
        raise ConfigError(f"units must be one of {', '.join(UNIT_SYSTEMS)}, got {units!r}")
    subjects = tuple(int(s) for s in qa.subjects)
    names = dict(zip(subjects, qa.names, strict=False))
    calls = t.plan(subjects, graph)
    results = [exact_tool_result(graph, c) for c in calls]
    concluded = t.conclude(subjects, results)
    if concluded is None or (t.unit == "m" and not _same(concluded, qa.value)) or \
            (t.unit != "m" and concluded != qa.value):
        raise ConfigError(f"{qa.id}: the plan of {qa.type} concludes {concluded!r}, not the value {qa.value!r}")
    steps = [_step_text(c, r, names, "metric" if units == "mixed" else units) for c, r in zip(calls, results,
                                                                                              strict=True)]
    steps += _derived_steps(t, subjects, graph, names, "metric" if units == "mixed" else units)
    think = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    return [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": qa.question}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"<think>\n{think}\n</think>\n{qa.answer}"}]},
    ]
