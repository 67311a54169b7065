"""Tests of the synthetic RGB-D scene generator (spatialforge.synth)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialforge.synth import (
    SynthConfig,
    SyntheticScene,
    camera_pose,
    generate_scene,
    write_scene,
    write_synthetic_dataset,
)

SMALL = SynthConfig(width=160, height=120)
MEDIUM = SynthConfig(width=320, height=240, n_tables=(1, 2))
EMPTY_ROOM = dict(n_objects=(0, 0), n_tables=(0, 0), side_wall_probability=0.0,
                  camera_height_range=(1.5, 1.5), hfov_range_deg=(60.0, 60.0))


def _world_points(scene: SyntheticScene, depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Back-project the pixels of ``mask`` with the GT pose (OpenCV camera, z-depth)."""
    cam = scene.ground_truth["camera"]
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    pc = np.stack([(u - cam["cx"]) / cam["fx"] * z, (v - cam["cy"]) / cam["fy"] * z, z], axis=1)
    rot = np.asarray(cam["R_world_from_cam"])
    return pc @ rot.T + np.asarray(cam["position"])


def _world_rays(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel world ray directions with unit camera-z (so the ray parameter is z-depth)."""
    cam = scene.ground_truth["camera"]
    u, v = np.meshgrid(np.arange(cam["width"]), np.arange(cam["height"]))
    d = np.stack([(u - cam["cx"]) / cam["fx"], (v - cam["cy"]) / cam["fy"], np.ones(u.shape)], axis=-1)
    return d @ np.asarray(cam["R_world_from_cam"]).T, np.asarray(cam["position"])


def _fit_inverse_depth_plane(depth: np.ndarray, rows: slice) -> tuple[float, float, float, float]:
    """Fit ``1/Z = a u + b v + c`` (exact for a plane) on the given rows; returns a, b, c, residual."""
    sub = depth[rows]
    v, u = np.nonzero(sub > 0)
    v = v + (rows.start or 0)
    inv = 1.0 / depth[v, u].astype(np.float64)
    a_mat = np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a_mat, inv, rcond=None)
    resid = float(np.max(np.abs(a_mat @ coef - inv) / inv))
    return float(coef[0]), float(coef[1]), float(coef[2]), resid


# ----------------------------------------------------------------------------------------------
# Configuration and arguments
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"width": 0}, "width"),
    ({"height": 12.5}, "height"),
    ({"n_objects": (5, 2)}, "n_objects"),
    ({"n_tables": (0, 9)}, "n_tables"),
    ({"pitch_range_deg": (10.0, float("nan"))}, "pitch_range_deg"),
    ({"roll_range_deg": (-15.0,)}, "roll_range_deg"),
    ({"camera_height_range": (0.0, 1.0)}, "camera_height_range"),
    ({"hfov_range_deg": (50.0, 170.0)}, "hfov_range_deg"),
    ({"depth_noise": -0.1}, "depth_noise"),
    ({"depth_dropout": 1.0}, "depth_dropout"),
    ({"depth_format": "exr"}, "depth_format"),
    ({"side_wall_probability": 1.5}, "side_wall_probability"),
    ({"duplicate_caption_probability": True}, "duplicate_caption_probability"),
])
def test_config_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**kwargs)


def test_config_accepts_lists_and_looking_up() -> None:
    cfg = SynthConfig(pitch_range_deg=[-20, 45], n_objects=[0, 3])
    assert cfg.pitch_range_deg == (-20.0, 45.0)
    assert cfg.n_objects == (0, 3)
    hash(cfg)  # frozen and hashable


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index"):
        generate_scene(-1)
    with pytest.raises(ValueError, match="seed"):
        generate_scene(0, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config"):
        generate_scene(0, config={"width": 10})  # type: ignore[arg-type]
    scene = generate_scene(0, config=SMALL)
    with pytest.raises(ValueError, match="depth_format"):
        write_scene(scene, tmp_path, depth_format="jpg")
    with pytest.raises(ValueError, match="n must"):
        write_synthetic_dataset(tmp_path, n=-1, progress=False)
    with pytest.raises(ValueError, match="pitch_deg"):
        camera_pose(1.0, 95.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Camera pose convention
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("angles", [(30.0, 0.0, 0.0), (-20.0, 12.0, 77.0), (45.0, -15.0, -160.0),
                                    (5.0, 3.0, 180.0)])
def test_camera_pose_is_proper_rotation(angles: tuple[float, float, float]) -> None:
    rot, pos = camera_pose(1.3, *angles)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(pos, [0.0, 0.0, 1.3])


def test_camera_pose_angle_signs() -> None:
    rot, _ = camera_pose(1.5, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(rot, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)  # level, along +y
    rot, _ = camera_pose(1.5, 30.0, 0.0, 0.0)
    assert rot[2, 2] == pytest.approx(-0.5)  # pitch > 0: optical axis points down
    rot, _ = camera_pose(1.5, -20.0, 0.0, 0.0)
    assert rot[2, 2] == pytest.approx(math.sin(math.radians(20.0)))  # pitch < 0: looks up
    rot, _ = camera_pose(1.5, 0.0, 0.0, 90.0)
    np.testing.assert_allclose(rot[:, 2], [-1.0, 0.0, 0.0], atol=1e-12)  # yaw 90: looks along -x
    rot, _ = camera_pose(1.5, 20.0, 10.0, 0.0)
    assert rot[2, 0] == pytest.approx(math.sin(math.radians(10.0)) * math.cos(math.radians(20.0)))


@pytest.mark.parametrize("roll", [10.0, -10.0])
def test_positive_roll_makes_the_horizon_descend_to_the_right(roll: float) -> None:
    rot, pos = camera_pose(1.5, 10.0, roll, 33.0)
    fwd = rot[:, 2].copy()
    fwd[2] = 0.0
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    vs = []
    for side in (-1.0, 1.0):  # far points at eye height, left and right of the view direction
        p = pos + 1000.0 * fwd / np.linalg.norm(fwd) + side * 200.0 * right / np.linalg.norm(right)
        pc = rot.T @ (p - pos)
        vs.append(pc[1] / pc[2])
    slope = (vs[1] - vs[0])
    assert slope > 0 if roll > 0 else slope < 0


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------

def test_same_seed_and_index_give_identical_scenes() -> None:
    a = generate_scene(7, seed=3, config=SMALL)
    generate_scene(2, seed=3, config=SMALL)  # generating other scenes in between changes nothing
    b = generate_scene(7, seed=3, config=SMALL)
    for name in ("image", "depth", "instances"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.ground_truth == b.ground_truth
    assert a.objects == b.objects and a.camera == b.camera and a.scene_id == b.scene_id == "synth_000007"


def test_different_index_or_seed_gives_different_scenes() -> None:
    a = generate_scene(7, seed=3, config=SMALL)
    for other in (generate_scene(8, seed=3, config=SMALL), generate_scene(7, seed=4, config=SMALL)):
        assert not np.array_equal(a.depth, other.depth)
        assert a.ground_truth["camera"] != other.ground_truth["camera"]


def test_noise_settings_do_not_change_geometry_or_colours() -> None:
    clean = generate_scene(5, config=SMALL)
    noisy = generate_scene(5, config=SynthConfig(width=160, height=120, depth_noise=0.05, depth_dropout=0.1))
    np.testing.assert_array_equal(clean.image, noisy.image)
    np.testing.assert_array_equal(clean.instances, noisy.instances)
    assert not np.array_equal(clean.depth, noisy.depth)


# ----------------------------------------------------------------------------------------------
# In-memory scene
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(4))
def test_scene_arrays_ids_and_statistics(index: int) -> None:
    scene = generate_scene(index, config=SMALL)
    assert scene.image.shape == (120, 160, 3) and scene.image.dtype == np.uint8
    assert scene.depth.shape == (120, 160) and scene.depth.dtype == np.float32
    assert scene.instances.shape == (120, 160) and scene.instances.dtype == np.uint16
    assert np.all(np.isfinite(scene.depth)) and scene.depth.min() >= 0 and scene.depth.max() <= 20.0
    assert set(scene.camera) == {"fx", "fy", "cx", "cy", "width", "height"}
    ids = set(np.unique(scene.instances).tolist()) - {0}
    assert ids == {o["id"] for o in scene.objects}
    assert len(ids) >= 1
    gt = {o["id"]: o for o in scene.ground_truth["objects"]}
    assert ids <= set(gt)
    for obj in scene.objects:
        assert obj["caption"] == gt[obj["id"]]["caption"]
    counts = np.bincount(scene.instances.ravel(), minlength=max(gt) + 1)
    for oid, o in gt.items():
        assert o["visible_pixels"] == counts[oid]
        assert 0 <= o["visible_pixels"] <= o["unoccluded_pixels"]
        assert 0.0 <= o["visible_fraction"] <= 1.0
        assert o["caption"] == f"{o['color']} {o['category']}"
        assert o["width"] >= o["depth"] >= 0.06 and o["height"] >= 0.06
        assert o["width"] == max(o["size"][:2]) and o["height"] == o["size"][2]
        if o["support"] != "floor":
            table = gt[int(o["support"].split(":")[1])]
            assert table["category"] == "table"
            assert o["center"][2] - o["height"] / 2 == pytest.approx(table["height"], abs=1e-6)
        else:
            assert o["center"][2] == pytest.approx(o["height"] / 2, abs=1e-6)
        on_border = (scene.instances[0] == oid).any() or (scene.instances[-1] == oid).any() or \
            (scene.instances[:, 0] == oid).any() or (scene.instances[:, -1] == oid).any()
        if on_border:
            assert o["truncated"]


def test_scene_respects_config_ranges() -> None:
    cfg = SynthConfig(width=160, height=120, camera_height_range=(1.0, 1.2), pitch_range_deg=(-20.0, -10.0),
                      roll_range_deg=(0.0, 0.0), hfov_range_deg=(70.0, 70.0), n_tables=(2, 2))
    for index in range(3):
        cam = generate_scene(index, config=cfg).ground_truth["camera"]
        assert 1.0 <= cam["position"][2] <= 1.2
        assert -20.0 <= cam["pitch_deg"] <= -10.0 and cam["roll_deg"] == 0.0
        assert math.degrees(2 * math.atan(80 / cam["fx"])) == pytest.approx(70.0, abs=1e-3)
        assert abs(cam["fy"] / cam["fx"] - 1.0) <= 0.01 + 1e-9
        assert abs(cam["cx"] - 79.5) <= 0.02 * 160 + 1e-9 and abs(cam["cy"] - 59.5) <= 0.02 * 120 + 1e-9


@pytest.mark.parametrize("index", range(5))
def test_object_pixels_back_project_into_their_gt_boxes(index: int) -> None:
    cfg = MEDIUM if index % 2 else SynthConfig(width=320, height=240, pitch_range_deg=(-20.0, 45.0))
    scene = generate_scene(index, seed=11, config=cfg)
    checked = 0
    for obj in scene.ground_truth["objects"]:
        mask = scene.instances == obj["id"]
        if not mask.any():
            continue
        pts = _world_points(scene, scene.depth, mask) - np.asarray(obj["center"])
        yaw = math.radians(obj["yaw_deg"])
        lx = math.cos(yaw) * pts[:, 0] + math.sin(yaw) * pts[:, 1]
        ly = -math.sin(yaw) * pts[:, 0] + math.cos(yaw) * pts[:, 1]
        half = np.asarray(obj["size"]) / 2 + 1e-3
        assert np.all(np.abs(lx) <= half[0]) and np.all(np.abs(ly) <= half[1])
        assert np.all(np.abs(pts[:, 2]) <= half[2])
        if obj["shape"] == "cylinder":
            assert np.all(np.hypot(lx, ly) <= obj["size"][0] / 2 + 1e-3)
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("index", range(3))
def test_background_pixels_lie_on_the_gt_floor_and_walls(index: int, tmp_path: Path) -> None:
    scene = generate_scene(index, seed=5, config=SynthConfig(width=200, height=150, side_wall_probability=1.0,
                                                             pitch_range_deg=(-10.0, 45.0)))
    folder = write_scene(scene, tmp_path)
    depth_mm = np.asarray(Image.open(folder / "depth.png")).astype(np.float64)
    depth = depth_mm / 1000.0
    gt = json.loads((folder / "ground_truth.json").read_text())
    assert len(gt["walls"]) == 2
    rays, pos = _world_rays(scene)
    # Nearest plane hit per pixel, computed independently from the GT planes.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rays[..., 2] < 0, -pos[2] / rays[..., 2], np.inf)
        t_walls = []
        for wall in gt["walls"]:
            n, p = np.asarray(wall["normal"]), np.asarray(wall["point"])
            den = rays @ n
            t_walls.append(np.where(den < 0, ((p - pos) @ n) / den, np.inf))
    t_wall = np.minimum(*t_walls)
    background = scene.instances == 0
    floor = background & (t_floor < t_wall) & (t_floor <= 19.0)
    wall = background & (t_wall < t_floor) & (t_wall <= 19.0)
    assert floor.sum() > 100
    np.testing.assert_allclose(depth[floor], t_floor[floor], atol=1e-3)
    z = _world_points(scene, depth, floor)[:, 2]
    assert np.abs(z).max() <= 2e-3
    if wall.any():
        np.testing.assert_allclose(depth[wall], t_wall[wall], atol=1e-3)
    far = background & (np.minimum(t_floor, t_wall) > 20.5)
    assert np.all(depth[far] == 0)


def test_objects_and_floor_in_a_scene_looking_up() -> None:
    cfg = SynthConfig(width=200, height=150, pitch_range_deg=(-20.0, -15.0))
    scenes = [generate_scene(i, config=cfg) for i in range(3)]
    assert all(s.ground_truth["camera"]["pitch_deg"] < 0 for s in scenes)
    assert sum(len(s.objects) for s in scenes) >= 3


def test_pitched_down_camera_sees_floor_in_lower_half_and_roll_matches() -> None:
    """Image-only evidence of the pose signs: the floor's inverse depth is affine in (u, v)."""
    for roll in (0.0, 10.0, -12.0):
        cfg = SynthConfig(width=320, height=240, pitch_range_deg=(30.0, 30.0), roll_range_deg=(roll, roll),
                          **EMPTY_ROOM)
        scene = generate_scene(1, config=cfg)
        cam = scene.camera
        a, b, c, resid = _fit_inverse_depth_plane(scene.depth, slice(180, 240))
        assert resid < 1e-4  # the bottom quarter is one plane (the floor)
        # Floor below the camera: inverse depth grows downwards; the horizon (1/Z = 0) is above centre.
        assert b > 0
        v_horizon = -(a * cam["cx"] + c) / b
        assert v_horizon < cam["cy"]
        assert math.degrees(math.atan((cam["cy"] - v_horizon) / cam["fy"] * math.cos(math.radians(roll)))) \
            == pytest.approx(30.0, abs=0.5)
        # The iso-depth lines are parallel to the horizon: positive roll -> descending to the right.
        roll_est = math.degrees(math.atan2(-a * cam["fx"], b * cam["fy"]))
        assert roll_est == pytest.approx(roll, abs=0.3)
        # Lower image half = floor at about the camera height below (z-depth times the normal).
        lower = scene.depth[cam["height"] // 2:]
        assert np.all(lower > 0)


def test_depth_noise_statistics() -> None:
    base = dict(width=320, height=240, **EMPTY_ROOM)
    clean = generate_scene(2, config=SynthConfig(**base))
    noisy = generate_scene(2, config=SynthConfig(depth_noise=0.02, **base))
    valid = clean.depth > 0
    np.testing.assert_array_equal(valid, noisy.depth > 0)
    ratio = noisy.depth[valid].astype(np.float64) / clean.depth[valid]
    assert ratio.std() == pytest.approx(0.02, rel=0.05)
    assert ratio.mean() == pytest.approx(1.0, abs=1e-3)
    assert noisy.ground_truth["depth_noise"] == 0.02


def test_depth_dropout_fraction() -> None:
    base = dict(width=320, height=240, **EMPTY_ROOM)
    clean = generate_scene(2, config=SynthConfig(**base))
    dropped = generate_scene(2, config=SynthConfig(depth_dropout=0.25, **base))
    valid = clean.depth > 0
    assert np.all(dropped.depth[~valid] == 0)
    lost = (dropped.depth[valid] == 0).mean()
    assert lost == pytest.approx(0.25, abs=0.01)
    kept = valid & (dropped.depth > 0)
    np.testing.assert_array_equal(dropped.depth[kept], clean.depth[kept])


def test_occlusions_and_truncations_happen() -> None:
    fractions, truncated = [], []
    for index in range(8):
        for o in generate_scene(index, config=SMALL).ground_truth["objects"]:
            fractions.append(o["visible_fraction"])
            truncated.append(o["truncated"])
    fractions_arr = np.asarray(fractions)
    assert np.all((fractions_arr >= 0) & (fractions_arr <= 1))
    assert np.any((fractions_arr > 0) & (fractions_arr < 0.95))  # partial occlusion
    assert np.any(fractions_arr == 1.0)
    assert any(truncated) and not all(truncated)


def test_caption_collisions_are_produced() -> None:
    always = SynthConfig(width=160, height=120, duplicate_caption_probability=1.0)
    never = SynthConfig(width=160, height=120, duplicate_caption_probability=0.0, n_objects=(4, 4))
    with_dups = 0
    for index in range(6):
        captions = [o["caption"] for o in generate_scene(index, config=always).ground_truth["objects"]]
        with_dups += len(captions) != len(set(captions))
    assert with_dups >= 5
    assert generate_scene(0, config=never).ground_truth["objects"]


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def test_write_scene_png_format(tmp_path: Path) -> None:
    scene = generate_scene(3, seed=2, config=SMALL)
    folder = write_scene(scene, tmp_path)
    assert folder == tmp_path / "synth_000003"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["image.png", "depth.png", "instances.png", "camera.json", "objects.json", "ground_truth.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["synth_000003"]  # no temporary folder left over
    img = Image.open(folder / "image.png")
    assert img.mode == "RGB" and img.size == (160, 120)
    np.testing.assert_array_equal(np.asarray(img), scene.image)
    dimg = Image.open(folder / "depth.png")
    assert dimg.mode == "I;16"
    depth_mm = np.asarray(dimg)
    assert depth_mm.dtype == np.uint16
    np.testing.assert_array_equal(depth_mm, np.rint(scene.depth.astype(np.float64) * 1000).astype(np.uint16))
    assert np.all((depth_mm == 0) == (scene.depth == 0))
    iimg = Image.open(folder / "instances.png")
    assert iimg.mode == "I;16"
    inst = np.asarray(iimg)
    np.testing.assert_array_equal(inst, scene.instances)
    objects = json.loads((folder / "objects.json").read_text())
    assert {o["id"] for o in objects} == set(np.unique(inst).tolist()) - {0}
    assert all(set(o) == {"id", "caption"} for o in objects)
    camera = json.loads((folder / "camera.json").read_text())
    assert camera == scene.camera and camera["width"] == 160 and camera["height"] == 120
    gt = json.loads((folder / "ground_truth.json").read_text())
    assert gt["format"] == "spatialforge-synth-gt/1"
    assert (gt["scene_id"], gt["seed"], gt["index"]) == ("synth_000003", 2, 3)
    assert set(gt) == {"format", "scene_id", "seed", "index", "depth_noise", "camera", "floor", "walls",
                       "objects"}
    assert set(gt["camera"]) == {"fx", "fy", "cx", "cy", "width", "height", "position", "R_world_from_cam",
                                 "pitch_deg", "roll_deg", "yaw_deg"}
    assert gt["floor"] == {"normal": [0.0, 0.0, 1.0], "offset": 0.0}
    keys = {"id", "caption", "category", "color", "shape", "center", "size", "yaw_deg", "width", "depth",
            "height", "support", "visible_pixels", "unoccluded_pixels", "visible_fraction", "truncated"}
    assert all(set(o) == keys for o in gt["objects"])
    rot = np.asarray(gt["camera"]["R_world_from_cam"])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    # Rewriting replaces the folder atomically.
    assert write_scene(scene, tmp_path) == folder
    assert [p.name for p in tmp_path.iterdir()] == ["synth_000003"]


def test_write_scene_npy_depth(tmp_path: Path) -> None:
    scene = generate_scene(1, config=SynthConfig(width=160, height=120, depth_noise=0.01))
    folder = write_scene(scene, tmp_path, depth_format="npy")
    assert not (folder / "depth.png").exists()
    depth = np.load(folder / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (120, 160)
    np.testing.assert_array_equal(depth, scene.depth)
    assert np.all(np.isfinite(depth))


def test_write_synthetic_dataset(tmp_path: Path) -> None:
    cfg = SynthConfig(width=96, height=72, depth_format="npy")
    paths = write_synthetic_dataset(tmp_path / "out", n=3, seed=9, config=cfg, progress=False)
    assert [p.name for p in paths] == ["synth_000000", "synth_000001", "synth_000002"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]
    for i, p in enumerate(paths):
        assert (p / "depth.npy").exists() and not (p / "depth.png").exists()
        np.testing.assert_array_equal(np.load(p / "depth.npy"), generate_scene(i, seed=9, config=cfg).depth)
    assert write_synthetic_dataset(tmp_path / "empty", n=0, progress=False) == []


def test_objects_are_rendered_in_their_named_colour() -> None:
    checked = 0
    for index in range(6):
        scene = generate_scene(index, config=SMALL)
        for o in scene.ground_truth["objects"]:
            mask = scene.instances == o["id"]
            if o["color"] not in ("red", "blue", "green") or mask.sum() < 20:
                continue
            mean = scene.image[mask].astype(float).mean(axis=0)
            channel = {"red": 0, "green": 1, "blue": 2}[o["color"]]
            assert mean[channel] == mean.max(), (o["caption"], mean)
            checked += 1
    assert checked >= 1
