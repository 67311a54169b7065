"""The scene folder format: load_scene validation, save_scene round trip, find_scene_dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene
from spatialforge.errors import SceneFormatError, SpatialForgeError
from spatialforge.io.scene_folder import find_scene_dirs, load_scene, save_scene
from spatialforge.synth import SynthConfig, generate_scene, write_scene

W, H = 160, 120


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One valid 160x120 synthetic scene folder (read-only: tests copy it)."""
    root = tmp_path_factory.mktemp("loader_template")
    return write_scene(generate_scene(0, 3, SynthConfig(width=W, height=H)), root)


@pytest.fixture
def scene(template, tmp_path) -> Path:
    """A private, modifiable copy of the template scene."""
    dst = tmp_path / "scene_a"
    shutil.copytree(template, dst)
    return dst


def _read_json(p: Path):
    return json.loads(p.read_text())


def _write_json(p: Path, data) -> None:
    p.write_text(json.dumps(data))


def _fails(folder: Path, file_name: str, phrase: str, reason: str) -> SceneFormatError:
    with pytest.raises(SceneFormatError) as info:
        load_scene(folder)
    err = info.value
    msg = str(err)
    assert file_name in msg, msg
    assert phrase.lower() in msg.lower(), msg
    assert err.reason == reason, (err.reason, msg)
    assert "\n" not in msg
    return err


# ----------------------------------------------------------------------------- the valid template


def test_template_loads(scene):
    s = load_scene(scene)
    assert s.scene_id == "scene_a"
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.depth.shape == (H, W) and s.depth.dtype == np.float32
    assert s.instances.shape == (H, W)
    assert s.intrinsics.width == W and s.intrinsics.height == H
    ids = {o.id for o in s.objects}
    present = set(np.unique(s.instances).tolist()) - {0}
    assert present and present <= ids
    assert s.provenance["depth_file"] == "depth.png"
    assert load_scene(scene, scene_id="other").scene_id == "other"


# ----------------------------------------------------------------------------- missing / ambiguous files


def test_missing_image(scene):
    (scene / "image.png").unlink()
    _fails(scene, "image.png", "missing image", "missing_file")


def test_both_png_and_jpg_image(scene):
    Image.open(scene / "image.png").convert("RGB").save(scene / "image.jpg")
    _fails(scene, "image.jpg", "ambiguous image", "bad_format")
    with pytest.raises(SceneFormatError) as info:
        load_scene(scene)
    msg = str(info.value)
    assert "image.png" in msg


def test_missing_depth(scene):
    (scene / "depth.png").unlink()
    _fails(scene, "depth.png", "missing depth map", "missing_file")


@pytest.mark.parametrize("name", ["instances.png", "camera.json", "objects.json"])
def test_missing_required_file(scene, name):
    (scene / name).unlink()
    _fails(scene, name, "missing file", "missing_file")


def test_not_a_directory(tmp_path):
    _fails(tmp_path / "nope", "nope", "not a directory", "missing_file")


# ----------------------------------------------------------------------------- depth and instances


def test_depth_png_8bit(scene):
    Image.fromarray(np.full((H, W), 100, np.uint8)).save(scene / "depth.png")
    _fails(scene, "depth.png", "16-bit PNG of millimetres", "bad_format")


def test_depth_png_size_mismatch(scene):
    mm = np.asarray(Image.open(scene / "depth.png"))
    Image.fromarray(np.ascontiguousarray(mm[: H - 10, : W - 20])).save(scene / "depth.png")
    err = _fails(scene, "depth.png", f"size {W - 20}x{H - 10} differs from image.png {W}x{H}", "size_mismatch")
    assert err.path.endswith("depth.png")


def test_depth_npy_size_mismatch(scene):
    (scene / "depth.png").unlink()
    np.save(scene / "depth.npy", np.full((H, W + 1), 2.0, np.float32))
    _fails(scene, "depth.npy", "differs from", "size_mismatch")


def test_instances_size_mismatch(scene):
    inst = np.asarray(Image.open(scene / "instances.png"))
    Image.fromarray(np.ascontiguousarray(inst[:, : W // 2])).save(scene / "instances.png")
    _fails(scene, "instances.png", f"size {W // 2}x{H} differs", "size_mismatch")


def test_instances_8bit_accepted(scene):
    inst = np.asarray(Image.open(scene / "instances.png")).astype(np.int64)
    assert inst.max() < 256
    Image.fromarray(inst.astype(np.uint8), "L").save(scene / "instances.png")
    s = load_scene(scene)
    np.testing.assert_array_equal(s.instances, inst)


def test_instances_palette_png_keeps_ids(scene):
    inst = np.asarray(Image.open(scene / "instances.png")).astype(np.uint8)
    p = Image.fromarray(inst, "P")
    rng = np.random.default_rng(0)
    p.putpalette([0, 0, 0, *rng.integers(0, 256, 255 * 3).tolist()])
    p.save(scene / "instances.png")
    assert Image.open(scene / "instances.png").mode == "P"
    s = load_scene(scene)
    np.testing.assert_array_equal(s.instances, inst.astype(np.int32))


def test_depth_almost_all_zero(scene):
    mm = np.zeros((H, W), np.uint16)
    mm[:2, :5] = 1500  # far below 5 % valid pixels
    Image.fromarray(mm).save(scene / "depth.png")
    _fails(scene, "depth.png", "have valid depth", "bad_depth")


def test_depth_png_in_metres(scene):
    metres = np.asarray(Image.open(scene / "depth.png")).astype(np.float64) / 1000.0
    Image.fromarray(np.clip(np.round(metres), 0, 65535).astype(np.uint16) + 1).save(scene / "depth.png")
    err = _fails(scene, "depth.png", "millimetres", "bad_depth")
    assert "implausible depth range" in str(err)


def test_depth_npy_in_millimetres(scene):
    mm = np.asarray(Image.open(scene / "depth.png")).astype(np.float32)
    (scene / "depth.png").unlink()
    np.save(scene / "depth.npy", mm)
    err = _fails(scene, "depth.npy", "metres", "bad_depth")
    assert "not millimetres" in str(err)


def test_depth_npy_not_float(scene):
    (scene / "depth.png").unlink()
    np.save(scene / "depth.npy", np.full((H, W), 2, np.int32))
    _fails(scene, "depth.npy", "2-D float array", "bad_format")


def test_depth_npy_nan_becomes_invalid(scene):
    metres = np.asarray(Image.open(scene / "depth.png")).astype(np.float32) / 1000.0
    metres[0, :] = np.nan
    metres[1, :] = np.inf
    (scene / "depth.png").unlink()
    np.save(scene / "depth.npy", metres)
    s = load_scene(scene)
    assert np.all(s.depth[:2] == 0)
    assert np.all(np.isfinite(s.depth))
    assert s.provenance["depth_file"] == "depth.npy"


# ----------------------------------------------------------------------------- corrupt files


def test_garbage_image_png(scene):
    (scene / "image.png").write_bytes(b"\x89PNG garbage")
    _fails(scene, "image.png", "cannot read image", "unreadable_file")


def test_truncated_image_png(scene):
    data = (scene / "image.png").read_bytes()
    (scene / "image.png").write_bytes(data[: len(data) // 2])
    _fails(scene, "image.png", "cannot read image", "unreadable_file")


def test_garbage_depth_png(scene):
    (scene / "depth.png").write_bytes(b"nope")
    _fails(scene, "depth.png", "cannot read image", "unreadable_file")


def test_image_16bit_rejected(scene):
    Image.fromarray(np.full((H, W), 1000, np.uint16)).save(scene / "image.png")
    _fails(scene, "image.png", "8-bit colour image", "bad_format")


# ----------------------------------------------------------------------------- image modes


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_image_modes_converted_to_rgb(scene, mode):
    rgb = Image.open(scene / "image.png").convert("RGB")
    converted = rgb.convert(mode)
    converted.save(scene / "image.png")
    s = load_scene(scene)
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.image, np.asarray(converted.convert("RGB")))
    if mode == "L":
        assert np.all(s.image[..., 0] == s.image[..., 1])


def test_jpg_image_accepted(scene):
    Image.open(scene / "image.png").convert("RGB").save(scene / "image.jpg", quality=95)
    (scene / "image.png").unlink()
    s = load_scene(scene)
    assert s.image.shape == (H, W, 3)


# ----------------------------------------------------------------------------- camera.json


def _set_camera(scene: Path, **changes) -> None:
    cam = _read_json(scene / "camera.json")
    for k, v in changes.items():
        if v is None:
            cam.pop(k, None)
        else:
            cam[k] = v
    _write_json(scene / "camera.json", cam)


def test_camera_invalid_json(scene):
    (scene / "camera.json").write_text('{\n  "fx": 100,\n  "fy": 100,,\n}')
    err = _fails(scene, "camera.json", "invalid JSON", "bad_format")
    assert "line 3" in str(err) and "column" in str(err)


def test_camera_not_an_object(scene):
    _write_json(scene / "camera.json", [1, 2, 3, 4])
    _fails(scene, "camera.json", "expected a JSON object", "bad_format")


def test_camera_missing_fx(scene):
    _set_camera(scene, fx=None)
    _fails(scene, "camera.json", "missing key(s) fx", "bad_format")


def test_camera_non_numeric(scene):
    _set_camera(scene, fy="200")
    _fails(scene, "camera.json", "fy must be a finite number", "bad_format")


def test_camera_negative_fx(scene):
    cam = _read_json(scene / "camera.json")
    _set_camera(scene, fx=-cam["fx"])
    _fails(scene, "camera.json", "focal lengths must be positive", "bad_intrinsics")


def test_camera_principal_point_outside(scene):
    _set_camera(scene, cx=W + 50.0)
    _fails(scene, "camera.json", "principal point", "bad_intrinsics")
    _set_camera(scene, cx=W / 2, cy=-1.0)
    _fails(scene, "camera.json", "lies outside", "bad_intrinsics")


def test_camera_width_disagrees_with_image(scene):
    _set_camera(scene, width=W * 2)
    err = _fails(scene, "camera.json", f"width = {W * 2}", "size_mismatch")
    assert f"{W} pixels" in str(err)


def test_camera_without_size_keys_accepted(scene):
    _set_camera(scene, width=None, height=None)
    s = load_scene(scene)
    assert (s.intrinsics.width, s.intrinsics.height) == (W, H)


@pytest.mark.parametrize("fx", [0.5, 5000.0])  # hfov ~ 179.6 deg and ~ 1.8 deg
def test_camera_absurd_focal_length(scene, fx):
    _set_camera(scene, fx=fx, fy=fx)
    _fails(scene, "camera.json", "implausible horizontal field of view", "bad_intrinsics")


def test_camera_bad_aspect(scene):
    cam = _read_json(scene / "camera.json")
    _set_camera(scene, fy=cam["fx"] * 3)
    _fails(scene, "camera.json", "implausible aspect", "bad_intrinsics")


# ----------------------------------------------------------------------------- objects.json


def test_objects_not_a_list(scene):
    _write_json(scene / "objects.json", {"1": "red mug"})
    _fails(scene, "objects.json", "expected a JSON list", "bad_format")


def test_objects_entry_without_caption(scene):
    objs = _read_json(scene / "objects.json")
    del objs[1]["caption"]
    _write_json(scene / "objects.json", objs)
    _fails(scene, "objects.json", "entry 1 must be an object with 'id' and 'caption'", "bad_format")


@pytest.mark.parametrize("caption", ["", "   "])
def test_objects_empty_caption(scene, caption):
    objs = _read_json(scene / "objects.json")
    objs[0]["caption"] = caption
    _write_json(scene / "objects.json", objs)
    _fails(scene, "objects.json", "caption must be a non-empty string", "bad_format")


@pytest.mark.parametrize("bad_id", [0, -1, 70000, 1.5, "3", True])
def test_objects_bad_id(scene, bad_id):
    objs = _read_json(scene / "objects.json")
    objs.append({"id": bad_id, "caption": "extra thing"})
    _write_json(scene / "objects.json", objs)
    _fails(scene, "objects.json", f"entry {len(objs) - 1}:", "bad_format")


def test_objects_duplicate_ids(scene):
    objs = _read_json(scene / "objects.json")
    objs.append({"id": objs[0]["id"], "caption": "another thing"})
    _write_json(scene / "objects.json", objs)
    _fails(scene, "objects.json", f"duplicate id {objs[0]['id']}", "bad_format")


def test_objects_uncaptioned_instance(scene):
    inst = np.asarray(Image.open(scene / "instances.png"))
    visible = sorted(set(np.unique(inst).tolist()) - {0})
    dropped = visible[-1]
    objs = [o for o in _read_json(scene / "objects.json") if o["id"] != dropped]
    _write_json(scene / "objects.json", objs)
    err = _fails(scene, "objects.json", f"instance id(s) {dropped} in instances.png have no caption",
                 "uncaptioned_instance")
    assert err.path.endswith("objects.json")


def test_objects_caption_without_pixels_is_fine(scene):
    objs = _read_json(scene / "objects.json")
    objs.append({"id": 999, "caption": "  hidden   lamp "})
    _write_json(scene / "objects.json", objs)
    s = load_scene(scene)
    assert s.caption_of(999) == "hidden lamp"  # whitespace normalised
    assert 999 not in np.unique(s.instances)


# ----------------------------------------------------------------------------- save_scene round trip


def _assert_same_scene(a: RGBDScene, b: RGBDScene, depth_atol: float) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_allclose(a.depth, b.depth, atol=depth_atol, rtol=0)
    assert [(o.id, o.caption) for o in a.objects] == [(o.id, o.caption) for o in b.objects]
    assert a.intrinsics == b.intrinsics


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_save_load_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 6.0, (H, W)).astype(np.float32)
    depth[:3] = 0.0
    instances = np.zeros((H, W), np.int32)
    instances[20:50, 30:70] = 3
    instances[60:100, 80:150] = 300  # needs more than 8 bits
    intr = CameraIntrinsics(fx=150.0, fy=151.5, cx=79.5, cy=60.25, width=W, height=H)
    objects = (ObjectAnnotation(3, "red mug"), ObjectAnnotation(300, "blue chair"),
               ObjectAnnotation(7, "unseen box"))
    scene = RGBDScene("rt_scene", image, depth, instances, intr, objects)

    folder = save_scene(scene, tmp_path / "root", depth_format=fmt)
    assert folder == tmp_path / "root" / "rt_scene"
    assert (folder / f"depth.{fmt}").is_file()
    assert not (folder / ("depth.npy" if fmt == "png" else "depth.png")).exists()
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["rt_scene"]  # no temp folder left

    back = load_scene(folder)
    assert back.scene_id == "rt_scene"
    _assert_same_scene(scene, back, depth_atol=0.0005 + 1e-6 if fmt == "png" else 0.0)
    if fmt == "png":
        assert not np.array_equal(back.depth, scene.depth)  # really quantised to millimetres
    assert np.all(back.depth[:3] == 0)


def test_save_scene_replaces_existing(tmp_path, scene):
    s = load_scene(scene)
    root = tmp_path / "out"
    save_scene(s, root, depth_format="npy")
    folder = save_scene(s, root, depth_format="png")  # overwrite: the old depth.npy must go
    assert (folder / "depth.png").is_file() and not (folder / "depth.npy").exists()
    _assert_same_scene(s, load_scene(folder), depth_atol=1e-6)


def test_save_scene_rejects_bad_format(tmp_path, scene):
    with pytest.raises(ValueError, match="depth_format"):
        save_scene(load_scene(scene), tmp_path, depth_format="exr")


# ----------------------------------------------------------------------------- find_scene_dirs


def test_find_scene_dirs_dataset_root(tmp_path, template):
    root = tmp_path / "ds"
    root.mkdir()
    for name in ("b_scene", "a_scene", "c_scene"):
        shutil.copytree(template, root / name)
    (root / ".hidden").mkdir()
    (root / "_state").mkdir()
    shutil.copytree(template, root / ".tmp_scene")
    (root / "README.txt").write_text("not a scene")
    (root / "notes.json").write_text("{}")
    found = find_scene_dirs(root)
    assert found == [root / "a_scene", root / "b_scene", root / "c_scene"]
    # plain string paths work too
    assert find_scene_dirs(str(root)) == found


def test_find_scene_dirs_single_scene(scene):
    assert find_scene_dirs(scene) == [scene]


def test_find_scene_dirs_missing_root(tmp_path):
    with pytest.raises(SpatialForgeError, match="no such directory"):
        find_scene_dirs(tmp_path / "absent")


def test_find_scene_dirs_on_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(SpatialForgeError, match="not a directory"):
        find_scene_dirs(f)
