"""Lifting affordance heatmaps into 3D (spatialforge.afford.lift) on exact synthetic depth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialforge.afford.lift import lift_affordance, pixel_areas
from spatialforge.core.types import CameraIntrinsics, Gravity
from spatialforge.geometry.gravity import canonical_frame

INTR = CameraIntrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=320, height=240)


def _plane_depth(n: np.ndarray, d: float, intr: CameraIntrinsics = INTR) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth of the plane n.p = d (camera frame) and its points (H, W, 3)."""
    a = (np.arange(intr.width) - intr.cx) / intr.fx
    b = (np.arange(intr.height) - intr.cy) / intr.fy
    rays = np.stack(np.broadcast_arrays(a[None, :], b[:, None], np.ones((1, 1))), axis=-1)
    z = d / (rays @ n)
    return z, rays * z[..., None]


def _tilted_normal(deg: float) -> np.ndarray:
    """A plane normal facing the camera, tilted ``deg`` about the camera x axis."""
    t = math.radians(deg)
    return np.array([0.0, -math.sin(t), -math.cos(t)])


def _gravity() -> Gravity:
    up = np.array([0.0, -math.cos(0.3), -math.sin(0.3)])  # camera pitched down by 0.3 rad
    return Gravity(source="plane", R=canonical_frame(up), t=np.array([0.0, 0.0, 1.4]))


def _plane_coords(points: np.ndarray, n: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(n, e1)
    rel = points - origin
    return rel @ e1, rel @ e2


@pytest.mark.parametrize("tilt", [0.0, 40.0, 65.0])
def test_area_of_a_known_patch_on_a_tilted_plane(tilt):
    n = _tilted_normal(tilt)
    z, pts = _plane_depth(-n, 1.0)  # the plane -n.p = 1 lies 1 m in front of the camera
    centre = pts[120, 160]
    s, t = _plane_coords(pts, n, centre)
    patch = (np.abs(s) < 0.25) & (np.abs(t) < 0.15)  # a 0.50 m x 0.30 m rectangle on the plane
    heat = patch.astype(np.float32)
    (region,) = lift_affordance(heat, z, INTR, _gravity())
    assert region.area_m2 == pytest.approx(0.15, rel=0.02)  # (pixels cut by the rectangle's edges)
    # without the incidence factor a 65-degree view would count less than half the area
    naive = float((z[patch] ** 2).sum() / (INTR.fx * INTR.fy))
    if tilt >= 60:
        assert naive < 0.5 * 0.15


def test_normal_approach_and_interaction_point_on_the_surface():
    n = _tilted_normal(35.0)
    z, pts = _plane_depth(-n, 1.5)
    grav = _gravity()
    heat = np.zeros_like(z)
    heat[100:140, 60:120] = np.linspace(0.2, 1.0, 60)[None, :]  # hotter to the right
    (region,) = lift_affordance(heat, z, INTR, grav, threshold=0.1)
    n_grav = grav.R @ n  # the plane's normal (towards the camera) in the gravity frame
    assert region.normal == pytest.approx(n_grav, abs=1e-6)
    assert region.approach == pytest.approx(-n_grav, abs=1e-12)
    # the interaction point lies on the plane, inside the region, right of the region's middle (heat-weighted)
    p_cam = grav.R.T @ (region.interaction_point - grav.t)
    assert float(-n @ p_cam) == pytest.approx(1.5, abs=1e-9)
    u, v = region.pixel
    assert 100 <= v < 140 and 60 <= u < 120 and u > 92
    assert p_cam == pytest.approx(pts[v, u], abs=1e-9)


def test_relative_threshold_and_objects_from_instances():
    z, _ = _plane_depth(np.array([0.0, 0.0, 1.0]), 2.0)
    heat = np.zeros_like(z)
    inst = np.zeros(z.shape, dtype=np.int32)
    inst[20:60, 20:60], inst[100:150, 200:260] = 7, 3
    heat[20:60, 20:60] = 0.9
    heat[100:150, 200:260] = 0.6
    heat[100:110, 200:260] = 0.3  # below half of the maximum (0.45): not part of the region
    regions = lift_affordance(heat, z, INTR, _gravity(), inst)
    assert [r.object_id for r in regions] == [3, 7]
    assert regions[0].n_pixels == 40 * 60 and regions[1].n_pixels == 40 * 40
    assert regions[1].area_m2 == pytest.approx(1600 * 4.0 / 300.0 ** 2)
    assert lift_affordance(np.zeros_like(z), z, INTR, _gravity()) == []
    with pytest.raises(ValueError, match="must match"):
        lift_affordance(heat[:10], z, INTR, _gravity())


def test_box_face_normal_in_a_synthetic_scene():
    from spatialforge.qa.afford_types import scene_gravity
    from spatialforge.synth import SynthConfig, generate_scene

    scene = generate_scene(2, seed=0, config=SynthConfig(width=320, height=240))
    grav = scene_gravity(scene.ground_truth)
    floor = scene.instances == 0
    z = scene.depth
    heat = np.zeros_like(z)
    rows, cols = np.nonzero(floor & (z > 0))
    k = len(rows) // 2
    heat[max(rows[k] - 3, 0):rows[k] + 4, max(cols[k] - 3, 0):cols[k] + 4] = 1.0
    heat[~floor] = 0
    intr = CameraIntrinsics(**{k: scene.camera[k] for k in ("fx", "fy", "cx", "cy", "width", "height")})
    (region,) = lift_affordance(heat, z, intr, grav)
    # the floor's normal is straight up, and the interaction point on the floor (z = 0) of the gravity frame
    assert region.normal == pytest.approx([0.0, 0.0, 1.0], abs=1e-3)
    assert region.approach == pytest.approx([0.0, 0.0, -1.0], abs=1e-3)
    assert region.interaction_point[2] == pytest.approx(0.0, abs=1e-3)


def test_pixel_areas_sum_to_the_plane_area_in_view():
    z, _ = _plane_depth(np.array([0.0, 0.0, 1.0]), 3.0)
    # a fronto-parallel plane: the whole view is (W / fx * Z) x (H / fy * Z)
    assert pixel_areas(z, INTR).sum() == pytest.approx((320 / 300 * 3.0) * (240 / 300 * 3.0), rel=1e-9)


def _box_distance(point_world: np.ndarray, part: dict) -> float:
    c = np.asarray(part["center"])
    yaw = math.radians(part["yaw_deg"])
    rot = np.array([[math.cos(yaw), math.sin(yaw), 0.0], [-math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    local = rot @ (point_world - c)
    outside = np.maximum(np.abs(local) - np.asarray(part["size"]) / 2, 0.0)
    return float(np.linalg.norm(outside))


def test_part_mask_heatmap_gives_a_point_on_the_part():
    from spatialforge.qa.afford_types import AffordTruth, point_answer_from_heatmap
    from spatialforge.synth import SynthConfig, generate_scene

    checked = 0
    for index in range(6):
        truth = AffordTruth.from_scene(generate_scene(index, seed=1, config=SynthConfig(parts=True)))
        cam = truth.ground_truth["camera"]
        rot_wc, pos = np.asarray(cam["R_world_from_cam"]), np.asarray(cam["position"])
        for pid, part in truth.parts.items():
            if part["visible_pixels"] < 20:
                continue
            heat = (truth.part_mask == pid).astype(np.float32)
            ans = point_answer_from_heatmap(heat, truth, part["object_id"])
            u, v = ans["pixel"]
            assert truth.part_mask[v, u] == pid
            # gravity frame -> camera -> world: on the part's box (within 1 cm), near its centre
            p_cam = truth.gravity.R.T @ (np.asarray(ans["point_3d"]) - truth.gravity.t)
            p_world = rot_wc @ p_cam + pos
            assert _box_distance(p_world, part) < 0.01
            assert np.linalg.norm(p_world - part["center"]) <= np.linalg.norm(part["size"]) / 2 + 0.01
            checked += 1
    assert checked >= 5
