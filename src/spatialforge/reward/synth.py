"""Synthetic robot trajectories with exact geometry, for testing and benchmarking the reward engine.

A fixed tabletop-free scene (floor, back wall) seen by a camera 0.9 m up, pitched 38 degrees down: an
**orange cube** (12 cm) stands on the floor, a **blue box** stands beside it as a distractor, and a grey
**gripper** (a body with two fingers) moves in the air along one of four paths:

* ``approach``: from about 0.5 m away to straddling the cube (success);
* ``retreat``: the reverse (failure);
* ``pass_by``: a straight line passing about 0.3 m from the cube and going on (failure);
* ``stall``: hovering where it started with a small wobble (failure).

Every frame is ray cast by :func:`spatialforge.synth.render.render_layout`, so the depth (z-depth, metres)
and the instance masks are exact. ``shake_px`` jitters the camera's orientation per frame (about that many
pixels of image motion, std) and its position by a few millimetres; during ``occlusion_frames`` a grey
panel stands between the camera and the cube and hides it completely.

``truth`` (see :func:`synth_trajectory`) holds the exact per-frame distance as the reward engine defines it:
the distance between the centres of the two things' 3D bounding boxes, and ``success``: whether the final
distance is under ``success_threshold_m``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatialforge.core.types import CameraIntrinsics
from spatialforge.errors import ConfigError
from spatialforge.reward.types import Frame, Trajectory
from spatialforge.synth.layout import Box, PlacedObject, SceneLayout, Wall, camera_pose
from spatialforge.synth.render import render_layout

__all__ = ["INSTANCE_IDS", "KINDS", "synth_trajectory", "write_trajectory"]

KINDS = ("approach", "retreat", "pass_by", "stall")
#: Instance ids in ``truth["instances"]`` (0 = background).
INSTANCE_IDS = {"gripper": 1, "orange cube": 2, "blue box": 3, "panel": 4}

_CUBE_CENTER = np.array([0.0, 1.3, 0.06])
_CUBE_HALF = 0.06
_BLUE_CENTER = np.array([0.38, 1.5, 0.09])
_BLUE_HALF = (0.09, 0.07, 0.09)
# Gripper geometry: a body (half sizes) and two fingers hanging below it at +-_FINGER_X.
_BODY_HALF = (0.09, 0.03, 0.025)
_FINGER_HALF = (0.012, 0.025, 0.05)
_FINGER_X = 0.078
_CAMERA_HEIGHT = 0.9
_PITCH_DEG = 38.0
_HFOV_DEG = 62.0
_DEFAULT_THRESHOLD = 0.1


def _gripper_boxes(body_center: np.ndarray) -> list[Box]:
    cx, cy, cz = (float(v) for v in body_center)
    fz = cz - _BODY_HALF[2] - _FINGER_HALF[2]
    return [Box((cx, cy, cz), _BODY_HALF, 0.0),
            Box((cx - _FINGER_X, cy, fz), _FINGER_HALF, 0.0),
            Box((cx + _FINGER_X, cy, fz), _FINGER_HALF, 0.0)]


def _bbox_center(boxes: list[Box]) -> np.ndarray:
    corners = np.vstack([b.corners() for b in boxes])
    return 0.5 * (corners.min(axis=0) + corners.max(axis=0))


def _gap(boxes_a: list[Box], boxes_b: list[Box]) -> float:
    """Closest distance between two unions of axis-aligned (yaw 0) boxes (0 when they touch)."""
    best = math.inf
    for a in boxes_a:
        for b in boxes_b:
            d = np.maximum(0.0, np.abs(np.subtract(a.center, b.center)) - np.add(a.half, b.half))
            best = min(best, float(np.linalg.norm(d)))
    return best


def _ease(s: np.ndarray) -> np.ndarray:
    return s * s * (3.0 - 2.0 * s)


def _path(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Body-centre positions (n, 3) of the gripper for ``kind``; the start varies with the seed."""
    ang = rng.uniform(-0.5, 0.5) + (math.pi if rng.random() < 0.5 else 0.0)  # from the left or the right
    radius = rng.uniform(0.45, 0.6)
    height = rng.uniform(0.35, 0.5)
    far = _CUBE_CENTER + np.array([radius * math.cos(ang), 0.5 * radius * math.sin(ang), 0.0])
    far[2] = height
    # The body sits just above the cube's top, the fingers on both sides of it.
    near = _CUBE_CENTER + np.array([0.0, 0.0, _CUBE_HALF + _BODY_HALF[2] + 0.01])
    s = _ease(np.linspace(0.0, 1.0, n))[:, None]
    if kind == "approach":
        return far + s * (near - far)
    if kind == "retreat":
        return near + s * (far - near)
    if kind == "pass_by":
        side = np.array([0.0, -0.3, 0.0]) if rng.random() < 0.5 else np.array([0.0, 0.3, 0.0])
        start = np.array([_CUBE_CENTER[0] - 0.6, _CUBE_CENTER[1], height]) + side
        end = np.array([_CUBE_CENTER[0] + 0.6, _CUBE_CENTER[1], height]) + side
        lin = np.linspace(0.0, 1.0, n)[:, None]
        return start + lin * (end - start)
    if kind == "stall":
        wobble = rng.normal(0.0, 0.015, size=(n, 3))
        return far + wobble
    raise ConfigError(f"synth_trajectory: kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise ConfigError(f"synth_trajectory: {name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def synth_trajectory(
    kind: Literal["approach", "retreat", "pass_by", "stall"],
    *,
    seed: int = 0,
    n_frames: int = 40,
    size: tuple[int, int] = (320, 240),
    shake_px: float = 1.5,
    occlusion_frames: tuple[int, ...] | None = None,
    rgbd: bool = True,
    fps: float = 10.0,
    success_threshold_m: float = _DEFAULT_THRESHOLD,
) -> Trajectory:
    """A rendered trajectory of ``kind`` (see the module docstring), deterministic per ``seed``.

    ``size`` is (width, height). ``occlusion_frames``: the frames during which a panel hides the cube;
    None (the default) hides it over frames ``[0.45 n, 0.45 n + 3)``, ``()`` never. With ``rgbd=False`` the
    frames carry no depth (the exact depth stays in ``truth["depth"]``, e.g. for a given-depth stage).

    ``truth``: ``distance_m`` (per frame, bounding-box centre to centre, metres), ``gap_m`` (closest
    distance between the two things' surfaces), ``success`` (final ``distance_m`` under
    ``success_threshold_m``), ``success_threshold_m``, ``kind``, ``occluded`` (per-frame flags),
    ``object``/``target`` ("gripper"/"orange cube"), ``instance_ids`` (caption -> id) and the arrays
    ``instances`` (n, H, W) uint8 and ``depth`` (n, H, W) float32, which are not written to disk as JSON.
    """
    if kind not in KINDS:
        raise ConfigError(f"synth_trajectory: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    seed = _check_int("seed", seed, 0)
    n = _check_int("n_frames", n_frames, 2)
    if (not isinstance(size, tuple | list) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 32 for v in size)):
        raise ConfigError(f"synth_trajectory: size must be (width, height) integers >= 32, got {size!r}")
    width, height = int(size[0]), int(size[1])
    for name, value in (("shake_px", shake_px), ("fps", fps), ("success_threshold_m", success_threshold_m)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value < 0 or (name != "shake_px" and value == 0):
            raise ConfigError(f"synth_trajectory: {name} must be a finite number "
                              f"{'>= 0' if name == 'shake_px' else '> 0'}, got {value!r}")
    if occlusion_frames is None:
        first = int(0.45 * n)
        occluded = set(range(first, min(n, first + 3)))
    else:
        occluded = {_check_int("occlusion_frames item", f, 0) for f in occlusion_frames}
        if any(f >= n for f in occluded):
            raise ConfigError(f"synth_trajectory: occlusion_frames must be below n_frames ({n}), "
                              f"got {sorted(occluded)}")

    path_ss, shake_ss, rgb_ss = np.random.SeedSequence([seed, KINDS.index(kind)]).spawn(3)
    path = _path(kind, n, np.random.default_rng(path_ss))
    shake_rng = np.random.default_rng(shake_ss)
    rgb_rng = np.random.default_rng(rgb_ss)

    fx = (width / 2.0) / math.tan(math.radians(_HFOV_DEG) / 2.0)
    intr = {"fx": round(fx, 4), "fy": round(fx, 4), "cx": (width - 1) / 2.0, "cy": (height - 1) / 2.0,
            "width": width, "height": height}
    walls = [Wall((0.0, 3.0, 0.0), (0.0, -1.0, 0.0), (205, 198, 182))]
    cube = PlacedObject(INSTANCE_IDS["orange cube"], "cube", "orange", (235, 125, 30), "box",
                        tuple(_CUBE_CENTER), (0.12, 0.12, 0.12), 0.0, "floor",
                        [Box(tuple(_CUBE_CENTER), (_CUBE_HALF,) * 3, 0.0)])
    blue = PlacedObject(INSTANCE_IDS["blue box"], "box", "blue", (40, 70, 200), "box", tuple(_BLUE_CENTER),
                        tuple(2 * h for h in _BLUE_HALF), 0.0, "floor", [Box(tuple(_BLUE_CENTER), _BLUE_HALF, 0.0)])
    # The panel stands on the floor halfway between the camera and the cube, tall enough to hide it.
    panel_center = (0.0, 0.75, 0.25)
    panel = PlacedObject(INSTANCE_IDS["panel"], "panel", "grey", (150, 150, 150), "box", panel_center,
                         (0.3, 0.02, 0.5), 0.0, "floor", [Box(panel_center, (0.15, 0.01, 0.25), 0.0)])
    cube_boxes = cube.primitives

    ang_std = math.degrees(shake_px / fx)
    frames, distances, gaps, inst_all, depth_all = [], [], [], [], []
    for i in range(n):
        d_pitch, d_roll, d_yaw = shake_rng.normal(0.0, ang_std, size=3) * np.array([1.0, 0.3, 1.0])
        d_pos = shake_rng.normal(0.0, 0.003, size=3) * (1.0 if shake_px > 0 else 0.0)
        rot, pos = camera_pose(_CAMERA_HEIGHT, _PITCH_DEG + d_pitch, d_roll, d_yaw)
        pos = pos + d_pos
        gboxes = _gripper_boxes(path[i])
        gripper = PlacedObject(INSTANCE_IDS["gripper"], "gripper", "grey", (95, 98, 105), "box",
                               tuple(_bbox_center(gboxes)), (0.18, 0.06, 0.15), 0.0, "air", list(gboxes))
        objects = [gripper, cube, blue] + ([panel] if i in occluded else [])
        layout = SceneLayout(intr, rot, pos, _PITCH_DEG, 0.0, 0.0, walls, "tiles", (165, 163, 156), objects)
        out = render_layout(layout, rgb_rng)
        depth = out.depth.astype(np.float32)
        frames.append(Frame(index=i, time_s=i / fps, image=out.image, depth=depth if rgbd else None))
        inst_all.append(out.instances.astype(np.uint8))
        depth_all.append(depth)
        distances.append(float(np.linalg.norm(_bbox_center(gboxes) - _bbox_center(cube_boxes))))
        gaps.append(_gap(gboxes, cube_boxes))

    truth = {
        "kind": kind, "seed": seed, "object": "gripper", "target": "orange cube",
        "distance_m": distances, "gap_m": gaps, "success_threshold_m": float(success_threshold_m),
        "success": bool(distances[-1] < success_threshold_m),
        "occluded": [i in occluded for i in range(n)], "instance_ids": dict(INSTANCE_IDS),
        "instances": np.stack(inst_all), "depth": np.stack(depth_all),
    }
    return Trajectory(episode_id=f"synth_{kind}_{seed}", frames=tuple(frames), fps=float(fps),
                      intrinsics=CameraIntrinsics(**intr), instruction="move the gripper to the orange cube",
                      source=f"synth:{kind}:seed={seed}", truth=truth)


def _truth_json(truth: dict | None) -> dict[str, Any]:
    return {k: v for k, v in (truth or {}).items() if not isinstance(v, np.ndarray)}


def write_trajectory(traj: Trajectory, folder: str | Path, format: str = "rgbd") -> Path:
    """Write ``traj`` into ``folder`` (created; must be empty or absent) and return what to read back.

    ``rgbd``: ``rgb/000000.png``, ``depth/000000.npy`` (float32 metres, 0 = invalid), ``camera.json``,
    ``frames.json`` (``fps``, per-frame ``time_s``); ``frames``: ``000000.png``... and ``frames.json``;
    ``mp4``: ``<episode_id>.mp4`` (H.264 through PyAV, yuv420p, at ``traj.fps``). Each writes
    ``truth.json`` (the JSON part of ``traj.truth``) when the trajectory has truth. Returns the folder
    (``rgbd``, ``frames``) or the video's path (``mp4``).
    """
    from PIL import Image

    if format not in ("rgbd", "frames", "mp4"):
        raise ConfigError(f"write_trajectory: format must be rgbd, frames or mp4, got {format!r}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder}: write_trajectory needs an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"fps": traj.fps, "time_s": [f.time_s for f in traj.frames]}
    if traj.truth is not None:
        (folder / "truth.json").write_text(json.dumps(_truth_json(traj.truth), indent=1))
    if format == "mp4":
        return _write_mp4(traj, folder / f"{traj.episode_id}.mp4")
    if format == "rgbd":
        if any(f.depth is None for f in traj.frames):
            raise ConfigError(f"write_trajectory: {traj.episode_id} has frames without depth; use frames or mp4")
        (folder / "rgb").mkdir()
        (folder / "depth").mkdir()
        for f in traj.frames:
            Image.fromarray(f.image).save(folder / "rgb" / f"{f.index:06d}.png")
            np.save(folder / "depth" / f"{f.index:06d}.npy", np.asarray(f.depth, dtype=np.float32))
        if traj.intrinsics is not None:
            (folder / "camera.json").write_text(json.dumps(traj.intrinsics.to_dict()))
    else:
        for f in traj.frames:
            Image.fromarray(f.image).save(folder / f"{f.index:06d}.png")
    (folder / "frames.json").write_text(json.dumps(meta))
    return folder


def _write_mp4(traj: Trajectory, path: Path) -> Path:
    from fractions import Fraction

    from spatialforge._optional import require

    av = require("av", extra="video", feature="writing mp4 trajectories")

    h, w = traj.frames[0].image.shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(traj.fps).limit_denominator(1000))
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for f in traj.frames:
            img = np.ascontiguousarray(f.image[: h - h % 2, : w - w % 2])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class _TruthSegmenter:
    """Segmenter stage giving, for each box, the exact instance mask that fills most of it."""

    name = "truth"
    kind = "segmenter"
    model_id = "synth-instances"

    def __init__(self, lookup: dict[bytes, int], instances: np.ndarray) -> None:
        self.lookup, self.instances = lookup, instances

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def __call__(self, images: Any, boxes: Any) -> list[Any]:
        from spatialforge.perception.types import MaskSet

        out = []
        for img, bx in zip(images, boxes, strict=True):
            inst = self.instances[self.lookup[_key(img)]]
            masks = np.zeros((len(bx), *inst.shape), dtype=bool)
            for i, (x0, y0, x1, y1) in enumerate(np.asarray(bx).reshape(-1, 4)):
                win = inst[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))]
                ids, counts = np.unique(win[win > 0], return_counts=True)
                if len(ids):
                    masks[i] = inst == ids[int(np.argmax(counts))]
            out.append(MaskSet(masks, np.ones(len(bx), np.float32)))
        return out


def _key(image: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def oracle_stages(traj: Trajectory, *, masks: str = "exact", distractor: bool = False,
                  depth_scale: float | None = None) -> Any:
    """Perception stages that read a synthetic trajectory's truth: the exact geometry path for tests and benchmarks.

    The detector (a :class:`~spatialforge.perception.backends.stub.GivenDetector`) returns, for each prompt
    naming a thing of the scene (``gripper``, ``orange cube``, ``blue box``), the box around that thing's
    visible pixels (score 0.9); with ``distractor=True`` it also returns the blue box under every other prompt
    (score 0.6), so choosing by identity matters. ``masks``: ``exact`` (the instance masks) or ``box`` (the
    boxes filled, :class:`~spatialforge.perception.backends.stub.BoxSegmenter`). ``depth_scale``: also give a
    depth stage (:class:`~spatialforge.perception.backends.stub.GivenDepth`) returning the exact depth times
    this constant (an RGB-only episode's depth model with an unknown scale).
    """
    from spatialforge.perception.backends.stub import BoxSegmenter, GivenDepth, GivenDetector
    from spatialforge.perception.types import Detections
    from spatialforge.reward.engine import RewardStages

    if traj.truth is None or "instances" not in traj.truth:
        raise ConfigError(f"oracle_stages: {traj.episode_id} has no synthetic truth")
    if masks not in ("exact", "box"):
        raise ConfigError(f"oracle_stages: masks must be exact or box, got {masks!r}")
    instances, depth = traj.truth["instances"], traj.truth["depth"]
    ids = traj.truth["instance_ids"]
    lookup = {_key(f.image): i for i, f in enumerate(traj.frames)}

    def box_of(inst: np.ndarray, iid: int) -> np.ndarray | None:
        rows, cols = np.nonzero(inst == iid)
        if len(rows) == 0:
            return None
        return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float32)

    def detect(image: np.ndarray, prompts: Any) -> Detections:
        inst = instances[lookup[_key(image)]]
        boxes, scores, labels = [], [], []
        for p in prompts:
            if p in ids and (b := box_of(inst, ids[p])) is not None:
                boxes.append(b)
                scores.append(0.9)
                labels.append(p)
            if distractor and p != "blue box" and (b := box_of(inst, ids["blue box"])) is not None:
                boxes.append(b)
                scores.append(0.6)
                labels.append(p)
        if not boxes:
            return Detections.empty()
        return Detections(np.stack(boxes), np.array(scores, np.float32), tuple(labels))

    segmenter = _TruthSegmenter(lookup, instances) if masks == "exact" else BoxSegmenter()
    depth_stage = None
    if depth_scale is not None:
        depth_stage = GivenDepth(lambda img: (depth[lookup[_key(img)]] * float(depth_scale), None),
                                 model_id=f"synth-depth-x{depth_scale:g}")
    return RewardStages(GivenDetector(detect), segmenter, depth_stage)
