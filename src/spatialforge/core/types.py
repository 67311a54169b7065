"""Typed containers exchanged between pipeline stages.

Containers validate themselves on construction and say *expected vs actual* when they reject
input. All geometry follows ``docs/conventions.md``: metres, OpenCV camera frame, z-up canonical
frame with x = camera right and y = camera forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from spatialforge.errors import SceneFormatError

__all__ = [
    "Box3D",
    "CameraIntrinsics",
    "Gravity",
    "ObjectAnnotation",
    "QAPair",
    "RGBDScene",
    "SceneGraph",
    "SceneObject",
    "SkippedObject",
]


def _finite_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels (pixel centres at integer coordinates)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            object.__setattr__(self, name, _finite_positive(name, getattr(self, name)))
        for name in ("cx", "cy"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("width", "height"):
            value = getattr(self, name)
            if int(value) != value or int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 calibration matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan2(self.width / 2.0, self.fx))

    def to_dict(self) -> dict[str, float | int]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class ObjectAnnotation:
    """An instance id in ``instances`` and its caption (e.g. ``"red mug"``).

    ``group``: optional ambiguity group. Objects sharing a group are treated as colliding captions
    by the QA engine (referred to by spatial qualifiers), e.g. "sofa" and "couch" found similar
    by CLIP text embeddings.
    """

    id: int
    caption: str
    group: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or int(self.id) != self.id or not 0 < int(self.id) < 65536:
            raise ValueError(f"object id must be an integer in 1..65535, got {self.id!r}")
        if not isinstance(self.caption, str) or not self.caption.strip():
            raise ValueError(f"object {self.id}: caption must be a non-empty string, got {self.caption!r}")
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "caption", " ".join(self.caption.split()))
        if self.group is not None and (isinstance(self.group, bool) or int(self.group) != self.group):
            raise ValueError(f"object {self.id}: ambiguity_group must be an integer, got {self.group!r}")


@dataclass(frozen=True, eq=False)
class RGBDScene:
    """One image with metric depth, instance masks, intrinsics and captions.

    ``depth`` is float32 z-depth in metres with 0 marking invalid pixels; ``instances`` holds the
    object id of every pixel (0 = background). ``provenance`` records where depth, intrinsics and
    masks came from (sensor, synthetic, a model id ...).
    """

    scene_id: str
    image: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    intrinsics: CameraIntrinsics
    objects: tuple[ObjectAnnotation, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scene_id:
            raise SceneFormatError("scene_id must be a non-empty string")
        h, w = self.intrinsics.height, self.intrinsics.width
        image = np.asarray(self.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SceneFormatError(
                f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}", path="image")
        for name, arr in (("image", image), ("depth", self.depth), ("instances", self.instances)):
            if tuple(np.shape(arr)[:2]) != (h, w):
                raise SceneFormatError(
                    f"{name}: size {np.shape(arr)[1]}x{np.shape(arr)[0]} does not match the camera's "
                    f"{w}x{h}", reason="size_mismatch", path=name)
        depth = np.asarray(self.depth, dtype=np.float32)
        if depth.ndim != 2:
            raise SceneFormatError(f"depth: expected (H, W), got {depth.shape}", path="depth")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
        instances = np.asarray(self.instances)
        if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
            raise SceneFormatError(
                f"instances: expected (H, W) integers, got {instances.shape} {instances.dtype}",
                path="instances")
        ids = [o.id for o in self.objects]
        if len(set(ids)) != len(ids):
            raise SceneFormatError(f"objects: duplicate ids {sorted(i for i in ids if ids.count(i) > 1)}",
                                   path="objects")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "instances", instances.astype(np.int32, copy=False))
        object.__setattr__(self, "objects", tuple(self.objects))

    def caption_of(self, object_id: int) -> str:
        for obj in self.objects:
            if obj.id == object_id:
                return obj.caption
        raise KeyError(object_id)


@dataclass(frozen=True)
class Gravity:
    """The canonical frame: ``p_canonical = R @ p_camera + t``.

    ``source`` is ``"plane"`` when a support plane was found and ``"camera_prior"`` when the
    camera's prior up direction had to be used (vertical questions are then skipped).
    """

    source: Literal["plane", "camera_prior"]
    R: np.ndarray
    t: np.ndarray
    camera_height: float | None = None
    plane_normal_camera: np.ndarray | None = None
    plane_offset: float | None = None
    inlier_fraction: float = 0.0
    tilt_deg: float = 0.0
    reason: str | None = None

    def __post_init__(self) -> None:
        R = np.asarray(self.R, dtype=np.float64)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise ValueError("Gravity.R must be a proper 3x3 rotation matrix")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", np.asarray(self.t, dtype=np.float64).reshape(3))

    @property
    def reliable(self) -> bool:
        """True when the vertical comes from a measured support plane."""
        return self.source == "plane"

    @property
    def up_camera(self) -> np.ndarray:
        """The up direction expressed in the camera frame."""
        return self.R[2].copy()

    def to_canonical(self, points_camera: np.ndarray) -> np.ndarray:
        return np.asarray(points_camera, dtype=np.float64) @ self.R.T + self.t

    def camera_pitch_roll_deg(self) -> tuple[float, float]:
        """Camera pitch (positive = looking down) and roll implied by this frame."""
        up = self.up_camera  # up in camera coordinates
        pitch = math.degrees(math.asin(float(np.clip(-up[2], -1.0, 1.0))))
        roll = math.degrees(math.atan2(float(up[0]), float(-up[1])))
        return pitch, roll

    def to_dict(self) -> dict[str, Any]:
        pitch, roll = self.camera_pitch_roll_deg()
        return {
            "source": self.source,
            "reason": self.reason,
            "R_canonical_from_camera": self.R.round(8).tolist(),
            "t_canonical_from_camera": self.t.round(6).tolist(),
            "camera_height_m": None if self.camera_height is None else round(self.camera_height, 5),
            "camera_pitch_deg": round(pitch, 3),
            "camera_roll_deg": round(roll, 3),
            "plane_inlier_fraction": round(self.inlier_fraction, 4),
            "plane_tilt_from_prior_deg": round(self.tilt_deg, 3),
        }


@dataclass(frozen=True)
class Box3D:
    """An upright box in the canonical frame: yaw about +z, sides ``size = (sx, sy, sz)``."""

    center: np.ndarray
    size: np.ndarray
    yaw: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "size", np.asarray(self.size, dtype=np.float64).reshape(3))

    def corners(self) -> np.ndarray:
        """The 8 corners, shape (8, 3)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        signs = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])
        local = signs * self.size
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return local @ rot.T + self.center


@dataclass(frozen=True)
class SceneObject:
    """A measured object: a node of the 3D scene graph."""

    id: int
    caption: str
    box: Box3D
    aabb_min: np.ndarray
    aabb_max: np.ndarray
    width: float
    depth: float
    height: float
    camera_distance: float
    n_points: int
    pixel_count: int
    image_centroid: tuple[float, float]
    image_bbox: tuple[int, int, int, int]
    truncated: bool
    occluded_fraction: float
    size_reliable: bool
    footprint_reliable: bool = False
    top_elevation_deg: float = 0.0
    group: int | None = None

    @property
    def center(self) -> np.ndarray:
        return self.box.center

    @property
    def volume(self) -> float:
        return self.width * self.depth * self.height

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "caption": self.caption,
            "center": self.center.round(5).tolist(),
            "width": round(self.width, 5),
            "depth": round(self.depth, 5),
            "height": round(self.height, 5),
            "volume": round(self.volume, 7),
            "yaw_deg": round(math.degrees(self.box.yaw), 3),
            "box_size": self.box.size.round(5).tolist(),
            "aabb_min": self.aabb_min.round(5).tolist(),
            "aabb_max": self.aabb_max.round(5).tolist(),
            "camera_distance": round(self.camera_distance, 5),
            "n_points": self.n_points,
            "pixel_count": self.pixel_count,
            "image_centroid": [round(v, 2) for v in self.image_centroid],
            "image_bbox": list(self.image_bbox),
            "truncated": self.truncated,
            "occluded_fraction": round(self.occluded_fraction, 4),
            "size_reliable": self.size_reliable,
            "footprint_reliable": self.footprint_reliable,
            "top_elevation_deg": round(self.top_elevation_deg, 2),
            "ambiguity_group": self.group,
        }


@dataclass(frozen=True)
class SkippedObject:
    """An annotated object that could not be measured, and why."""

    id: int
    caption: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class SceneGraph:
    """Gravity-aligned metric 3D scene graph of one scene."""

    scene_id: str
    intrinsics: CameraIntrinsics
    gravity: Gravity
    objects: tuple[SceneObject, ...]
    skipped: tuple[SkippedObject, ...] = ()
    depth_noise: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def object(self, object_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(f"scene {self.scene_id} has no measured object {object_id}")

    def to_dict(self, *, relations: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": "spatialforge-scene-graph/1",
            "scene_id": self.scene_id,
            "conventions": "docs/conventions.md: metres; canonical frame z up, x camera-right, y forward",
            "camera": self.intrinsics.to_dict(),
            "gravity": self.gravity.to_dict(),
            "depth_noise_estimate": round(self.depth_noise, 5),
            "provenance": self.provenance,
            "objects": [o.to_dict() for o in self.objects],
            "skipped_objects": [
                {"id": s.id, "caption": s.caption, "reason": s.reason, "detail": s.detail}
                for s in self.skipped
            ],
        }
        if relations:
            out["relations"] = pairwise_relations(self)
        return out


def pairwise_relations(graph: SceneGraph) -> list[dict[str, Any]]:
    """The edges of the scene graph: metric relations for every ordered pair (A, B), A.id < B.id."""
    edges = []
    objs = sorted(graph.objects, key=lambda o: o.id)
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            d = b.center - a.center
            edge: dict[str, Any] = {
                "a": a.id,
                "b": b.id,
                "distance": round(float(np.linalg.norm(d)), 5),
                "horizontal_distance": round(float(np.hypot(d[0], d[1])), 5),
                "b_minus_a": d.round(5).tolist(),
                "camera_distance_difference": round(b.camera_distance - a.camera_distance, 5),
            }
            if not graph.gravity.reliable:
                edge["vertical_unreliable"] = True
            edges.append(edge)
    return edges


@dataclass(frozen=True)
class QAPair:
    """One synthesised question and answer with its exact structured value.

    ``value`` is metres (or a ratio / clock hour) for quantitative types, a bool for yes/no
    types and the chosen object's id for choice types. ``subjects`` lists object ids in the
    order the question names them, and ``roles`` their roles in the type's meaning (``"A"``,
    ``"B"``, ``"C"``): "How far to the left of B is A?" has ``roles == ("B", "A")``.
    """

    id: str
    type: str
    kind: Literal["quantitative", "yes_no", "choice"]
    question: str
    answer: str
    value: float | bool | int
    unit: str
    subjects: tuple[int, ...]
    roles: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # how the question refers to each subject ("the red mug"), same order

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "kind": self.kind,
            "question": self.question,
            "answer": self.answer,
            "value": self.value,
            "unit": self.unit,
            "subjects": list(self.subjects),
            "roles": list(self.roles),
            "names": list(self.names),
        }
