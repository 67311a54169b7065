"""Back-projection of z-depth maps to metric camera-frame points (OpenCV convention)."""

from __future__ import annotations

import numpy as np

from spatialforge.core.types import CameraIntrinsics

__all__ = ["backproject", "pixel_rays"]


def pixel_rays(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(u - cx) / fx`` (shape (W,)) and ``(v - cy) / fy`` (shape (H,)).

    A pixel (u, v) with z-depth Z maps to ``(a[u] Z, b[v] Z, Z)``.
    """
    a = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    b = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    return a, b


def backproject(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    mask: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """Camera-frame points (N, 3) of the valid pixels (``depth > 0``), optionally within ``mask``.

    Alternatively give explicit pixel ``rows`` and ``cols`` (their depth must be valid).
    """
    a, b = pixel_rays(intrinsics)
    if rows is None or cols is None:
        valid = depth > 0
        if mask is not None:
            valid &= mask
        rows, cols = np.nonzero(valid)
    z = depth[rows, cols].astype(np.float64)
    return np.stack([a[cols] * z, b[rows] * z, z], axis=1)
