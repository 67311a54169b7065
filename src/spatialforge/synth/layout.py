"""Scene layout sampling for the synthetic RGB-D generator.

Everything here is pure geometry and seeded sampling, no pixels: the camera (intrinsics and pose),
the room (floor and walls) and the objects (tables and the items on the floor or on table tops),
each object made of one or more analytic primitives (yawed upright boxes, upright cylinders).

World frame: metres, ``z`` up, the floor is the plane ``z = 0`` and the camera centre is at
``(0, 0, camera_height)``. Camera frame: OpenCV (``x`` right, ``y`` down, ``z`` forward).
See :func:`camera_pose` for the pose convention and ``docs/synthetic.md`` for the ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from spatialforge.errors import ConfigError

__all__ = [
    "PALETTE",
    "PART_CATEGORIES",
    "Box",
    "Category",
    "Cylinder",
    "Part",
    "PlacedObject",
    "SceneLayout",
    "SynthConfig",
    "Wall",
    "camera_pose",
    "sample_layout",
]

#: Rays farther than this (z-depth, metres) are invalid (depth 0).
MAX_DEPTH_M = 20.0

#: Named colours (sRGB) of objects; the caption is ``"<colour> <category>"``.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 35, 35),
    "blue": (40, 70, 200),
    "green": (40, 150, 60),
    "yellow": (230, 205, 40),
    "orange": (235, 125, 30),
    "purple": (125, 55, 160),
    "white": (235, 235, 230),
    "black": (30, 30, 32),
    "grey": (125, 125, 128),
    "brown": (115, 75, 40),
    "pink": (235, 130, 170),
    "teal": (30, 140, 140),
}

#: Table finishes: caption ``"<finish> table"``.
TABLE_FINISHES: dict[str, tuple[int, int, int]] = {
    "wooden": (150, 105, 62),
    "white": (228, 226, 220),
    "black": (38, 38, 40),
    "grey": (135, 135, 138),
}

WALL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (205, 198, 182), (190, 195, 200), (196, 204, 188), (210, 200, 196), (185, 185, 180),
)
FLOOR_STYLES: dict[str, tuple[int, int, int]] = {
    "planks": (156, 118, 80),
    "tiles": (165, 163, 156),
    "carpet": (112, 116, 128),
}

# Table geometry (metres).
TABLE_TOP_THICKNESS = 0.04
TABLE_LEG_SIZE = 0.05
TABLE_LEG_INSET = 0.03


@dataclass(frozen=True)
class Category:
    """An object category: shape, size ranges (metres) and where it may stand.

    Boxes: ``size_x``/``size_y`` are the two horizontal sides, ``size_z`` the height. Cylinders:
    ``size_x`` is the diameter (``size_y`` is ignored), ``size_z`` the height. ``floor_weight`` and
    ``table_weight`` are the relative sampling weights for floor and table-top slots (0 = never).
    """

    name: str
    shape: Literal["box", "cylinder"]
    size_x: tuple[float, float]
    size_y: tuple[float, float]
    size_z: tuple[float, float]
    floor_weight: float
    table_weight: float


CATEGORIES: tuple[Category, ...] = (
    # cylinders
    Category("mug", "cylinder", (0.08, 0.10), (0.0, 0.0), (0.09, 0.12), 0.0, 3.0),
    Category("bottle", "cylinder", (0.07, 0.09), (0.0, 0.0), (0.22, 0.32), 0.2, 3.0),
    Category("can", "cylinder", (0.065, 0.075), (0.0, 0.0), (0.11, 0.13), 0.0, 1.5),
    Category("vase", "cylinder", (0.12, 0.20), (0.0, 0.0), (0.25, 0.45), 0.8, 2.0),
    Category("pot", "cylinder", (0.15, 0.30), (0.0, 0.0), (0.12, 0.25), 1.5, 1.0),
    Category("bucket", "cylinder", (0.25, 0.32), (0.0, 0.0), (0.25, 0.35), 1.5, 0.0),
    Category("bin", "cylinder", (0.25, 0.35), (0.0, 0.0), (0.30, 0.50), 2.0, 0.0),
    Category("stool", "cylinder", (0.30, 0.40), (0.0, 0.0), (0.40, 0.60), 1.2, 0.0),
    # boxes
    Category("box", "box", (0.20, 0.60), (0.20, 0.60), (0.20, 0.60), 3.0, 0.8),
    Category("book stack", "box", (0.15, 0.25), (0.12, 0.18), (0.06, 0.20), 0.3, 2.0),
    Category("crate", "box", (0.40, 0.60), (0.30, 0.40), (0.25, 0.35), 1.5, 0.0),
    Category("cabinet", "box", (0.80, 1.20), (0.40, 0.50), (0.80, 1.40), 1.0, 0.0),
    Category("speaker", "box", (0.15, 0.30), (0.15, 0.25), (0.20, 0.45), 1.0, 1.2),
    Category("suitcase", "box", (0.40, 0.55), (0.20, 0.30), (0.55, 0.75), 1.2, 0.0),
    Category("monitor", "box", (0.45, 0.60), (0.06, 0.08), (0.30, 0.45), 0.0, 1.0),
)
#: Categories added only with ``SynthConfig(parts=True)`` (objects whose parts carry actions).
PART_CATEGORIES: tuple[Category, ...] = (
    Category("knife", "box", (0.20, 0.28), (0.025, 0.035), (0.015, 0.02), 0.0, 2.5),
    Category("kettle", "cylinder", (0.14, 0.18), (0.0, 0.0), (0.18, 0.24), 0.0, 2.0),
)
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in (*CATEGORIES, *PART_CATEGORIES)}


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic scene generator (all lengths in metres, angles in degrees).

    ``n_objects`` counts the items standing on the floor or on table tops; tables come on top of
    that (``n_tables``). Ranges are inclusive ``(low, high)`` pairs, ``low <= high``.
    ``pitch_range_deg``: positive = looking down; negative values look up (supported down to
    -45). ``depth_noise`` is the sigma of a multiplicative Gaussian applied per valid pixel and
    ``depth_dropout`` the fraction of valid pixels set to 0. ``parts`` (off by default, so existing
    datasets do not change) adds knives and kettles to the table-top categories and gives mugs,
    knives and kettles labelled parts with actions (handle: hold, blade: cut with, spout: pour),
    each a small box of the object with its own mask (``docs/affordance.md``, ``docs/formats.md``).
    """

    width: int = 640
    height: int = 480
    n_objects: tuple[int, int] = (4, 10)
    n_tables: tuple[int, int] = (0, 2)
    camera_height_range: tuple[float, float] = (0.9, 1.8)
    pitch_range_deg: tuple[float, float] = (5.0, 45.0)
    roll_range_deg: tuple[float, float] = (-15.0, 15.0)
    hfov_range_deg: tuple[float, float] = (50.0, 80.0)
    depth_noise: float = 0.0
    depth_dropout: float = 0.0
    depth_format: str = "png"
    side_wall_probability: float = 0.5
    duplicate_caption_probability: float = 0.3
    parts: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.parts, bool | np.bool_):
            raise ConfigError(f"SynthConfig.parts must be true or false, got {self.parts!r}")
        object.__setattr__(self, "parts", bool(self.parts))
        for name, lo, hi in (("width", 16, 8192), ("height", 16, 8192)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
                raise ConfigError(f"SynthConfig.{name} must be an integer in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, int(value))
        self._check_range("n_objects", 0, 40, integer=True)
        self._check_range("n_tables", 0, 4, integer=True)
        self._check_range("camera_height_range", 0.3, 5.0)
        self._check_range("pitch_range_deg", -60.0, 80.0)
        self._check_range("roll_range_deg", -45.0, 45.0)
        self._check_range("hfov_range_deg", 20.0, 120.0)
        self._check_scalar("depth_noise", 0.0, 0.5, hi_open=False)
        self._check_scalar("depth_dropout", 0.0, 1.0, hi_open=True)
        self._check_scalar("side_wall_probability", 0.0, 1.0, hi_open=False)
        self._check_scalar("duplicate_caption_probability", 0.0, 1.0, hi_open=False)
        if self.depth_format not in ("png", "npy"):
            raise ConfigError(f"SynthConfig.depth_format must be 'png' or 'npy', got {self.depth_format!r}")

    def _check_range(self, name: str, lo: float, hi: float, *, integer: bool = False) -> None:
        value = getattr(self, name)
        kind = "integers" if integer else "numbers"
        bad = ConfigError(f"SynthConfig.{name} must be a (low, high) pair of {kind} with "
                          f"{lo} <= low <= high <= {hi}, got {value!r}")
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise bad
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise bad
            if integer and int(v) != v:
                raise bad
            if not math.isfinite(float(v)):
                raise bad
            out.append(int(v) if integer else float(v))
        if not lo <= out[0] <= out[1] <= hi:
            raise bad
        object.__setattr__(self, name, (out[0], out[1]))

    def _check_scalar(self, name: str, lo: float, hi: float, *, hi_open: bool) -> None:
        value = getattr(self, name)
        ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
              and math.isfinite(float(value)) and lo <= float(value) and
              (float(value) < hi if hi_open else float(value) <= hi))
        if not ok:
            interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise ConfigError(f"SynthConfig.{name} must be a number in {interval}, got {value!r}")
        object.__setattr__(self, name, float(value))


# ----------------------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------------------

def camera_pose(height: float, pitch_deg: float, roll_deg: float, yaw_deg: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The camera pose in the world frame (``z`` up, floor at ``z = 0``), OpenCV camera axes.

    Returns ``(R_world_from_cam, position)``: the columns of the 3x3 rotation are the camera's
    ``x`` (right), ``y`` (down) and ``z`` (forward, optical axis) directions in world
    coordinates, so ``p_world = R_world_from_cam @ p_cam + position``; ``position`` is
    ``(0, 0, height)``.

    The angles are applied as ``R = Rz(yaw) @ R_level @ Rx(-pitch) @ Rz(-roll)``, where ``R_level``
    is the level camera looking along world ``+y`` (x_cam = +x, y_cam = -z, z_cam = +y):

    * ``yaw_deg``: counter-clockwise rotation about world ``z`` seen from above; yaw 0 looks along
      world ``+y``, yaw 90 along ``-x``.
    * ``pitch_deg``: rotation about the camera ``x`` axis; **positive = looking down** (the
      optical axis has world ``z`` component ``-sin(pitch)``).
    * ``roll_deg``: rotation about the optical axis, applied last, so the image rotates by exactly
      ``roll``. **Positive roll = the camera's right side tilts up** (its ``x`` axis gets world
      ``z`` component ``sin(roll) cos(pitch)``), which makes the picture content appear rotated
      **clockwise** as seen by the viewer: the horizon descends from left to right, with image
      slope ``dv/du = tan(roll)`` (rows grow downwards).
    """
    for name, value in (("height", height), ("pitch_deg", pitch_deg), ("roll_deg", roll_deg),
                        ("yaw_deg", yaw_deg)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not math.isfinite(float(value)):
            raise ValueError(f"camera_pose: {name} must be a finite number, got {value!r}")
    if not -89.0 <= pitch_deg <= 89.0:
        raise ValueError(f"camera_pose: pitch_deg must be in [-89, 89], got {pitch_deg!r}")
    p, r, y = (math.radians(float(a)) for a in (pitch_deg, roll_deg, yaw_deg))
    r_level = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    cy_, sy_ = math.cos(y), math.sin(y)
    rz_yaw = np.array([[cy_, -sy_, 0.0], [sy_, cy_, 0.0], [0.0, 0.0, 1.0]])
    cp, sp = math.cos(-p), math.sin(-p)
    rx_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    cr, sr = math.cos(-r), math.sin(-r)
    rz_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    rot = rz_yaw @ r_level @ rx_pitch @ rz_roll
    return rot, np.array([0.0, 0.0, float(height)])


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    """An upright box primitive: centre (world), half sizes along its yawed x/y axes and z."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float  # radians, counter-clockwise about z

    def corners(self) -> np.ndarray:
        """The 8 corners, shape (8, 3)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1], dtype=float) * self.half[0]
        sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1], dtype=float) * self.half[1]
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=float) * self.half[2]
        return np.stack([self.center[0] + c * sx - s * sy, self.center[1] + s * sx + c * sy,
                         self.center[2] + sz], axis=1)


@dataclass(frozen=True)
class Cylinder:
    """An upright cylinder primitive: axis at ``(x, y)``, radius, bottom and top heights."""

    x: float
    y: float
    radius: float
    z0: float
    z1: float

    def corners(self) -> np.ndarray:
        """The 8 corners of its axis-aligned bounding box, shape (8, 3)."""
        r = self.radius
        return Box((self.x, self.y, 0.5 * (self.z0 + self.z1)), (r, r, 0.5 * (self.z1 - self.z0)),
                   0.0).corners()


@dataclass(frozen=True)
class Wall:
    """A vertical wall plane; ``normal`` is horizontal and points into the room (to the camera)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Part:
    """A labelled part of an object (a box primitive of the object with its own mask).

    ``action``: what the part affords (``"hold"``, ``"cut with"``, ``"pour"``); ``purpose``: for a
    part that is held, what holding it is for (``"pour"``, ``"cut"``), else ``None``.
    """

    name: str
    action: str
    purpose: str | None
    box: Box


@dataclass
class PlacedObject:
    """An object of the scene with its ground truth and its render primitives."""

    id: int
    category: str
    color: str
    rgb: tuple[int, int, int]
    shape: Literal["box", "cylinder"]
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw_deg: float
    support: str
    primitives: list[Box | Cylinder] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return f"{self.color} {self.category}"


@dataclass
class SceneLayout:
    """The sampled geometry of one scene (camera, room, objects)."""

    intrinsics: dict[str, float | int]
    rotation: np.ndarray
    position: np.ndarray
    pitch_deg: float
    roll_deg: float
    yaw_deg: float
    walls: list[Wall]
    floor_style: str
    floor_rgb: tuple[int, int, int]
    objects: list[PlacedObject]


# ----------------------------------------------------------------------------------------------
# Sampling helpers
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rect:
    """A yawed footprint rectangle on a horizontal plane."""

    x: float
    y: float
    hx: float
    hy: float
    yaw: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([c, s]), np.array([-s, c])

    def corners(self) -> np.ndarray:
        ex, ey = self.axes()
        ctr = np.array([self.x, self.y])
        return np.array([ctr + sx * self.hx * ex + sy * self.hy * ey
                         for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])

    def overlaps(self, other: _Rect, margin: float) -> bool:
        """Separating-axis test with both rectangles grown by ``margin / 2`` on every side."""
        d = np.array([other.x - self.x, other.y - self.y])
        a1, a2 = self.axes()
        b1, b2 = other.axes()
        ha = (self.hx + margin / 2, self.hy + margin / 2)
        hb = (other.hx + margin / 2, other.hy + margin / 2)
        for n in (a1, a2, b1, b2):
            ra = ha[0] * abs(a1 @ n) + ha[1] * abs(a2 @ n)
            rb = hb[0] * abs(b1 @ n) + hb[1] * abs(b2 @ n)
            if abs(d @ n) >= ra + rb:
                return False
        return True

    def distance_to(self, px: float, py: float) -> float:
        """Horizontal distance from a point to the rectangle (0 inside)."""
        ex, ey = self.axes()
        d = np.array([px - self.x, py - self.y])
        lx, ly = abs(d @ ex) - self.hx, abs(d @ ey) - self.hy
        return math.hypot(max(lx, 0.0), max(ly, 0.0))


def _r4(x: float) -> float:
    """Round to 0.1 mm (sampled geometry is stored rounded so that the GT files are exact)."""
    return round(float(x), 4)


def _sample_intrinsics(rng: np.random.Generator, config: SynthConfig) -> dict[str, float | int]:
    w, h = config.width, config.height
    hfov = math.radians(rng.uniform(*config.hfov_range_deg))
    fx = (w / 2.0) / math.tan(hfov / 2.0)
    fy = fx * (1.0 + rng.uniform(-0.01, 0.01))
    cx = (w - 1) / 2.0 + rng.uniform(-0.02, 0.02) * w
    cy = (h - 1) / 2.0 + rng.uniform(-0.02, 0.02) * h
    return {"fx": round(fx, 4), "fy": round(fy, 4), "cx": round(cx, 4), "cy": round(cy, 4),
            "width": w, "height": h}


class _Projector:
    """Projects world points into the sampled camera."""

    def __init__(self, intr: dict[str, float | int], rot: np.ndarray, pos: np.ndarray) -> None:
        self.intr, self.rot, self.pos = intr, rot, pos

    def project(self, p: np.ndarray) -> tuple[float, float, float]:
        pc = (np.asarray(p, dtype=float) - self.pos) @ self.rot
        z = float(pc[2])
        if z <= 1e-6:
            return math.nan, math.nan, z
        return (float(self.intr["fx"]) * pc[0] / z + float(self.intr["cx"]),
                float(self.intr["fy"]) * pc[1] / z + float(self.intr["cy"]), z)

    def in_image(self, p: np.ndarray, min_z: float = 0.1, margin: float = 0.0) -> bool:
        """Whether ``p`` is in front of the camera and projects at least ``margin`` (a fraction of
        the image size) inside the image."""
        u, v, z = self.project(p)
        w, h = float(self.intr["width"]), float(self.intr["height"])
        return (z >= min_z and margin * w <= u <= (1.0 - margin) * w - 1.0
                and margin * h <= v <= (1.0 - margin) * h - 1.0)


def _weighted_choice(rng: np.random.Generator, items: list[Category], weights: np.ndarray) -> Category:
    return items[int(rng.choice(len(items), p=weights / weights.sum()))]


def _sample_size(rng: np.random.Generator, cat: Category) -> tuple[float, float, float]:
    """(size_x, size_y, height); cylinders get size_x = size_y = diameter."""
    sx = _r4(rng.uniform(*cat.size_x))
    sy = sx if cat.shape == "cylinder" else _r4(rng.uniform(*cat.size_y))
    sz = _r4(rng.uniform(*cat.size_z))
    if cat.shape == "box" and rng.random() < 0.5:
        sx, sy = sy, sx
    return sx, sy, sz


def _table_primitives(x: float, y: float, yaw: float, sx: float, sy: float, h: float) -> list[Box]:
    """Top slab plus four legs (same instance)."""
    c, s = math.cos(yaw), math.sin(yaw)
    top = Box((x, y, h - TABLE_TOP_THICKNESS / 2), (sx / 2, sy / 2, TABLE_TOP_THICKNESS / 2), yaw)
    leg_h = h - TABLE_TOP_THICKNESS
    ox = sx / 2 - TABLE_LEG_INSET - TABLE_LEG_SIZE / 2
    oy = sy / 2 - TABLE_LEG_INSET - TABLE_LEG_SIZE / 2
    prims = [top]
    for gx, gy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        lx, ly = gx * ox, gy * oy
        prims.append(Box((x + c * lx - s * ly, y + s * lx + c * ly, leg_h / 2),
                         (TABLE_LEG_SIZE / 2, TABLE_LEG_SIZE / 2, leg_h / 2), yaw))
    return prims


def _item_primitives(cat: Category, x: float, y: float, z0: float, size: tuple[float, float, float],
                     yaw: float) -> list[Box | Cylinder]:
    if cat.shape == "cylinder":
        return [Cylinder(x, y, size[0] / 2, z0, z0 + size[2])]
    return [Box((x, y, z0 + size[2] / 2), (size[0] / 2, size[1] / 2, size[2] / 2), yaw)]


def _outward_box(x: float, y: float, phi: float, inner: float, length: float, half_w: float, zc: float,
                 half_h: float) -> Box:
    """A box sticking out horizontally from ``(x, y)`` along angle ``phi``, from radius ``inner`` on."""
    r = inner + length / 2
    return Box((_r4(x + r * math.cos(phi)), _r4(y + r * math.sin(phi)), _r4(zc)), (length / 2, half_w, half_h), phi)


def _part_primitives(cat: Category, x: float, y: float, z0: float, size: tuple[float, float, float], yaw: float,
                     pos: np.ndarray, rng: np.random.Generator) -> tuple[list[Box | Cylinder], list[Part]]:
    """Primitives and parts of the categories that have parts (``SynthConfig(parts=True)`` only).

    A mug has a handle and a kettle a handle and a spout on opposite sides, turned roughly sideways
    to the camera (so that they are usually in view); a knife is a handle box and a thinner blade box
    along its long axis, which together fill the object's box.
    """
    h = size[2]
    if cat.name in ("mug", "kettle"):
        radius = size[0] / 2
        view = math.atan2(pos[1] - y, pos[0] - x)
        phi = view + (1.0 if rng.random() < 0.5 else -1.0) * math.pi / 2 + math.radians(rng.uniform(-40.0, 40.0))
        body = Cylinder(x, y, radius, z0, z0 + h)
        handle = _outward_box(x, y, phi, radius - 0.003, 0.035, 0.006, z0 + 0.5 * h, 0.3 * h)
        parts = [Part("handle", "hold", "pour", handle)]
        if cat.name == "kettle":
            spout = _outward_box(x, y, phi + math.pi, radius - 0.003, 0.06, 0.012, z0 + 0.6 * h, 0.012)
            parts.append(Part("spout", "pour", None, spout))
        return [body, *(p.box for p in parts)], parts
    # knife: handle 40 % of the length, full height; blade 60 %, half the height, 80 % of the width
    long_x = size[0] >= size[1]
    length, width = (size[0], size[1]) if long_x else (size[1], size[0])
    axis = yaw if long_x else yaw + math.pi / 2
    sign = 1.0 if rng.random() < 0.5 else -1.0
    ex, ey = sign * math.cos(axis), sign * math.sin(axis)
    lh, lb = 0.4 * length, 0.6 * length
    ch, cb = -length / 2 + lh / 2, length / 2 - lb / 2
    handle = Box((_r4(x + ch * ex), _r4(y + ch * ey), _r4(z0 + h / 2)), (lh / 2, width / 2, h / 2), axis)
    blade = Box((_r4(x + cb * ex), _r4(y + cb * ey), _r4(z0 + h / 4)), (lb / 2, 0.4 * width, h / 4), axis)
    parts = [Part("handle", "hold", "cut", handle), Part("blade", "cut with", None, blade)]
    return [handle, blade], parts


#: Categories with parts: their primitives come from :func:`_part_primitives` when parts are on.
_PART_BUILDERS = frozenset({"mug", "kettle", "knife"})


@dataclass
class _Spec:
    """An item to place: its category, colour and support slot (-1 = floor, else table index)."""

    category: Category
    color: str
    slot: int


# ----------------------------------------------------------------------------------------------
# Layout sampling
# ----------------------------------------------------------------------------------------------

def _sample_walls(rng: np.random.Generator, config: SynthConfig, rot: np.ndarray, pos: np.ndarray,
                  intr: dict[str, float | int]) -> tuple[list[Wall], float]:
    """A back wall facing the camera (always visible at the top centre) and maybe a side wall.

    Returns the walls and the forward angle (radians, from world +x) of the camera.
    """
    fwd = rot[:, 2]
    heading = math.atan2(fwd[1], fwd[0])
    # Horizontal distance at which the ray through the top-centre pixel meets the floor.
    top_ray = rot @ np.array([0.0, -float(intr["cy"]) / float(intr["fy"]), 1.0])
    far = pos[2] / -top_ray[2] * math.hypot(top_ray[0], top_ray[1]) if top_ray[2] < -1e-9 else math.inf
    d_hi = min(8.0, 0.7 * far)
    d_lo = min(3.5, 0.7 * d_hi)
    d_hi, d_lo = max(d_hi, 1.6), max(d_lo, 1.5)
    dist = rng.uniform(d_lo, d_hi)
    phi = heading + math.radians(rng.uniform(-25.0, 25.0))
    walls_rgb = [WALL_COLOURS[int(i)] for i in rng.choice(len(WALL_COLOURS), size=2, replace=False)]
    out_dir = np.array([math.cos(phi), math.sin(phi)])
    back_pt = pos[:2] + dist * out_dir
    walls = [Wall((_r4(back_pt[0]), _r4(back_pt[1]), 0.0),
                  (float(-out_dir[0]), float(-out_dir[1]), 0.0), walls_rgb[0])]
    if rng.random() < config.side_wall_probability:
        side = 1.0 if rng.random() < 0.5 else -1.0  # +1: on the camera's left
        lateral = np.array([-out_dir[1], out_dir[0]]) * side
        offset = rng.uniform(1.2, 3.0)
        pt = pos[:2] + offset * lateral
        walls.append(Wall((_r4(pt[0]), _r4(pt[1]), 0.0), (float(-lateral[0]), float(-lateral[1]), 0.0),
                          walls_rgb[1]))
    return walls, heading


def _inside_room(rect: _Rect, walls: list[Wall], margin: float = 0.03) -> bool:
    for wall in walls:
        n = np.array(wall.normal[:2])
        p = np.array(wall.point[:2])
        if np.any((rect.corners() - p) @ n < margin):
            return False
    return True


def _sample_specs(rng: np.random.Generator, config: SynthConfig, n_tables: int) -> list[_Spec]:
    """Categories, colours and support slots of the items (tables excluded)."""
    n_items = int(rng.integers(config.n_objects[0], config.n_objects[1] + 1))
    slots: list[int] = []
    remaining = n_items
    for t in range(n_tables):
        k = min(remaining, int(rng.integers(2, 5)))
        slots += [t] * k
        remaining -= k
    slots += [-1] * remaining
    cats = list(CATEGORIES) + (list(PART_CATEGORIES) if config.parts else [])
    w_floor = np.array([c.floor_weight for c in cats])
    w_table = np.array([c.table_weight for c in cats])
    colours = list(PALETTE)
    specs = []
    for slot in slots:
        cat = _weighted_choice(rng, cats, w_table if slot >= 0 else w_floor)
        specs.append(_Spec(cat, colours[int(rng.integers(len(colours)))], slot))
    # Deliberate caption collisions: another item gets an existing item's category and colour.
    if len(specs) >= 2 and rng.random() < config.duplicate_caption_probability:
        order = rng.permutation(len(specs))
        for j in order:
            donors = [i for i in range(len(specs)) if i != j and
                      (specs[i].category.table_weight if specs[j].slot >= 0
                       else specs[i].category.floor_weight) > 0]
            if donors:
                i = donors[int(rng.integers(len(donors)))]
                specs[j].category, specs[j].color = specs[i].category, specs[i].color
                break
    return specs


def _sample_floor_rect(rng: np.random.Generator, heading: float, half_fov: float, pos: np.ndarray,
                       d_range: tuple[float, float], hx: float, hy: float, yaw: float) -> _Rect:
    ang = heading + rng.uniform(-half_fov, half_fov)
    dist = d_range[0] + (d_range[1] - d_range[0]) * rng.random() ** 1.3
    return _Rect(_r4(pos[0] + dist * math.cos(ang)), _r4(pos[1] + dist * math.sin(ang)), hx, hy, yaw)


def _visible_enough(proj: _Projector, center: np.ndarray, height: float) -> bool:
    """The box centre or the centre of its top face projects into the image."""
    top = center + np.array([0.0, 0.0, height / 2])
    return proj.in_image(center) or proj.in_image(top)


def sample_layout(config: SynthConfig, rng: np.random.Generator) -> SceneLayout:
    """Sample the full geometry of one scene from ``rng`` (seeded by the caller).

    Items that find no room on their table move to the floor when their category allows it;
    items that cannot be placed after many attempts are dropped, so a scene may hold fewer items
    than sampled from ``config.n_objects``.
    """
    intr = _sample_intrinsics(rng, config)
    height = _r4(rng.uniform(*config.camera_height_range))
    pitch = round(float(rng.uniform(*config.pitch_range_deg)), 3)
    roll = round(float(rng.uniform(*config.roll_range_deg)), 3)
    yaw = round(float(rng.uniform(-180.0, 180.0)), 3)
    rot, pos = camera_pose(height, pitch, roll, yaw)
    proj = _Projector(intr, rot, pos)
    walls, heading = _sample_walls(rng, config, rot, pos, intr)
    floor_style = list(FLOOR_STYLES)[int(rng.integers(len(FLOOR_STYLES)))]

    hfov = 2.0 * math.atan2(float(intr["width"]) / 2.0, float(intr["fx"]))
    half_fov = hfov / 2.0 + math.radians(12.0)
    back_dist = float(-(np.array(walls[0].point[:2]) - pos[:2]) @ np.array(walls[0].normal[:2]))
    d_max = max(1.0, min(6.0, back_dist))
    n_tables = int(rng.integers(config.n_tables[0], config.n_tables[1] + 1))
    if config.parts and config.n_tables[1] >= 1:
        n_tables = max(n_tables, 1)  # the objects with parts stand on tables
    specs = _sample_specs(rng, config, n_tables)

    footprints: list[_Rect] = []
    placed: list[PlacedObject] = []  # ids assigned at the end
    margin = 0.05

    def free(rect: _Rect) -> bool:
        return (_inside_room(rect, walls) and rect.distance_to(pos[0], pos[1]) >= 0.4
                and not any(rect.overlaps(f, margin) for f in footprints))

    # Tables first (largest footprints).
    tables: list[tuple[PlacedObject, _Rect] | None] = []
    for _ in range(n_tables):
        done = None
        for _attempt in range(80):
            sx, sy = _r4(rng.uniform(0.6, 1.6)), _r4(rng.uniform(0.5, 0.9))
            th = _r4(rng.uniform(0.65, 0.8))
            tyaw = round(float(rng.uniform(-180.0, 180.0)), 2)
            rect = _sample_floor_rect(rng, heading, half_fov, pos, (1.0, min(4.5, d_max)), sx / 2, sy / 2,
                                      math.radians(tyaw))
            # The centre of the top must be well inside the image, so that its items are in view.
            if not free(rect) or not proj.in_image(np.array([rect.x, rect.y, th]), margin=0.12):
                continue
            finish = list(TABLE_FINISHES)[int(rng.integers(len(TABLE_FINISHES)))]
            obj = PlacedObject(0, "table", finish, TABLE_FINISHES[finish], "box",
                               (rect.x, rect.y, th / 2), (sx, sy, th), tyaw, "floor",
                               list(_table_primitives(rect.x, rect.y, math.radians(tyaw), sx, sy, th)))
            footprints.append(rect)
            placed.append(obj)
            done = (obj, rect)
            break
        tables.append(done)

    # Items on table tops, then on the floor. An item that finds no room on its table (or whose
    # table could not be placed) moves to the floor if its category stands on floors.
    table_items: dict[int, list[_Rect]] = {}
    queue = sorted(specs, key=lambda s: -s.slot)
    while queue:
        spec = queue.pop(0)
        cat = spec.category
        on_table = spec.slot >= 0 and tables[spec.slot] is not None
        if spec.slot >= 0 and not on_table and cat.floor_weight <= 0:
            continue  # its table could not be placed and it does not stand on floors
        size = _sample_size(rng, cat)
        placed_ok = False
        for attempt in range(60):
            if attempt and attempt % 15 == 0:
                size = _sample_size(rng, cat)
            oyaw = 0.0 if cat.shape == "cylinder" else round(float(rng.uniform(-180.0, 180.0)), 2)
            if on_table:
                tobj, trect = tables[spec.slot]  # type: ignore[misc]  # on_table => placed
                lx = rng.uniform(-trect.hx, trect.hx)
                ly = rng.uniform(-trect.hy, trect.hy)
                ex, ey = trect.axes()
                xy = np.array([trect.x, trect.y]) + lx * ex + ly * ey
                rect = _Rect(_r4(xy[0]), _r4(xy[1]), size[0] / 2, size[1] / 2, math.radians(oyaw))
                inner = _Rect(trect.x, trect.y, trect.hx - 0.02, trect.hy - 0.02, trect.yaw)
                loc = (rect.corners() - np.array([inner.x, inner.y])) @ np.stack(inner.axes(), axis=1)
                if np.any(np.abs(loc[:, 0]) > inner.hx) or np.any(np.abs(loc[:, 1]) > inner.hy):
                    continue
                if any(rect.overlaps(f, 0.02) for f in table_items.get(spec.slot, [])):
                    continue
                z0 = tobj.size[2]
                support = f"table:{spec.slot}"
            else:
                rect = _sample_floor_rect(rng, heading, half_fov, pos, (0.8, d_max), size[0] / 2,
                                          size[1] / 2, math.radians(oyaw))
                if not free(rect):
                    continue
                z0 = 0.0
                support = "floor"
            center = np.array([rect.x, rect.y, z0 + size[2] / 2])
            if not _visible_enough(proj, center, size[2]):
                continue
            if config.parts and cat.name in _PART_BUILDERS:
                prims, parts = _part_primitives(cat, rect.x, rect.y, z0, size, math.radians(oyaw), pos, rng)
            else:
                prims, parts = _item_primitives(cat, rect.x, rect.y, z0, size, math.radians(oyaw)), []
            obj = PlacedObject(0, cat.name, spec.color, PALETTE[spec.color], cat.shape,
                               (rect.x, rect.y, z0 + size[2] / 2), size, oyaw, support, prims, parts)
            if on_table:
                table_items.setdefault(spec.slot, []).append(rect)
            else:
                footprints.append(rect)
            placed.append(obj)
            placed_ok = True
            break
        if not placed_ok and on_table and cat.floor_weight > 0:
            queue.append(_Spec(cat, spec.color, -1))

    # Ids: a random permutation of 1..N (so that tables are not always the first ids).
    ids = rng.permutation(len(placed)) + 1
    table_ids = {}
    for t, entry in enumerate(tables):
        if entry is not None:
            table_ids[t] = entry[0]
    for obj, new_id in zip(placed, ids, strict=True):
        obj.id = int(new_id)
    for obj in placed:
        if obj.support.startswith("table:"):
            obj.support = f"table:{table_ids[int(obj.support.split(':')[1])].id}"
    placed.sort(key=lambda o: o.id)
    return SceneLayout(intr, rot, pos, pitch, roll, yaw, walls, floor_style, FLOOR_STYLES[floor_style],
                       placed)
