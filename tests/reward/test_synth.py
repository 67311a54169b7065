"""Synthetic trajectories: exact truth, determinism, occlusion, writing to disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialforge.errors import ConfigError
from spatialforge.reward.synth import INSTANCE_IDS, synth_trajectory, write_trajectory

SMALL = {"n_frames": 12, "size": (160, 120)}


def test_same_seed_same_episode_other_seed_differs():
    a = synth_trajectory("approach", seed=4, **SMALL)
    b = synth_trajectory("approach", seed=4, **SMALL)
    c = synth_trajectory("approach", seed=5, **SMALL)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a.frames, b.frames, strict=True))
    assert a.truth["distance_m"] == b.truth["distance_m"]
    assert a.truth["distance_m"] != c.truth["distance_m"]


def test_truth_follows_the_kind():
    app = synth_trajectory("approach", seed=0, **SMALL).truth
    ret = synth_trajectory("retreat", seed=0, **SMALL).truth
    d_app, d_ret = np.array(app["distance_m"]), np.array(ret["distance_m"])
    assert np.all(np.diff(d_app) <= 1e-9) and d_app[-1] < app["success_threshold_m"] < d_app[0]
    assert np.all(np.diff(d_ret) >= -1e-9)
    assert app["success"] is True and ret["success"] is False
    assert synth_trajectory("pass_by", seed=0, **SMALL).truth["success"] is False
    # the gap (surfaces) is never larger than the centre distance
    assert np.all(np.array(app["gap_m"]) <= d_app + 1e-9)


def test_occlusion_hides_the_cube_and_rgb_has_no_depth():
    traj = synth_trajectory("approach", seed=0, occlusion_frames=(3, 4), rgbd=False, **SMALL)
    inst = traj.truth["instances"]
    cube = INSTANCE_IDS["orange cube"]
    assert [int((inst[i] == cube).sum()) for i in (3, 4)] == [0, 0]
    assert (inst[2] == cube).sum() > 30 and (inst[5] == cube).sum() > 30
    assert traj.truth["occluded"][3] and not traj.truth["occluded"][2]
    assert all(f.depth is None for f in traj.frames) and traj.truth["depth"].shape == (12, 120, 160)


@pytest.mark.parametrize(("kwargs", "word"), [({"kind": "jump"}, "kind"), ({"n_frames": 1}, "n_frames"),
                                              ({"occlusion_frames": (40,)}, "occlusion_frames"),
                                              ({"shake_px": -1.0}, "shake_px"), ({"size": (10, 10)}, "size")])
def test_bad_arguments_are_one_clear_error(kwargs, word):
    args = {"kind": "approach", **kwargs}
    kind = args.pop("kind")
    with pytest.raises(ConfigError, match=word):
        synth_trajectory(kind, **args)


def test_write_rgbd_frames_and_mp4(tmp_path):
    traj = synth_trajectory("retreat", seed=1, **SMALL)
    out = write_trajectory(traj, tmp_path / "rgbd", format="rgbd")
    assert sorted(p.name for p in out.iterdir()) == ["camera.json", "depth", "frames.json", "rgb", "truth.json"]
    assert np.array_equal(np.load(out / "depth" / "000003.npy"), traj.frames[3].depth)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["distance_m"] == traj.truth["distance_m"] and "instances" not in truth
    assert json.loads((out / "camera.json").read_text())["fx"] == traj.intrinsics.fx
    frames = write_trajectory(traj, tmp_path / "frames", format="frames")
    assert len(list(frames.glob("*.png"))) == 12
    with pytest.raises(ConfigError, match="empty"):
        write_trajectory(traj, tmp_path / "frames", format="frames")
    video = write_trajectory(traj, tmp_path / "video", format="mp4")
    import av

    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12 and decoded[0].shape == (120, 160, 3)
    assert np.abs(decoded[5].astype(int) - traj.frames[5].image.astype(int)).mean() < 8


def test_rgbd_folder_reads_back_when_the_reader_exists(tmp_path):
    readers = pytest.importorskip("spatialforge.reward.readers")
    traj = synth_trajectory("approach", seed=2, **SMALL)
    back = readers.read_trajectory(write_trajectory(traj, tmp_path / "ep", format="rgbd"))
    assert len(back.frames) == 12
    assert np.array_equal(back.frames[7].image, traj.frames[7].image)
    assert np.allclose(back.frames[7].depth, traj.frames[7].depth)
