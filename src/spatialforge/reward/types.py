"""Data types shared by the reward readers, the synthetic trajectories and the reward engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialforge.core.types import CameraIntrinsics

__all__ = ["Frame", "Trajectory"]


@dataclass(frozen=True)
class Frame:
    """One frame of a trajectory.

    ``index`` is the 0-based position in the episode (after any stride, the position in the source episode),
    ``time_s`` the seconds from the episode start, ``image`` an (H, W, 3) uint8 RGB array and ``depth`` an
    (H, W) float32 metric z-depth in metres (NaN or 0 = invalid) or None for RGB-only input.
    """

    index: int
    time_s: float
    image: np.ndarray
    depth: np.ndarray | None


@dataclass(frozen=True)
class Trajectory:
    """An episode: frames in time order, all of one size, and what is known about the camera and the task.

    ``intrinsics`` is None when the camera is unknown; ``instruction`` is e.g. LeRobot's task text; ``source``
    names what the episode was read from (for messages and provenance); ``truth`` is only set on synthetic
    episodes (``{"distance_m": [...], "success": bool, ...}``).
    """

    episode_id: str
    frames: tuple[Frame, ...]
    fps: float
    intrinsics: CameraIntrinsics | None
    instruction: str | None = None
    source: str = ""
    truth: dict | None = None
