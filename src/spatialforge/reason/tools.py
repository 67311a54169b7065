"""The tools a reasoning LLM calls: scene-graph measurements, geometry helpers, arithmetic, the VLM.

Torch-free (numpy only). A tool set has ``names``, ``specs()`` (OpenAI function-tool JSON schemas)
and ``call(name, args) -> dict`` (a JSON-able result). Every problem with a call -- an unknown tool,
a missing or wrong argument, an unknown or ambiguous object name, an expression that is not
arithmetic -- raises :class:`ToolError` with a one-line message; the agent hands it back to the
LLM as the observation, so the LLM can correct itself.

:class:`SceneTools` (a 3D scene graph):

* ``list_objects()`` -> ``{"objects": [{"id", "caption", "reference", "center": [x, y, z], "width", "depth",
  "height"}]}`` (metres, canonical frame of docs/conventions.md: z up, x camera-right, y forward);
* ``measure(quantity, a, b=None)`` -> ``{"quantity", "value", "unit"}``: ``distance`` (3D, centre to
  centre), ``horizontal_distance``, ``vertical_distance`` (absolute), ``clock`` (the clock hour of b seen
  from a: 12 = forward, 3 = right, :func:`spatialforge.qa.catalog.clock_hour`) of two objects; ``width``,
  ``depth``, ``height``, ``camera_distance`` and ``elevation`` (the gravity-frame z of a's centre: its
  height above the support plane) of one. The values are exactly those the QA catalogue's truth uses
  (``SceneObject.center``, ``.width``, ``.depth``, ``.height``, ``.camera_distance``);
* ``point_segment_distance(point, a, b)``: from ``point``'s centre to the segment between the centres of
  ``a`` and ``b`` (3D);
* ``triangle(ab, bc, ca)``, ``fits_between(width, gap)``, ``calculate(expression)``: see the functions.

An object is named by its integer id or by its reference ("the red mug", "the chair on the left") or
caption, matched case-insensitively and without a leading article; a name that fits several objects
(a caption two objects share) or none is a :class:`ToolError` that lists the names to use.

When the scene's vertical comes from the camera prior (no support plane found), results of
quantities that depend on the vertical carry ``"note": "vertical_unreliable"``.

:class:`VLMTools`: ``ask_vlm(question)`` asks a VLM backend of :mod:`spatialforge.eval.models` about the
image and returns its raw answer text; ``list_objects()`` lists the captions when they are known.
:class:`Toolbox` joins tool sets (the first set that has a name wins).
"""

from __future__ import annotations

import ast
import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from spatialforge.core.types import SceneGraph, SceneObject
from spatialforge.errors import SpatialForgeError
from spatialforge.qa.catalog import clock_hour

__all__ = [
    "GEOMETRY_TOOLS",
    "ISOSCELES_TOLERANCE",
    "QUANTITIES",
    "RIGHT_ANGLE_TOLERANCE_DEG",
    "SceneTools",
    "ToolError",
    "ToolSet",
    "Toolbox",
    "VLMTools",
    "calculate",
    "fits_between",
    "triangle",
]

#: two sides are equal when they differ by at most this share of the longer one
ISOSCELES_TOLERANCE = 0.05
#: an angle is right when it is within this many degrees of 90
RIGHT_ANGLE_TOLERANCE_DEG = 5.0
_MAX_EXPRESSION_CHARS = 500
_MAX_EXPONENT = 64  # larger exponents are refused (no runaway arithmetic)


class ToolError(SpatialForgeError):
    """A tool call cannot be carried out; the message (one line) goes back to the LLM."""


@runtime_checkable
class ToolSet(Protocol):
    """What the agent needs of a set of tools."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def specs(self) -> list[dict[str, Any]]: ...

    def call(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]: ...


# ---------------------------------------------------------------- quantities

#: quantity -> (number of objects, unit, needs the vertical, value of the objects)
QUANTITIES: dict[str, tuple[int, str, bool, Callable[..., float | int]]] = {
    "distance": (2, "m", False, lambda a, b: float(np.linalg.norm(a.center - b.center))),
    "horizontal_distance": (2, "m", True, lambda a, b: float(math.hypot(*(a.center - b.center)[:2]))),
    "vertical_distance": (2, "m", True, lambda a, b: abs(float(a.center[2] - b.center[2]))),
    "clock": (2, "clock", True, lambda a, b: clock_hour(float(b.center[0] - a.center[0]),
                                                       float(b.center[1] - a.center[1]))[0]),
    "width": (1, "m", False, lambda a: float(a.width)),
    "depth": (1, "m", False, lambda a: float(a.depth)),
    "height": (1, "m", True, lambda a: float(a.height)),
    "camera_distance": (1, "m", False, lambda a: float(a.camera_distance)),
    "elevation": (1, "m", True, lambda a: float(a.center[2])),
    "size": (1, "m^3", True, lambda a: float(a.volume)),
}
#: the relation of a to b along the three axes of docs/conventions.md (a structured value, not a number)
DIRECTION = "direction"


def _direction(a: Any, b: Any) -> dict[str, float]:
    """Signed offsets of ``a`` from ``b``: right of it along the camera's horizontal right axis, farther from the
    camera (difference of camera distances, the convention of behind / in front of), above it along gravity."""
    return {"right_m": float(a.center[0] - b.center[0]),
            "farther_m": float(a.camera_distance - b.camera_distance),
            "above_m": float(a.center[2] - b.center[2])}


def _say_direction(d: dict[str, float], near: float = 0.05) -> str:
    parts = []
    for key, pos, neg in (("right_m", "to the right of", "to the left of"),
                          ("farther_m", "farther from the camera than", "closer to the camera than"),
                          ("above_m", "above", "below")):
        if abs(d[key]) >= near:
            parts.append(f"{abs(d[key]):.2f} m {pos if d[key] > 0 else neg}")
    return "a is " + (", ".join(parts) + " b" if parts else f"within {near} m of b on every axis")


# ---------------------------------------------------------------- argument checks

def _number(tool: str, name: str, value: Any, *, positive: bool = False, signed: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ToolError(f"{tool}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ToolError(f"{tool}: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ToolError(f"{tool}: {name} must be > 0, got {value!r}")
    if value < 0 and not signed:
        raise ToolError(f"{tool}: {name} must be >= 0, got {value!r}")
    return float(value)


def _args(tool: str, args: Mapping[str, Any], required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """``args`` checked against the tool's parameters (missing, unknown); ``None`` counts as absent."""
    if not isinstance(args, Mapping):
        raise ToolError(f"{tool}: the arguments must be a JSON object, got {type(args).__name__}")
    given = {k: v for k, v in args.items() if v is not None}
    missing = [r for r in required if r not in given]
    if missing:
        raise ToolError(f"{tool}: missing argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    unknown = sorted(set(given) - set(required) - set(optional))
    if unknown:
        accepted = ", ".join([*required, *optional]) or "none"
        raise ToolError(f"{tool}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(accepted: {accepted})")
    return given


def _object_param(description: str) -> dict[str, Any]:
    return {"type": ["integer", "string"], "description": description}


def _spec(name: str, description: str, properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(required),
                       "additionalProperties": False}}}


_OBJECT_HELP = "an object id (integer) or its reference/caption, e.g. 'the red mug'"


# ---------------------------------------------------------------- geometry and arithmetic helpers

def triangle(ab: Any, bc: Any, ca: Any) -> dict[str, Any]:
    """The triangle with sides AB, BC, CA (m): its angles at A, B, C, whether it is isosceles and right.

    Isosceles: two sides differ by at most :data:`ISOSCELES_TOLERANCE` of the longer one (``equal_pair``:
    the indices into ``sides`` of the closest such pair); right: an angle within
    :data:`RIGHT_ANGLE_TOLERANCE_DEG` of 90. Sides that break the triangle inequality are a :class:`ToolError`.
    """
    sides = [_number("triangle", n, v, positive=True) for n, v in (("ab", ab), ("bc", bc), ("ca", ca))]
    a_, b_, c_ = sides
    longest = max(sides)
    if longest > (sum(sides) - longest) * (1.0 + 1e-9):
        raise ToolError(f"triangle: sides {a_:g}, {b_:g}, {c_:g} break the triangle inequality (the longest side "
                        "is longer than the other two together)")

    def angle(adj1: float, adj2: float, opposite: float) -> float:
        cos = (adj1 * adj1 + adj2 * adj2 - opposite * opposite) / (2.0 * adj1 * adj2)
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    angles = [angle(a_, c_, b_), angle(a_, b_, c_), angle(b_, c_, a_)]  # at A, at B, at C
    best: tuple[float, list[int]] | None = None
    for i, j in ((0, 1), (0, 2), (1, 2)):
        rel = abs(sides[i] - sides[j]) / max(sides[i], sides[j])
        if rel <= ISOSCELES_TOLERANCE and (best is None or rel < best[0]):
            best = (rel, [i, j])
    return {
        "sides": sides,
        "angles_deg": angles,
        "isosceles": best is not None,
        "right": any(abs(x - 90.0) <= RIGHT_ANGLE_TOLERANCE_DEG for x in angles),
        "equal_pair": None if best is None else best[1],
    }


def fits_between(width: Any, gap: Any) -> dict[str, Any]:
    """Whether something ``width`` wide fits a ``gap`` (m): ``{"fits": width < gap, "clearance": gap - width}``.
    A negative gap (the two sides overlap) is allowed: nothing fits."""
    w = _number("fits_between", "width", width)
    g = _number("fits_between", "gap", gap, signed=True)
    return {"fits": w < g, "clearance": g - w}


def _power(base: float, exp: float) -> float:
    if abs(exp) > _MAX_EXPONENT:
        raise ToolError(f"calculate: the exponent {exp:g} is larger than {_MAX_EXPONENT}")
    if base < 0 and not float(exp).is_integer():
        raise ToolError(f"calculate: {base:g} ** {exp:g} is not a real number")
    if base == 0 and exp < 0:
        raise ToolError("calculate: division by zero (0 to a negative power)")
    return float(base) ** float(exp)


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise ToolError("calculate: division by zero")
    return a / b


def _sqrt(x: float) -> float:
    if x < 0:
        raise ToolError(f"calculate: sqrt of a negative number ({x:g})")
    return math.sqrt(x)


def _round(x: float, digits: float = 0) -> float:
    if not float(digits).is_integer() or not 0 <= digits <= 12:
        raise ToolError(f"calculate: round's digits must be an integer from 0 to 12, got {digits:g}")
    return float(round(x, int(digits)))


_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: _divide, ast.Pow: _power,
}
_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {  # name -> (fn, min args, max args)
    "abs": (abs, 1, 1), "min": (min, 1, None), "max": (max, 1, None), "sqrt": (_sqrt, 1, 1), "round": (_round, 1, 2),
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        fn, lo, hi = _FUNCTIONS[node.func.id]
        if node.keywords:
            raise ToolError(f"calculate: {node.func.id}() takes no keyword arguments")
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            wanted = str(lo) if hi == lo else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise ToolError(f"calculate: {node.func.id}() takes {wanted} argument(s), got {len(node.args)}")
        return float(fn(*(_evaluate(a) for a in node.args)))
    what = ast.unparse(node)
    raise ToolError(f"calculate: {what!r} is not allowed (numbers, + - * / ** parentheses and "
                    f"{', '.join(_FUNCTIONS)} only)")


def calculate(expression: Any) -> dict[str, Any]:
    """A safe arithmetic evaluator: numbers, ``+ - * / **``, parentheses, abs, min, max, sqrt, round."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError(f"calculate: expression must be a non-empty string, got {expression!r}")
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ToolError(f"calculate: the expression is longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"calculate: {expression.strip()!r} is not an arithmetic expression") from None
    try:
        value = _evaluate(tree)
    except OverflowError:
        raise ToolError("calculate: the result is too large") from None
    if not math.isfinite(value):
        raise ToolError("calculate: the result is not a finite number")
    return {"value": value}


#: the helpers every tool mode that does arithmetic gets: name -> (function, required args)
GEOMETRY_TOOLS: dict[str, tuple[Callable[..., dict[str, Any]], tuple[str, ...]]] = {
    "triangle": (triangle, ("ab", "bc", "ca")),
    "fits_between": (fits_between, ("width", "gap")),
    "calculate": (calculate, ("expression",)),
}

_HELPER_SPECS = [
    _spec("triangle", "Angles and shape of the triangle with the three given side lengths (m): angles at A, B, C, "
          f"isosceles (two sides within {ISOSCELES_TOLERANCE:.0%}), right (an angle within "
          f"{RIGHT_ANGLE_TOLERANCE_DEG:g} degrees of 90).",
          {"ab": {"type": "number", "description": "side AB (m)"},
           "bc": {"type": "number", "description": "side BC (m)"},
           "ca": {"type": "number", "description": "side CA (m)"}}, ("ab", "bc", "ca")),
    _spec("fits_between", "Whether an object of the given width fits a gap: fits = width < gap, clearance = "
          "gap - width (m).",
          {"width": {"type": "number", "description": "the object's width (m)"},
           "gap": {"type": "number", "description": "the free gap (m)"}}, ("width", "gap")),
    _spec("calculate", "Evaluate arithmetic: numbers, + - * / ** parentheses, abs, min, max, sqrt, round.",
          {"expression": {"type": "string", "description": "e.g. 'abs(1.2 - 0.7)'"}}, ("expression",)),
]


def _call_helper(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    fn, required = GEOMETRY_TOOLS[name]
    given = _args(name, args, required)
    return fn(**given)


# ---------------------------------------------------------------- names

def _norm_name(text: str) -> str:
    text = " ".join(text.lower().split()).strip(" .?!'\"")
    for article in ("the ", "a ", "an "):
        if text.startswith(article):
            return text[len(article):].strip()
    return text


class SceneTools:
    """Tools over one scene graph (see the module doc). ``references``: object id -> how questions name it."""

    def __init__(self, graph: SceneGraph, references: Mapping[int, str] | None = None) -> None:
        self.graph = graph
        self.references = {int(k): str(v) for k, v in (references or {}).items()}
        self._objects = {o.id: o for o in graph.objects}

    @property
    def names(self) -> tuple[str, ...]:
        return ("list_objects", "measure", "point_segment_distance", *GEOMETRY_TOOLS)

    # ------------------------------------------------------------ objects by name
    def _label(self, obj: SceneObject) -> str:
        return self.references.get(obj.id) or obj.caption

    def resolve(self, tool: str, name: Any) -> SceneObject:
        """The object ``name`` stands for (an id, a reference or a caption); :class:`ToolError` otherwise."""
        if isinstance(name, bool):
            raise ToolError(f"{tool}: an object must be an id or a name, got {name!r}")
        if isinstance(name, int | float) and float(name).is_integer():
            obj = self._objects.get(int(name))
            if obj is None:
                raise ToolError(f"{tool}: no object with id {int(name)}; the ids are "
                                f"{', '.join(str(i) for i in sorted(self._objects))}")
            return obj
        if not isinstance(name, str) or not name.strip():
            raise ToolError(f"{tool}: an object must be an id or a name, got {name!r}")
        key = _norm_name(name)
        matches = [o for o in self.graph.objects
                   if key in {_norm_name(o.caption), _norm_name(self.references.get(o.id, o.caption))}]
        if len(matches) == 1:
            return matches[0]
        if matches:
            options = "; ".join(f"{o.id} ({self._label(o)})" for o in matches)
            raise ToolError(f"{tool}: {name.strip()!r} is ambiguous: it names objects {options}; use an id or a "
                            "reference")
        if re.fullmatch(r"#?\d+", name.strip()):
            return self.resolve(tool, int(name.strip().lstrip("#")))
        known = "; ".join(f"{o.id} ({self._label(o)})" for o in self.graph.objects)
        raise ToolError(f"{tool}: no object named {name.strip()!r}; the objects are {known or 'none'}")

    # ------------------------------------------------------------ tools
    def list_objects(self) -> dict[str, Any]:
        return {"objects": [{
            "id": o.id,
            "caption": o.caption,
            "reference": self.references.get(o.id),
            "center": [float(v) for v in o.center],
            "width": float(o.width),
            "depth": float(o.depth),
            "height": float(o.height),
        } for o in self.graph.objects]}

    def measure(self, quantity: Any, a: Any, b: Any = None) -> dict[str, Any]:
        known = (*QUANTITIES, DIRECTION)
        if not isinstance(quantity, str) or quantity.strip().lower() not in known:
            raise ToolError(f"measure: unknown quantity {quantity!r}; use one of: {', '.join(known)}")
        quantity = quantity.strip().lower()
        if quantity == DIRECTION:
            if b is None:
                raise ToolError("measure: direction needs two objects (a and b)")
            obj_a, obj_b = self.resolve("measure", a), self.resolve("measure", b)
            if obj_b.id == obj_a.id:
                raise ToolError(f"measure: direction needs two different objects, got {obj_a.id} twice")
            value = _direction(obj_a, obj_b)
            out = {"quantity": DIRECTION, "value": value, "unit": "m", "description": _say_direction(value)}
            if not self.graph.gravity.reliable:
                out["note"] = "vertical_unreliable"
            return out
        arity, unit, vertical, get = QUANTITIES[quantity]
        obj_a = self.resolve("measure", a)
        if arity == 2:
            if b is None:
                raise ToolError(f"measure: {quantity} needs two objects (a and b)")
            obj_b = self.resolve("measure", b)
            if obj_b.id == obj_a.id:
                raise ToolError(f"measure: {quantity} needs two different objects, got {obj_a.id} twice")
            value = get(obj_a, obj_b)
        else:
            if b is not None:
                raise ToolError(f"measure: {quantity} is a property of one object (a); leave b out")
            value = get(obj_a)
        out: dict[str, Any] = {"quantity": quantity, "value": value, "unit": unit}
        if vertical and not self.graph.gravity.reliable:
            out["note"] = "vertical_unreliable"
        return out

    def point_segment_distance(self, point: Any, a: Any, b: Any) -> dict[str, Any]:
        p = self.resolve("point_segment_distance", point).center
        pa = self.resolve("point_segment_distance", a).center
        pb = self.resolve("point_segment_distance", b).center
        seg = pb - pa
        length2 = float(seg @ seg)
        t = 0.0 if length2 == 0.0 else min(1.0, max(0.0, float((p - pa) @ seg) / length2))
        return {"value": float(np.linalg.norm(p - (pa + t * seg))), "unit": "m"}

    def specs(self) -> list[dict[str, Any]]:
        return [
            _spec("list_objects", "List the scene's objects: id, caption, reference, centre [x right, y forward, "
                  "z up] and width, depth, height in metres.", {}, ()),
            _spec("measure", "Measure one quantity exactly from the 3D scene graph. Two objects: distance, "
                  "horizontal_distance, vertical_distance (m), clock (clock hour 1-12 of b seen from a; 12 = "
                  "forward, 3 = right), direction (a's offsets from b: right_m, farther_m from the camera, above_m). "
                  "One object (a): width, depth, height, camera_distance, elevation (m), size (box volume, m^3).",
                  {"quantity": {"type": "string", "enum": [*QUANTITIES, DIRECTION]},
                   "a": _object_param(_OBJECT_HELP), "b": _object_param("the second object, for two-object "
                                                                          "quantities")}, ("quantity", "a")),
            _spec("point_segment_distance", "Distance (m) from the centre of object `point` to the straight segment "
                  "between the centres of objects a and b.",
                  {"point": _object_param(_OBJECT_HELP), "a": _object_param(_OBJECT_HELP),
                   "b": _object_param(_OBJECT_HELP)}, ("point", "a", "b")),
            *_HELPER_SPECS,
        ]

    def call(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if name == "list_objects":
            _args(name, args, ())
            return self.list_objects()
        if name == "measure":
            return self.measure(**_args(name, args, ("quantity", "a"), ("b",)))
        if name == "point_segment_distance":
            return self.point_segment_distance(**_args(name, args, ("point", "a", "b")))
        if name in GEOMETRY_TOOLS:
            return _call_helper(name, args)
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(self.names)}")


class VLMTools:
    """``ask_vlm`` (a VLM backend about one image), the arithmetic helpers, and the captions when known.

    ``vlm``: a :class:`~spatialforge.eval.models.base.VQAModel` (built with ``prompt_style="plain"`` so
    that the sub-question is sent verbatim); ``image``: the image file or its encoded bytes;
    ``objects``: ``[{"id", "caption", "reference"}]`` when the scene's objects are known, else ``None``.
    """

    def __init__(self, vlm: Any, image: str | bytes, objects: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.vlm = vlm
        self.image = image
        self.objects = None if objects is None else [dict(o) for o in objects]

    @property
    def names(self) -> tuple[str, ...]:
        return (*(("list_objects",) if self.objects is not None else ()), "ask_vlm", *GEOMETRY_TOOLS)

    def ask_vlm(self, question: Any) -> dict[str, Any]:
        from spatialforge.eval.types import BenchmarkItem

        if not isinstance(question, str) or not question.strip():
            raise ToolError(f"ask_vlm: question must be a non-empty string, got {question!r}")
        question = " ".join(question.split())
        digest = hashlib.sha256(question.encode()).hexdigest()[:12]
        image = {"image_bytes": self.image} if isinstance(self.image, bytes) else {"image_path": str(self.image)}
        item = BenchmarkItem(id=f"ask-{digest}", benchmark="reason", question=question, kind="quantitative",
                             type="ask_vlm", truth=0.0, unit="m", **image)
        answers = self.vlm.answer([item])
        if len(answers) != 1:
            raise ToolError(f"ask_vlm: {self.vlm.name} returned {len(answers)} answers for one question")
        answer = answers[0]
        if answer.text is None:
            raise ToolError(f"ask_vlm: {self.vlm.name} failed: {answer.error}")
        return {"answer": answer.text}

    def specs(self) -> list[dict[str, Any]]:
        specs = []
        if self.objects is not None:
            specs.append(_spec("list_objects", "List the objects of the image: id, caption, reference.", {}, ()))
        specs.append(_spec("ask_vlm", "Ask a vision-language model a simple question about the image (e.g. 'How "
                           "far is the mug from the chair?'); returns its answer text, which may be wrong.",
                           {"question": {"type": "string", "description": "one simple question"}}, ("question",)))
        return [*specs, *_HELPER_SPECS]

    def call(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if name == "list_objects" and self.objects is not None:
            _args(name, args, ())
            return {"objects": [dict(o) for o in self.objects]}
        if name == "ask_vlm":
            return self.ask_vlm(**_args(name, args, ("question",)))
        if name in GEOMETRY_TOOLS:
            return _call_helper(name, args)
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(self.names)}")


class Toolbox:
    """Several tool sets as one: a name goes to the first set that has it."""

    def __init__(self, *sets: ToolSet) -> None:
        if not sets:
            raise ValueError("Toolbox needs at least one tool set")
        self.sets = sets

    @property
    def names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for s in self.sets:
            for n in s.names:
                seen.setdefault(n, None)
        return tuple(seen)

    def specs(self) -> list[dict[str, Any]]:
        out, seen = [], set()
        for s in self.sets:
            for spec in s.specs():
                name = spec["function"]["name"]
                if name not in seen:
                    seen.add(name)
                    out.append(spec)
        return out

    def call(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        for s in self.sets:
            if name in s.names:
                return s.call(name, args)
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(self.names)}")
