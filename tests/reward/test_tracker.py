"""The video tracker of `spatialforge reward`: SAM 2 video (a tiny random model built from a config), the engine
with a tracker (a fake one replaying the synthetic truth), and the command with ``--tracker sam2``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import spatialforge.cli.reward as cli
from spatialforge.cli.main import main
from spatialforge.errors import ConfigError
from spatialforge.reward.engine import RewardConfig, RewardStages, annotate_reward
from spatialforge.reward.synth import oracle_stages, synth_trajectory, write_trajectory
from spatialforge.reward.tracker import Sam2VideoTracker, TrackedMask
from tests.perception.tiny_sam import _rescale_weights

OBJ, TGT = "gripper", "orange cube"
SIZE = 64  # the tiny model's input size


def build_tiny_sam2_video(folder: Path, seed: int = 3) -> Path:
    """A tiny random ``Sam2VideoModel`` and its ``Sam2VideoProcessor`` (64 px input) saved to ``folder``.

    The memory attention's image cross-attention reads 64-channel memories (fixed in transformers), so the memory
    encoder has 64 output channels, and the object pointers are split into memory-sized pieces, so the hidden size
    (128) is a multiple of it. Weights are redrawn with a fan-in scaled normal for O(1) logits, as tiny_sam does.
    """
    import torch
    import transformers as tf

    s = SIZE
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=16, blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                    global_attention_blocks=[3], window_size_per_stage=[4, 4, 4, 4], image_size=[s, s],
                    window_positional_embedding_background_size=[2, 2])
    config = tf.Sam2VideoConfig(
        vision_config=dict(model_type="sam2_vision_model", backbone_config=backbone,
                           backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=128,
                           backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32),
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64)
    torch.manual_seed(seed)
    model = tf.Sam2VideoModel(config).eval()
    _rescale_weights(model, seed)
    processor = tf.Sam2VideoProcessor(
        image_processor=tf.Sam2ImageProcessor(size={"height": s, "width": s},
                                              mask_size={"height": s // 4, "width": s // 4}),
        video_processor=tf.Sam2VideoVideoProcessor(size={"height": s, "width": s}), target_size=s)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_sam2_video(tmp_path_factory.mktemp("tiny_sam2_video"))


# ----------------------------------------------------------------------------- the SAM 2 video tracker
def test_sam2_video_tracker_gives_one_entry_per_thing_per_frame(tiny_video: Path) -> None:
    traj = synth_trajectory("approach", seed=1, n_frames=5, size=(160, 120))
    tracker = Sam2VideoTracker(str(tiny_video))
    assert tracker.model is None  # nothing loaded by the constructor
    images = [f.image for f in traj.frames]
    out = tracker.track(images, {OBJ: [10, 10, 60, 60], TGT: [70, 30, 120, 90]}, start_index=1)
    assert set(out) == {OBJ, TGT}
    for entries in out.values():
        assert len(entries) == 5 and entries[0] is None  # not tracked before the start frame
        for e in entries[1:]:
            assert e is None or (isinstance(e, TrackedMask) and e.mask.shape == (120, 160) and e.mask.dtype == bool
                                 and e.mask.any() and tracker.object_threshold <= e.score <= 1)
    assert sum(e is not None for entries in out.values() for e in entries) > 0
    # a thing counts as lost when its object score is below the threshold: none survive a threshold of 1
    strict = Sam2VideoTracker(str(tiny_video), object_threshold=1.0)
    assert all(e is None for entries in strict.track(images, {OBJ: [10, 10, 60, 60]}, start_index=3).values()
               for e in entries)
    tracker.unload()
    assert tracker.model is None


@pytest.mark.parametrize(("kwargs", "message"), [({"object_threshold": 2}, "object_threshold"),
                                                 ({"mask_threshold": float("nan")}, "mask_threshold"),
                                                 ({"window": 3}, "unknown option")])
def test_sam2_video_tracker_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Sam2VideoTracker("x", **kwargs)


def test_sam2_video_tracker_bad_boxes_and_start() -> None:
    tracker = Sam2VideoTracker("not/loaded")
    frames = [np.zeros((20, 30, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="start_index"):
        tracker.track(frames, {OBJ: [0, 0, 5, 5]}, start_index=3)
    with pytest.raises(ValueError, match="box of 'gripper'"):
        tracker.track(frames, {OBJ: [5, 5, 1, 1]})
    assert tracker.model is None  # checked before loading


# ----------------------------------------------------------------------------- the engine with a tracker
class TruthTracker:
    """A fake tracker replaying the synthetic instance masks; it loses the cube in ``lose`` frames."""

    name, model_id = "truth", "synth"

    def __init__(self, traj, lose: set[int], score: float = 0.8) -> None:
        self.traj, self.lose, self.score, self.calls = traj, lose, score, []

    def track(self, frames, first_boxes, start_index=0):
        self.calls.append((len(frames), dict(first_boxes), start_index))
        inst, ids = self.traj.truth["instances"], self.traj.truth["instance_ids"]
        out = {}
        for name in first_boxes:
            entries = []
            for i in range(len(frames)):
                lost = i < start_index or (name == TGT and i in self.lose)
                entries.append(None if lost else TrackedMask(inst[i] == ids[name], self.score))
            out[name] = entries
        return out


SMALL = {"n_frames": 20, "size": (240, 180), "occlusion_frames": (9, 10)}


def test_engine_with_a_tracker_matches_detection_and_redetects_after_a_loss() -> None:
    traj = synth_trajectory("approach", seed=1, **SMALL)
    stages = oracle_stages(traj)
    calls: list[int] = []
    real_detector = stages.detector

    def counting_detector(images, prompts):
        calls.append(len(images))
        return real_detector(images, prompts)

    lose = {9, 10, 11, 12}  # the occlusion (9, 10) and two frames after it: the tracker needs time to recover
    tracker = TruthTracker(traj, lose)
    plain = annotate_reward(traj, OBJ, TGT, perception=stages, config=RewardConfig())
    res = annotate_reward(traj, OBJ, TGT, config=RewardConfig(),
                          perception=RewardStages(counting_detector, stages.segmenter, None, tracker))
    assert tracker.calls == [(20, {OBJ: pytest.approx(plain.rows[0].object_box),
                                   TGT: pytest.approx(plain.rows[0].target_box)}, 0)]
    # the detector ran on the first frame (both found there) and then only on the frames the tracker lost
    assert calls == [1, 4]
    tracked = np.array([r.tracked for r in res.rows])
    redetected = np.array([r.redetected for r in res.rows])
    assert list(np.nonzero(redetected)[0]) == [9, 10, 11, 12]
    assert list(np.nonzero(~tracked)[0]) == [0, 9, 10, 11, 12]
    # the same masks give the same distances as per-frame detection wherever the cube is visible
    assert np.allclose(res.distances, plain.distances, atol=1e-9)
    assert list(np.nonzero(res.interpolated)[0]) == [9, 10]  # hidden: not re-detected either
    # re-detected after the occlusion: measured again
    assert not res.interpolated[11] and not res.interpolated[12] and res.confidence[11] > 0.3
    # tracked frames: the tracker's object score (0.8; identity 1) in place of detection score x identity (<= 0.9)
    assert np.allclose(res.confidence[tracked], 0.8) and plain.confidence.max() <= 0.9 + 1e-6
    summary = res.summary["tracking"]
    assert summary["start_frame"] == 0 and summary["n_tracked"] == 15 and summary["n_redetected"] == 4
    assert summary["redetected"] == {OBJ: 0, TGT: 4} and summary["recovered"] == {OBJ: 0, TGT: 2}
    assert res.summary["stages"]["tracker"] == "truth:synth"
    assert plain.summary["tracking"] is None and not any(r.tracked or r.redetected for r in plain.rows)


def test_engine_starts_tracking_where_both_things_are_first_found() -> None:
    traj = synth_trajectory("approach", seed=1, **SMALL)
    stages = oracle_stages(traj)

    def late_cube(images, prompts):  # the cube is only found from the third frame on
        dets = stages.detector(images, prompts)
        index = {f.image.tobytes(): f.index for f in traj.frames}
        out = []
        for img, det in zip(images, dets, strict=True):
            if index[img.tobytes()] < 2:
                keep = [i for i, lab in enumerate(det.labels) if lab != TGT]
                det = type(det)(det.boxes[keep], det.scores[keep], tuple(det.labels[i] for i in keep))
            out.append(det)
        return out

    tracker = TruthTracker(traj, lose=set())
    res = annotate_reward(traj, OBJ, TGT, perception=RewardStages(late_cube, stages.segmenter, None, tracker))
    assert tracker.calls[0][2] == 2 and res.summary["tracking"]["start_frame"] == 2
    assert [r.tracked for r in res.rows[:4]] == [False, False, False, True]
    # the cube is not found before frame 2; hidden in 9 and 10, its mask is empty: lost, re-detected, not found
    assert list(np.nonzero(res.interpolated)[0]) == [0, 1, 9, 10]
    assert [r.frame for r in res.rows if r.redetected] == [9, 10]


def test_a_tracker_returning_bad_masks_is_a_clear_error() -> None:
    traj = synth_trajectory("approach", seed=1, n_frames=6, size=(160, 120), occlusion_frames=())
    stages = oracle_stages(traj)

    class Bad:
        def track(self, frames, first_boxes, start_index=0):
            return {name: [np.zeros((5, 5), bool)] * len(frames) for name in first_boxes}

    with pytest.raises(Exception, match="tracker's entry for 'gripper' in frame 1 is not a 160x120 mask"):
        annotate_reward(traj, OBJ, TGT, perception=RewardStages(stages.detector, stages.segmenter, None, Bad()))


# ----------------------------------------------------------------------------- the command
def test_reward_command_with_the_sam2_tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], tiny_video: Path) -> None:
    traj = synth_trajectory("approach", seed=4, n_frames=6, size=(160, 120), occlusion_frames=())
    folder = write_trajectory(traj, tmp_path / "episode", format="rgbd")
    stages = oracle_stages(traj)
    monkeypatch.setattr(cli, "_build_stages", lambda args, specs: {"detector": stages.detector,
                                                                   "segmenter": stages.segmenter, "depth": None})
    out = tmp_path / "out"
    code = main(["reward", str(folder), "--object", OBJ, "--target", TGT, "--out", str(out), "--tracker", "sam2",
                 "--tracker-model", str(tiny_video), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "reward.json").read_text())
    assert data["provenance"]["tracker"] == {"backend": "sam2", "model_id": str(tiny_video)}
    assert data["summary"]["stages"]["tracker"] == f"sam2:{tiny_video}"
    tracking = data["summary"]["tracking"]
    assert tracking["start_frame"] == 0
    with open(out / "reward.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and list(rows[0]) == list(cli.CSV_COLUMNS)
    # frame 0 was detected; every later frame was either tracked or re-detected (the random model loses things)
    assert rows[0]["tracked"] == "0" and rows[0]["redetected"] == "0"
    assert all((r["tracked"], r["redetected"]) in {("1", "0"), ("0", "1")} for r in rows[1:])
    assert tracking["n_tracked"] == sum(r["tracked"] == "1" for r in rows)
    assert tracking["n_redetected"] == sum(r["redetected"] == "1" for r in rows)


def test_tracker_flags_are_checked_before_the_folder_is_claimed(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    traj = synth_trajectory("approach", seed=4, n_frames=3, size=(64, 48))
    folder = write_trajectory(traj, tmp_path / "episode", format="rgbd")
    base = ["reward", str(folder), "--object", OBJ, "--target", TGT, "--out", str(tmp_path / "o")]
    assert main([*base, "--tracker", "sam3"]) == 2
    assert "argument --tracker: invalid choice: 'sam3'" in capsys.readouterr().err
    assert main([*base, "--tracker-model", "some/model"]) == 2
    err = capsys.readouterr().err
    assert "--tracker-model: --tracker none loads no model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
