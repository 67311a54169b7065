"""Analytic RGB-D scenes (planes seen by a posed camera) for geometry tests."""

from __future__ import annotations

import math

import numpy as np

from spatialforge.core.types import CameraIntrinsics


def camera_rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World-from-camera rotation; world z up, camera OpenCV; pitch > 0 looks down; roll about forward."""
    level = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # columns: x_c, y_c, z_c in world
    t = math.radians(pitch_deg)
    # pitch down: rotate about the camera x axis so that forward tilts towards camera down (+y)
    rx = np.array([[1, 0, 0], [0, math.cos(t), math.sin(t)], [0, -math.sin(t), math.cos(t)]])
    r = math.radians(roll_deg)
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return level @ rx @ rz


def plane_depth(intr: CameraIntrinsics, R_wc: np.ndarray, cam_pos: np.ndarray,
                planes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """z-depth of the nearest plane n.p = d (world) along each pixel ray; 0 where nothing is hit."""
    u = (np.arange(intr.width) - intr.cx) / intr.fx
    v = (np.arange(intr.height) - intr.cy) / intr.fy
    dirs = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((intr.height, intr.width))), -1)
    dw = dirs @ R_wc.T
    best = np.full((intr.height, intr.width), np.inf)
    for n, d in planes:
        denom = dw @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (d - cam_pos @ n) / denom
        t = np.where((t > 0) & np.isfinite(t), t, np.inf)
        best = np.minimum(best, t)
    best[best > 30] = 0.0
    return np.where(np.isfinite(best), best, 0.0).astype(np.float32)  # dirs have z = 1: t is z-depth
