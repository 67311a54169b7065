"""Gravity: find the supporting horizontal plane and build the canonical frame.

RANSAC is restricted to plausible orientations: every 3-point hypothesis has its normal oriented
towards the camera, and hypotheses whose normal is more than ``max_tilt_deg`` from the camera's
prior up direction (``-y``) or that lie less than ``min_camera_height`` below the camera are
discarded before scoring. A wall therefore never wins (its camera-facing normal points back
towards the camera, away from the prior up even at 45 degrees of pitch), nor does a ceiling.
See docs/conventions.md.
"""

from __future__ import annotations

import math

import numpy as np

from spatialforge.core.types import Gravity
from spatialforge.geometry.config import GeometryConfig

__all__ = ["canonical_frame", "estimate_gravity", "grid_normals", "prior_gravity"]

PRIOR_UP = np.array([0.0, -1.0, 0.0])


def canonical_frame(up: np.ndarray) -> np.ndarray:
    """Rotation whose rows are the canonical x (camera right, horizontal), y (forward) and z (up)."""
    z = np.asarray(up, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    nx = np.linalg.norm(x)
    if nx < 1e-6:  # camera looking straight along gravity: use camera down as the forward hint
        x = np.array([0.0, 1.0, 0.0]) - z[1] * z
        nx = np.linalg.norm(x)
    x /= nx
    y = np.cross(z, x)
    return np.stack([x, y, z])


def prior_gravity(reason: str) -> Gravity:
    """The camera-prior frame (up = -y_cam), used when no valid support plane exists."""
    return Gravity(source="camera_prior", R=canonical_frame(PRIOR_UP), t=np.zeros(3), reason=reason)


def _fit_plane(points: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Weighted total-least-squares plane ``n.p + d = 0``."""
    w = np.ones(len(points)) if weights is None else weights
    centroid = (points * w[:, None]).sum(axis=0) / w.sum()
    _, _, vt = np.linalg.svd((points - centroid) * np.sqrt(w)[:, None], full_matrices=False)
    n = vt[2]
    return n, float(-n @ centroid)


def _orient(n: np.ndarray, d: float) -> tuple[np.ndarray, float]:
    """Orient the plane n.p + d = 0 so the camera (origin) is on its positive side (d > 0)."""
    return (n, d) if d >= 0 else (-n, -d)


def grid_normals(grid: np.ndarray, noise: float = 0.0, baseline: int = 2) -> np.ndarray:
    """Unit surface normals (Hs, Ws, 3) of a grid of camera-frame points (NaN where invalid).

    Central differences over ``baseline`` cells; the grid is box-smoothed first when the depth is
    noisy. The sign of a normal is arbitrary.
    """
    from scipy import ndimage

    pts = grid
    if noise > 0.003:
        valid = np.isfinite(grid[..., 2]).astype(np.float64)
        filled = np.nan_to_num(grid)
        num = np.stack([ndimage.uniform_filter(filled[..., i] * valid, 5, mode="constant") for i in range(3)], -1)
        den = ndimage.uniform_filter(valid, 5, mode="constant")[..., None]
        pts = np.where(valid[..., None] > 0, num / np.maximum(den, 1e-9), np.nan)
    k = baseline
    out = np.full(grid.shape, np.nan)
    du = pts[k:-k, 2 * k:] - pts[k:-k, :-2 * k]
    dv = pts[2 * k:, k:-k] - pts[:-2 * k, k:-k]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[k:-k, k:-k] = n / norm
    return out


def estimate_gravity(
    points: np.ndarray,
    config: GeometryConfig | None = None,
    *,
    normals: np.ndarray | None = None,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Gravity:
    """Estimate the canonical frame from camera-frame points (N, 3) of the whole scene.

    ``normals`` (N, 3; NaN where unknown, sign arbitrary) restrict both the hypothesis pool and the
    inliers to points whose local surface is plausibly horizontal, so walls take no part even
    where they meet the floor. ``noise`` is the relative per-pixel depth noise (see
    ``estimate_depth_noise``): a point of a plane at distance ``d`` from the camera then scatters
    by ``noise * d`` perpendicular to it, which sets the inlier threshold.
    """
    cfg = config or GeometryConfig()
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    n_all = len(points)
    if n_all < max(cfg.min_inliers, 3):
        return prior_gravity(f"too few valid depth points ({n_all})")
    cos_max = math.cos(math.radians(cfg.max_tilt_deg))
    cos_normal = math.cos(math.radians(cfg.normal_tolerance_deg))
    if normals is not None:
        horizontalish = np.abs(np.nan_to_num(normals) @ PRIOR_UP) >= cos_max
        pool = points[horizontalish]
        pool_normals = normals[horizontalish]
    else:
        pool, pool_normals = points, None
    if len(pool) < max(cfg.min_inliers, 3):
        return prior_gravity(f"too few points on plausibly horizontal surfaces ({len(pool)})")
    pick = rng.choice(len(pool), min(len(pool), cfg.ransac_points), replace=False)
    sample = pool[pick]
    sample_normals = None if pool_normals is None else pool_normals[pick]

    k = cfg.ransac_hypotheses
    idx = rng.integers(0, len(sample), size=(k, 3))
    p0, p1, p2 = sample[idx[:, 0]], sample[idx[:, 1]], sample[idx[:, 2]]
    normals_h = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals_h, axis=1)
    ok = norms > 1e-9
    normals_h = normals_h[ok] / norms[ok, None]
    offsets = -np.einsum("ij,ij->i", normals_h, p0[ok])
    flip = offsets < 0
    normals_h[flip] *= -1
    offsets[flip] *= -1
    plausible = (normals_h @ PRIOR_UP >= cos_max) & (offsets >= cfg.min_camera_height)
    normals_h, offsets = normals_h[plausible], offsets[plausible]
    if len(normals_h) == 0:
        return prior_gravity("no plausible horizontal plane hypothesis below the camera")

    thr = cfg.plane_threshold_m + 2.5 * noise * offsets  # (k',)
    inl = np.abs(sample @ normals_h.T + offsets) <= thr
    if sample_normals is not None:
        inl &= np.abs(np.nan_to_num(sample_normals) @ normals_h.T) >= cos_normal
    best = int(np.argmax(inl.sum(axis=0)))
    n, d = normals_h[best], float(offsets[best])

    # Refine by least squares on the inliers among all points, re-selecting them each time.
    agree_all = None if normals is None else np.nan_to_num(normals)

    def select(n: np.ndarray, d: float) -> np.ndarray:
        m = np.abs(points @ n + d) <= cfg.plane_threshold_m + 2.5 * noise * d
        if agree_all is not None:
            m &= np.abs(agree_all @ n) >= cos_normal
        return m

    inliers = select(n, d)
    for _ in range(3):
        if inliers.sum() < 3:
            break
        n, d = _orient(*_fit_plane(points[inliers]))
        inliers = select(n, d)
    n_in = int(inliers.sum())
    frac = n_in / n_all
    tilt = math.degrees(math.acos(float(np.clip(n @ PRIOR_UP, -1.0, 1.0))))
    if n_in < cfg.min_inliers or frac < cfg.min_inlier_fraction:
        return prior_gravity(f"largest plausible support plane has only {n_in} inliers ({frac:.1%})")
    if tilt > cfg.max_tilt_deg or d < cfg.min_camera_height:
        return prior_gravity(f"refined plane is implausible (tilt {tilt:.1f} deg, camera height {d:.2f} m)")
    R = canonical_frame(n)
    return Gravity(
        source="plane",
        R=R,
        t=np.array([0.0, 0.0, d]),
        camera_height=d,
        plane_normal_camera=n,
        plane_offset=d,
        inlier_fraction=frac,
        tilt_deg=tilt,
    )
