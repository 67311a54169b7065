"""Photos -> dataset through the CLI with every real backend, each a tiny random model on disk.

The tiny models are built from configs and saved with ``save_pretrained``; their folders are passed
as ``--*-model`` exactly where a user passes a hub id, so the same ``from_pretrained`` code path
runs. Their outputs are random, so these tests check the contract (every image accounted for,
the RGB-D scene format, provenance, intermediates, resume, pictures), not the answers: the answers
are checked with exact depth in ``test_photo_pipeline.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from spatialforge.cli.main import main
from spatialforge.io.scene_folder import load_scene
from spatialforge.synth import SynthConfig, generate_scene

from .tiny_clip import build_tiny_clip
from .tiny_depth import build_tiny_depth_anything, build_tiny_depth_pro
from .tiny_detectors import build_tiny_grounding_dino, build_tiny_owlv2
from .tiny_florence2 import build_tiny_florence2
from .tiny_sam import build_tiny_sam, build_tiny_sam2

W, H = 160, 120


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    builders = {"clip": build_tiny_clip, "gd": build_tiny_grounding_dino, "owl": build_tiny_owlv2,
                "florence": build_tiny_florence2, "sam": build_tiny_sam, "sam2": build_tiny_sam2,
                "da": build_tiny_depth_anything, "dp": build_tiny_depth_pro}
    return {name: build(root / name) for name, build in builders.items()}


def _good_photos(folder: Path, n: int, seed: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        img = generate_scene(i, seed=seed, config=SynthConfig(width=W, height=H)).image
        Image.fromarray(img).save(folder / f"good{i}.jpg", quality=95)
        names.append(f"good{i}")
    return names


def _bad_photos(folder: Path) -> dict[str, str]:
    """Odd but valid images (converted) and broken ones (recorded); image id -> expected outcome."""
    rgb = generate_scene(7, seed=3, config=SynthConfig(width=W, height=H)).image
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (folder / "notanimage.png").write_bytes(b"this is not a png")
    Image.fromarray(rgb[:20, :20]).save(folder / "tiny.png")
    return {"gray": "converted", "cmyk": "converted", "alpha": "converted", "truncated": "unreadable",
            "notanimage": "unreadable", "tiny": "too_small"}


def _run(*argv: str) -> int:
    return main(["generate", *argv, "--no-progress", "--device", "cpu", "--qa-per-image", "6"])


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}


def _assert_scene_contract(out: Path, image_id: str, expect_models: dict[str, Path]) -> None:
    folder = out / "scenes" / image_id
    for name in ("image.png", "depth.npy", "instances.png", "camera.json", "objects.json", "filter.json",
                 "detections.json", "provenance.json"):
        assert (folder / name).is_file(), f"{image_id}: missing {name}"
    scene = load_scene(folder)  # the RGB-D loader accepts what perception wrote
    assert scene.depth.dtype == np.float32 and scene.depth.shape == scene.image.shape[:2]
    assert np.all(np.isfinite(scene.depth)) and np.all(scene.depth > 0)
    ids = set(np.unique(scene.instances).tolist()) - {0}
    assert ids == {o.id for o in scene.objects}  # every mask has a caption and every caption a mask
    prov = json.loads((folder / "provenance.json").read_text())
    for stage, path in expect_models.items():
        assert prov["models"][stage]["model_id"] == str(path)
    assert prov["depth_model"] == str(expect_models["depth"])
    dets = json.loads((folder / "detections.json").read_text())
    kept = [d for d in dets if not d["dropped_as_ambiguous"]]
    assert [d["id"] for d in kept] == sorted(o.id for o in scene.objects)
    assert all(d["caption"] for d in dets)


def test_photo_folder_grounding_dino_florence_sam2_depth_anything(models, tmp_path):
    photos = tmp_path / "photos"
    good = _good_photos(photos, 4)
    bad = _bad_photos(photos)
    out = tmp_path / "out"
    m = models
    tags = tmp_path / "tags.txt"  # the tiny Grounding DINO holds 16 tokens and spells unknown words letter by
    tags.write_text("chair\ntable\ncup\nlamp\nsofa\ncat\ndog\nremote control\n")  # letter: most LVIS names overflow
    args = [str(photos), "--out", str(out), "--filter-model", str(m["clip"]), "--filter-threshold", "0",
            "--detector", "grounding-dino", "--detector-model", str(m["gd"]), "--score-threshold", "0",
            "--vocabulary", str(tags),
            "--captioner-model", str(m["florence"]), "--segmenter-model", str(m["sam2"]),
            "--depth-model", str(m["da"]), "--embedder-model", str(m["clip"]), "--batch-size", "3",
            "--focal-estimator-model", str(m["dp"])]
    assert _run(*args) == 0

    records = _records(out)
    assert set(records) == set(good) | set(bad)  # every image ends with a record
    manifest = json.loads((out / "manifest.json").read_text())
    p = manifest["perception"]
    assert p["images"] == len(records) == p["ok"] + p["filtered"] + p["failed"]
    assert p["failed_by_reason"].get("unreadable") == 2 and p["failed_by_reason"].get("too_small") == 1
    for image_id, expected in bad.items():
        if expected != "converted":
            assert records[image_id]["status"] == "failed" and records[image_id]["reason"] == expected
            assert records[image_id]["source"].endswith(image_id + (".png" if image_id != "truncated" else ".jpg"))
    ok = sorted(k for k, r in records.items() if r["status"] == "ok")
    not_ok = {k: r["reason"] for k, r in records.items() if r["status"] != "ok"}
    # random models: an image may have no detection, but a failure always has a reason
    assert all(reason for reason in not_ok.values())
    assert len(ok) >= 3, f"too few images became scenes with tiny models: {not_ok}"
    expect = {"filter": m["clip"], "detector": m["gd"], "captioner": m["florence"], "segmenter": m["sam2"],
              "depth": m["da"], "embedder": m["clip"]}
    for image_id in ok:
        _assert_scene_contract(out, image_id, expect)
        assert records[image_id]["intrinsics_source"] == "estimated:depth-pro"  # no EXIF: Depth Pro's FOV head
    # the converted odd images are 3-channel 8-bit scenes
    for image_id in ("gray", "cmyk", "alpha"):
        if records[image_id]["status"] == "ok":
            assert load_scene(out / "scenes" / image_id).image.shape == (H, W, 3)
    # the shared engine ran on exactly the perception scenes
    assert manifest["counts"]["scenes_found"] == len(ok)
    rows = pq.read_table(out / "data", columns=["scene_id"]).to_pylist()
    assert {r["scene_id"] for r in rows} <= set(ok)
    stages = p["stages"]
    assert stages["depth"]["images"] >= len(ok) and stages["depth"]["images_per_s"] > 0
    assert stages["filter"]["model_id"] == str(m["clip"])

    # rerun: everything recorded is skipped, nothing changes
    before = {k: (out / "scenes" / k / "depth.npy").read_bytes() for k in ok}
    assert _run(*args) == 0
    again = json.loads((out / "manifest.json").read_text())["perception"]
    assert again["resumed"] == len(records) and again["stages"]["depth"]["images"] == 0
    assert {k: (out / "scenes" / k / "depth.npy").read_bytes() for k in ok} == before

    # pictures for a person
    target = ok[0]
    assert main(["inspect", str(out), target]) == 0
    pictures = out.with_name(out.name + "-inspect")  # beside the output, never inside it
    overlay = Image.open(pictures / f"{target}_overlay.png")
    depth_pic = Image.open(pictures / f"{target}_depth.png")
    assert overlay.width > W and depth_pic.width >= W


def test_owlv2_sam_depth_pro_from_a_config_file_with_focal_length(models, tmp_path):
    photos = tmp_path / "photos"
    good = _good_photos(photos, 3, seed=11)
    m = models
    config = tmp_path / "perception.toml"
    config.write_text(f"""
batch_size = 2
score_threshold = 0.0
vocabulary = ["chair", "table", "cup", "lamp", "sofa"]
[filter]
backend = "none"
[embedder]
backend = "clip"
model_id = "{m['clip']}"
[detector]
backend = "owlv2"
model_id = "{m['owl']}"
[captioner]
backend = "label"
[segmenter]
backend = "sam"
model_id = "{m['sam']}"
[depth]
backend = "depth-pro"
model_id = "{m['dp']}"
""")
    out_model, out_user = tmp_path / "model_fov", tmp_path / "user_focal"
    assert _run(str(photos), "--out", str(out_model), "--perception-config", str(config)) == 0
    assert _run(str(photos), "--out", str(out_user), "--perception-config", str(config),
                "--focal-length", "150") == 0
    rec_model, rec_user = _records(out_model), _records(out_user)
    assert set(rec_model) == set(rec_user) == set(good)
    ok = [k for k in good if rec_model[k]["status"] == "ok" and rec_user[k]["status"] == "ok"]
    assert ok, f"no image became a scene: {rec_model}"
    for k in ok:
        assert rec_model[k]["intrinsics_source"] == "estimated:depth-pro"  # Depth Pro's FOV head
        assert rec_user[k]["intrinsics_source"] == "user"
        a, b = load_scene(out_model / "scenes" / k), load_scene(out_user / "scenes" / k)
        assert b.intrinsics.fx == pytest.approx(150.0)
        # Depth Pro's depth is proportional to the focal length it is given: metric for that camera
        ratio = np.median(b.depth / a.depth)
        assert ratio == pytest.approx(150.0 / a.intrinsics.fx, rel=1e-3)
        prov = json.loads((out_user / "scenes" / k / "provenance.json").read_text())
        assert prov["models"]["detector"] == {"backend": "owlv2", "model_id": str(m["owl"])}
        assert prov["depth_backend"] == "depth-pro"
    report = json.loads((out_user / "perception" / "report.json").read_text())
    assert report["config"]["batch_size"] == 2 and report["config"]["focal_length_px"] == 150.0


def test_hugging_face_dataset_saved_to_disk(models, tmp_path):
    datasets = pytest.importorskip("datasets")
    imgs = [Image.fromarray(generate_scene(i, seed=21, config=SynthConfig(width=W, height=H)).image)
            for i in range(3)]
    ds = datasets.Dataset.from_dict({"image": imgs, "caption": ["a", "b", "c"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "caption": datasets.Value("string")}))
    saved = tmp_path / "hf"
    ds.save_to_disk(str(saved))
    out = tmp_path / "out"
    m = models
    vocabulary = tmp_path / "tags.txt"
    vocabulary.write_text("chair\ntable\ncup\n")
    common = ["--filter", "none", "--vocabulary", str(vocabulary), "--embedder", "none", "--captioner", "label",
              "--segmenter", "box",
              "--detector", "owlv2", "--detector-model", str(m["owl"]), "--score-threshold", "0",
              "--depth-model", str(m["da"]), "--assume-hfov", "60"]
    assert _run("--hf-dataset", str(saved), "--out", str(out), *common) == 0
    records = _records(out)
    assert set(records) == {"train-00000", "train-00001", "train-00002"}
    assert all(r["source"].startswith(f"{saved}[train][") for r in records.values())
    ok = [k for k, r in records.items() if r["status"] == "ok"]
    assert ok
    for k in ok:
        assert load_scene(out / "scenes" / k).image.shape == (H, W, 3)
    # a wrong column or split is one clear error line, exit 2
    assert _run("--hf-dataset", str(saved), "--out", str(tmp_path / "o2"), "--image-column", "photo", *common) == 2
    assert _run("--hf-dataset", str(saved), "--out", str(tmp_path / "o3"), "--limit", "1", *common) == 0
    assert len(_records(tmp_path / "o3")) == 1


def test_low_memory_mode_gives_the_same_scenes_and_releases_models(models, tmp_path):
    from spatialforge.perception.config import PerceptionConfig, StageSpec
    from spatialforge.perception.pipeline import PerceptionPipeline
    from spatialforge.pipeline.photos import PhotoSource, run_photos

    photos = tmp_path / "photos"
    good = _good_photos(photos, 3, seed=5)
    m = models

    def config(low: bool) -> PerceptionConfig:
        return PerceptionConfig(filter=StageSpec("clip", str(m["clip"]), {"threshold": 0.0}),
                                embedder=StageSpec("clip", str(m["clip"])),
                                detector=StageSpec("grounding-dino", str(m["gd"])),
                                vocabulary=("chair", "table", "cup", "lamp", "sofa"),  # words the tiny model holds
                                captioner=StageSpec("label"), segmenter=StageSpec("sam2", str(m["sam2"])),
                                depth=StageSpec("depth-anything-v2", str(m["da"])),
                                focal_estimator=StageSpec("depth-pro", str(m["dp"])), device="cpu",
                                score_threshold=0.0, batch_size=2, low_memory=low)

    results, most = {}, {}
    for low in (False, True):
        pipe = PerceptionPipeline.from_config(config(low))
        assert pipe.stages["filter"] is pipe.stages["embedder"]  # one CLIP serves both
        assert all(getattr(s, "model", None) is None for s in pipe.stages.values())  # nothing loaded yet
        stages = [s for s in {id(s): s for s in pipe.stages.values()}.values() if hasattr(s, "model")]
        most[low] = 0

        def counting_load(load, low=low, stages=stages):
            def load_and_count():
                load()
                most[low] = max(most[low], sum(s.model is not None for s in stages))  # models resident now
            return load_and_count

        for stage in stages:
            stage.load = counting_load(stage.load)
        out = tmp_path / f"low{low}"
        manifest = run_photos(PhotoSource(folder=photos), out, pipe, progress=False)
        assert all(getattr(s, "model", None) is None for s in pipe.stages.values())  # all released at the end
        assert manifest["perception"]["stages"]["depth"]["peak_gpu_memory_mb"] is None  # CPU reports none
        results[low] = {k: np.load(out / "scenes" / k / "depth.npy") for k in good
                        if (out / "scenes" / k).is_dir()}
    assert results[True].keys() == results[False].keys() and results[True]
    for k in results[True]:
        np.testing.assert_allclose(results[True][k], results[False][k], rtol=1e-5)
    assert most == {False: 5, True: 1}  # low memory: never two models at once, not even the shared CLIP


def test_a_rerun_with_other_perception_settings_is_refused_unless_overwritten(models, tmp_path, capsys):
    photos = tmp_path / "photos"
    _good_photos(photos, 2, seed=9)
    tags = tmp_path / "tags.txt"
    tags.write_text("chair\ntable\ncup\n")
    out = tmp_path / "out"
    common = [str(photos), "--out", str(out), "--filter", "none", "--vocabulary", str(tags), "--embedder", "none",
              "--captioner", "label", "--segmenter", "box", "--detector", "owlv2", "--detector-model",
              str(models["owl"]), "--depth-model", str(models["da"]), "--assume-hfov", "60"]
    assert _run(*common, "--score-threshold", "0") == 0
    record = json.loads((out / "perception" / "config.json").read_text())
    assert record["settings"]["stages"]["detector"]["options"]["score_threshold"] == 0.0
    capsys.readouterr()
    assert _run(*common, "--score-threshold", "0.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another perception config" in err[0] and "--overwrite" in err[0]
    assert "score_threshold 0.0 -> 0.5" in err[0] and "stages.detector.options.score_threshold 0.0 -> 0.5" in err[0]
    assert _run(*common, "--score-threshold", "0", "--batch-size", "1", "--low-memory") == 0  # same outputs: resumes
    assert json.loads((out / "manifest.json").read_text())["perception"]["resumed"] == 2
    assert _run(*common, "--score-threshold", "0.5", "--overwrite") == 0
    record = json.loads((out / "perception" / "config.json").read_text())
    assert record["settings"]["stages"]["detector"]["options"]["score_threshold"] == 0.5


def test_bad_perception_config_is_one_clear_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    _good_photos(photos, 1)
    bad = tmp_path / "p.toml"
    bad.write_text('batch_sise = 2\n[detector]\nbackend = "owlv2"\n')
    assert _run(str(photos), "--out", str(tmp_path / "o"), "--perception-config", str(bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "batch_sise" in err[0]
    bad.write_text("[detector\n")
    assert _run(str(photos), "--out", str(tmp_path / "o"), "--perception-config", str(bad)) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert _run(str(photos), "--out", str(tmp_path / "o"), "--detector", "yolo") == 2  # checked when parsing
    assert "argument --detector: invalid choice: 'yolo'" in capsys.readouterr().err
    assert _run(str(photos), "--out", str(tmp_path / "o"), "--filter", "none", "--keep-labels", "a room") == 2
    assert "--filter clip" in capsys.readouterr().err
