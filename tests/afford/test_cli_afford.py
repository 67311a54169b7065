"""`spatialforge afford train / predict / evaluate / score` end to end on tiny on-disk fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("pycocotools")

from spatialforge.cli.main import main

from .agd20k_fixture import write_agd20k
from .refcoco_fixture import write_refer_dataset
from .tiny_clip_rn import build_tiny_rn_clip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on a RefCOCO fixture through the CLI."""
    root = tmp_path_factory.mktemp("afford")
    clip = build_tiny_rn_clip(root / "clip")
    data = write_refer_dataset(root / "refer", "refcoco", "unc", n_images=8, refs_per_image=2,
                               splits=("train", "train", "train", "val"), missing_annotation=True)
    out = root / "run"
    rc = main(["afford", "train", "--out", str(out), "--data-root", str(data), "--datasets", "refcoco/unc",
               "--steps", "4", "--batch-size", "2", "--device", "cpu", "--no-progress",
               "--set", f"model.clip_model={clip}", "--set", "model.clip_pretrained=none",
               "--set", "model.image_size=64", "--set", "model.fpn_dim=16", "--set", "train.workers=0",
               "--set", "train.val_every=2", "--set", "train.save_every=2", "--set", "train.log_every=1"])
    assert rc == 0
    return {"root": root, "clip": clip, "data": data, "out": out, "ckpt": out / "final"}


def test_train_writes_checkpoint_log_and_summary(trained, capsys):
    out = trained["out"]
    meta = json.loads((trained["ckpt"] / "config.json").read_text())
    assert meta["format"] == "spatialforge-affordanceclip" and meta["step"] == 4
    assert meta["model"]["clip_model"] == trained["clip"] and meta["model"]["fpn_dim"] == 16
    assert meta["metrics"]["sentences"] > 0  # validation on the val split ran
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert sum(1 for r in log if "val" in r) == 2
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["samples"] == 8 and 0 < summary["parameters"]["trainable"] < 10**6
    # a rerun of a finished run resumes at its last step and only rewrites the final checkpoint
    assert main(["afford", "train", "--out", str(out), "--data-root", str(trained["data"]), "--steps", "4",
                 "--batch-size", "2", "--device", "cpu", "--no-progress",
                 "--set", f"model.clip_model={trained['clip']}", "--set", "model.clip_pretrained=none",
                 "--set", "model.image_size=64", "--set", "model.fpn_dim=16", "--set", "train.workers=0"]) == 0
    assert "trainable parameters" in capsys.readouterr().out


def test_train_errors_are_one_line(trained, tmp_path, capsys):
    base = ["afford", "train", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main([*base, "--datasets", "refcoco/unc"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main([*base, "--data-root", str(tmp_path / "nope"), "--set", f"model.clip_model={trained['clip']}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert main([*base, "--set", "train.lrr=3"]) == 2
    assert "unknown key 'lrr'" in capsys.readouterr().err
    # another model config in the same run folder is refused, not silently mixed
    assert main(["afford", "train", "--out", str(trained["out"]), "--data-root", str(trained["data"]), "--steps", "6",
                 "--device", "cpu", "--no-progress", "--set", f"model.clip_model={trained['clip']}",
                 "--set", "model.clip_pretrained=none", "--set", "model.image_size=64", "--set", "model.fpn_dim=8",
                 "--set", "train.workers=0"]) == 2
    assert "another model config" in capsys.readouterr().err


def test_predict_writes_heatmaps_and_overlays(trained, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(imgs / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(imgs / "b.jpg")
    (imgs / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    rc = main(["afford", "predict", str(imgs), "--prompt", "pour", "--prompt", "cut_with", "--checkpoint",
               str(trained["ckpt"]), "--out", str(out), "--device", "cpu", "--batch-size", "2"])
    assert rc == 0
    a = np.load(out / "a_pour.npy")
    assert a.shape == (40, 70) and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1
    assert np.load(out / "b_cut_with.npy").shape == (50, 30)
    assert Image.open(out / "a_cut_with.png").size == (70, 60)  # the image plus a caption strip
    info = json.loads((out / "predictions.json").read_text())
    assert info["prompts"] == ["pour", "cut with"] and len(info["written"]) == 4 and len(info["failed"]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert main(["afford", "predict", str(imgs / "a.png"), "--prompt", " ", "--checkpoint", str(trained["ckpt"]),
                 "--out", str(out)]) == 2
    assert "empty prompt" in capsys.readouterr().err


def test_evaluate_then_score_the_saved_predictions(trained, tmp_path, capsys):
    split = write_agd20k(tmp_path / "AGD20K", "Seen", {"cut_with": ["knife"], "pour": ["cup", "bottle"]},
                         per_object=2, image_without_gt=True)
    preds, report_dir = tmp_path / "preds", tmp_path / "report"
    rc = main(["afford", "evaluate", "--agd20k", str(tmp_path / "AGD20K"), "--split", "Seen", "--checkpoint",
               str(trained["ckpt"]), "--out", str(report_dir), "--save-predictions", str(preds), "--device", "cpu",
               "--batch-size", "4", "--no-progress"])
    assert rc == 0
    rep = json.loads((report_dir / "agd20k-seen.json").read_text())
    assert rep["n_images"] == 6 and rep["n_scored"] == 6
    assert rep["skipped_by_reason"] == {"missing_gt": 1}
    assert set(rep["per_affordance"]) == {"cut_with", "pour"}
    md = (report_dir / "agd20k-seen.md").read_text()
    assert f"{rep['KLD']:.3f}" in md
    assert len(list(preds.rglob("*.npy"))) == 6
    printed = capsys.readouterr().out
    assert "KLD" in printed and "6/6 images scored" in printed
    # any method's saved maps score under the same protocol; ours (stored as float16) reproduce the numbers
    rc = main(["afford", "score", "--agd20k", str(split), "--split", "Seen", "--predictions", str(preds),
               "--no-progress"])
    assert rc == 0
    again = json.loads((preds / "agd20k-seen.json").read_text())
    for k in ("KLD", "SIM", "NSS"):
        assert again[k] == pytest.approx(rep[k], rel=2e-3, abs=2e-3)
    # a missing prediction is counted, not dropped
    next(preds.rglob("*.npy")).unlink()
    assert main(["afford", "score", "--agd20k", str(split), "--split", "Seen", "--predictions", str(preds),
                 "--name", "partial", "--no-progress"]) == 0
    partial = json.loads((preds / "partial.json").read_text())
    assert partial["n_scored"] == 5 and partial["skipped_by_reason"]["missing_prediction"] == 1


def test_evaluate_errors(trained, tmp_path, capsys):
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "none"), "--split", "Seen", "--checkpoint",
                 str(trained["ckpt"]), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]
    write_agd20k(tmp_path / "A", "Unseen", {"pour": ["cup"]}, per_object=1)
    wide = build_tiny_rn_clip(tmp_path / "wide", width=16)
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "A"), "--split", "Unseen", "--checkpoint",
                 str(trained["ckpt"]), "--clip-model", wide, "--no-progress"]) == 2
    assert "different backbone" in capsys.readouterr().err


def test_training_refs_on_validation_images_are_excluded(trained):
    from spatialforge.afford.refcoco import ExcludeImages, open_refer

    train_src = open_refer(trained["data"], ["refcoco/unc"], split="train")
    some_images = frozenset(s.image_id for s in train_src.samples[:2])
    view = ExcludeImages(train_src, some_images)
    assert len(view) == len(train_src) - view.excluded and view.excluded >= 2
    assert all(s.image_id not in some_images for s in view)
    sample = view[0]
    assert view.image(sample).shape[:2] == view.mask(sample).shape
    assert view.summary()["excluded_overlapping_refs"] == view.excluded
