"""`spatialforge afford predict --depth`: the heatmaps lifted into 3D next to them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("pycocotools")

from spatialforge.cli.main import main

from .test_cli_afford import trained  # noqa: F401  (the tiny trained checkpoint, a module fixture)


@pytest.fixture()
def rgbd(tmp_path):
    """Two images (one synthetic scene with parts, one with no depth map) and a depth folder."""
    from spatialforge.synth import SynthConfig, generate_scene, write_scene

    folder = write_scene(generate_scene(1, seed=0, config=SynthConfig(width=160, height=120, parts=True)),
                         tmp_path / "scenes")
    imgs, depth = tmp_path / "imgs", tmp_path / "depth"
    imgs.mkdir()
    depth.mkdir()
    shutil.copy(folder / "image.png", imgs / "kitchen.png")
    shutil.copy(folder / "image.png", imgs / "nodepth.png")
    shutil.copy(folder / "depth.png", depth / "kitchen.png")
    shutil.copy(folder / "camera.json", depth / "camera.json")
    return {"imgs": imgs, "depth": depth, "scene": folder}


def _argv(trained, imgs, out, *extra):  # noqa: F811
    return ["afford", "predict", str(imgs), "--prompt", "hold", "--prompt", "pour", "--checkpoint",
            str(trained["ckpt"]), "--out", str(out), "--device", "cpu", *extra]


def test_predict_with_depth_writes_the_3d_points(trained, rgbd, tmp_path, capsys):  # noqa: F811
    from spatialforge.afford.lift import lift_affordance
    from spatialforge.cli.afford import PREDICT_OUTPUT
    from spatialforge.core.types import CameraIntrinsics, Gravity
    from spatialforge.io.scene_folder import load_scene

    out = tmp_path / "pred"
    assert main(_argv(trained, rgbd["imgs"], out, "--depth", str(rgbd["depth"]))) == 0
    captured = capsys.readouterr()
    assert "no depth map for" in captured.err and "nodepth.png" in captured.err
    info = json.loads((out / "predictions.json").read_text())
    assert info["written_3d"] == ["kitchen_hold", "kitchen_pour"] and len(info["no_depth"]) == 1
    assert not (out / "nodepth_hold.3d.json").exists()
    assert all(PREDICT_OUTPUT.owned(p.name) for p in out.iterdir())
    data = json.loads((out / "kitchen_pour.3d.json").read_text())
    assert data["prompt"] == "pour" and data["camera"]["width"] == 160
    (region,) = data["regions"]
    normal, approach = np.array(region["normal"]), np.array(region["approach"])
    assert np.linalg.norm(normal) == pytest.approx(1.0) and approach == pytest.approx(-normal)
    assert region["area_m2"] > 0 and region["region_pixels"] > 0
    # the same numbers as lifting the saved heatmap with the recorded gravity frame
    scene = load_scene(rgbd["scene"])
    g = data["gravity"]
    grav = Gravity(source=g["source"], R=np.array(g["R_canonical_from_camera"]), t=np.array(g["t"]))
    intr = CameraIntrinsics(**data["camera"])
    (again,) = lift_affordance(np.load(out / "kitchen_pour.npy"), scene.depth, intr, grav)
    assert list(again.pixel) == region["pixel"]
    assert again.interaction_point == pytest.approx(region["interaction_point"], abs=1e-5)
    assert again.area_m2 == pytest.approx(region["area_m2"], rel=1e-6)
    # the interaction point is the 3D point of its pixel
    u, v = region["pixel"]
    z = float(scene.depth[v, u])
    p_cam = np.array([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z])
    assert grav.R @ p_cam + grav.t == pytest.approx(region["interaction_point"], abs=1e-5)
    # a plane was found (the synthetic floor) so the gravity frame is the measured one
    assert g["source"] == "plane"


def test_predict_depth_errors_are_one_line(trained, rgbd, tmp_path, capsys):  # noqa: F811
    imgs, depth = rgbd["imgs"], rgbd["depth"]
    cases = [
        (["--depth", str(tmp_path / "missing")], "--depth", "no such folder"),
        (["--hfov", "60"], "--hfov", "only used with --depth"),
        (["--depth", str(depth), "--hfov", "1"], "argument --hfov", "must be a number >= 5"),
    ]
    for extra, flag, problem in cases:
        assert main(_argv(trained, imgs, tmp_path / "o", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and problem in err[0]
    # the depth folder is an input: --out inside it is refused and nothing is written there
    assert main(_argv(trained, imgs, depth / "out", "--depth", str(depth))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and not (depth / "out").exists()
    (depth / "camera.json").unlink()
    assert main(_argv(trained, imgs, tmp_path / "o2", "--depth", str(depth))) == 2
    assert "no camera.json there" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # refused before anything was written
    # with --hfov instead of camera.json it works
    assert main(_argv(trained, imgs, tmp_path / "o3", "--depth", str(depth), "--hfov", "60")) == 0
    assert json.loads((tmp_path / "o3" / "kitchen_hold.3d.json").read_text())["camera"]["fx"] == pytest.approx(
        80 / np.tan(np.radians(30)))
    capsys.readouterr()
    # a depth map of another size
    np.save(depth / "kitchen.npy", np.ones((10, 10), np.float32))
    (depth / "kitchen.png").unlink()
    assert main(_argv(trained, imgs, tmp_path / "o4", "--depth", str(depth), "--hfov", "60")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kitchen.npy" in err[0] and "differs from the image's 160x120" in err[0]
