"""The default photo path - class-agnostic Florence-2 regions, their captions, SAM 2, metric depth - on tiny models.

No ``--detector`` is given: the default detector, ``florence2-regions``, runs on the Florence-2
checkpoint given to the captioner (``--captioner-model``), loaded once with ``from_pretrained``
from a folder exactly where a user passes a hub id. The tiny Florence-2 is rewired to write
well-formed region lists (:mod:`tests.perception.tiny_florence2_regions`), so the regions it
proposes are real parser outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from spatialforge.cli.main import main
from spatialforge.io.scene_folder import load_scene
from spatialforge.synth import SynthConfig, generate_scene

from .tiny_clip import build_tiny_clip
from .tiny_depth import build_tiny_depth_anything
from .tiny_florence2_regions import build_tiny_florence2_regions
from .tiny_sam import build_tiny_sam2

W, H = 160, 120


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models_ov")
    builders = {"clip": build_tiny_clip, "florence": build_tiny_florence2_regions, "sam2": build_tiny_sam2,
                "da": build_tiny_depth_anything}
    return {name: build(root / name) for name, build in builders.items()}


def _photos(folder: Path, n: int, seed: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(generate_scene(i, seed=seed, config=SynthConfig(width=W, height=H)).image).save(
            folder / f"p{i}.png")
    return [f"p{i}" for i in range(n)]


def _run(*argv: str) -> int:
    return main(["generate", *argv, "--no-progress", "--device", "cpu", "--qa-per-image", "6"])


def test_the_default_detector_runs_offline_on_the_captioners_florence2(models, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    names = _photos(photos, 4)
    m = models
    args = [str(photos), "--out", str(out), "--filter-model", str(m["clip"]), "--filter-threshold", "0",
            "--captioner-model", str(m["florence"]), "--segmenter-model", str(m["sam2"]),
            "--depth-model", str(m["da"]), "--batch-size", "2", "--assume-hfov", "60"]
    assert _run(*args) == 0
    records = {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}
    assert set(records) == set(names)
    ok = [k for k, r in records.items() if r["status"] == "ok"]
    assert len(ok) >= 3, records
    settings = json.loads((out / "perception" / "config.json").read_text())["settings"]
    assert settings["stages"]["detector"] == {"backend": "florence2-regions", "model_id": str(m["florence"]),
                                              "options": {"max_new_tokens": 1024, "max_words": 6, "num_beams": 3,
                                                          "task": "<DENSE_REGION_CAPTION>"}}
    assert "vocabulary" not in settings  # no photo was tagged
    for k in ok:
        folder = out / "scenes" / k
        scene = load_scene(folder)
        ids = set(np.unique(scene.instances).tolist()) - {0}
        assert ids == {o.id for o in scene.objects} and ids
        assert json.loads((folder / "filter.json").read_text())["tags"] == []  # no tagging pass
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["models"]["detector"] == {"backend": "florence2-regions", "model_id": str(m["florence"])}
        assert prov["models"]["captioner"] == {"backend": "florence2", "model_id": str(m["florence"])}
        dets = json.loads((folder / "detections.json").read_text())
        assert dets and all(d["score"] == 1.0 for d in dets)  # Florence-2 gives no scores
        assert all(d["label"].isalpha() and d["caption"] for d in dets)  # region texts, then region captions
        w, h = scene.image.shape[1], scene.image.shape[0]
        for d in dets:
            x0, y0, x1, y1 = d["box_xyxy"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert (x1 - x0) * (y1 - y0) >= 0.0005 * w * h  # the size filters ran on the regions
    report = json.loads((out / "perception" / "report.json").read_text())
    assert report["stages"]["detector"]["backend"] == "florence2-regions"
    assert report["stages"]["detector"]["images"] == len(names)
    capsys.readouterr()
    # a score threshold means nothing for it: one line naming the flag, nothing written
    assert _run(*args[:2], str(tmp_path / "o2"), *args[3:], "--score-threshold", "0.2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("choose --detector grounding-dino, owlv2 or sam3")
    assert "--score-threshold: the florence2-regions detector gives no scores" in err[0]
    assert not (tmp_path / "o2").exists()


def test_one_florence2_encodes_each_photo_once_and_low_memory_gives_the_same_scenes(models, tmp_path, monkeypatch):
    from spatialforge.perception.config import PerceptionConfig, StageSpec
    from spatialforge.perception.pipeline import PerceptionPipeline
    from spatialforge.pipeline.photos import PhotoSource, run_photos

    photos = tmp_path / "photos"
    names = _photos(photos, 3, seed=5)
    m = models
    results, towers = {}, {}
    for low in (False, True):
        cfg = PerceptionConfig(filter=StageSpec("clip", str(m["clip"]), {"threshold": 0.0}),
                               captioner=StageSpec("florence2", str(m["florence"])), segmenter=StageSpec("box"),
                               depth=StageSpec("depth-anything-v2", str(m["da"])), embedder=StageSpec("none"),
                               focal_estimator=StageSpec("none"), assumed_hfov_deg=60.0, device="cpu", batch_size=3,
                               low_memory=low)
        pipe = PerceptionPipeline.from_config(cfg)
        det, cap = pipe.stages["detector"], pipe.stages["captioner"]
        assert cap._model_source is det
        counts: list[int] = []
        real_load = det.load

        def load_and_count(real_load=real_load, det=det, counts=counts):
            fresh = det.model is None
            real_load()
            if fresh:  # a new model object: count what its vision tower encodes
                counts.append(0)
                tower = det.model.model.vision_tower
                forward = tower.forward

                def counted(pixel_values, *args, forward=forward, **kwargs):
                    counts[-1] += int(pixel_values.shape[0])
                    return forward(pixel_values, *args, **kwargs)

                tower.forward = counted

        det.load = load_and_count
        out = tmp_path / f"low{low}"
        manifest = run_photos(PhotoSource(folder=photos), out, pipe, progress=False)
        assert manifest["perception"]["ok"] >= 2
        assert det.model is None and cap.model is None  # released at the end
        towers[low] = counts
        results[low] = {k: (json.loads((out / "scenes" / k / "detections.json").read_text()),
                            np.load(out / "scenes" / k / "depth.npy")) for k in names if (out / "scenes" / k).is_dir()}
    # one load, each photo encoded once for its regions and their captions; low memory: loaded (and encoded) per stage
    assert towers[False] == [3] and towers[True] == [3, 3]
    assert results[True].keys() == results[False].keys() and results[True]
    for k, (dets, depth) in results[False].items():
        assert results[True][k][0] == dets
        np.testing.assert_allclose(results[True][k][1], depth, rtol=1e-5)
