"""Analytic, vectorised ray casting of a sampled layout, and :func:`generate_scene`.

One ray per pixel: pixel ``(u, v)`` (centre at integer coordinates) has the camera-frame direction
``((u - cx) / fx, (v - cy) / fy, 1)``, rotated into the world. Because that direction has unit
``z`` in the camera frame, the ray parameter of a hit *is* its z-depth. Every primitive (floor
plane, wall planes, yawed boxes by the slab method, cylinders by the quadratic plus the caps) is
intersected with all rays of its screen-space bounding rectangle at once, and a z-buffer keeps
the nearest hit. No per-pixel Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialforge.synth.layout import (
    MAX_DEPTH_M,
    Box,
    Cylinder,
    Part,
    PlacedObject,
    SceneLayout,
    SynthConfig,
    sample_layout,
)

__all__ = ["RenderOutput", "SyntheticScene", "generate_scene", "layout_parts", "render_layout", "scene_folder_name"]

GT_FORMAT = "spatialforge-synth-gt/1"
#: Fixed light direction in the world frame (unit vector towards the light).
LIGHT_DIR = np.array([0.30, -0.40, 0.866]) / np.linalg.norm([0.30, -0.40, 0.866])
AMBIENT = 0.35
BACKGROUND_RGB = (200, 212, 228)
RGB_NOISE = 3  # uniform integer noise in [-3, 3] per channel
_EPS_T = 1e-6

NormalFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class RenderOutput:
    """Noise-free render of a layout.

    ``depth`` is z-depth in metres (0 = no hit or beyond 20 m); ``unoccluded`` and ``truncated``
    map object id -> pixels covered when rendered alone (inside the image) / whether that
    footprint touches the image border. ``parts`` (only when the layout has parts) holds the
    1-based index of the visible part of every pixel in :func:`layout_parts` order (0 = none).
    """

    image: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    unoccluded: dict[int, int]
    truncated: dict[int, bool]
    parts: np.ndarray | None = None


@dataclass
class SyntheticScene:
    """One generated scene in memory (the contents of a scene folder plus its ground truth).

    ``depth`` is float32 metres with 0 = invalid, depth noise and dropout already applied.
    ``parts`` (``SynthConfig(parts=True)`` only): uint16 part ids per pixel (0 = no part), the
    ids of ``ground_truth["parts"]``.
    """

    scene_id: str
    image: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    camera: dict[str, Any]
    objects: list[dict[str, Any]]
    ground_truth: dict[str, Any]
    parts: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------
# Ray-primitive intersection (all arrays share one shape; t = inf where there is no hit)
# ----------------------------------------------------------------------------------------------

def _box_hits(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
              box: Box) -> tuple[np.ndarray, NormalFn]:
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    rel = o - np.asarray(box.center)
    ol = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
    dl = (c * dx + s * dy, -s * dx + c * dy, dz)
    tn: list[np.ndarray] = []
    tnear = tfar = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            inv = 1.0 / dl[k]
            t1 = (-box.half[k] - ol[k]) * inv
            t2 = (box.half[k] - ol[k]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            tn.append(lo)
            tnear = lo if tnear is None else np.maximum(tnear, lo)
            tfar = hi if tfar is None else np.minimum(tfar, hi)
    hit = (tnear <= tfar) & (tnear > _EPS_T)
    t = np.where(hit, tnear, np.inf)

    def normal(win: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a0, a1, a2 = tn[0][win], tn[1][win], tn[2][win]
        ax0 = (a0 >= a1) & (a0 >= a2)
        ax1 = ~ax0 & (a1 >= a2)
        ax2 = ~ax0 & ~ax1
        nlx = np.where(ax0, -np.sign(dl[0][win]), 0.0)
        nly = np.where(ax1, -np.sign(dl[1][win]), 0.0)
        nlz = np.where(ax2, -np.sign(dl[2][win]), 0.0)
        return c * nlx - s * nly, s * nlx + c * nly, nlz

    return t, normal


def _cylinder_hits(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray,
                   cyl: Cylinder) -> tuple[np.ndarray, NormalFn]:
    relx, rely, oz = o[0] - cyl.x, o[1] - cyl.y, o[2]
    r2 = cyl.radius * cyl.radius
    a = dx * dx + dy * dy
    b = 2.0 * (relx * dx + rely * dy)
    cc = relx * relx + rely * rely - r2
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = b * b - 4.0 * a * cc
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        zs = oz + ts * dz
        side = (disc >= 0) & (a > 1e-12) & (ts > _EPS_T) & (zs >= cyl.z0) & (zs <= cyl.z1)
        t = np.where(side, ts, np.inf)
        caps = []
        for zc in (cyl.z1, cyl.z0):
            tc = (zc - oz) / dz
            px, py = relx + tc * dx, rely + tc * dy
            ok = (tc > _EPS_T) & (px * px + py * py <= r2)
            tc = np.where(ok, tc, np.inf)
            caps.append(tc)
            t = np.minimum(t, tc)

    def normal(win: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tw = t[win]
        top = tw == caps[0][win]
        bottom = ~top & (tw == caps[1][win])
        sidew = ~top & ~bottom
        inv_r = 1.0 / cyl.radius
        nx = np.where(sidew, (relx + tw * dx[win]) * inv_r, 0.0)
        ny = np.where(sidew, (rely + tw * dy[win]) * inv_r, 0.0)
        nz = np.where(top, 1.0, np.where(bottom, -1.0, 0.0))
        return nx, ny, nz

    return t, normal


def _screen_rect(corners: np.ndarray, layout: SceneLayout, width: int, height: int
                 ) -> tuple[slice, slice] | None:
    """Pixel rectangle holding the projection of a convex primitive (``None``: not in view)."""
    pc = (corners - layout.position) @ layout.rotation
    full = (slice(0, height), slice(0, width))
    if np.any(pc[:, 2] <= 1e-3):
        return None if np.all(pc[:, 2] <= 0.0) else full
    intr = layout.intrinsics
    u = float(intr["fx"]) * pc[:, 0] / pc[:, 2] + float(intr["cx"])
    v = float(intr["fy"]) * pc[:, 1] / pc[:, 2] + float(intr["cy"])
    u0, u1 = max(0, math.floor(u.min()) - 1), min(width, math.ceil(u.max()) + 2)
    v0, v1 = max(0, math.floor(v.min()) - 1), min(height, math.ceil(v.max()) + 2)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def _hash2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) from two integer grids."""
    x = np.sin(a * 12.9898 + b * 78.233) * 43758.5453
    return x - np.floor(x)


def _floor_texture(style: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Brightness factor of the floor at world points (subtle planks, tiles or carpet)."""
    if style == "planks":
        width, length = 0.16, 1.1
        row = np.floor(py / width)
        xs = px + _hash2(row, row * 0.5 + 3.0) * length
        col = np.floor(xs / length)
        tone = 0.92 + 0.16 * _hash2(row, col)
        seam = ((py / width - row) < 0.04) | ((xs / length - col) < 0.006)
        return np.where(seam, 0.78, tone)
    if style == "tiles":
        size = 0.5
        ix, iy = np.floor(px / size), np.floor(py / size)
        tone = np.where((ix + iy) % 2 == 0, 1.0, 0.92)
        fx, fy = px / size - ix, py / size - iy
        grout = (fx < 0.02) | (fy < 0.02)
        return np.where(grout, 0.82, tone)
    return 0.95 + 0.08 * _hash2(np.floor(px / 0.04), np.floor(py / 0.04))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def layout_parts(layout: SceneLayout) -> list[tuple[PlacedObject, Part]]:
    """The parts of a layout in id order: objects by id, each object's parts in order (part id = index + 1)."""
    return [(obj, part) for obj in sorted(layout.objects, key=lambda o: o.id) for part in obj.parts]


def render_layout(layout: SceneLayout, rng: np.random.Generator) -> RenderOutput:
    """Ray cast ``layout``; ``rng`` only draws the RGB noise.

    Objects and the floor are shaded ``colour * (0.35 + 0.65 * max(0, n.l))`` with the fixed
    light :data:`LIGHT_DIR` (the floor also gets a subtle plank/tile/carpet texture); walls are a
    plain muted colour with a slight vertical gradient; rays that hit nothing are light blue-grey.
    """
    intr = layout.intrinsics
    w, h = int(intr["width"]), int(intr["height"])
    rot, o = layout.rotation, layout.position
    xc = (np.arange(w, dtype=np.float64) - float(intr["cx"])) / float(intr["fx"])
    yc = (np.arange(h, dtype=np.float64) - float(intr["cy"])) / float(intr["fy"])
    dx = rot[0, 0] * xc[None, :] + rot[0, 1] * yc[:, None] + rot[0, 2]
    dy = rot[1, 0] * xc[None, :] + rot[1, 1] * yc[:, None] + rot[1, 2]
    dz = rot[2, 0] * xc[None, :] + rot[2, 1] * yc[:, None] + rot[2, 2]

    zbuf = np.full((h, w), np.inf)
    surf = np.zeros((h, w), dtype=np.int16)  # 0 nothing, 1 floor, 2.. walls, then objects
    inst = np.zeros((h, w), dtype=np.uint16)
    nbuf = [np.zeros((h, w), dtype=np.float32) for _ in range(3)]
    all_parts = layout_parts(layout)
    part_code = {id(part.box): k + 1 for k, (_, part) in enumerate(all_parts)}
    pbuf = np.zeros((h, w), dtype=np.uint16) if all_parts else None

    # Planes (floor and walls) cover the whole image.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dz < -1e-12, -o[2] / dz, np.inf)
    win = t_floor < zbuf
    zbuf[win], surf[win], nbuf[2][win] = t_floor[win], 1, 1.0
    for k, wall in enumerate(layout.walls):
        n = np.asarray(wall.normal)
        den = n[0] * dx + n[1] * dy
        num = float((np.asarray(wall.point) - o) @ n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_wall = np.where(den < -1e-12, num / den, np.inf)
        win = t_wall < zbuf
        zbuf[win], surf[win] = t_wall[win], 2 + k
        for i in range(3):
            nbuf[i][win] = n[i]

    first_obj_code = 2 + len(layout.walls)
    unoccluded: dict[int, int] = {}
    truncated: dict[int, bool] = {}
    for j, obj in enumerate(layout.objects):
        own = np.zeros((h, w), dtype=bool)
        for prim in obj.primitives:
            rect = _screen_rect(prim.corners(), layout, w, h)
            if rect is None:
                continue
            sl = rect
            args = (o, dx[sl], dy[sl], dz[sl])
            t, normal = _box_hits(*args, prim) if isinstance(prim, Box) else _cylinder_hits(*args, prim)
            own[sl] |= np.isfinite(t)
            zs = zbuf[sl]
            win = t < zs
            if not win.any():
                continue
            zs[win] = t[win]
            surf[sl][win] = first_obj_code + j
            inst[sl][win] = obj.id
            if pbuf is not None:
                pbuf[sl][win] = part_code.get(id(prim), 0)
            nn = normal(win)
            for i in range(3):
                nbuf[i][sl][win] = nn[i]
        unoccluded[obj.id] = int(own.sum())
        truncated[obj.id] = bool(own[0].any() or own[-1].any() or own[:, 0].any() or own[:, -1].any())

    valid = np.isfinite(zbuf) & (zbuf <= MAX_DEPTH_M)
    depth = np.where(valid, zbuf, 0.0).astype(np.float32)

    # Shading: flat colour * (ambient + diffuse), floor texture, wall gradient, RGB noise.
    colours = np.array([BACKGROUND_RGB, layout.floor_rgb, *(wl.rgb for wl in layout.walls),
                        *(ob.rgb for ob in layout.objects)], dtype=np.float32)
    ndotl = nbuf[0] * LIGHT_DIR[0] + nbuf[1] * LIGHT_DIR[1] + nbuf[2] * LIGHT_DIR[2]
    factor = AMBIENT + (1.0 - AMBIENT) * np.maximum(ndotl, 0.0)
    factor[surf == 0] = 1.0
    hit_any = np.isfinite(zbuf)
    floor_px = surf == 1
    if floor_px.any():
        tf = zbuf[floor_px]
        factor[floor_px] *= _floor_texture(layout.floor_style, o[0] + tf * dx[floor_px],
                                           o[1] + tf * dy[floor_px]).astype(np.float32)
    wall_px = (surf >= 2) & (surf < first_obj_code) & hit_any
    if wall_px.any():
        pz = o[2] + zbuf[wall_px] * dz[wall_px]
        # Walls: plain muted colour, mostly unlit (soft light) with a slight vertical gradient.
        soft = 0.82 + 0.15 * np.maximum(ndotl[wall_px], 0.0)
        factor[wall_px] = (soft * (1.0 - 0.08 * np.clip(pz / 3.0, 0.0, 1.0))).astype(np.float32)
    img = colours[surf] * factor[..., None]
    img += rng.integers(-RGB_NOISE, RGB_NOISE + 1, size=img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if pbuf is not None:
        pbuf[~valid] = 0
    return RenderOutput(image, depth, inst, unoccluded, truncated, pbuf)


# ----------------------------------------------------------------------------------------------
# Scene generation
# ----------------------------------------------------------------------------------------------

def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _noisy_depth(depth: np.ndarray, config: SynthConfig, noise_rng: np.random.Generator,
                 dropout_rng: np.random.Generator) -> np.ndarray:
    """Multiplicative Gaussian noise and dropout on valid pixels (0 stays 0)."""
    out = depth.astype(np.float64)
    valid = out > 0
    if config.depth_noise > 0:
        out[valid] *= 1.0 + config.depth_noise * noise_rng.standard_normal(int(valid.sum()))
    if config.depth_dropout > 0:
        out[valid & (dropout_rng.random(out.shape) < config.depth_dropout)] = 0.0
    out = np.where(out > 0, np.minimum(out, 65.535), 0.0)
    return out.astype(np.float32)


def scene_folder_name(index: int) -> str:
    """The id (and folder name) of synthetic scene ``index``."""
    return f"synth_{index:06d}"


def generate_scene(index: int, seed: int = 0, config: SynthConfig = SynthConfig()) -> SyntheticScene:  # noqa: B008
    """Generate scene ``index`` of the dataset with ``seed``.

    The scene depends only on ``(seed, index, config)``: its random streams are children of
    ``numpy.random.SeedSequence([seed, index])`` (geometry, RGB noise, depth noise, dropout), so
    scene ``i`` is identical whatever other scenes are generated, and turning depth noise on or
    off leaves the geometry and the colours unchanged.
    """
    index = _check_int("index", index)
    seed = _check_int("seed", seed)
    if not isinstance(config, SynthConfig):
        raise ValueError(f"config must be a SynthConfig, got {type(config).__name__}")
    geo_ss, rgb_ss, noise_ss, drop_ss = np.random.SeedSequence([seed, index]).spawn(4)
    layout = sample_layout(config, np.random.default_rng(geo_ss))
    rendered = render_layout(layout, np.random.default_rng(rgb_ss))
    depth = _noisy_depth(rendered.depth, config, np.random.default_rng(noise_ss),
                         np.random.default_rng(drop_ss))
    scene_id = scene_folder_name(index)
    intr = layout.intrinsics
    camera = {k: intr[k] for k in ("fx", "fy", "cx", "cy", "width", "height")}

    counts = np.bincount(rendered.instances.ravel(),
                         minlength=max((ob.id for ob in layout.objects), default=0) + 1)
    gt_objects = []
    visible_objects = []
    for obj in layout.objects:
        vis = int(counts[obj.id])
        unocc = rendered.unoccluded[obj.id]
        sx, sy, sz = obj.size
        gt_objects.append({
            "id": obj.id, "caption": obj.caption, "category": obj.category, "color": obj.color,
            "shape": obj.shape, "center": [float(c) for c in obj.center],
            "size": [float(sx), float(sy), float(sz)], "yaw_deg": float(obj.yaw_deg),
            "width": float(max(sx, sy)), "depth": float(min(sx, sy)), "height": float(sz),
            "support": obj.support, "visible_pixels": vis, "unoccluded_pixels": unocc,
            "visible_fraction": float(vis / unocc) if unocc > 0 else 0.0,
            "truncated": rendered.truncated[obj.id],
        })
        if vis > 0:
            visible_objects.append({"id": obj.id, "caption": obj.caption})
    gt_parts = []
    if config.parts:
        part_counts = np.bincount(rendered.parts.ravel(), minlength=len(layout_parts(layout)) + 1) \
            if rendered.parts is not None else np.zeros(1, dtype=np.int64)
        by_object: dict[int, list[dict[str, Any]]] = {}
        for k, (obj, part) in enumerate(layout_parts(layout), start=1):
            box = part.box
            gt_parts.append({
                "id": k, "object_id": obj.id, "name": part.name, "action": part.action, "purpose": part.purpose,
                "center": [float(c) for c in box.center], "size": [2.0 * float(x) for x in box.half],
                "yaw_deg": round(math.degrees(box.yaw), 6), "visible_pixels": int(part_counts[k]),
            })
            by_object.setdefault(obj.id, []).append({"id": k, "name": part.name, "action": part.action})
        for entry in visible_objects:
            if entry["id"] in by_object:
                entry["parts"] = by_object[entry["id"]]

    ground_truth = {
        "format": GT_FORMAT,
        "scene_id": scene_id, "seed": seed, "index": index,
        "depth_noise": config.depth_noise,
        "camera": {
            **camera,
            "position": [float(p) for p in layout.position],
            "R_world_from_cam": [[float(x) for x in row] for row in layout.rotation],
            "pitch_deg": layout.pitch_deg, "roll_deg": layout.roll_deg, "yaw_deg": layout.yaw_deg,
        },
        "floor": {"normal": [0.0, 0.0, 1.0], "offset": 0.0},
        "walls": [{"point": [float(x) for x in wl.point], "normal": [float(x) for x in wl.normal]}
                  for wl in layout.walls],
        "objects": gt_objects,
    }
    if config.parts:
        ground_truth["parts"] = gt_parts
    parts_map = None
    if config.parts:
        parts_map = rendered.parts if rendered.parts is not None else np.zeros_like(rendered.instances)
    return SyntheticScene(scene_id, rendered.image, depth, rendered.instances, camera,
                          visible_objects, ground_truth, parts_map)
