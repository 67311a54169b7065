"""The reward engine on synthetic trajectories with exact truth (stub perception stages reading the truth)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.reward import engine
from spatialforge.reward.engine import RewardConfig, RewardStages, annotate_reward
from spatialforge.reward.metrics import distance_errors, value_order_correlation
from spatialforge.reward.plot import plot_reward
from spatialforge.reward.synth import oracle_stages, synth_trajectory

OBJ, TGT = "gripper", "orange cube"
SMALL = {"n_frames": 20, "size": (240, 180), "occlusion_frames": (9, 10)}


@pytest.fixture(scope="module")
def approach():
    return synth_trajectory("approach", seed=1, **SMALL)


def _run(traj, **kw):
    stage_kw = {k: kw.pop(k) for k in ("masks", "distractor", "depth_scale") if k in kw}
    return annotate_reward(traj, OBJ, TGT, perception=oracle_stages(traj, **stage_kw), config=RewardConfig(**kw))


def test_rgbd_approach_matches_truth_and_orders_time(approach):
    res = _run(approach)
    err = distance_errors(res, approach.truth)
    assert err["mean_abs"] < 0.01 and err["max_abs"] < 0.03
    assert value_order_correlation(res.progress, res.times) > 0.95
    assert res.summary["success"] is True and res.rows[-1].success
    assert res.summary["gravity"]["source"] == "plane"
    assert abs(res.summary["gravity"]["camera_height_m"] - 0.9) < 0.02


def test_occluded_frames_are_interpolated_with_zero_confidence(approach):
    res = _run(approach)
    flags = res.interpolated
    assert list(np.nonzero(flags)[0]) == [9, 10]
    assert np.all(res.confidence[flags] == 0) and np.all(res.confidence[~flags] > 0.3)
    d = res.distances
    assert d[8] > d[9] > d[10] > d[11]  # on the line between the measured neighbours
    assert np.isclose(d[9], d[8] + (d[11] - d[8]) / 3)


@pytest.mark.parametrize("kind", ["retreat", "stall", "pass_by"])
def test_failures_are_not_ordered_and_not_successes(kind):
    traj = synth_trajectory(kind, seed=2, **SMALL)
    res = _run(traj)
    assert distance_errors(res, traj.truth)["mean_abs"] < 0.015
    assert value_order_correlation(res.progress, res.times) < 0.4
    assert res.summary["success"] is False


def test_box_masks_drop_the_floor_and_stay_close(approach):
    res = _run(approach, masks="box")
    assert distance_errors(res, approach.truth)["mean_abs"] < 0.02


def test_identity_by_overlap_ignores_a_look_alike(approach):
    res = _run(approach, distractor=True)
    assert distance_errors(res, approach.truth)["mean_abs"] < 0.01
    # while the cube is hidden, the look-alike is not taken for it
    assert list(np.nonzero(res.interpolated)[0]) == [9, 10]


def test_rgb_depth_scale_is_fixed_from_the_reference_frames():
    traj = synth_trajectory("approach", seed=3, rgbd=False, **SMALL)
    plain = _run(traj, depth_scale=1.37)
    assert plain.summary["depth_scale"] == 1.0
    assert distance_errors(plain, traj.truth)["mean_abs"] > 0.05  # the stage's wrong scale shows
    fixed = _run(traj, depth_scale=1.37, camera_height_m=0.9)
    assert fixed.summary["depth_scale_source"] == "camera_height"
    assert abs(fixed.summary["depth_scale"] * 1.37 - 1.0) < 0.01
    assert distance_errors(fixed, traj.truth)["mean_abs"] < 0.015
    # progress does not depend on the scale
    assert value_order_correlation(plain.progress, plain.times) > 0.95
    assert np.allclose(plain.progress, fixed.progress, atol=0.02)


def test_gravity_is_fitted_once_per_episode(approach, monkeypatch):
    calls = []
    real = engine.estimate_gravity
    monkeypatch.setattr(engine, "estimate_gravity", lambda *a, **k: calls.append(1) or real(*a, **k))
    _run(approach, reference_frames=3, batch_size=4)
    assert len(calls) == 1


def test_reward_kinds_and_closest_distance(approach):
    neg = _run(approach, reward="negative_distance")
    assert np.allclose(neg.rewards, -neg.distances)
    prog = _run(approach, reward="progress")
    assert np.allclose(prog.rewards, np.clip(1 - prog.distances / prog.distances[0], -1, 1))
    succ = _run(approach, reward="success", success_threshold_m=0.2)
    assert np.array_equal(succ.rewards, (succ.distances < 0.2).astype(float))
    assert succ.rewards[0] == 0 and succ.rewards[-1] == 1
    closest = _run(approach, distance="closest")
    assert distance_errors(closest, approach.truth, key="gap_m")["median_abs"] < 0.03


@pytest.mark.parametrize(("kwargs", "field"), [({"reward": "money"}, "reward"),
                                               ({"success_threshold_m": 0}, "success_threshold_m"),
                                               ({"min_score": 2.0}, "min_score"),
                                               ({"reference_frames": 0}, "reference_frames"),
                                               ({"camera_height_m": -1.0}, "camera_height_m"),
                                               ({"distance": "far"}, "distance")])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"RewardConfig.{field}"):
        RewardConfig(**kwargs)


def test_bad_inputs_are_clear_errors(approach):
    stages = oracle_stages(approach)
    with pytest.raises(SpatialForgeError, match="'red mug' was found in none of the 20 frames"):
        annotate_reward(approach, OBJ, "red mug", perception=stages)
    with pytest.raises(ConfigError, match="differ"):
        annotate_reward(approach, OBJ, "Gripper", perception=stages)
    with pytest.raises(ConfigError, match="perception"):
        annotate_reward(approach, OBJ, TGT)
    rgb = synth_trajectory("approach", seed=1, rgbd=False, n_frames=4, size=(160, 120))
    with pytest.raises(ConfigError, match="no depth stage"):
        annotate_reward(rgb, OBJ, TGT, perception=RewardStages(oracle_stages(rgb).detector))


def test_plot_has_curve_and_thumbnails(approach, tmp_path):
    res = _run(approach)
    path = plot_reward(res, approach, tmp_path / "reward.png")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] == 960 and img.shape[0] > 300
    blue = np.all(img == (0, 110, 200), axis=-1)
    red = np.all(img == (215, 40, 40), axis=-1)
    assert blue[:260].sum() > 200 and red[:260].sum() > 5  # the distance curve and the interpolated marks
    assert not np.all(img[270:] == 255)  # the thumbnail strip
