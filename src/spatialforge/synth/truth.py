"""Score generated QA against the synthetic ground truth (the accuracy benchmark).

The truth is computed here *independently* of the QA catalogue: straight from the ground-truth
world coordinates (z up, floor z = 0) and the true camera pose, with the semantics of
docs/conventions.md. A convention error in the engine (a flipped axis, a width reported as a
height) therefore shows up as a wrong answer instead of being reproduced by shared code.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spatialforge.io.dataset import iter_rows

__all__ = ["GroundTruthScene", "QAScore", "score_dataset", "summarise"]


@dataclass(frozen=True)
class GroundTruthScene:
    objects: dict[int, dict[str, Any]]
    camera_position: np.ndarray
    right: np.ndarray  # camera right projected on the floor plane, unit
    forward: np.ndarray  # camera forward projected on the floor plane, unit

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GroundTruthScene:
        gt = json.loads(Path(path).read_text())
        cam = gt["camera"]
        R = np.asarray(cam["R_world_from_cam"], dtype=np.float64)
        right = R[:, 0].copy()
        right[2] = 0.0
        right /= np.linalg.norm(right)
        up = np.array([0.0, 0.0, 1.0])
        forward = np.cross(up, right)
        objs = {int(o["id"]): o for o in gt["objects"]}
        return cls(objs, np.asarray(cam["position"], dtype=np.float64), right, forward)

    def c(self, i: int) -> np.ndarray:
        return np.asarray(self.objects[i]["center"], dtype=np.float64)

    def dist(self, i: int) -> float:
        return float(np.linalg.norm(self.c(i) - self.camera_position))

    def x(self, i: int) -> float:
        return float(self.c(i) @ self.right)

    def z(self, i: int) -> float:
        return float(self.c(i)[2])

    def size(self, i: int, key: str) -> float:
        o = self.objects[i]
        if key == "volume":
            return float(o["width"] * o["depth"] * o["height"])
        return float(o[key])


# quantity used by each qualitative type: (getter name, "min" or "max" wins / relation holds if larger)
_QUAL = {
    "left": ("x", False), "right": ("x", True), "above": ("z", True), "below": ("z", False),
    "behind": ("dist", True), "front": ("dist", False), "far": ("dist", True), "close": ("dist", False),
    "tall": ("height", True), "short": ("height", False), "wide": ("width", True), "thin": ("width", False),
    "big": ("volume", True), "small": ("volume", False),
}
_POSITION = {"x", "z", "dist"}


def _quantity(gt: GroundTruthScene, name: str, i: int) -> float:
    if name == "x":
        return gt.x(i)
    if name == "z":
        return gt.z(i)
    if name == "dist":
        return gt.dist(i)
    return gt.size(i, name)


def _is_tie(name: str, va: float, vb: float, margin_m: float, margin_rel: float) -> bool:
    if name in _POSITION:
        return abs(va - vb) < margin_m
    lo, hi = min(va, vb), max(va, vb)
    power = 2 if name == "volume" else 1
    return hi < lo * (1 + margin_rel) ** power


def true_quantity(gt: GroundTruthScene, qtype: str, r: dict[str, int]) -> float:
    """Exact value of a quantitative question for role ids ``r`` (``{"A": id, "B": id}``)."""
    a, b = r.get("A"), r.get("B")
    if qtype == "distance":
        return float(np.linalg.norm(gt.c(a) - gt.c(b)))
    if qtype == "horizontal_distance":
        d = gt.c(a) - gt.c(b)
        return float(math.hypot(d[0], d[1]))
    if qtype == "vertical_distance":
        return abs(gt.z(a) - gt.z(b))
    if qtype in ("width", "height", "depth"):
        return gt.size(a, qtype)
    if qtype == "camera_distance":
        return gt.dist(a)
    if qtype == "left_offset":
        return gt.x(b) - gt.x(a)
    if qtype == "right_offset":
        return gt.x(a) - gt.x(b)
    if qtype == "behind_offset":
        return gt.dist(a) - gt.dist(b)
    if qtype == "front_offset":
        return gt.dist(b) - gt.dist(a)
    if qtype == "height_difference":
        return gt.size(a, "height") - gt.size(b, "height")
    if qtype == "above_offset":
        return gt.z(a) - gt.z(b)
    if qtype == "height_ratio":
        return gt.size(a, "height") / gt.size(b, "height")
    if qtype == "clock_direction":
        d = gt.c(b) - gt.c(a)
        angle = math.degrees(math.atan2(float(d @ gt.right), float(d @ gt.forward))) % 360.0
        return angle / 30.0  # fractional clock hour, 0 = 12 o'clock
    raise KeyError(f"no ground truth for quantitative type {qtype!r}")


@dataclass(frozen=True)
class QAScore:
    scene_id: str
    qa_id: str
    type: str
    kind: str
    estimate: float
    truth: float | None
    correct: bool | None  # qualitative (and clock: within one hour)
    rel_error: float | None  # quantitative
    excluded: str | None = None


def score_qa(gt: GroundTruthScene, scene_id: str, qa: dict[str, Any], margin_m: float, margin_rel: float
             ) -> QAScore:
    """Score one QA record. The affordance questions (``generate --afford``,
    :data:`~spatialforge.qa.afford_types.AFFORD_TYPES`) are excluded with reason ``affordance``: their answers are
    the synthetic part labels themselves, not measured, and ``spatialforge eval score`` scores answers to them."""
    from spatialforge.qa.afford_types import AFFORD_TYPES

    t, kind, est = qa["type"], qa["kind"], float(qa["value"])
    base = {"scene_id": scene_id, "qa_id": qa["id"], "type": t, "kind": kind, "estimate": est}
    if t in AFFORD_TYPES:
        return QAScore(**base, truth=None, correct=None, rel_error=None, excluded="affordance")
    roles = dict(zip(qa["roles"], qa["subjects"], strict=True))
    if kind == "quantitative":
        truth = true_quantity(gt, t, roles)
        if t == "clock_direction":
            hour_err = abs(((est % 12) - truth + 6) % 12 - 6)
            return QAScore(**base, truth=truth, correct=hour_err <= 1.0, rel_error=None)
        rel = abs(est - truth) / abs(truth) if truth != 0 else math.inf
        return QAScore(**base, truth=truth, correct=None, rel_error=rel)
    if t == "closer_to_choice":
        a, b, c = roles["A"], roles["B"], roles["C"]
        da, db = (float(np.linalg.norm(gt.c(i) - gt.c(c))) for i in (a, b))
        if abs(da - db) < margin_m:
            return QAScore(**base, truth=None, correct=None, rel_error=None, excluded="tie")
        truth_id = a if da < db else b
        return QAScore(**base, truth=float(truth_id), correct=int(est) == truth_id, rel_error=None)
    name, larger = _QUAL[t.rsplit("_", 1)[0]]
    a, b = roles["A"], roles["B"]
    va, vb = _quantity(gt, name, a), _quantity(gt, name, b)
    if _is_tie(name, va, vb, margin_m, margin_rel):
        return QAScore(**base, truth=None, correct=None, rel_error=None, excluded="tie")
    if kind == "yes_no":
        truth_bool = (va > vb) == larger
        return QAScore(**base, truth=float(truth_bool), correct=bool(est) == truth_bool, rel_error=None)
    truth_id = a if (va > vb) == larger else b
    return QAScore(**base, truth=float(truth_id), correct=int(est) == truth_id, rel_error=None)


def score_dataset(scenes_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  margin_m: float = 0.10, margin_rel: float = 0.15) -> list[QAScore]:
    """Score every QA of a generated dataset against the scenes' ``ground_truth.json`` (the affordance questions
    of ``generate --afford`` are excluded, reason ``affordance``: see :func:`score_qa`)."""
    scores = []
    for row in iter_rows(out_dir, columns=["scene_id", "qa"]):
        gt = GroundTruthScene.load(Path(scenes_dir) / row["scene_id"] / "ground_truth.json")
        scores.extend(score_qa(gt, row["scene_id"], qa, margin_m, margin_rel) for qa in row["qa"])
    return scores


def summarise(scores: list[QAScore]) -> dict[str, Any]:
    """Qualitative accuracy, quantitative median / p90 relative error, overall and per type; ``excluded``: the
    scores left out of them, per reason (``tie``: within the margins; ``affordance``: see :func:`score_qa`)."""
    qual = [s for s in scores if s.kind != "quantitative" and s.excluded is None]
    quant = [s for s in scores if s.rel_error is not None]
    clock = [s for s in scores if s.type == "clock_direction"]
    per_type: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[QAScore]] = defaultdict(list)
    for s in scores:
        groups[s.type].append(s)
    for t, ss in sorted(groups.items()):
        rel = [s.rel_error for s in ss if s.rel_error is not None]
        cor = [s.correct for s in ss if s.correct is not None]
        entry: dict[str, Any] = {"n": len(ss), "excluded": sum(s.excluded is not None for s in ss)}
        if rel:
            entry.update(median_rel_error=float(np.median(rel)), p90_rel_error=float(np.quantile(rel, 0.9)))
        if cor:
            entry["accuracy"] = float(np.mean(cor))
        per_type[t] = entry
    rel_all = [s.rel_error for s in quant]
    return {
        "qa_total": len(scores),
        "excluded": dict(sorted(Counter(s.excluded for s in scores if s.excluded is not None).items())),
        "qualitative": {
            "n": len(qual),
            "excluded_ties": sum(1 for s in scores if s.excluded == "tie"),
            "accuracy": float(np.mean([s.correct for s in qual])) if qual else None,
        },
        "quantitative": {
            "n": len(rel_all),
            "median_rel_error": float(np.median(rel_all)) if rel_all else None,
            "p90_rel_error": float(np.quantile(rel_all, 0.9)) if rel_all else None,
            "within_25pct": float(np.mean(np.asarray(rel_all) <= 0.25)) if rel_all else None,
        },
        "clock_within_1h": float(np.mean([s.correct for s in clock])) if clock else None,
        "per_type": per_type,
    }
