"""Dense reward annotation: per-frame metric distance between two named things, in one frame for the episode.

For each frame the engine finds the two things (the detector stage, prompted with both names), segments them
(the segmenter stage on the chosen boxes; without one, the boxes are the masks), takes metric depth (the
frame's sensor depth, else the depth stage), lifts both masks to 3D and measures the distance between them.

**One consistent frame.** The support plane (gravity) is fitted once, on the pixels outside the two things'
masks of the first ``reference_frames`` frames together, and kept for the whole episode; so is the depth
scale of an RGB-only episode: 1 (the depth stage's metric depth as it is), or, when ``camera_height_m`` is
known, ``camera_height_m`` over the fitted plane's distance from the camera. Nothing is refitted per frame, so
a frame's distance only moves when the things move.

**Distance.** ``distance="center"`` (default): the distance between the centres of the two things' measured
upright 3D boxes in the canonical frame (the box :func:`spatialforge.geometry.objects.measure_object` fits, as
the scene graph measures objects). The box of the visible surface of a box-like thing seen from above at an
angle spans its whole extent, so its centre is stable under small occlusions and mask-edge noise, unlike the
closest points; it stays above 0 at contact (the two centres never meet), so a success threshold is a centre
distance (the synthetic gripper straddling the cube is 4.5 cm from it). ``distance="closest"``: the smallest
distance between the two lifted point sets (a surface gap, 0 at contact), more sensitive to flying pixels at
the masks' edges and to hidden near sides.

**Confidence and gaps.** Per thing: detection score x share of its mask's pixels with valid depth x
``min(1, points / 100)`` x identity (``min(1, IoU / 0.5)`` of the chosen box with the thing's previous box;
1 in the first frame; see ``_Perceiver._choose``). A frame's confidence is the smaller of the two.
A frame where either thing is not found, its mask has fewer than ``min_mask_pixels`` pixels or its lifted
points fewer than ``min_points`` gets a distance interpolated linearly in time from its neighbours (held at
the ends), ``interpolated = True`` and confidence 0.

**Rewards.** ``negative_distance``: ``-d``; ``progress``: ``1 - d / d0`` clipped to [-1, 1] with ``d0`` the
first frame's distance (0 at the start, 1 at contact, negative when moving away); ``success``: 1 when
``d < success_threshold_m`` else 0. Every row carries all three quantities (``distance_m``, ``progress``,
``success``); ``reward`` is the chosen one.

**Tracking** (``RewardStages(tracker=...)``, e.g. :class:`spatialforge.reward.tracker.Sam2VideoTracker`). The
detector runs frame by frame only until both things are found in one frame ``s`` (usually the first); the
tracker is prompted there with the two chosen boxes and its masks replace detection and segmentation in every
later frame (a thing's box is its mask's bounding box; its score the tracker's object score, identity 1). In a
frame where the tracker lost a thing (None), the detector looks for it again with the identity-by-overlap rule
(the previous box being the last tracked or detected one), and the segmenter segments what it finds, so a lost
track recovers; a thing found neither way is "not found" as above. Rows say ``tracked`` (both masks from the
tracker) and ``redetected`` (the detector was asked again for a thing the tracker lost); the summary counts both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spatialforge.core.types import CameraIntrinsics, Gravity
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.geometry.backproject import backproject
from spatialforge.geometry.config import GeometryConfig
from spatialforge.geometry.gravity import estimate_gravity
from spatialforge.geometry.objects import main_cluster, measure_object
from spatialforge.reward.types import Frame, Trajectory

__all__ = ["REWARD_KINDS", "RewardConfig", "RewardResult", "RewardRow", "RewardStages", "annotate_reward"]

REWARD_KINDS = ("negative_distance", "progress", "success")
DISTANCE_KINDS = ("center", "closest")


def _number(name: str, value: Any, *, lo: float, hi: float = math.inf, strict: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
          and math.isfinite(float(value)) and (float(value) > lo if strict else float(value) >= lo)
          and float(value) <= hi)
    if not ok:
        bound = f"> {lo}" if strict else f">= {lo}"
        upper = "" if hi == math.inf else f" and <= {hi}"
        raise ConfigError(f"RewardConfig.{name} must be a number {bound}{upper}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise ConfigError(f"RewardConfig.{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RewardConfig:
    """Settings of :func:`annotate_reward` (lengths in metres); invalid values raise ConfigError naming the field.

    ``reward``: which quantity the ``reward`` column holds (negative_distance, progress, success);
    ``success_threshold_m``: a frame succeeds when its distance is below it; ``min_score``: detections
    scoring lower are ignored; ``min_mask_pixels`` / ``min_points``: a thing with fewer mask pixels / lifted
    3D points counts as not found in that frame; ``reference_frames``: how many first frames fix the support
    plane and the depth scale; ``camera_height_m``: the camera's known height above the support plane, which
    fixes the metric scale of an RGB-only episode's depth (None: trust the depth stage's metric scale);
    ``hfov_deg``: the horizontal field of view assumed when neither the trajectory nor the depth stage gives
    the intrinsics; ``distance``: ``center`` or ``closest`` (see the module docstring); ``plane_margin_m``:
    lifted points this close to the support plane are dropped (a box mask's floor pixels); ``batch_size``:
    frames per stage call.
    """

    reward: str = "progress"
    success_threshold_m: float = 0.1
    min_score: float = 0.1
    min_mask_pixels: int = 30
    min_points: int = 20
    reference_frames: int = 5
    camera_height_m: float | None = None
    hfov_deg: float = 60.0
    distance: str = "center"
    plane_margin_m: float = 0.015
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise ConfigError(f"RewardConfig.reward must be one of {', '.join(REWARD_KINDS)}, got {self.reward!r}")
        if self.distance not in DISTANCE_KINDS:
            raise ConfigError(f"RewardConfig.distance must be one of {', '.join(DISTANCE_KINDS)}, "
                              f"got {self.distance!r}")
        object.__setattr__(self, "success_threshold_m",
                           _number("success_threshold_m", self.success_threshold_m, lo=0.0, strict=True))
        object.__setattr__(self, "min_score", _number("min_score", self.min_score, lo=0.0, hi=1.0))
        object.__setattr__(self, "hfov_deg", _number("hfov_deg", self.hfov_deg, lo=1.0, hi=179.0))
        object.__setattr__(self, "plane_margin_m", _number("plane_margin_m", self.plane_margin_m, lo=0.0))
        if self.camera_height_m is not None:
            object.__setattr__(self, "camera_height_m",
                               _number("camera_height_m", self.camera_height_m, lo=0.0, strict=True))
        object.__setattr__(self, "min_mask_pixels", _integer("min_mask_pixels", self.min_mask_pixels, 1))
        object.__setattr__(self, "min_points", _integer("min_points", self.min_points, 3))
        object.__setattr__(self, "reference_frames", _integer("reference_frames", self.reference_frames, 1))
        object.__setattr__(self, "batch_size", _integer("batch_size", self.batch_size, 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RewardStages:
    """The perception stages: a detector (required), a segmenter (None: the boxes are the masks), a
    depth stage (needed only for frames without sensor depth) and a tracker (None: per-frame detection).

    A tracker has ``track(images, first_boxes: {name: xyxy}, start_index) -> {name: [entry per frame]}``, an
    entry being None (lost, or before ``start_index``), a boolean (H, W) mask (score 1) or an object with
    ``mask`` and ``score`` (:class:`spatialforge.reward.tracker.TrackedMask`)."""

    detector: Any
    segmenter: Any = None
    depth: Any = None
    tracker: Any = None


@dataclass(frozen=True)
class RewardRow:
    """One frame's result. ``object_box`` / ``target_box``: the chosen pixel boxes (xyxy; None: not found);
    ``tracked``: both things' masks came from the tracker; ``redetected``: the tracker lost a thing here and the
    detector looked for it again."""

    frame: int
    time_s: float
    distance_m: float
    reward: float
    progress: float
    confidence: float
    interpolated: bool
    success: bool
    object_box: tuple[float, float, float, float] | None = None
    target_box: tuple[float, float, float, float] | None = None
    tracked: bool = False
    redetected: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("distance_m", "reward", "progress", "confidence"):
            out[key] = round(float(out[key]), 6)
        out["time_s"] = round(float(self.time_s), 6)
        for key in ("object_box", "target_box"):
            out[key] = None if out[key] is None else [round(float(v), 2) for v in out[key]]
        return out


@dataclass(frozen=True)
class RewardResult:
    """Per-frame rows and the episode summary (see :func:`annotate_reward`)."""

    rows: tuple[RewardRow, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def distances(self) -> np.ndarray:
        return np.array([r.distance_m for r in self.rows])

    @property
    def progress(self) -> np.ndarray:
        return np.array([r.progress for r in self.rows])

    @property
    def rewards(self) -> np.ndarray:
        return np.array([r.reward for r in self.rows])

    @property
    def times(self) -> np.ndarray:
        return np.array([r.time_s for r in self.rows])

    @property
    def confidence(self) -> np.ndarray:
        return np.array([r.confidence for r in self.rows])

    @property
    def interpolated(self) -> np.ndarray:
        return np.array([r.interpolated for r in self.rows], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "rows": [r.to_dict() for r in self.rows]}


# ----------------------------------------------------------------------------------------------
# Perception of one batch of frames
# ----------------------------------------------------------------------------------------------

@dataclass
class _Thing:
    """What was found of one named thing in one frame (mask None: not found)."""

    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    score: float = 0.0
    identity: float = 1.0
    source: str = "detected"  # detected | tracked | redetected


@dataclass
class _Seen:
    frame: Frame
    things: tuple[_Thing, _Thing]
    depth: np.ndarray | None  # raw metric depth (before the episode's scale), 0 = invalid
    hfov_deg: float | None = None
    focal_px: float | None = None


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (N, 4)."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _box_masks(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    masks = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, max(0, int(math.floor(y0))):min(h, int(math.ceil(y1))),
              max(0, int(math.floor(x0))):min(w, int(math.ceil(x1)))] = True
    return masks


class _Perceiver:
    """Runs the stages on batches of frames, choosing one box per name with identity by overlap."""

    def __init__(self, stages: RewardStages, names: tuple[str, str], config: RewardConfig,
                 intrinsics: CameraIntrinsics | None) -> None:
        self.stages, self.names, self.config, self.intrinsics = stages, names, config, intrinsics
        self.previous: list[np.ndarray | None] = [None, None]
        self.previous_score = [0.0, 0.0]

    def _choose(self, k: int, boxes: np.ndarray, scores: np.ndarray) -> tuple[int | None, float]:
        """Index of the candidate taken as thing ``k`` in this frame (None: not found) and its identity factor.

        With no previous box the best score wins. Otherwise the candidate overlapping the previous box most
        wins (identity ``min(1, IoU / 0.5)``); when none overlaps it, the best-scoring candidate is taken
        only if it scores at least as high as the previous one did (a confident re-detection after a fast
        move, identity 0.5); a weaker one (a look-alike while the thing is hidden) counts as not found.
        """
        if len(boxes) == 0:
            return None, 0.0
        prev = self.previous[k]
        if prev is None:
            return int(np.argmax(scores)), 1.0
        ious = _iou(prev, boxes)
        if float(ious.max()) > 0.0:
            best = int(np.argmax(ious))
            return best, float(min(1.0, ious[best] / 0.5))
        best = int(np.argmax(scores))
        if float(scores[best]) >= self.previous_score[k]:
            return best, 0.5
        return None, 0.0

    def detect(self, images: Sequence[np.ndarray]) -> list[Any]:
        """The detector's raw detections of both names in every image (one call)."""
        dets = self.stages.detector(list(images), [list(self.names)] * len(images))
        if len(dets) != len(images):
            raise SpatialForgeError(f"the detector returned {len(dets)} results for {len(images)} frames")
        return dets

    def pick(self, k: int, det: Any, source: str = "detected") -> _Thing:
        """Thing ``k`` among one image's detections, by identity with its previous box (updates the history)."""
        labels = [str(lab).casefold() for lab in det.labels]
        idx = [i for i, lab in enumerate(labels)
               if lab == self.names[k].casefold() and float(det.scores[i]) >= self.config.min_score]
        pick, identity = self._choose(k, det.boxes[idx], det.scores[idx]) if idx else (None, 0.0)
        if pick is None:
            return _Thing(source=source)
        box = np.asarray(det.boxes[idx[pick]], dtype=np.float64)
        self.previous[k], self.previous_score[k] = box, float(det.scores[idx[pick]])
        return _Thing(box=box, score=float(det.scores[idx[pick]]), identity=identity, source=source)

    def segment(self, images: Sequence[np.ndarray], chosen: Sequence[Sequence[_Thing]]) -> None:
        """Masks for the chosen things that have a box and no mask yet (the segmenter, else the boxes)."""
        todo = [j for j, things in enumerate(chosen) if any(t.box is not None and t.mask is None for t in things)]
        if not todo:
            return
        h, w = images[0].shape[:2]
        boxes_per_image = [np.array([t.box for t in chosen[j] if t.box is not None and t.mask is None],
                                    dtype=np.float32).reshape(-1, 4) for j in todo]
        if self.stages.segmenter is not None:
            masksets = self.stages.segmenter([images[j] for j in todo], boxes_per_image)
            masks_per_image = [np.asarray(m.masks, dtype=bool) for m in masksets]
        else:
            masks_per_image = [_box_masks(b, h, w) for b in boxes_per_image]
        for j, masks in zip(todo, masks_per_image, strict=True):
            q = 0
            for t in chosen[j]:
                if t.box is not None and t.mask is None:
                    t.mask = masks[q]
                    q += 1

    def seen(self, frames: Sequence[Frame], chosen: Sequence[Sequence[_Thing]]) -> list[_Seen]:
        """Depth for ``frames`` (the sensor's where given, else the depth stage's) and the frames' records."""
        images = [f.image for f in frames]
        depths: list[np.ndarray | None] = [None if f.depth is None else
                                          np.where(np.isfinite(f.depth) & (f.depth > 0), f.depth, 0.0)
                                          .astype(np.float32) for f in frames]
        hfovs: list[float | None] = [None] * len(frames)
        focals: list[float | None] = [None] * len(frames)
        need = [i for i, d in enumerate(depths) if d is None]
        if need:
            if self.stages.depth is None:
                raise ConfigError(f"frame {frames[need[0]].index} has no depth and no depth stage was given")
            focal = None if self.intrinsics is None else self.intrinsics.fx
            preds = self.stages.depth([images[i] for i in need], [focal] * len(need))
            for i, pred in zip(need, preds, strict=True):
                depths[i] = np.asarray(pred.depth, dtype=np.float32)
                hfovs[i], focals[i] = pred.hfov_deg, pred.focal_length_px
        out = []
        for f, things, d, hf, fp in zip(frames, chosen, depths, hfovs, focals, strict=True):
            if d is not None and d.shape != f.image.shape[:2]:
                raise SpatialForgeError(f"frame {f.index}: depth {d.shape} does not match the image "
                                        f"{f.image.shape[:2]}")
            out.append(_Seen(f, (things[0], things[1]), d, hf, fp))
        return out

    def __call__(self, frames: Sequence[Frame]) -> list[_Seen]:
        images = [f.image for f in frames]
        chosen = [[self.pick(k, det) for k in range(2)] for det in self.detect(images)]
        self.segment(images, chosen)
        return self.seen(frames, chosen)


def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def _tracked_thing(entry: Any, shape: tuple[int, int], name: str, index: int) -> _Thing | None:
    """A tracker's entry for one thing in one frame as a _Thing (None: lost)."""
    if entry is None:
        return None
    mask, score = (entry, 1.0) if isinstance(entry, np.ndarray) else (getattr(entry, "mask", None),
                                                                      getattr(entry, "score", None))
    mask = np.asarray(mask)
    if mask.shape != shape or score is None or not math.isfinite(float(score)):
        raise SpatialForgeError(f"the tracker's entry for {name!r} in frame {index} is not a {shape[1]}x{shape[0]} "
                                f"mask with a finite score")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        return None
    return _Thing(box=_mask_box(mask), mask=mask, score=float(min(1.0, max(0.0, float(score)))), source="tracked")


def _tracked_batches(perceiver: _Perceiver, frames: list[Frame], config: RewardConfig,
                     stats: dict[str, Any]) -> Iterator[list[_Seen]]:
    """Perceived frames in time order with the tracker: per-frame detection until both things are found in one
    frame, then the tracker's masks, with re-detection where it lost a thing (see the module docstring)."""
    names, n, bs = perceiver.names, len(frames), config.batch_size
    pending: list[tuple[Frame, list[_Thing]]] = []
    start = None
    for i, f in enumerate(frames):
        things = [perceiver.pick(k, det) for det in perceiver.detect([f.image]) for k in range(2)]
        pending.append((f, things))
        if all(t.box is not None for t in things):
            start = i
        if start is not None or len(pending) == bs or i == n - 1:
            images = [p[0].image for p in pending]
            perceiver.segment(images, [p[1] for p in pending])
            yield perceiver.seen([p[0] for p in pending], [p[1] for p in pending])
            first = pending[-1][1]
            pending = []
        if start is not None:
            break
    stats["start_frame"] = None if start is None else frames[start].index
    if start is None or start == n - 1:
        return
    tracks = perceiver.stages.tracker.track([f.image for f in frames], {names[0]: first[0].box,
                                                                       names[1]: first[1].box}, start_index=start)
    for name in names:
        if not isinstance(tracks, Mapping) or name not in tracks or len(tracks[name]) != n:
            raise SpatialForgeError(f"the tracker returned no list of {n} entries for {name!r}")
    shape = frames[0].image.shape[:2]
    for b0 in range(start + 1, n, bs):
        batch = frames[b0:b0 + bs]
        tracked = [[_tracked_thing(tracks[names[k]][b0 + j], shape, names[k], f.index) for k in range(2)]
                   for j, f in enumerate(batch)]
        lost = [j for j, things in enumerate(tracked) if None in things]
        dets = dict(zip(lost, perceiver.detect([batch[j].image for j in lost]), strict=True)) if lost else {}
        chosen: list[list[_Thing]] = []
        for j, things in enumerate(tracked):
            row = []
            for k, t in enumerate(things):
                if t is None:
                    t = perceiver.pick(k, dets[j], source="redetected")
                    stats["redetected"][k] += 1
                    stats["recovered"][k] += t.box is not None
                else:
                    perceiver.previous[k] = t.box
                row.append(t)
            chosen.append(row)
        perceiver.segment([f.image for f in batch], chosen)
        yield perceiver.seen(batch, chosen)


# ----------------------------------------------------------------------------------------------
# The episode's frame: intrinsics, gravity and scale from the reference frames
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Reference:
    intrinsics: CameraIntrinsics
    intrinsics_source: str
    gravity: Gravity
    scale: float
    scale_source: str


def _fit_reference(seen: list[_Seen], traj: Trajectory, config: RewardConfig) -> _Reference:
    h, w = seen[0].frame.image.shape[:2]
    if traj.intrinsics is not None:
        intr, source = traj.intrinsics, "trajectory"
    else:
        focals = [s.focal_px for s in seen if s.focal_px] or [
            (w / 2.0) / math.tan(math.radians(s.hfov_deg) / 2.0) for s in seen if s.hfov_deg]
        if focals:
            fx, source = float(np.median(focals)), "depth_stage"
        else:
            fx, source = (w / 2.0) / math.tan(math.radians(config.hfov_deg) / 2.0), f"assumed_hfov_{config.hfov_deg:g}"
        intr = CameraIntrinsics(fx, fx, (w - 1) / 2.0, (h - 1) / 2.0, w, h)
    pts = []
    rng = np.random.default_rng(0)
    for s in seen:
        if s.depth is None:
            continue
        keep = s.depth > 0
        for t in s.things:
            if t.mask is not None:
                keep &= ~t.mask
        p = backproject(s.depth, intr, keep)
        if len(p) > 20000:
            p = p[rng.choice(len(p), 20000, replace=False)]
        pts.append(p)
    points = np.vstack(pts) if pts else np.zeros((0, 3))
    gravity = estimate_gravity(points, GeometryConfig(), rng=np.random.default_rng(0))
    scale, scale_source = 1.0, "sensor" if all(s.frame.depth is not None for s in seen) else "depth_stage"
    if config.camera_height_m is not None:
        if not gravity.reliable or not gravity.camera_height:
            raise SpatialForgeError(f"{traj.source or traj.episode_id}: camera_height_m was given but no support "
                                    f"plane was found in the first {len(seen)} frames ({gravity.reason})")
        scale, scale_source = config.camera_height_m / gravity.camera_height, "camera_height"
    if scale != 1.0:
        gravity = Gravity(source=gravity.source, R=gravity.R, t=gravity.t * scale,
                          camera_height=None if gravity.camera_height is None else gravity.camera_height * scale,
                          plane_normal_camera=gravity.plane_normal_camera,
                          plane_offset=None if gravity.plane_offset is None else gravity.plane_offset * scale,
                          inlier_fraction=gravity.inlier_fraction, tilt_deg=gravity.tilt_deg, reason=gravity.reason)
    return _Reference(intr, source, gravity, float(scale), scale_source)


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------

def _lift(thing: _Thing, depth: np.ndarray | None, ref: _Reference, config: RewardConfig
          ) -> tuple[np.ndarray | None, float]:
    """Canonical-frame points of a thing's body and its confidence (None, 0: not usable in this frame)."""
    if thing.mask is None or depth is None:
        return None, 0.0
    n_mask = int(thing.mask.sum())
    if n_mask < config.min_mask_pixels:
        return None, 0.0
    valid = thing.mask & (depth > 0)
    n_valid = int(valid.sum())
    if n_valid < config.min_points:
        return None, 0.0
    pts = ref.gravity.to_canonical(backproject(depth * ref.scale, ref.intrinsics, valid))
    if ref.gravity.reliable:
        pts = pts[pts[:, 2] > config.plane_margin_m]
    if len(pts) < config.min_points:
        return None, 0.0
    if len(pts) > 6000:
        pts = pts[np.linspace(0, len(pts) - 1, 6000).astype(int)]
    pts = pts[main_cluster(pts, 0.01)]
    if len(pts) < config.min_points:
        return None, 0.0
    conf = thing.score * (n_valid / n_mask) * min(1.0, len(pts) / 100.0) * thing.identity
    return pts, float(min(1.0, conf))


def _distance(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    if kind == "closest":
        from scipy.spatial import cKDTree

        d, _ = cKDTree(b).query(a, k=1)
        return float(d.min())
    ca = measure_object(a, trim=0.02)[0]
    cb = measure_object(b, trim=0.02)[0]
    return float(np.linalg.norm(ca - cb))


def _interpolate(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation over the NaN entries (held at the ends); returns (filled, was_nan)."""
    missing = ~np.isfinite(values)
    if missing.all():
        return values, missing
    filled = values.copy()
    filled[missing] = np.interp(times[missing], times[~missing], values[~missing])
    return filled, missing


def _stages(perception: Any) -> RewardStages:
    if isinstance(perception, RewardStages):
        return perception
    if isinstance(perception, Mapping):
        unknown = set(perception) - {"detector", "segmenter", "depth", "tracker"}
        if unknown or "detector" not in perception:
            raise ConfigError("perception must name a 'detector' and optionally a 'segmenter', a 'depth' stage and "
                              "a 'tracker'" + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
        return RewardStages(perception["detector"], perception.get("segmenter"), perception.get("depth"),
                            perception.get("tracker"))
    if perception is None:
        raise ConfigError("annotate_reward needs perception stages (a detector at least): pass "
                          "RewardStages(detector, segmenter, depth)")
    raise ConfigError(f"perception must be RewardStages or a mapping of stages, got {type(perception).__name__}")


def annotate_reward(traj: Trajectory, object: str, target: str, *,
                    perception: RewardStages | Mapping[str, Any] | None = None,
                    config: RewardConfig | None = None) -> RewardResult:
    """Per-frame distance between ``object`` and ``target`` over ``traj``, with rewards and confidence.

    See the module docstring for the definitions. ``perception``: :class:`RewardStages` (or a mapping with
    ``detector``, ``segmenter``, ``depth``): the detector is prompted with ``[object, target]`` and its
    detections' labels must be those prompts. Raises SpatialForgeError when either thing is found in no
    frame (naming the thing and the episode's source).
    """
    cfg = config if config is not None else RewardConfig()
    if not isinstance(cfg, RewardConfig):
        raise ConfigError(f"config must be a RewardConfig, got {type(cfg).__name__}")
    for name, value in (("object", object), ("target", target)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"annotate_reward: {name} must be a non-empty name, got {value!r}")
    if object.strip().casefold() == target.strip().casefold():
        raise ConfigError(f"annotate_reward: object and target must differ, both are {object!r}")
    if not traj.frames:
        raise SpatialForgeError(f"{traj.source or traj.episode_id}: the trajectory has no frames")
    stages = _stages(perception)
    names = (object.strip(), target.strip())
    where = traj.source or traj.episode_id
    start = time.perf_counter()

    perceiver = _Perceiver(stages, names, cfg, traj.intrinsics)
    frames = list(traj.frames)
    n = len(frames)
    k = min(cfg.reference_frames, n)
    stats: dict[str, Any] = {"start_frame": None, "redetected": [0, 0], "recovered": [0, 0]}
    if stages.tracker is None:
        batches: Iterator[list[_Seen]] = (perceiver(frames[i:j]) for i, j in
                                          [(i, min(k, i + cfg.batch_size)) for i in range(0, k, cfg.batch_size)]
                                          + [(i, i + cfg.batch_size) for i in range(k, n, cfg.batch_size)])
    else:
        batches = _tracked_batches(perceiver, frames, cfg, stats)

    raw = np.full(n, np.nan)
    conf = np.zeros(n)
    boxes: list[tuple[Any, Any]] = []
    flags: list[tuple[bool, bool]] = []
    found = [0, 0]
    ref: _Reference | None = None

    def measure(seen: list[_Seen], offset: int) -> None:
        for j, s in enumerate(seen):
            lifted = [_lift(t, s.depth, ref, cfg) for t in s.things]
            for q in range(2):
                found[q] += lifted[q][0] is not None
            boxes.append(tuple(None if t.box is None else tuple(float(v) for v in t.box) for t in s.things))
            flags.append((all(t.source == "tracked" for t in s.things),
                          any(t.source == "redetected" for t in s.things)))
            if lifted[0][0] is not None and lifted[1][0] is not None:
                raw[offset + j] = _distance(lifted[0][0], lifted[1][0], cfg.distance)
                conf[offset + j] = min(lifted[0][1], lifted[1][1])

    # the first k frames fix the episode's frame (gravity, scale), then every frame is measured in it
    buffer: list[_Seen] = []
    done = 0
    for batch in batches:
        if ref is None:
            buffer += batch
            if len(buffer) < k:
                continue
            ref = _fit_reference(buffer[:k], traj, cfg)
            batch, buffer = buffer, []
        measure(batch, done)
        done += len(batch)
    if ref is None:  # fewer perceived frames than k (the tracker path found the things in no frame)
        ref = _fit_reference(buffer, traj, cfg)
        measure(buffer, 0)
        done = len(buffer)
    if done != n:
        raise SpatialForgeError(f"{where}: perceived {done} of {n} frames")  # pragma: no cover - an internal check

    for q in range(2):
        if found[q] == 0:
            raise SpatialForgeError(f"{where}: {names[q]!r} was found in none of the {n} frames")
    times = np.array([f.time_s for f in frames], dtype=np.float64)
    if not np.isfinite(raw).any():
        raise SpatialForgeError(f"{where}: {names[0]!r} and {names[1]!r} are never found in the same frame")
    dist, interp = _interpolate(times, raw)
    conf[interp] = 0.0
    d0 = float(dist[0])
    progress = np.clip(1.0 - dist / d0, -1.0, 1.0) if d0 > 0 else np.zeros(n)
    success = dist < cfg.success_threshold_m
    reward = {"negative_distance": -dist, "progress": progress, "success": success.astype(float)}[cfg.reward]
    rows = tuple(RewardRow(frame=f.index, time_s=float(f.time_s), distance_m=float(d), reward=float(r),
                           progress=float(p), confidence=float(c), interpolated=bool(m), success=bool(s),
                           object_box=b[0], target_box=b[1], tracked=fl[0], redetected=fl[1])
                 for f, d, r, p, c, m, s, b, fl in zip(frames, dist, reward, progress, conf, interp, success, boxes,
                                                       flags, strict=True))
    elapsed = time.perf_counter() - start
    last_measured = int(np.nonzero(~interp)[0][-1])
    summary = {
        "episode_id": traj.episode_id, "source": traj.source, "object": names[0], "target": names[1],
        "n_frames": n, "n_interpolated": int(interp.sum()), "mean_confidence": round(float(conf.mean()), 4),
        "distance": cfg.distance, "reward": cfg.reward, "success_threshold_m": cfg.success_threshold_m,
        "start_distance_m": round(d0, 5), "final_distance_m": round(float(dist[-1]), 5),
        "min_distance_m": round(float(dist.min()), 5),
        "final_measured_frame": frames[last_measured].index,
        "success": bool(dist[last_measured] < cfg.success_threshold_m),
        "reference_frames": k, "intrinsics": ref.intrinsics.to_dict(), "intrinsics_source": ref.intrinsics_source,
        "gravity": ref.gravity.to_dict(), "depth_scale": round(ref.scale, 6), "depth_scale_source": ref.scale_source,
        "stages": {name: None if st is None else f"{getattr(st, 'name', type(st).__name__)}:"
                   f"{getattr(st, 'model_id', '')}" for name, st in (("detector", stages.detector),
                                                                     ("segmenter", stages.segmenter),
                                                                     ("depth", stages.depth),
                                                                     ("tracker", stages.tracker))},
        "tracking": None if stages.tracker is None else {
            "start_frame": stats["start_frame"], "n_tracked": sum(f[0] for f in flags),
            "n_redetected": sum(f[1] for f in flags),
            "redetected": dict(zip(names, stats["redetected"], strict=True)),
            "recovered": dict(zip(names, stats["recovered"], strict=True))},
        "config": cfg.to_dict(), "seconds": round(elapsed, 4), "frames_per_s": round(n / max(elapsed, 1e-9), 3),
    }
    return RewardResult(rows, summary)
