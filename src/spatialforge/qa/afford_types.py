"""Affordance questions with exact truth from synthetic part labels (``SynthConfig(parts=True)``).

Kept apart from the 40 types of :mod:`spatialforge.qa.catalog`, so datasets generated before
these types existed do not change. Two types, generated only for scenes whose ground truth lists
``parts`` (and whose folder holds ``parts.png``):

* ``afford_hold_point`` (kind ``point``): "Where would you hold the red mug to pour?" - answered
  with an image point and a 3D point in the gravity frame (``value = {"pixel": [u, v],
  "point_3d": [x, y, z]}``: the part's centre, to the millimetre as the answer states it, and the
  visible pixel of the part nearest to where that centre projects). Scored by point-in-mask
  accuracy (the predicted pixel inside the part's mask) and the 3D distance error in metres to the
  part's centre.
* ``afford_which_object`` (kind ``choice``): "Which object affords cutting?" - a choice among
  2-4 visible objects of the scene (``choices``: their ids; ``value``: the right one), asked only
  when exactly one visible object has a visible part with that action. The wrong choices afford
  the action in no sense: no part of theirs has it and their category is not one of
  :data:`AFFORDING_CATEGORIES` (a mug, a bottle or a bucket can be poured from even without a
  labelled spout, so none of them is ever a wrong choice of "Which object affords pouring?").
  Scored by choice accuracy.

The gravity frame of the truth is the exact one of the synthetic camera (``z`` up, ``x`` camera
right, ``y`` forward, origin on the floor below the camera): what the pipeline's gravity
estimate gives with a perfect floor fit (:func:`scene_gravity`).

In a dataset (``spatialforge generate --afford``, :func:`scene_afford`), each question is a ``qa``
record (:meth:`AffordQA.qa_record`: ``value`` is the part's id for a point question, the right
object's id for a choice) and each point question also has an entry in the row's ``afford`` column
(:meth:`AffordQA.afford_record`: pixel, 3D point, part and the part's mask, run-length encoded), so
the dataset alone is enough to score the answers (``spatialforge eval score``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from spatialforge.core.types import CameraIntrinsics, Gravity
from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = [
    "AFFORDING_CATEGORIES",
    "AFFORD_TYPES",
    "MIN_PART_PIXELS",
    "NO_PARTS_REASONS",
    "AffordQA",
    "AffordScore",
    "AffordTruth",
    "SceneAfford",
    "check_afford_types",
    "check_ground_truth",
    "generate_afford_qa",
    "point_answer_from_heatmap",
    "scene_afford",
    "scene_gravity",
    "score_afford_qa",
    "summarise_afford",
]

AFFORD_TYPES = ("afford_hold_point", "afford_which_object")
#: Why a scene got no affordance question in ``generate --afford`` (:func:`scene_afford`).
NO_PARTS_REASONS = ("no_ground_truth", "no_parts", "unreadable_truth")
#: A part must show at least this many pixels to be asked about (or to count as visible).
MIN_PART_PIXELS = 20
#: Action -> the noun of "Which object affords ...?".
_ACTION_NOUN = {"cut with": "cutting", "pour": "pouring"}
#: Action of "Which object affords ...?" -> the object categories that afford it in the everyday sense, part
#: labels or not: never a wrong choice of that question (every container can be poured from; only the kettle's
#: spout is labelled). Names of :data:`spatialforge.synth.layout.CATEGORY_BY_NAME`.
AFFORDING_CATEGORIES: dict[str, frozenset[str]] = {
    "cut with": frozenset({"knife"}),
    "pour": frozenset({"bottle", "bucket", "can", "kettle", "mug", "pot", "vase"}),
}


def scene_gravity(ground_truth: dict[str, Any]) -> Gravity:
    """The exact gravity frame of a synthetic scene's camera (see the module docstring)."""
    from spatialforge.geometry.gravity import canonical_frame

    cam = ground_truth["camera"]
    rot = np.asarray(cam["R_world_from_cam"], dtype=np.float64)
    up_cam = rot.T @ np.array([0.0, 0.0, 1.0])
    height = float(cam["position"][2])
    return Gravity(source="plane", R=canonical_frame(up_cam), t=np.array([0.0, 0.0, height]), camera_height=height)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(x: Any) -> bool:
    if _is_int(x):
        return abs(int(x)) < 2**63  # JSON allows any size; beyond this it is no coordinate
    return isinstance(x, float | np.floating) and bool(np.isfinite(x))


def _is_numbers(value: Any, n: int) -> bool:
    return isinstance(value, list | tuple) and len(value) == n and all(_is_number(x) for x in value)


def _entry_problem(entry: Any, fields: dict[str, tuple[str, Any]]) -> str | None:
    """Why ``entry`` lacks one of ``fields`` (name -> (what it must be, check)), or ``None``."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    for name, (what, ok) in fields.items():
        if name not in entry:
            return f"has no {name!r}"
        if not ok(entry[name]):
            return f"{name!r} must be {what}, got {_short(entry[name])}"
    return None


_CAMERA_FIELDS = {
    "R_world_from_cam": ("a 3x3 rotation", lambda v: isinstance(v, list | tuple) and len(v) == 3
                         and all(_is_numbers(r, 3) for r in v)),
    "position": ("3 finite numbers", lambda v: _is_numbers(v, 3)),
}
_OBJECT_FIELDS = {
    "id": ("an integer", _is_int),
    "caption": ("a string", lambda v: isinstance(v, str)),
    "category": ("a string", lambda v: isinstance(v, str)),
    "visible_pixels": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
}
_PART_FIELDS = {
    "id": ("an integer from 1 to 65535", lambda v: _is_int(v) and 1 <= v <= 65535),
    "object_id": ("an integer", _is_int),
    "name": ("a string", lambda v: isinstance(v, str)),
    "action": ("a string", lambda v: isinstance(v, str)),
    "purpose": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "visible_pixels": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "center": ("3 finite numbers", lambda v: _is_numbers(v, 3)),
}


def check_ground_truth(gt: Any, where: str | os.PathLike[str]) -> None:
    """Check what the affordance questions read of a synthetic ``ground_truth.json`` (``where`` names it):
    the camera's pose and, when it lists ``parts``, every part and every object. Raises :class:`ConfigError`,
    one line naming the file and the entry (``parts[2]``, ``objects[0]``, ``camera``)."""
    if not isinstance(gt, dict):
        raise ConfigError(f"{where}: not a JSON object but {type(gt).__name__}")
    problem = _entry_problem(gt.get("camera"), _CAMERA_FIELDS) if "camera" in gt else "is missing"
    if problem is not None:
        raise ConfigError(f"{where}: camera {problem}")
    if "scene_id" in gt and not isinstance(gt["scene_id"], str):
        raise ConfigError(f"{where}: scene_id must be a string, got {_short(gt['scene_id'])}")
    parts = gt.get("parts", [])
    if not isinstance(parts, list):
        raise ConfigError(f"{where}: parts must be a list, got {type(parts).__name__}")
    if not parts:
        return
    objects = gt.get("objects")
    if not isinstance(objects, list):
        raise ConfigError(f"{where}: objects must be a list, got {type(objects).__name__}")
    ids: set[int] = set()
    for k, obj in enumerate(objects):
        problem = _entry_problem(obj, _OBJECT_FIELDS)
        if problem is None and int(obj["id"]) in ids:
            problem = f"repeats the id {int(obj['id'])}"
        if problem is not None:
            raise ConfigError(f"{where}: objects[{k}] {problem}")
        ids.add(int(obj["id"]))
    part_ids: set[int] = set()
    for k, part in enumerate(parts):
        problem = _entry_problem(part, _PART_FIELDS)
        if problem is None and int(part["id"]) in part_ids:
            problem = f"repeats the id {int(part['id'])}"
        if problem is None and int(part["object_id"]) not in ids:
            problem = f"names object_id {int(part['object_id'])}, which no entry of objects has"
        if problem is not None:
            raise ConfigError(f"{where}: parts[{k}] {problem}")
        part_ids.add(int(part["id"]))


@dataclass(frozen=True)
class AffordTruth:
    """A synthetic scene's truth for the affordance questions: ground truth, part and instance masks,
    depth and camera. ``parts`` maps part id -> its ground-truth entry (empty for scenes without parts)."""

    scene_id: str
    ground_truth: dict[str, Any]
    parts: dict[int, dict[str, Any]]
    part_mask: np.ndarray | None
    instances: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    gravity: Gravity

    @classmethod
    def from_scene(cls, scene: Any) -> AffordTruth:
        """From an in-memory :class:`~spatialforge.synth.SyntheticScene`."""
        gt = scene.ground_truth
        cam = scene.camera
        intr = CameraIntrinsics(cam["fx"], cam["fy"], cam["cx"], cam["cy"], cam["width"], cam["height"])
        parts = {int(p["id"]): p for p in gt.get("parts", [])}
        return cls(scene.scene_id, gt, parts, scene.parts, np.asarray(scene.instances), np.asarray(scene.depth),
                   intr, scene_gravity(gt))

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AffordTruth:
        """From a synthetic scene folder (``ground_truth.json``, ``parts.png`` when it has parts, ...).

        Raises :class:`~spatialforge.errors.SpatialForgeError` (one line) for a folder whose truth cannot be
        read: a missing or malformed file, an entry of ``ground_truth.json`` without what the questions read
        (:func:`check_ground_truth`)."""
        from spatialforge.io.scene_folder import load_camera, load_depth, load_uint16_png, one_of

        folder = Path(folder)
        gt_path = folder / "ground_truth.json"
        if not gt_path.is_file():
            raise ConfigError(f"{folder}: no ground_truth.json (not a synthetic scene folder)")
        try:
            gt = json.loads(gt_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{gt_path}: cannot read ({exc})") from None
        check_ground_truth(gt, gt_path)
        instances = load_uint16_png(folder / "instances.png", "instances")
        h, w = instances.shape
        depth = load_depth(one_of(folder, ("depth.npy", "depth.png"), "depth"))
        intr = load_camera(folder / "camera.json", w, h)
        parts = {int(p["id"]): p for p in gt.get("parts", [])}
        mask = None
        if parts:
            if not (folder / "parts.png").is_file():
                raise ConfigError(f"{folder}: ground_truth.json lists parts but parts.png is missing")
            mask = load_uint16_png(folder / "parts.png", "parts")
            if mask.shape != (h, w):
                raise ConfigError(f"{folder / 'parts.png'}: size {mask.shape[::-1]} differs from instances.png's "
                                  f"{(w, h)}")
        return cls(gt.get("scene_id", folder.name), gt, parts, mask, instances, depth, intr, scene_gravity(gt))

    def object(self, object_id: int) -> dict[str, Any]:
        for obj in self.ground_truth["objects"]:
            if int(obj["id"]) == object_id:
                return obj
        raise KeyError(object_id)

    def to_gravity(self, world_point: Any) -> np.ndarray:
        """A world point of the ground truth in the gravity frame."""
        cam = self.ground_truth["camera"]
        rot = np.asarray(cam["R_world_from_cam"], dtype=np.float64)
        p_cam = rot.T @ (np.asarray(world_point, dtype=np.float64) - np.asarray(cam["position"], dtype=np.float64))
        return self.gravity.to_canonical(p_cam[None])[0]

    def part_pixel(self, part_id: int) -> tuple[int, int] | None:
        """The visible pixel ``(u, v)`` of the part nearest to where its centre projects (``None``: not visible)."""
        if self.part_mask is None:
            return None
        rows, cols = np.nonzero(self.part_mask == part_id)
        if len(rows) == 0:
            return None
        cam = self.ground_truth["camera"]
        rot = np.asarray(cam["R_world_from_cam"], dtype=np.float64)
        pc = rot.T @ (np.asarray(self.parts[part_id]["center"], float) - np.asarray(cam["position"], float))
        u = self.intrinsics.fx * pc[0] / pc[2] + self.intrinsics.cx
        v = self.intrinsics.fy * pc[1] / pc[2] + self.intrinsics.cy
        k = int(np.argmin((cols - u) ** 2 + (rows - v) ** 2))
        return int(cols[k]), int(rows[k])


@dataclass(frozen=True)
class AffordQA:
    """One affordance question; ``to_dict`` gives the same keys as catalogue QA (plus ``choices``).

    ``id``: ``<scene_id>-aNNN``; ``unit``: ``point`` (an image pixel and a 3D point in metres) or
    ``object`` (a choice among objects, as the catalogue's choices)."""

    id: str
    type: str
    kind: str  # "point" or "choice"
    question: str
    answer: str
    value: Any  # {"pixel": [u, v], "point_3d": [x, y, z]} or an object id
    unit: str
    subjects: tuple[int, ...]
    roles: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    choices: tuple[int, ...] = ()
    part_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "kind": self.kind, "question": self.question,
                "answer": self.answer, "value": self.value, "unit": self.unit, "subjects": list(self.subjects),
                "roles": list(self.roles), "names": list(self.names), "choices": list(self.choices),
                "part_id": self.part_id}

    def qa_record(self) -> dict[str, Any]:
        """The question as a dataset ``qa`` struct (docs/formats.md): the catalogue's fields, with ``value`` the
        part's id for a point question (its pixel, 3D point and mask are in :meth:`afford_record`) and the
        right object's id for a choice (``subjects`` = the choices, roles ``A``-``D``)."""
        value = self.part_id if self.kind == "point" else self.value
        return {"id": self.id, "type": self.type, "kind": self.kind, "question": self.question,
                "answer": self.answer, "value": float(value), "unit": self.unit, "subjects": list(self.subjects),
                "roles": list(self.roles), "names": list(self.names)}

    def afford_record(self, truth: AffordTruth) -> dict[str, Any] | None:
        """The question's entry of a dataset row's ``afford`` column (``None`` for a choice): the truth pixel
        and 3D point, the part, and the part's mask as run-length encoding
        (:func:`spatialforge.io.dataset.encode_mask_rle`)."""
        if self.kind != "point":
            return None
        from spatialforge.io.dataset import encode_mask_rle

        if truth.part_mask is None or self.part_id not in truth.parts:
            raise ConfigError(f"QA {self.id}: the scene's truth has no part {self.part_id}")
        part = truth.parts[int(self.part_id)]
        return {"qa_id": self.id, "part_id": int(self.part_id), "part_name": str(part["name"]),
                "action": str(part["action"]), "object_id": int(part["object_id"]),
                "pixel": [int(x) for x in self.value["pixel"]],
                "point_3d": [float(x) for x in self.value["point_3d"]],
                "mask": encode_mask_rle(truth.part_mask == int(self.part_id))}


def _visible_parts(truth: AffordTruth) -> list[dict[str, Any]]:
    return [p for _, p in sorted(truth.parts.items()) if int(p["visible_pixels"]) >= MIN_PART_PIXELS]


def check_afford_types(types: Any) -> tuple[str, ...]:
    """``types`` as a tuple of :data:`AFFORD_TYPES` in their order; :class:`ConfigError` for an unknown,
    repeated or empty selection."""
    if isinstance(types, str) or not isinstance(types, tuple | list):
        raise ConfigError(f"the affordance types must be a list of {', '.join(AFFORD_TYPES)}, got {types!r}")
    unknown = [t for t in types if t not in AFFORD_TYPES]
    if unknown or len(set(types)) != len(types) or not types:
        why = f"unknown {', '.join(map(str, unknown))}" if unknown else "repeated" if types else "none"
        raise ConfigError(f"the affordance types must be some of {', '.join(AFFORD_TYPES)} ({why})")
    return tuple(t for t in AFFORD_TYPES if t in types)


def generate_afford_qa(truth: AffordTruth, seed: int = 0, types: tuple[str, ...] = AFFORD_TYPES) -> list[AffordQA]:
    """The affordance questions of one scene (none without parts); deterministic in ``(seed, scene id)``.

    Objects are named by their caption, and only when no other visible object shares it. ``types``: the
    types to ask (some of :data:`AFFORD_TYPES`); leaving one out does not change the questions of the other.
    """
    from spatialforge.qa.generator import scene_rng

    types = check_afford_types(types)
    if not truth.parts:
        return []
    rng = scene_rng(seed, truth.scene_id, "afford")
    visible = [o for o in truth.ground_truth["objects"] if int(o["visible_pixels"]) > 0]
    captions = [o["caption"] for o in visible]
    unique = [o for o in visible if captions.count(o["caption"]) == 1]
    unique_ids = {int(o["id"]) for o in unique}
    parts = _visible_parts(truth)
    out: list[AffordQA] = []
    for part in parts if "afford_hold_point" in types else ():
        oid = int(part["object_id"])
        if part["action"] != "hold" or not part.get("purpose") or oid not in unique_ids:
            continue
        pixel = truth.part_pixel(int(part["id"]))
        if pixel is None:
            continue
        name = f"the {truth.object(oid)['caption']}"
        point = [round(float(x), 3) + 0.0 for x in truth.to_gravity(part["center"])]  # mm, as the answer states it
        question = f"Where would you hold {name} to {part['purpose']}?"
        answer = (f"By its {part['name']}: at pixel ({pixel[0]}, {pixel[1]}), the 3D point "
                  f"({point[0]:.3f}, {point[1]:.3f}, {point[2]:.3f}) m.")
        out.append(AffordQA(f"{truth.scene_id}-a{len(out):03d}", "afford_hold_point", "point", question, answer,
                            {"pixel": [pixel[0], pixel[1]], "point_3d": point}, "point", (oid,), ("A",), (name,),
                            part_id=int(part["id"])))
    for action, noun in _ACTION_NOUN.items() if "afford_which_object" in types else ():
        having = sorted({int(p["object_id"]) for p in parts if p["action"] == action})
        if len(having) != 1 or having[0] not in unique_ids:
            continue
        right = having[0]
        # a wrong choice affords the action in no sense: no part with it (visible or not) and not a category that
        # affords it without a labelled part (a mug or a bottle can be poured from as well as a kettle)
        with_action = {int(p["object_id"]) for p in truth.parts.values() if p["action"] == action}
        affording = AFFORDING_CATEGORIES[action]
        others = [int(o["id"]) for o in unique if int(o["id"]) not in with_action and o["category"] not in affording]
        if not others:
            continue
        n_other = min(len(others), int(rng.integers(1, 4)))
        picked = [others[int(i)] for i in rng.choice(len(others), size=n_other, replace=False)]
        choices = [right, *picked]
        choices = [choices[int(i)] for i in rng.permutation(len(choices))]
        names = tuple(f"the {truth.object(c)['caption']}" for c in choices)
        listing = ", ".join(names[:-1]) + f" or {names[-1]}"
        out.append(AffordQA(f"{truth.scene_id}-a{len(out):03d}", "afford_which_object", "choice",
                            f"Which object affords {noun}: {listing}?",
                            f"{names[choices.index(right)][0].upper()}{names[choices.index(right)][1:]}.",
                            right, "object", tuple(choices), tuple("ABCD"[: len(choices)]), names, tuple(choices)))
    return out


@dataclass(frozen=True)
class SceneAfford:
    """The affordance questions of one scene folder (:func:`scene_afford`).

    ``qa``: the questions; ``records``: the ``afford`` column entries of its point questions;
    ``reason``: why the scene has no part labels (one of :data:`NO_PARTS_REASONS`; ``None`` when it has
    them, even if no question could be asked); ``message``: a one-line account for ``unreadable_truth``.
    """

    qa: tuple[AffordQA, ...] = ()
    records: tuple[dict[str, Any], ...] = ()
    reason: str | None = None
    message: str | None = None


def scene_afford(folder: str | os.PathLike[str], scene_id: str, seed: int = 0,
                 types: tuple[str, ...] = AFFORD_TYPES) -> SceneAfford:
    """The affordance questions of a scene folder, as ``spatialforge generate --afford`` asks them.

    ``scene_id`` names the questions (``<scene_id>-aNNN``, the dataset row's id) and, with ``seed``, draws
    their randomness, as for the catalogue questions; ``types``: the types to ask. A folder without
    ``ground_truth.json`` (a photo, a real RGB-D scan) or whose ground truth lists no parts gets none
    (``reason`` says which); one whose truth cannot be read (``parts.png`` missing, a malformed
    ``ground_truth.json`` or entry of it, see :meth:`AffordTruth.load`) gets none with reason
    ``unreadable_truth`` and a one-line ``message``. Never raises for a bad scene folder; an error while
    asking the questions of a truth that loaded is a bug and propagates (``generate`` records it as the
    scene's internal error).
    """
    folder = Path(folder)
    if not (folder / "ground_truth.json").is_file():
        return SceneAfford(reason="no_ground_truth")
    try:
        truth = AffordTruth.load(folder)
    except SpatialForgeError as exc:
        return SceneAfford(reason="unreadable_truth", message=str(exc))
    if not truth.parts:
        return SceneAfford(reason="no_parts")
    truth = replace(truth, scene_id=scene_id)
    qa = generate_afford_qa(truth, seed, types)
    records = [r for r in (q.afford_record(truth) for q in qa) if r is not None]
    return SceneAfford(tuple(qa), tuple(records))


@dataclass(frozen=True)
class AffordScore:
    """The score of one affordance answer: ``in_mask`` and ``error_m`` for points, ``correct`` for choices."""

    qa_id: str
    type: str
    correct: bool | None = None
    in_mask: bool | None = None
    error_m: float | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _qa_dict(qa: AffordQA | dict[str, Any]) -> dict[str, Any]:
    return qa.to_dict() if isinstance(qa, AffordQA) else qa


def score_afford_qa(qa: AffordQA | dict[str, Any], prediction: Any, truth: AffordTruth) -> AffordScore:
    """Score one answer. Points: ``prediction = {"pixel": [u, v], "point_3d": [x, y, z] or None}`` (or
    ``None``: no answer, counted wrong); choices: the chosen object id (``None``: wrong)."""
    q = _qa_dict(qa)
    if q["type"] == "afford_which_object":
        ok = prediction is not None and not isinstance(prediction, bool) and int(prediction) == int(q["value"])
        return AffordScore(q["id"], q["type"], correct=ok)
    if q["type"] != "afford_hold_point":
        raise ConfigError(f"QA {q['id']}: unknown affordance question type {q['type']!r}")
    if prediction is None:
        return AffordScore(q["id"], q["type"], in_mask=False, error_m=None, note="no answer")
    if not isinstance(prediction, dict) or "pixel" not in prediction:
        raise ConfigError(f"QA {q['id']}: a point answer must be a dict with 'pixel' (and 'point_3d'), got "
                          f"{prediction!r}")
    part = truth.parts[int(q["part_id"])]
    u, v = (int(round(float(x))) for x in prediction["pixel"])
    mask = truth.part_mask
    inside = mask is not None and 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and \
        int(mask[v, u]) == int(part["id"])
    err = None
    if prediction.get("point_3d") is not None:
        p = np.asarray(prediction["point_3d"], dtype=np.float64)
        err = float(np.linalg.norm(p - np.asarray(q["value"]["point_3d"], dtype=np.float64)))
    return AffordScore(q["id"], q["type"], in_mask=bool(inside), error_m=err)


def summarise_afford(scores: list[AffordScore]) -> dict[str, Any]:
    """Point-in-mask accuracy, median / mean 3D error (m) and choice accuracy."""
    pts = [s for s in scores if s.type == "afford_hold_point"]
    errs = [s.error_m for s in pts if s.error_m is not None]
    ch = [s for s in scores if s.type == "afford_which_object"]
    return {
        "point": {"n": len(pts), "in_mask": float(np.mean([s.in_mask for s in pts])) if pts else None,
                  "n_3d": len(errs),
                  "median_error_m": float(np.median(errs)) if errs else None,
                  "mean_error_m": float(np.mean(errs)) if errs else None,
                  "within_5cm": float(np.mean(np.asarray(errs) <= 0.05)) if errs else None},
        "choice": {"n": len(ch), "accuracy": float(np.mean([s.correct for s in ch])) if ch else None},
    }


def point_answer_from_heatmap(heatmap: Any, truth: AffordTruth, object_id: int, **lift_options: Any
                              ) -> dict[str, Any] | None:
    """Answer a point question from a heatmap: lift it per object (:func:`~spatialforge.afford.lift.lift_affordance`)
    and return the interaction pixel and 3D point of ``object_id``'s region (``None`` when it has none)."""
    from spatialforge.afford.lift import lift_affordance

    heat = np.asarray(heatmap, dtype=np.float64)
    obj_only = np.where(truth.instances == object_id, heat, 0.0)
    for region in lift_affordance(obj_only, truth.depth, truth.intrinsics, truth.gravity, truth.instances,
                                  **lift_options):
        if region.object_id == object_id:
            return {"pixel": list(region.pixel), "point_3d": [float(x) for x in region.interaction_point]}
    return None
