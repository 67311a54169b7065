"""`spatialforge afford train / predict / evaluate / score` end to end on tiny on-disk fixtures."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

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

TINY = ["--set", "model.clip_pretrained=none", "--set", "model.image_size=64", "--set", "model.fpn_dim=16",
        "--set", "train.workers=0", "--set", "train.val_every=2", "--set", "train.save_every=2",
        "--set", "train.log_every=1"]


def _train_argv(out, data, clip, *extra):
    return ["afford", "train", "--out", str(out), "--data-root", str(data), "--steps", "4", "--batch-size", "2",
            "--device", "cpu", "--no-progress", "--set", f"model.clip_model={clip}", *TINY, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps through the CLI on RefCOCO, RefCOCO+ and RefCOCOg fixtures
    (no --datasets: the default is the three of them)."""
    root = tmp_path_factory.mktemp("afford")
    clip = build_tiny_rn_clip(root / "clip")
    data = write_refer_dataset(root / "refer", "refcoco", "unc", n_images=8, refs_per_image=2,
                               splits=("train", "train", "train", "val"), missing_annotation=True)
    write_refer_dataset(data, "refcoco+", "unc", n_images=4, refs_per_image=2, splits=("train", "train", "val"))
    write_refer_dataset(data, "refcocog", "umd", n_images=4, refs_per_image=2, splits=("train", "train", "val"))
    out = root / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(_train_argv(out, data, clip))
    assert rc == 0
    return {"root": root, "clip": clip, "data": data, "out": out, "ckpt": out / "final", "printed": printed.getvalue()}


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
    # a rerun of a finished run with the same settings resumes at its last step (nothing is logged twice)
    assert main(_train_argv(out, trained["data"], trained["clip"])) == 0
    assert "trainable parameters" in capsys.readouterr().out
    assert (out / "log.jsonl").read_text().splitlines() == [json.dumps(r) for r in log]
    # ... and keeps the final validation (not replaced by "no validation ran in this session")
    assert json.loads((trained["ckpt"] / "config.json").read_text())["metrics"] == meta["metrics"]
    assert summary["validation"] is not None
    assert json.loads((out / "train_summary.json").read_text())["validation"] == summary["validation"]


def test_train_defaults_to_the_three_refcoco_datasets(trained):
    import torch

    from spatialforge.afford.config import TrainConfig

    assert TrainConfig().datasets == ("refcoco/unc", "refcoco+/unc", "refcocog/umd")
    assert TrainConfig().val_datasets == ("refcoco/unc",)
    from spatialforge.afford.refcoco import open_refer

    each = [len(open_refer(trained["data"], [name], split="train")) for name in TrainConfig().datasets]
    assert min(each) > 0
    assert f"train (refcoco/unc, refcoco+/unc, refcocog/umd): {sum(each)} refs" in trained["printed"]
    state = torch.load(sorted((trained["out"] / "checkpoints").iterdir())[-1] / "trainer_state.pt",
                       weights_only=True)
    assert state["train_refs"] == sum(each) and tuple(state["config"]["train"]["datasets"]) == TrainConfig().datasets


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


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(folder / "b.jpg")
    return folder


def test_predict_writes_heatmaps_and_overlays(trained, tmp_path, capsys):
    imgs = _images(tmp_path / "imgs")
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
                 "--out", str(tmp_path / "p2")]) == 2
    assert "argument --prompt: empty prompt" in capsys.readouterr().err
    # nothing readable: the run produced nothing, exit status 1
    assert main(["afford", "predict", str(imgs / "broken.png"), "--prompt", "pour", "--checkpoint",
                 str(trained["ckpt"]), "--out", str(tmp_path / "p3"), "--device", "cpu"]) == 1
    assert "no heatmap was written" in capsys.readouterr().err


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
    saved = sorted(preds.rglob("*.npy"))
    assert len(saved) == 6 and all(np.load(f).dtype == np.float32 for f in saved)
    printed = capsys.readouterr().out
    assert "KLD" in printed and "6/6 images scored" in printed
    # any method's saved maps score under the same protocol; ours (float32, as predicted) give the same numbers;
    # the report goes beside the predictions, not into them
    rc = main(["afford", "score", "--agd20k", str(split), "--split", "seen", "--predictions", str(preds),
               "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in preds.iterdir()) == [".spatialforge-output.json", "cut_with", "pour"]
    again = json.loads((tmp_path / "preds-agd20k-seen" / "agd20k-seen.json").read_text())
    for k in ("KLD", "SIM", "NSS"):
        assert again[k] == pytest.approx(rep[k], rel=1e-9, abs=1e-12)
    # a missing prediction is counted, not dropped
    saved[0].unlink()
    assert main(["afford", "score", "--agd20k", str(split), "--split", "Seen", "--predictions", str(preds),
                 "--name", "partial", "--no-progress"]) == 0
    partial = json.loads((tmp_path / "preds-agd20k-seen" / "partial.json").read_text())
    assert partial["n_scored"] == 5 and partial["skipped_by_reason"]["missing_prediction"] == 1


def test_evaluate_writes_beside_the_checkpoint_by_default(trained, tmp_path):
    write_agd20k(tmp_path / "A", "Unseen", {"pour": ["cup"]}, per_object=1)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["ckpt"], ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "A"), "--split", "Unseen", "--checkpoint",
                 str(ckpt), "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in ckpt.iterdir()) == before  # nothing written into the input
    assert (tmp_path / "ckpt-agd20k-unseen" / "agd20k-unseen.json").is_file()


def test_evaluate_reads_test_images_without_exif_rotation(trained, tmp_path):
    """The GT is in stored-pixel order: a photo with an EXIF Orientation tag must not be rotated."""
    split = write_agd20k(tmp_path / "A", "Seen", {"pour": ["cup"]}, per_object=2, size=(48, 64))
    photo = split / "testset" / "egocentric" / "pour" / "cup" / "cup_000000.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.open(photo).save(photo, exif=exif, quality=80)
    preds = tmp_path / "preds"
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "A"), "--split", "Seen", "--checkpoint",
                 str(trained["ckpt"]), "--out", str(tmp_path / "rep"), "--save-predictions", str(preds),
                 "--device", "cpu", "--no-progress"]) == 0
    assert np.load(preds / "pour" / "cup" / "cup_000000.npy").shape == (48, 64)  # the GT's (H, W)
    rep = json.loads((tmp_path / "rep" / "agd20k-seen.json").read_text())
    assert rep["n_scored"] == 2 and rep["skipped_by_reason"] == {}


def test_evaluate_errors(trained, tmp_path, capsys):
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "none"), "--split", "Seen", "--checkpoint",
                 str(trained["ckpt"]), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]
    write_agd20k(tmp_path / "A", "Unseen", {"pour": ["cup"]}, per_object=1)
    wide = build_tiny_rn_clip(tmp_path / "wide", width=16)
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "A"), "--split", "Unseen", "--checkpoint",
                 str(trained["ckpt"]), "--clip-model", wide, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "different backbone" in capsys.readouterr().err
    assert main(["afford", "evaluate", "--agd20k", str(tmp_path / "A"), "--split", "Unseen", "--checkpoint",
                 str(tmp_path / "A"), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"spatialforge: error: --checkpoint {tmp_path / 'A'}")


# ----------------------------------------------------------------------------- output folder safety
def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _unmarked(folder):
    folder.mkdir()
    (folder / "thesis.txt").write_text("my work")
    return folder


def _refused(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]


def _shapes_argv(out, clip, *extra):
    return ["afford", "train", "--out", str(out), "--datasets", "shapes", "--shapes-images", "4", "--steps", "1",
            "--batch-size", "2", "--device", "cpu", "--no-progress", "--set", f"model.clip_model={clip}", *TINY,
            *extra]


def test_train_output_folder_safety(trained, tmp_path, capsys, monkeypatch):
    from spatialforge.cli.afford import TRAIN_OUTPUT

    clip, data = trained["clip"], trained["data"]
    # (a) a folder spatialforge did not write is refused, with or without --overwrite, and kept as it was
    mine = _unmarked(tmp_path / "mine")
    for extra in ((), ("--overwrite",)):
        _refused(_shapes_argv(mine, clip, *extra), capsys, "not written by spatialforge")
        assert _tree(mine) == ["thesis.txt"] and (mine / "thesis.txt").read_text() == "my work"
    # (b) the inputs (data root, its inside, a folder holding it, the CLIP, the config), the working
    # directory, the home directory and / are refused; nothing is created
    config = tmp_path / "afford.toml"
    config.write_text("[train]\nlog_every = 1\n")
    for out, needle in ((data, "is the input"), (data / "run", "inside the input"),
                        (trained["root"], "contains the input")):
        _refused(_train_argv(out, data, clip), capsys, needle, str(data))
    assert not (data / "run").exists()
    clip_dir = clip.removeprefix("local-dir:")
    _refused(_shapes_argv(f"{clip_dir}/run", clip), capsys, "inside the input")
    _refused(_shapes_argv(tmp_path, clip, "--config", str(config)), capsys, "contains the input")
    monkeypatch.chdir(tmp_path)
    _refused(_shapes_argv(".", clip), capsys, "working directory")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    _refused(_shapes_argv(tmp_path / "home", clip), capsys, "home directory")
    _refused(_shapes_argv("/", clip), capsys, "filesystem root")
    # (c) every top-level entry of a real run is one --overwrite may delete
    entries = sorted(p.name for p in trained["out"].iterdir())
    assert {"checkpoints", "final", "log.jsonl", "train_summary.json", ".spatialforge-output.json"} <= set(entries)
    assert all(TRAIN_OUTPUT.owned(name) for name in entries), entries
    # (d) --overwrite starts again but keeps a file the user put into the run folder
    run = tmp_path / "run"
    assert main(_shapes_argv(run, clip)) == 0
    (run / "notes.txt").write_text("keep me")
    old_log = (run / "log.jsonl").read_text()
    (run / "log.jsonl").write_text(old_log + '{"step": 99}\n')
    assert main(_shapes_argv(run, clip, "--overwrite")) == 0
    assert (run / "notes.txt").read_text() == "keep me" and "notes.txt" in capsys.readouterr().out
    fresh = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in fresh] == [json.loads(line)["step"] for line in old_log.splitlines()]  # not appended


def test_train_files_have_umask_permissions(trained, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert main(_shapes_argv(run, trained["clip"], "--set", "train.save_every=1")) == 0
        assert main(_shapes_argv(run, trained["clip"], "--set", "train.save_every=1", "--steps", "2",
                                 "--extend")) == 0  # replaces checkpoints
    finally:
        os.umask(old)
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in run.rglob("*")}
    assert any(name.startswith("checkpoints/step-") for name in modes)
    bad = {n: oct(m) for n, m in modes.items() if m != (0o755 if (run / n).is_dir() else 0o644)}
    assert not bad, bad


def test_evaluate_output_folder_safety(trained, tmp_path, capsys):
    from spatialforge.cli.afford import predictions_kind, report_kind

    split = write_agd20k(tmp_path / "AGD20K", "Seen", {"pour": ["cup"]}, per_object=1)
    ckpt = trained["ckpt"]
    base = ["afford", "evaluate", "--agd20k", str(tmp_path / "AGD20K"), "--split", "Seen", "--checkpoint", str(ckpt),
            "--device", "cpu", "--no-progress"]
    # (a)
    mine = _unmarked(tmp_path / "mine")
    for extra in ((), ("--overwrite",)):
        _refused([*base, "--out", str(mine), *extra], capsys, "not written by spatialforge")
        _refused([*base, "--out", str(tmp_path / "r"), "--save-predictions", str(mine), *extra], capsys,
                 "--save-predictions", "not written by spatialforge")
        assert _tree(mine) == ["thesis.txt"]
    # (b) the old default (inside the checkpoint), the AGD20K tree, the report folder as predictions folder
    _refused([*base, "--out", str(ckpt / "agd20k-seen")], capsys, "inside the input")
    _refused([*base, "--out", str(split / "report")], capsys, "inside the input")
    _refused([*base, "--out", str(tmp_path / "r"), "--save-predictions", str(tmp_path / "AGD20K")], capsys,
             "--save-predictions", "is the input")
    _refused([*base, "--out", str(tmp_path / "r"), "--save-predictions", str(tmp_path / "r" / "p")], capsys,
             "separate from the report folder")
    assert not (ckpt / "agd20k-seen").exists() and not (tmp_path / "r").exists()
    # (c)
    rep, preds = tmp_path / "rep", tmp_path / "preds"
    argv = [*base, "--out", str(rep), "--save-predictions", str(preds)]
    assert main(argv) == 0
    assert all(report_kind().owned(p.name) for p in rep.iterdir()) and len(list(rep.iterdir())) == 3
    assert all(predictions_kind().owned(p.name) for p in preds.iterdir()) and len(list(preds.iterdir())) == 2
    # a rerun does not silently replace the report or mix two runs' maps
    _refused(argv, capsys, "already holds the report agd20k-seen.json", "--overwrite")
    _refused([*base, "--out", str(tmp_path / "rep2"), "--save-predictions", str(preds)], capsys,
             "--save-predictions", "earlier run")
    # (d)
    (rep / "notes.md").write_text("mine")
    (preds / "notes.txt").write_text("mine")
    assert main([*argv, "--overwrite"]) == 0
    assert (rep / "notes.md").read_text() == "mine" and (preds / "notes.txt").read_text() == "mine"
    assert (rep / "agd20k-seen.json").is_file() and (preds / "pour" / "cup").is_dir()


def test_score_output_folder_safety(trained, tmp_path, capsys):
    from spatialforge.cli.afford import report_kind

    split = write_agd20k(tmp_path / "AGD20K", "Seen", {"pour": ["cup"]}, per_object=1)
    preds = tmp_path / "preds"
    shutil.copytree(split / "testset" / "GT", preds)  # the GT as predictions
    base = ["afford", "score", "--agd20k", str(split), "--split", "Seen", "--predictions", str(preds), "--no-progress"]
    mine = _unmarked(tmp_path / "mine")
    for extra in ((), ("--overwrite",)):
        _refused([*base, "--out", str(mine), *extra], capsys, "not written by spatialforge")
        assert _tree(mine) == ["thesis.txt"]
    _refused([*base, "--out", str(preds)], capsys, "is the input")  # the old default
    _refused([*base, "--out", str(preds / "scores")], capsys, "inside the input")
    _refused([*base, "--out", str(tmp_path)], capsys, "contains the input")
    assert _tree(preds) == _tree(split / "testset" / "GT")
    out = tmp_path / "scores"
    assert main([*base, "--out", str(out), "--name", "gt"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".spatialforge-output.json", "gt.json", "gt.md"]
    assert all(report_kind("gt").owned(p.name) for p in out.iterdir())
    _refused([*base, "--out", str(out), "--name", "gt"], capsys, "already holds the report gt.json")
    (out / "notes.md").write_text("mine")
    assert main([*base, "--out", str(out), "--name", "gt", "--overwrite"]) == 0
    assert (out / "notes.md").read_text() == "mine" and (out / "gt.json").is_file()
    # nothing scored: exit status 1, after the report
    empty = tmp_path / "empty"
    (empty / "pour").mkdir(parents=True)
    assert main(["afford", "score", "--agd20k", str(split), "--split", "Seen", "--predictions", str(empty),
                 "--out", str(tmp_path / "s2"), "--no-progress"]) == 1
    assert "no AGD20K test image was scored" in capsys.readouterr().err


def test_predict_output_folder_safety(trained, tmp_path, capsys):
    from spatialforge.cli.afford import PREDICT_OUTPUT

    imgs = _images(tmp_path / "imgs")
    base = ["afford", "predict", str(imgs / "a.png"), str(imgs / "b.jpg"), "--prompt", "pour", "--checkpoint",
            str(trained["ckpt"]), "--device", "cpu"]
    mine = _unmarked(tmp_path / "mine")
    for extra in ((), ("--overwrite",)):
        _refused([*base, "--out", str(mine), *extra], capsys, "not written by spatialforge")
        assert _tree(mine) == ["thesis.txt"]
    _refused([*base, "--out", str(imgs)], capsys, "contains the input")
    _refused([*base, "--out", str(trained["ckpt"] / "maps")], capsys, "inside the input")
    _refused(["afford", "predict", str(imgs), "--prompt", "pour", "--checkpoint", str(trained["ckpt"]), "--out",
              str(imgs)], capsys, "is the input")
    assert sorted(p.name for p in imgs.iterdir()) == ["a.png", "b.jpg"]
    out = tmp_path / "maps"
    assert main([*base, "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 6 and all(PREDICT_OUTPUT.owned(n) for n in names)
    _refused([*base, "--out", str(out)], capsys, "earlier run", "--overwrite")
    (out / "notes.txt").write_text("mine")
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "a_pour.npy").is_file()


# ----------------------------------------------------------------------------- the options
@pytest.mark.parametrize("argv, flag", [
    (["train", "--steps", "0"], "--steps"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--device", "gpu"], "--device"),
    (["train", "--datasets", "refcoco/umd"], "--datasets"),
    (["train", "--datasets", "shapes,refcoco"], "--datasets"),
    (["train", "--shapes-images", "0"], "--shapes-images"),
    (["train", "--overwrite", "--extend"], "--extend"),
    (["evaluate", "--split", "Both"], "--split"),
    (["evaluate", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--templates", "nonsense"], "--templates"),
    (["evaluate", "--device", "cuda:x"], "--device"),
    (["score", "--name", "a/b"], "--name"),
    (["predict", "x.jpg", "--prompt", "pour", "--batch-size", "-2"], "--batch-size"),
])
def test_bad_values_fail_at_parse_time_naming_the_flag(argv, flag, tmp_path, capsys):
    required = {"train": ["--out", str(tmp_path / "o")],
                "evaluate": ["--agd20k", "A", "--split", "Seen", "--checkpoint", "c"],
                "score": ["--agd20k", "A", "--split", "Seen", "--predictions", "p"],
                "predict": ["--checkpoint", "c", "--out", str(tmp_path / "o")]}[argv[0]]
    full = ["afford", argv[0], *required, *argv[1:]]
    if argv[0] == "predict":
        full = ["afford", "predict", *argv[1:], *required]
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {flag}" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_every_afford_option_has_help_showing_its_default():
    import argparse

    from spatialforge.cli import options
    from spatialforge.cli.main import build_parser

    top = build_parser()
    afford = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["afford"]
    subs = next(a for a in afford._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subs) == {"train", "evaluate", "score", "predict"}
    for name, parser in subs.items():
        formatter = parser._get_formatter()
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert (a.help or "").strip(), f"{name} {a.dest}: no help"
            if a.option_strings and not a.required and not isinstance(a, argparse._StoreTrueAction):
                assert "default" in formatter._get_help_string(a).lower(), f"{name} {a.option_strings}"
            if a.dest == "device":
                assert a.type is options.device and options.DEVICE_HELP in a.help


def test_train_config_errors_name_the_flag(trained, tmp_path, capsys):
    _refused(["afford", "train", "--out", str(tmp_path / "x"), "--data-root", str(tmp_path / "nope")], capsys,
             "--data-root", "nope")
    _refused(_shapes_argv(tmp_path / "y", trained["clip"], "--extend"), capsys, "--extend", "no checkpoint")
    assert list(tmp_path.iterdir()) == []


def test_train_resume_with_changed_settings_is_refused_unless_extending(trained, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_shapes_argv(run, trained["clip"], "--steps", "2")) == 0
    capsys.readouterr()
    _refused(_shapes_argv(run, trained["clip"], "--steps", "2", "--lr", "0.5"), capsys,
             "another training config", "train.lr (--lr) 0.0003 -> 0.5")
    _refused(_shapes_argv(run, trained["clip"], "--steps", "2", "--set", "model.fpn_dim=8"), capsys,
             "another model config", "model.fpn_dim 16 -> 8")
    _refused(_shapes_argv(run, trained["clip"], "--steps", "3"), capsys, "--extend")
    _refused(_shapes_argv(run, trained["clip"], "--steps", "1", "--extend"), capsys, "train.steps (--steps) 2 -> 1")
    assert main(_shapes_argv(run, trained["clip"], "--steps", "3", "--extend")) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert json.loads((run / "final" / "config.json").read_text())["step"] == 3


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
