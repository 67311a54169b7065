"""Configuration of the geometry stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spatialforge.errors import ConfigError

__all__ = ["GeometryConfig"]


@dataclass(frozen=True)
class GeometryConfig:
    """Parameters of gravity estimation and object measurement (defaults suit 0.3-20 m scenes)."""

    # Support plane (RANSAC restricted to plausible orientations)
    max_tilt_deg: float = 60.0
    min_camera_height: float = 0.2
    ransac_hypotheses: int = 200
    ransac_points: int = 1500
    plane_threshold_m: float = 0.015
    min_inlier_fraction: float = 0.02
    min_inliers: int = 200
    normal_tolerance_deg: float = 30.0
    # Objects
    min_points: int = 40
    max_object_points: int = 4000
    min_points_for_size: int = 150
    erode_pixels: int = 1
    max_occluded_fraction: float = 0.15
    min_top_elevation_deg: float = 15.0
    # Depth noise handling: smooth depth inside each mask when the estimated relative noise is larger
    noise_smoothing_threshold: float = 0.003
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "max_tilt_deg": 0 < self.max_tilt_deg < 90,
            "min_camera_height": self.min_camera_height >= 0,
            "ransac_hypotheses": self.ransac_hypotheses >= 10,
            "ransac_points": self.ransac_points >= 100,
            "plane_threshold_m": self.plane_threshold_m > 0,
            "min_inlier_fraction": 0 <= self.min_inlier_fraction < 1,
            "min_inliers": self.min_inliers >= 3,
            "normal_tolerance_deg": 0 < self.normal_tolerance_deg < 90,
            "min_points": self.min_points >= 4,
            "max_object_points": self.max_object_points >= 100,
            "min_points_for_size": self.min_points_for_size >= self.min_points,
            "erode_pixels": self.erode_pixels >= 0,
            "max_occluded_fraction": 0 <= self.max_occluded_fraction <= 1,
            "min_top_elevation_deg": -90 <= self.min_top_elevation_deg <= 90,
            "noise_smoothing_threshold": self.noise_smoothing_threshold >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"GeometryConfig.{name}: invalid value {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
