"""Geometry: RGB-D scene -> gravity-aligned metric 3D scene graph (numpy/scipy only)."""

from spatialforge.geometry.backproject import backproject, pixel_rays
from spatialforge.geometry.config import GeometryConfig
from spatialforge.geometry.gravity import estimate_gravity, prior_gravity
from spatialforge.geometry.noise import estimate_depth_noise
from spatialforge.geometry.objects import measure_object, min_area_rectangle
from spatialforge.geometry.scene_graph import build_scene_graph

__all__ = [
    "GeometryConfig",
    "backproject",
    "build_scene_graph",
    "estimate_depth_noise",
    "estimate_gravity",
    "measure_object",
    "min_area_rectangle",
    "pixel_rays",
    "prior_gravity",
]
