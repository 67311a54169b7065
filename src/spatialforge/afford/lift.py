"""Affordance heatmaps lifted into 3D with a depth map (numpy only).

    regions = lift_affordance(heat, depth, intrinsics, gravity, instances=instances)
    for r in regions:   # one per object (or one for the whole image without instances)
        r.interaction_point, r.approach, r.area_m2, r.pixel

Everything returned is in the gravity (canonical) frame of :class:`~spatialforge.core.types.Gravity`:
metres, ``z`` up, ``x`` camera right, ``y`` forward (``docs/conventions.md``).

* **Region**: the pixels whose heat is at least ``threshold`` (default: half the heatmap's maximum)
  and whose depth is valid; with ``instances``, split per object id (background 0 is skipped).
* **Area** (m^2): the sum of the pixels' surface areas. A pixel at z-depth ``Z`` on a surface with
  unit normal ``n`` (camera frame) covers ``Z^2 / (fx fy |n . d|)``, where ``d = ((u-cx)/fx,
  (v-cy)/fy, 1)`` is its ray: ``Z^2 / (fx fy)`` on a fronto-parallel surface, divided by the
  cosine of the incidence angle (``|n . d| / |d|``) and multiplied by ``1/|d|`` off the optical
  axis. The normal of a pixel comes from one-sided depth differences (per direction, the side
  with the smaller depth jump, so creases and occlusion edges do not blur it); ``|n . d|`` is
  clipped below at ``MIN_INCIDENCE_COS * |d|`` (grazing pixels count at most ~5x a facing one).
* **Interaction point**: the heat-weighted mean of the region's 3D points, snapped to the nearest
  point of the region (so it lies on the observed surface and inside the region); ``pixel`` is
  that point's ``(u, v)``.
* **Normal**: a least-squares plane through the valid points within ``normal_radius`` pixels of the
  interaction pixel whose own normals agree with it (within 30 degrees; same object with
  ``instances``), oriented towards the camera. **Approach** = ``-normal`` (moving into the surface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialforge.core.types import CameraIntrinsics, Gravity

__all__ = ["MIN_INCIDENCE_COS", "Affordance3D", "lift_affordance", "pixel_areas", "pixel_normals"]

#: Lower clip of the incidence cosine in the per-pixel area (grazing views).
MIN_INCIDENCE_COS = 0.2


@dataclass(frozen=True)
class Affordance3D:
    """One lifted affordance region (gravity frame, metres).

    ``object_id``: the instance id (``None`` for the whole image). ``points`` (N, 3) and
    ``pixels`` (N, 2 as ``(u, v)``) list the region; ``heat`` their heatmap values.
    """

    object_id: int | None
    points: np.ndarray
    pixels: np.ndarray
    heat: np.ndarray
    area_m2: float
    interaction_point: np.ndarray
    normal: np.ndarray
    approach: np.ndarray
    pixel: tuple[int, int]
    threshold: float

    @property
    def n_pixels(self) -> int:
        return int(len(self.points))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the region's points are summarised by their centroid and bounds)."""
        def vec(a: np.ndarray) -> list[float]:
            return [round(float(x), 6) for x in a]

        return {
            "object_id": self.object_id,
            "pixel": [int(self.pixel[0]), int(self.pixel[1])],
            "interaction_point": vec(self.interaction_point),
            "normal": vec(self.normal),
            "approach": vec(self.approach),
            "area_m2": round(float(self.area_m2), 8),
            "region_pixels": self.n_pixels,
            "region_centroid": vec(self.points.mean(axis=0)),
            "region_min": vec(self.points.min(axis=0)),
            "region_max": vec(self.points.max(axis=0)),
            "mean_heat": round(float(self.heat.mean()), 6),
            "threshold": round(float(self.threshold), 6),
            "frame": "gravity",
        }


def _check_inputs(heatmap: Any, depth: Any, intrinsics: CameraIntrinsics, instances: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    heat = np.asarray(heatmap, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    shape = (intrinsics.height, intrinsics.width)
    if heat.ndim != 2 or z.ndim != 2:
        raise ValueError(f"heatmap and depth must be (H, W) arrays, got {heat.shape} and {z.shape}")
    if heat.shape != shape or z.shape != shape:
        raise ValueError(f"heatmap {heat.shape} and depth {z.shape} must match the camera's (H, W) = {shape}")
    heat = np.where(np.isfinite(heat), heat, 0.0)
    z = np.where(np.isfinite(z) & (z > 0), z, 0.0)
    inst = None
    if instances is not None:
        inst = np.asarray(instances)
        if inst.shape != shape or not np.issubdtype(inst.dtype, np.integer):
            raise ValueError(f"instances must be an integer (H, W) = {shape} array, got {inst.shape} {inst.dtype}")
    return heat, z, inst


def _rays(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    a = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    b = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    return np.broadcast_to(a[None, :], (intrinsics.height, intrinsics.width)), \
        np.broadcast_to(b[:, None], (intrinsics.height, intrinsics.width))


def _one_sided(p: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Per pixel, the difference to the neighbour along ``axis`` with the smaller depth jump."""
    fwd = np.full(p.shape, np.nan)
    bwd = np.full(p.shape, np.nan)
    if axis == 1:
        ok = valid[:, 1:] & valid[:, :-1]
        d = np.where(ok[..., None], p[:, 1:] - p[:, :-1], np.nan)
        fwd[:, :-1], bwd[:, 1:] = d, d
    else:
        ok = valid[1:] & valid[:-1]
        d = np.where(ok[..., None], p[1:] - p[:-1], np.nan)
        fwd[:-1], bwd[1:] = d, d
    jf = np.where(np.isnan(fwd[..., 2]), np.inf, np.abs(fwd[..., 2]))
    jb = np.where(np.isnan(bwd[..., 2]), np.inf, np.abs(bwd[..., 2]))
    return np.where((jf <= jb)[..., None], fwd, bwd)


def pixel_normals(depth: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Unit camera-frame normals (H, W, 3) oriented towards the camera; NaN where unknown."""
    z = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float64)
    valid = z > 0
    a, b = _rays(intrinsics)
    p = np.stack([a * z, b * z, z], axis=-1)
    du, dv = _one_sided(p, valid, 1), _one_sided(p, valid, 0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm
    flip = np.einsum("hwk,hwk->hw", n, p) > 0  # towards the camera: n . p < 0
    n[flip] *= -1.0
    n[~valid] = np.nan
    return n


def pixel_areas(depth: np.ndarray, intrinsics: CameraIntrinsics, normals: np.ndarray | None = None) -> np.ndarray:
    """Surface area (m^2) seen by each pixel: ``Z^2 / (fx fy |n . d|)`` (see the module docstring).

    Pixels without a normal count as facing the camera; invalid depth gives 0.
    """
    z = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float64)
    n = pixel_normals(z, intrinsics) if normals is None else normals
    a, b = _rays(intrinsics)
    dnorm = np.sqrt(a * a + b * b + 1.0)
    ndotd = np.abs(n[..., 0] * a + n[..., 1] * b + n[..., 2])
    ndotd = np.where(np.isfinite(ndotd), ndotd, dnorm)
    ndotd = np.maximum(ndotd, MIN_INCIDENCE_COS * dnorm)
    return z * z / (intrinsics.fx * intrinsics.fy * ndotd)


def _plane_normal(points: np.ndarray) -> np.ndarray | None:
    if len(points) < 3:
        return None
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    if s[1] < 1e-9:  # collinear
        return None
    return vt[2]


def lift_affordance(
    heatmap: Any,
    depth: Any,
    intrinsics: CameraIntrinsics,
    gravity: Gravity,
    instances: Any = None,
    *,
    threshold: float | None = None,
    relative_threshold: float = 0.5,
    min_pixels: int = 3,
    normal_radius: int = 3,
) -> list[Affordance3D]:
    """Lift a (H, W) heatmap in [0, 1] to 3D regions in the gravity frame (see the module docstring).

    ``threshold``: an absolute heat threshold; by default ``relative_threshold`` times the maximum
    of the heatmap over valid-depth pixels. Regions with fewer than ``min_pixels`` pixels are
    dropped. Returns one :class:`Affordance3D` per object id in ``instances`` (sorted by id), or one
    for the whole image; an empty list when nothing reaches the threshold (e.g. an all-zero map).
    """
    heat, z, inst = _check_inputs(heatmap, depth, intrinsics, instances)
    if not isinstance(gravity, Gravity):
        raise ValueError(f"gravity must be a Gravity, got {type(gravity).__name__}")
    valid = z > 0
    if threshold is None:
        if not 0.0 < relative_threshold <= 1.0:
            raise ValueError(f"relative_threshold must be in (0, 1], got {relative_threshold!r}")
        peak = float(heat[valid].max()) if valid.any() else 0.0
        if peak <= 0.0:
            return []
        thr = relative_threshold * peak
    else:
        thr = float(threshold)
        if not math.isfinite(thr):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
    selected = valid & (heat >= thr) & (heat > 0)
    if not selected.any():
        return []
    normals = pixel_normals(z, intrinsics)
    areas = pixel_areas(z, intrinsics, normals)
    a, b = _rays(intrinsics)
    pts_cam = np.stack([a * z, b * z, z], axis=-1)
    groups: list[tuple[int | None, np.ndarray]]
    if inst is None:
        groups = [(None, selected)]
    else:
        ids = np.unique(inst[selected])
        groups = [(int(i), selected & (inst == i)) for i in ids if i != 0]
    out = []
    for obj_id, mask in groups:
        rows, cols = np.nonzero(mask)
        if len(rows) < min_pixels:
            continue
        p = pts_cam[rows, cols]
        w = heat[rows, cols]
        mean = (p * w[:, None]).sum(axis=0) / w.sum()
        k = int(np.argmin(np.linalg.norm(p - mean, axis=1)))
        r0, c0 = int(rows[k]), int(cols[k])
        point = p[k]
        normal = _local_normal(pts_cam, normals, valid if inst is None else valid & (inst == inst[r0, c0]),
                               r0, c0, normal_radius)
        if normal @ point > 0:  # towards the camera
            normal = -normal
        rot = gravity.R
        out.append(Affordance3D(
            object_id=obj_id,
            points=gravity.to_canonical(p),
            pixels=np.stack([cols, rows], axis=1),
            heat=w,
            area_m2=float(areas[rows, cols].sum()),
            interaction_point=gravity.to_canonical(point[None])[0],
            normal=rot @ normal,
            approach=-(rot @ normal),
            pixel=(c0, r0),
            threshold=thr,
        ))
    return out


def _local_normal(pts: np.ndarray, normals: np.ndarray, valid: np.ndarray, r0: int, c0: int, radius: int
                  ) -> np.ndarray:
    """Plane-fit normal around pixel (r0, c0) from neighbours on the same surface (camera frame)."""
    h, w = valid.shape
    rs, re = max(0, r0 - radius), min(h, r0 + radius + 1)
    cs, ce = max(0, c0 - radius), min(w, c0 + radius + 1)
    win = valid[rs:re, cs:ce].copy()
    n0 = normals[r0, c0]
    if np.all(np.isfinite(n0)):
        agree = np.einsum("hwk,k->hw", np.nan_to_num(normals[rs:re, cs:ce]), n0) >= math.cos(math.radians(30.0))
        if (win & agree).sum() >= 3:
            win &= agree
    fit = _plane_normal(pts[rs:re, cs:ce][win])
    if fit is not None:
        return fit
    if np.all(np.isfinite(n0)):
        return n0
    p = pts[r0, c0]
    return -p / np.linalg.norm(p)  # no neighbours: face the camera
