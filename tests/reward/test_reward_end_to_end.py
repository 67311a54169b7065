"""`spatialforge reward` end to end with the real reader, engine and plot: a synthetic episode with exact
truth, written as an RGB-D frame folder, read back by the command, its two things found by stages that read
the synthetic truth (the model-free geometry path), and the curve scored against the truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import spatialforge.cli.reward as cli
from spatialforge.cli.main import main
from spatialforge.reward.metrics import value_order_correlation
from spatialforge.reward.synth import oracle_stages, synth_trajectory, write_trajectory


@pytest.mark.parametrize(("kind", "success"), [("approach", True), ("retreat", False)])
def test_reward_command_on_a_synthetic_rgbd_episode_matches_the_truth(tmp_path, monkeypatch, capsys, kind, success):
    traj = synth_trajectory(kind, seed=4, n_frames=24)
    folder = write_trajectory(traj, tmp_path / "episode", format="rgbd")
    stages = oracle_stages(traj)  # keyed by the exact pixels: PNG round trips them
    monkeypatch.setattr(cli, "_build_stages", lambda args, specs: {"detector": stages.detector,
                                                                   "segmenter": stages.segmenter,
                                                                   "depth": None})  # RGB-D: no depth model
    out = tmp_path / "out"
    code = main(["reward", str(folder), "--object", "gripper", "--target", "orange cube", "--out", str(out),
                 "--reward", "progress"])
    assert code == 0, capsys.readouterr().err
    with open(out / "reward.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(traj.frames)
    dist = np.array([float(r["distance_m"]) for r in rows])
    truth = np.array(traj.truth["distance_m"])
    assert np.median(np.abs(dist - truth)) < 0.02  # centimetres, from the folder written and read back
    progress = [float(r["progress"]) for r in rows]
    voc = value_order_correlation(progress, [float(r["time_s"]) for r in rows])
    assert (voc > 0.95) if success else (voc < 0.3), voc
    summary = json.loads((out / "reward.json").read_text())
    assert summary["provenance"]["object"] == "gripper" and len(summary["rows"]) == len(rows)
    assert Image.open(out / "reward.png").size[0] > 200
