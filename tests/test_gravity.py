"""Gravity estimation: the support plane is found, a wall never wins, fallback is flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene
from spatialforge.geometry import GeometryConfig, build_scene_graph, estimate_gravity
from spatialforge.geometry.gravity import canonical_frame
from spatialforge.geometry.scene_graph import scene_gravity, scene_points
from tests.analytic import camera_rotation, plane_depth

INTR = CameraIntrinsics(fx=200, fy=200, cx=160, cy=120, width=320, height=240)
FLOOR = (np.array([0.0, 0.0, 1.0]), 0.0)


def _scene(pitch: float, roll: float, height: float = 1.4, wall_dist: float | None = 2.5,
           floor: bool = True, noise: float = 0.0, seed: int = 0):
    R = camera_rotation(pitch, roll)
    pos = np.array([0.0, 0.0, height])
    planes = ([FLOOR] if floor else []) + ([(np.array([0.0, 1.0, 0.0]), wall_dist)] if wall_dist else [])
    depth = plane_depth(INTR, R, pos, planes)
    if noise:
        rng = np.random.default_rng(seed)
        depth = np.where(depth > 0, depth * (1 + noise * rng.standard_normal(depth.shape)), 0).astype(np.float32)
    scene = RGBDScene("analytic", np.zeros((240, 320, 3), np.uint8), depth, np.zeros((240, 320), np.int32),
                      INTR, ())
    up_cam = R.T @ np.array([0.0, 0.0, 1.0])
    return scene, up_cam


def _angle(a, b) -> float:
    return math.degrees(math.acos(float(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


@pytest.mark.parametrize("pitch", [0.0, 15.0, 30.0, 45.0, -10.0])
@pytest.mark.parametrize("roll", [-15.0, 0.0, 15.0])
def test_floor_found_and_wall_rejected(pitch, roll):
    # A wall in view; at pitch 45 it is as far from the prior up as the floor.
    scene, up = _scene(pitch, roll, wall_dist=8.0 if pitch <= 0 else 2.5)
    g = scene_gravity(scene, GeometryConfig(), 0.0, np.random.default_rng(0))
    assert g.source == "plane", g.reason
    assert _angle(g.up_camera, up) < 0.5
    assert g.camera_height == pytest.approx(1.4, abs=0.02)


def test_wall_is_larger_than_floor_and_still_loses():
    scene, up = _scene(5.0, 0.0, wall_dist=2.6)
    pts = scene_points(scene)
    floor_share = float(np.mean(np.abs(pts @ (canonical_frame(up)[2]) + 1.4) < 0.02))
    assert floor_share < 0.5  # the wall dominates the view
    g = scene_gravity(scene, GeometryConfig(), 0.0, np.random.default_rng(0))
    assert g.source == "plane" and _angle(g.up_camera, up) < 0.5


@pytest.mark.parametrize("pitch,roll", [(10.0, 5.0), (40.0, -12.0), (25.0, 15.0)])
def test_floor_with_two_percent_noise(pitch, roll):
    scene, up = _scene(pitch, roll, noise=0.02)
    graph = build_scene_graph(scene)
    assert graph.gravity.source == "plane"
    assert _angle(graph.gravity.up_camera, up) < 1.5
    assert graph.depth_noise == pytest.approx(0.02, rel=0.15)


def test_no_floor_falls_back_to_prior_and_is_flagged():
    scene, _ = _scene(10.0, 0.0, floor=False, wall_dist=2.0)
    g = estimate_gravity(scene_points(scene), GeometryConfig())
    assert g.source == "camera_prior" and not g.reliable
    assert g.reason
    np.testing.assert_allclose(g.up_camera, [0.0, -1.0, 0.0])


def test_ceiling_is_not_a_floor():
    # Camera looking up at a ceiling 1 m above it, no floor in view.
    R = camera_rotation(-40.0, 0.0)
    pos = np.array([0.0, 0.0, 1.5])
    depth = plane_depth(INTR, R, pos, [(np.array([0.0, 0.0, 1.0]), 2.5)])
    scene = RGBDScene("ceiling", np.zeros((240, 320, 3), np.uint8), depth, np.zeros((240, 320), np.int32), INTR, ())
    g = estimate_gravity(scene_points(scene), GeometryConfig())
    assert g.source == "camera_prior"


def test_pitch_and_roll_read_back():
    scene, _up = _scene(30.0, 10.0)
    g = estimate_gravity(scene_points(scene), GeometryConfig())
    pitch, roll = g.camera_pitch_roll_deg()
    assert pitch == pytest.approx(30.0, abs=0.5)
    assert abs(roll) == pytest.approx(10.0, abs=0.5)


def test_canonical_frame_axes():
    scene, up = _scene(25.0, 8.0, wall_dist=None)
    g = estimate_gravity(scene_points(scene), GeometryConfig())
    R = g.R
    assert np.linalg.det(R) == pytest.approx(1.0)
    # x is horizontal and points to the camera's right; y is horizontal and points forward.
    assert abs(R[0] @ up) < 1e-3 and R[0] @ [1, 0, 0] > 0.9
    assert abs(R[1] @ up) < 1e-3 and R[1] @ [0, 0, 1] > 0.5
    # the camera sits at (0, 0, h) and floor points map to z = 0
    pts = g.to_canonical(scene_points(scene))
    assert np.abs(pts[:, 2]).max() < 0.005  # every point is a floor point


def test_objects_listed_without_pixels_are_skipped_with_reason():
    scene, _ = _scene(20.0, 0.0)
    scene = RGBDScene("s", scene.image, scene.depth, scene.instances, INTR, (ObjectAnnotation(3, "red mug"),))
    graph = build_scene_graph(scene)
    assert graph.objects == () and graph.skipped[0].reason == "not_visible"
