"""Per-object measurement: denoised point cloud -> upright yaw-oriented box in the canonical frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = ["ObjectPoints", "main_cluster", "measure_object", "min_area_rectangle"]

_STRUCT26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class ObjectPoints:
    """Canonical-frame points of one object after denoising, plus the pixel statistics."""

    points: np.ndarray
    pixel_count: int
    image_centroid: tuple[float, float]
    image_bbox: tuple[int, int, int, int]
    truncated: bool
    occluded_fraction: float


def main_cluster(points: np.ndarray, voxel: float, *, min_share: float = 0.02, max_gap: float = 0.05,
                 max_cells: int = 50_000) -> np.ndarray:
    """Boolean mask of the points that form the object's body.

    Points are grouped into 26-connected voxel clusters. The largest cluster is kept, and so is
    any other cluster holding at least ``min_share`` of the points whose bounding box comes within
    ``max_gap`` of the kept set's box: parts joined through a hidden connection (table legs under
    a top, a handle behind a rim) stay, while flying pixels and stray fragments go.
    """
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    lo = points.min(axis=0)
    span = points.max(axis=0) - lo
    voxel = max(voxel, float(np.cbrt(np.prod(span + voxel) / max_cells)))
    ijk = np.floor((points - lo) / voxel).astype(np.int64)
    shape = tuple(int(s) + 1 for s in ijk.max(axis=0))
    grid = np.zeros(shape, dtype=bool)
    grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    labels, n = ndimage.label(grid, structure=_STRUCT26)
    if n <= 1:
        return np.ones(len(points), dtype=bool)
    point_labels = labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    counts = np.bincount(point_labels, minlength=n + 1)
    counts[0] = 0
    order = np.argsort(-counts)
    min_count = max(3, min_share * len(points))
    candidates = [int(lab) for lab in order[1:] if counts[lab] >= min_count]
    if not candidates:
        return point_labels == order[0]
    labs = np.array([int(order[0]), *candidates])
    lo_box = np.stack([ndimage.minimum(points[:, i], point_labels, labs) for i in range(3)], axis=1)
    hi_box = np.stack([ndimage.maximum(points[:, i], point_labels, labs) for i in range(3)], axis=1)
    keep_labels = [int(labs[0])]
    box_lo, box_hi = lo_box[0].copy(), hi_box[0].copy()
    pending = list(range(1, len(labs)))
    changed = True
    while changed and pending:  # grow the kept set until no substantial cluster touches it
        changed = False
        for j in list(pending):
            gap = np.maximum(0.0, np.maximum(lo_box[j] - box_hi, box_lo - hi_box[j]))
            if float(np.linalg.norm(gap)) <= max_gap:
                keep_labels.append(int(labs[j]))
                pending.remove(j)
                box_lo, box_hi = np.minimum(box_lo, lo_box[j]), np.maximum(box_hi, hi_box[j])
                changed = True
    return np.isin(point_labels, keep_labels)


def min_area_rectangle(xy: np.ndarray, max_hull_points: int = 1500) -> tuple[float, np.ndarray, np.ndarray]:
    """Minimum-area enclosing rectangle of 2-D points.

    Returns ``(yaw, center_xy, size_xy)``: the rectangle's first side points along
    ``(cos yaw, sin yaw)``; ``yaw`` lies in [0, pi/2). The orientation is chosen on the hull of
    an evenly strided subsample of at most ``max_hull_points`` points (plus the four axis
    extremes); the extents then use every point.
    """
    pts = np.asarray(xy, dtype=np.float64)
    sub = pts
    if len(pts) > max_hull_points:
        extremes = [int(np.argmin(pts[:, 0])), int(np.argmax(pts[:, 0])),
                    int(np.argmin(pts[:, 1])), int(np.argmax(pts[:, 1]))]
        sub = np.vstack([pts[:: int(np.ceil(len(pts) / max_hull_points))], pts[extremes]])
    try:
        hull = sub[ConvexHull(sub).vertices] if len(sub) >= 3 else sub
    except QhullError:  # degenerate (collinear) footprint
        hull = sub
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)
    angles = np.unique(np.round(angles, 9))
    if len(angles) == 0:
        angles = np.zeros(1)
    c, s = np.cos(angles), np.sin(angles)
    # Project hull on each candidate frame: u = x c + y s, v = -x s + y c
    u = hull[:, 0:1] * c + hull[:, 1:2] * s
    v = -hull[:, 0:1] * s + hull[:, 1:2] * c
    areas = (u.max(0) - u.min(0)) * (v.max(0) - v.min(0))
    best = int(np.argmin(areas))
    yaw = float(angles[best])
    cb, sb = math.cos(yaw), math.sin(yaw)
    u_all = pts[:, 0] * cb + pts[:, 1] * sb
    v_all = -pts[:, 0] * sb + pts[:, 1] * cb
    u0, u1, v0, v1 = u_all.min(), u_all.max(), v_all.min(), v_all.max()
    cu, cv = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    center = np.array([cu * cb - cv * sb, cu * sb + cv * cb])
    return yaw, center, np.array([u1 - u0, v1 - v0])


def robust_extent(values: np.ndarray, trim: float) -> tuple[float, float]:
    """(low, high) of ``values``; with ``trim`` > 0 the quantiles trim..1-trim, corrected for bias.

    Trimming a uniform spread by quantile ``q`` shrinks it by ``2q``; the correction expands the
    trimmed range back by that amount so exact data gives (almost) the exact extent.
    """
    if trim <= 0 or len(values) < 50:
        return float(values.min()), float(values.max())
    lo, hi = np.quantile(values, [trim, 1.0 - trim])
    pad = (hi - lo) * trim / (1.0 - 2.0 * trim)
    return float(lo - pad), float(hi + pad)


def measure_object(points: np.ndarray, trim: float = 0.0):
    """Upright box of canonical-frame ``points`` (N, 3).

    Returns ``(center, size, yaw, aabb_min, aabb_max)`` where ``size = (sx, sy, height)`` follows
    the box's own axes (``sx`` along ``yaw``).
    """
    z0, z1 = robust_extent(points[:, 2], trim)
    xy = points[:, :2]
    if trim > 0 and len(points) >= 50:
        # Drop the trimmed tails before the hull so single noisy points cannot rotate the box.
        keep = np.ones(len(points), dtype=bool)
        for axis in (0, 1):
            lo, hi = np.quantile(xy[:, axis], [trim, 1.0 - trim])
            keep &= (xy[:, axis] >= lo) & (xy[:, axis] <= hi)
        yaw, _, _ = min_area_rectangle(xy[keep])
        cb, sb = math.cos(yaw), math.sin(yaw)
        u0, u1 = robust_extent(xy[:, 0] * cb + xy[:, 1] * sb, trim)
        v0, v1 = robust_extent(-xy[:, 0] * sb + xy[:, 1] * cb, trim)
        cu, cv = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
        center_xy = np.array([cu * cb - cv * sb, cu * sb + cv * cb])
        size_xy = np.array([u1 - u0, v1 - v0])
        x0, x1 = robust_extent(xy[:, 0], trim)
        y0, y1 = robust_extent(xy[:, 1], trim)
    else:
        yaw, center_xy, size_xy = min_area_rectangle(xy)
        x0, x1 = float(xy[:, 0].min()), float(xy[:, 0].max())
        y0, y1 = float(xy[:, 1].min()), float(xy[:, 1].max())
    center = np.array([center_xy[0], center_xy[1], 0.5 * (z0 + z1)])
    size = np.array([size_xy[0], size_xy[1], z1 - z0])
    return center, size, yaw, np.array([x0, y0, z0]), np.array([x1, y1, z1])
