"""SAM 3 as a detector + segmenter: the backend on a tiny random checkpoint, the config rule, and photos -> dataset.

The tiny checkpoint is built from a config, saved with ``save_pretrained`` and loaded through the
same ``from_pretrained`` path a hub id takes (``--detector-model FOLDER``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError, SpatialForgeError  # noqa: E402
from spatialforge.perception.backends import DEFAULT_MODELS, build_stage  # noqa: E402
from spatialforge.perception.backends.sam3 import Sam3Detector, Sam3Instances, Sam3Masks  # noqa: E402
from spatialforge.perception.config import PerceptionConfig, StageSpec, describe_changes  # noqa: E402
from spatialforge.perception.ports import (  # noqa: E402
    Detector,
    DetectorMasks,
    FoundInstances,
    SegmentingDetector,
    Stage,
)
from spatialforge.perception.types import Detections, MaskSet  # noqa: E402

from .tiny_sam3 import SAM3_QUERIES, build_tiny_sam3  # noqa: E402


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory) -> str:
    return str(build_tiny_sam3(tmp_path_factory.mktemp("tiny_sam3")))


@pytest.fixture(scope="module")
def reference(sam3_dir):
    """The same checkpoint through plain transformers: one image and one phrase per forward."""
    model = transformers.Sam3Model.from_pretrained(sam3_dir).eval()
    processor = transformers.Sam3Processor.from_pretrained(sam3_dir)

    def run(image: np.ndarray, phrase: str):
        enc = processor(images=[image], text=[phrase], return_tensors="pt")
        with torch.inference_mode():
            out = model(**enc)
        res = processor.post_process_instance_segmentation(out, threshold=0.0, mask_threshold=0.5,
                                                           target_sizes=enc["original_sizes"].tolist())[0]
        order = np.argsort(-res["scores"].numpy(), kind="stable")
        return res["boxes"].numpy()[order], res["scores"].numpy()[order], res["masks"].numpy()[order].astype(bool)

    return run


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A structured RGB image: gradients, a checkerboard and a bright rectangle."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * ((xx // (3 + seed) + yy // (3 + seed)) % 2)
    img[..., 2] = 255 * (yy / max(h - 1, 1)) ** (seed % 3 + 1)
    img[h // 4:h // 2, w // 3:2 * w // 3] = (250, 40, 30)
    return img.astype(np.uint8)


IMAGES = [_image(60, 90, 0), _image(90, 60, 1), _image(45, 45, 2)]
PROMPTS = [["cat", "red mug", "Cat "], ["dog"], ["lamp", "sofa", "red  mug", "table"]]
UNIQUE = [["cat", "red mug"], ["dog"], ["lamp", "sofa", "red  mug", "table"]]  # labels: the first spelling


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean()) if a.size else 1.0


# ----------------------------------------------------------------------------- lifecycle, registry, options
def test_lazy_construction_protocols_registry_and_options(sam3_dir):
    stage = Sam3Detector(model_id="/nonexistent/folder/never/loaded")
    assert stage.model is None and stage.processor is None  # nothing loaded in __init__
    assert isinstance(stage, Detector) and isinstance(stage, SegmentingDetector) and isinstance(stage, Stage)
    assert Sam3Detector().model_id == DEFAULT_MODELS["sam3"] == "facebook/sam3"
    masks = build_stage("segmenter", "sam3", model_id=sam3_dir)
    assert type(masks) is Sam3Masks and isinstance(masks, DetectorMasks) and masks.from_detector
    assert not hasattr(masks, "model")  # it holds no model: never counted as resident
    built = build_stage("detector", "sam3", model_id=sam3_dir, batch_size=2, prompt_batch_size=3, max_instances=7)
    assert type(built) is Sam3Detector and (built.batch_size, built.prompt_batch_size, built.max_instances) == (2, 3, 7)
    built.load()
    assert type(built.model).__name__ == "Sam3Model" and type(built.processor).__name__ == "Sam3Processor"
    built.unload()
    assert built.model is None and built.processor is None
    for options, message in (({"score_threshold": 1.5}, r"score_threshold must be a number in \[0, 1\]"),
                             ({"mask_threshold": -0.1}, r"mask_threshold must be a number in \[0, 1\]"),
                             ({"max_instances": 0}, "max_instances must be an integer >= 1"),
                             ({"batch_size": 0}, "batch_size must be an integer >= 1"),
                             ({"prompt_batch_size": True}, "prompt_batch_size must be an integer >= 1"),
                             ({"box_threshold": 0.3}, "the sam3 detector: unknown option 'box_threshold'")):
        with pytest.raises(ConfigError, match=message):
            Sam3Detector(model_id=sam3_dir, **options)
    with pytest.raises(ConfigError, match="the sam3 segmenter: unknown option 'mask_threshold'"):
        Sam3Masks(mask_threshold=0.5)


# ----------------------------------------------------------------------------- the contract
def test_every_instance_with_box_score_label_and_mask(sam3_dir):
    stage = Sam3Detector(model_id=sam3_dir, score_threshold=0.0)
    found = stage.detect_and_segment(IMAGES, PROMPTS)
    assert len(found) == len(IMAGES)
    fractions = []
    for img, labels, res in zip(IMAGES, UNIQUE, found, strict=True):
        h, w = img.shape[:2]
        assert isinstance(res, Sam3Instances) and isinstance(res, FoundInstances)
        det = res.detections
        assert isinstance(det, Detections) and len(det) == len(res) == SAM3_QUERIES * len(labels)  # every query kept
        assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
        assert np.all(det.boxes[:, [0, 2]] >= 0) and np.all(det.boxes[:, [0, 2]] <= w)  # inside the image
        assert np.all(det.boxes[:, [1, 3]] >= 0) and np.all(det.boxes[:, [1, 3]] <= h)
        assert np.all(det.boxes[:, 2] >= det.boxes[:, 0]) and np.all(det.boxes[:, 3] >= det.boxes[:, 1])
        assert [lab for lab in labels if lab in det.labels] == labels and set(det.labels) == set(labels)
        assert np.all(np.diff(det.scores) <= 0) and np.all((det.scores > 0) & (det.scores < 1))  # best first
        assert res.probabilities.shape == (len(det), 32, 32) and res.probabilities.dtype == np.float32
        ms = res.masks()
        assert isinstance(ms, MaskSet) and ms.masks.shape == (len(det), h, w) and ms.masks.dtype == bool
        np.testing.assert_array_equal(ms.scores, det.scores)
        fractions += list(ms.masks.mean(axis=(1, 2)))
        kept = res.select([3, 0])  # a selection keeps each detection with its own mask
        assert kept.detections.labels == (det.labels[3], det.labels[0])
        np.testing.assert_array_equal(kept.masks().masks, ms.masks[[3, 0]])
    assert any(0.05 < f < 0.95 for f in fractions)  # real masks, not all empty or full
    assert len({round(float(s), 6) for r in found for s in r.detections.scores}) > 10
    # the plain Detector call gives the same detections
    plain = stage(IMAGES, PROMPTS)
    for d, res in zip(plain, found, strict=True):
        np.testing.assert_array_equal(d.boxes, res.detections.boxes)
        assert d.labels == res.detections.labels


def test_matches_plain_transformers_phrase_by_phrase(sam3_dir, reference):
    """Each box, score and mask is the one SAM 3's own post-processing gives for that phrase on that image."""
    found = Sam3Detector(model_id=sam3_dir, score_threshold=0.0).detect_and_segment(IMAGES, PROMPTS)
    for img, labels, res in zip(IMAGES, UNIQUE, found, strict=True):
        h, w = img.shape[:2]
        masks = res.masks().masks
        for label in labels:
            mine = np.array([lab == label for lab in res.detections.labels])
            boxes, scores, ref_masks = reference(img, " ".join(label.split()))
            np.testing.assert_allclose(res.detections.scores[mine], scores, atol=1e-5)
            clipped = np.clip(boxes, 0, [w, h, w, h])
            np.testing.assert_allclose(res.detections.boxes[mine], clipped, atol=1e-3)
            assert _agreement(masks[mine], ref_masks) > 0.999  # the mask of the same query as the box


def test_batch_of_one_and_of_three_are_equal(sam3_dir):
    batched = Sam3Detector(model_id=sam3_dir, score_threshold=0.0, batch_size=3, prompt_batch_size=5)
    single = Sam3Detector(model_id=sam3_dir, score_threshold=0.0, batch_size=1, prompt_batch_size=1)
    together = batched.detect_and_segment(IMAGES, PROMPTS)
    for img, prompts, a in zip(IMAGES, PROMPTS, together, strict=True):
        b = single.detect_and_segment([img], [prompts])[0]
        assert a.detections.labels == b.detections.labels
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=1e-3)
        np.testing.assert_allclose(a.detections.scores, b.detections.scores, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
        assert _agreement(a.masks().masks, b.masks().masks) > 0.999


def test_image_embedding_once_per_image_and_text_once_per_phrase(sam3_dir):
    stage = Sam3Detector(model_id=sam3_dir, score_threshold=0.0, batch_size=3, prompt_batch_size=4)
    stage.load()
    calls = {"vision_images": 0, "text_phrases": 0, "decoder_rows": []}
    stage.model.vision_encoder.register_forward_hook(
        lambda _m, args, _out: calls.__setitem__("vision_images", calls["vision_images"] + len(args[0])))
    stage.model.text_encoder.register_forward_hook(
        lambda _m, _args, out: calls.__setitem__("text_phrases", calls["text_phrases"] + len(out.last_hidden_state)))
    stage.model.detr_decoder.register_forward_hook(
        lambda _m, _args, out: calls["decoder_rows"].append(len(out.intermediate_hidden_states[-1])))
    stage.detect_and_segment(IMAGES, PROMPTS)
    rows = sum(len(u) for u in UNIQUE)  # 7 (image, phrase) pairs
    assert calls["vision_images"] == len(IMAGES)  # the image tower ran once per image, not once per phrase
    assert calls["text_phrases"] == 6  # one per distinct phrase: "red mug" (image 0) and "red  mug" (image 2) share one
    assert calls["decoder_rows"] == [4, 3] and sum(calls["decoder_rows"]) == rows


def test_thresholds_and_the_instance_cap(sam3_dir):
    every = Sam3Detector(model_id=sam3_dir, score_threshold=0.0).detect_and_segment(IMAGES[:1], PROMPTS[:1])[0]
    cut = float(np.median(every.detections.scores))
    high = Sam3Detector(model_id=sam3_dir, score_threshold=cut).detect_and_segment(IMAGES[:1], PROMPTS[:1])[0]
    assert 0 < len(high) < len(every) and np.all(high.detections.scores > cut)
    np.testing.assert_allclose(high.detections.scores, every.detections.scores[:len(high)])
    capped = Sam3Detector(model_id=sam3_dir, score_threshold=0.0, max_instances=5,
                          prompt_batch_size=1).detect_and_segment(IMAGES[:1], PROMPTS[:1])[0]
    assert len(capped) == 5 and capped.detections.labels == every.detections.labels[:5]  # the best 5 of all phrases
    np.testing.assert_allclose(capped.detections.scores, every.detections.scores[:5], atol=1e-6)
    strict = Sam3Detector(model_id=sam3_dir, score_threshold=0.0, mask_threshold=0.7).detect_and_segment(
        IMAGES[:1], PROMPTS[:1])[0]
    loose, tight = every.masks().masks, strict.masks().masks
    assert np.all(~tight | loose) and tight.sum() < loose.sum()  # a higher mask threshold keeps a subset


def test_bfloat16_runs(sam3_dir):
    half = Sam3Detector(model_id=sam3_dir, dtype="bfloat16", score_threshold=0.0).detect_and_segment(IMAGES[:2],
                                                                                                  PROMPTS[:2])
    assert [len(r) for r in half] == [SAM3_QUERIES * 2, SAM3_QUERIES]
    assert half[0].detections.scores.dtype == np.float32 and half[0].masks().masks.shape == (SAM3_QUERIES * 2, 60, 90)


def test_no_prompts_no_model_and_bad_prompts(sam3_dir):
    stage = Sam3Detector(model_id=sam3_dir, score_threshold=0.0)
    out = stage.detect_and_segment([IMAGES[0], IMAGES[1]], [[], []])
    assert [len(r) for r in out] == [0, 0] and stage.model is None  # nothing to find: nothing loaded
    assert [r.masks().masks.shape for r in out] == [(0, 60, 90), (0, 90, 60)]
    assert stage([], []) == []
    longest = "abcdefghijklmnopqrstuvwxyzabcd"  # 30 letter tokens + start + end = 32: the most SAM 3 reads
    assert len(stage.detect_and_segment([IMAGES[0]], [[longest]])[0]) == SAM3_QUERIES
    with pytest.raises(ValueError, match=r"prompts\[1\]: phrase '" + longest + "e' is 33 tokens .* at most 32"):
        stage.detect_and_segment(IMAGES[:2], [["cat"], [longest + "e"]])
    with pytest.raises(ValueError, match="has no text"):
        stage.detect_and_segment(IMAGES[:1], [["  "]])
    with pytest.raises(ValueError, match="one list per image"):
        stage.detect_and_segment(IMAGES[:2], [["cat"]])
    with pytest.raises(ValueError, match="found on a 90x60 image"):
        Sam3Masks()([IMAGES[1]], out[:1])
    with pytest.raises(ValueError, match="it cannot segment boxes"):
        Sam3Masks()([IMAGES[0]], [np.array([[0, 0, 10, 10]], np.float32)])


def test_without_sam3model_the_error_names_the_transformers_version(sam3_dir, monkeypatch, tmp_path, capsys):
    import spatialforge.perception.backends.base as base

    real = base.require
    old = SimpleNamespace(__version__="4.57.1")  # a transformers release without SAM 3
    monkeypatch.setattr(base, "require", lambda name, **kw: old if name == "transformers" else real(name, **kw))
    with pytest.raises(ConfigError, match=r"the sam3 detector needs transformers >= 5\.0 \(Sam3Model\), but "
                                          r"transformers 4\.57\.1 is installed: pip install -U 'transformers>=5\.0'"):
        Sam3Detector(model_id=sam3_dir).load()
    # through the command line: one line, exit 2
    from PIL import Image

    from spatialforge.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(60, 80, 1)).save(photos / "a.png")
    tags = tmp_path / "tags.txt"
    tags.write_text("cup\nchair\n")
    capsys.readouterr()
    code = main(["generate", str(photos), "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu",
                 "--filter", "none", "--vocabulary", str(tags), "--embedder", "none", "--captioner", "label",
                 "--detector", "sam3", "--detector-model", sam3_dir, "--depth-model", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "transformers >= 5.0" in err[0]


# ----------------------------------------------------------------------------- the config rule
def _generate_args(*flags: str):
    from spatialforge.cli.main import build_parser

    return build_parser().parse_args(["generate", "photos", "--out", "out", *flags])


def test_the_sam3_detector_goes_with_the_sam3_segmenter_only(tmp_path):
    from spatialforge.cli.photos import perception_config
    from spatialforge.perception.config import load_perception_config
    from spatialforge.perception.pipeline import PerceptionPipeline

    with pytest.raises(ConfigError, match=r"^\[segmenter\]: the sam3 detector segments what it finds, so the "
                                          r"segmenter must be 'sam3' .*got 'sam2'$"):
        PerceptionConfig(detector=StageSpec("sam3"))
    with pytest.raises(ConfigError, match=r"the sam3 segmenter uses the sam3 detector's masks, but the detector is "
                                          r"'owlv2'"):
        PerceptionConfig(detector=StageSpec("owlv2"), segmenter=StageSpec("sam3"))
    with pytest.raises(ConfigError, match=r"the sam3 segmenter loads no model of its own .* give the model id 'x/y' "
                                          r"to the detector"):
        PerceptionConfig(detector=StageSpec("sam3"), segmenter=StageSpec("sam3", "x/y"))
    cfg = PerceptionConfig(detector=StageSpec("sam3", "/models/sam3"), segmenter=StageSpec("sam3"), device="cpu")
    assert cfg.stage_spec("segmenter") == StageSpec("sam3", "/models/sam3")  # its masks' model, for provenance
    stages = PerceptionPipeline.from_config(cfg).stages
    assert type(stages["segmenter"]) is Sam3Masks and stages["segmenter"].model_id == "/models/sam3"
    assert type(stages["detector"]) is Sam3Detector and stages["detector"].model_id == "/models/sam3"
    # a config file naming the sam3 detector and no segmenter gets the sam3 segmenter; a contradiction names the file
    p = tmp_path / "p.toml"
    p.write_text('[detector]\nbackend = "sam3"\noptions = { mask_threshold = 0.6 }\n')
    assert load_perception_config(p).segmenter.backend == "sam3"
    p.write_text('[detector]\nbackend = "sam3"\n[segmenter]\nbackend = "sam"\n')
    with pytest.raises(ConfigError, match=rf"^{p}: \[segmenter\]: the sam3 detector segments what it finds"):
        load_perception_config(p)
    # the command line: the segmenter follows --detector into and out of sam3, unless a segmenter flag is given
    assert perception_config(_generate_args("--detector", "sam3")).segmenter == StageSpec("sam3")
    p.write_text('[detector]\nbackend = "sam3"\n')
    back = perception_config(_generate_args("--perception-config", str(p), "--detector", "owlv2"))
    assert back.detector.backend == "owlv2" and back.segmenter == PerceptionConfig().segmenter
    for flags, start in ((("--detector", "sam3", "--segmenter", "sam2"),
                          "--segmenter sam2: [segmenter]: the sam3 detector segments what it finds"),
                         (("--detector", "owlv2", "--segmenter", "sam3"),
                          "--segmenter sam3: [segmenter]: the sam3 segmenter uses the sam3 detector's masks, but the "
                          "detector is 'owlv2'"),
                         (("--detector", "sam3", "--segmenter-model", "x/y"),
                          "--segmenter-model: [segmenter]: the sam3 detector segments"),
                         (("--detector", "sam3", "--segmenter", "sam3", "--segmenter-model", "x/y"),
                          "--segmenter sam3, --segmenter-model: [segmenter]: the sam3 segmenter loads no model")):
        with pytest.raises(ConfigError) as exc:
            perception_config(_generate_args(*flags))
        assert str(exc.value).startswith(start), str(exc.value)


def test_a_contradictory_command_line_is_one_line_before_anything_is_written(tmp_path, capsys):
    from PIL import Image

    from spatialforge.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(60, 80, 1)).save(photos / "a.png")
    assert main(["generate", str(photos), "--out", str(tmp_path / "out"), "--detector", "sam3",
                 "--segmenter", "sam2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segmenter must be 'sam3'" in err[0] and not (tmp_path / "out").exists()


def test_a_pipeline_with_the_sam3_segmenter_needs_a_segmenting_detector():
    from spatialforge.perception.backends.stub import (
        GivenDepth,
        GivenDetector,
        KeepAllFilter,
        LabelCaptioner,
        NoTextEmbedder,
    )
    from spatialforge.perception.pipeline import PerceptionPipeline

    stages = {"filter": KeepAllFilter(), "detector": GivenDetector(lambda img, p: Detections.empty()),
              "captioner": LabelCaptioner(), "segmenter": Sam3Masks(), "embedder": NoTextEmbedder(),
              "depth": GivenDepth(lambda img: (np.ones(img.shape[:2], np.float32), None))}
    with pytest.raises(SpatialForgeError, match="the sam3 segmenter uses the detector's masks, but the given "
                                                "detector finds none"):
        PerceptionPipeline(PerceptionConfig(vocabulary=("cup",)), stages)


def test_the_fingerprint_covers_sam3s_options_but_not_its_batch_sizes():
    base = PerceptionConfig(detector=StageSpec("sam3"), segmenter=StageSpec("sam3"))
    settings = base.output_settings()["stages"]
    assert settings["detector"] == {"backend": "sam3", "model_id": "facebook/sam3",
                                    "options": {"mask_threshold": 0.5, "max_instances": 100, "score_threshold": 0.5}}
    assert settings["segmenter"] == {"backend": "sam3", "model_id": "facebook/sam3", "options": {}}
    assert base.fingerprint() != PerceptionConfig().fingerprint()
    same = PerceptionConfig(detector=StageSpec("sam3", options={"batch_size": 1, "prompt_batch_size": 64}),
                            segmenter=StageSpec("sam3"))
    assert same.fingerprint() == base.fingerprint()
    for options, phrase in (({"mask_threshold": 0.6}, "stages.detector.options.mask_threshold 0.5 -> 0.6"),
                            ({"max_instances": 10}, "stages.detector.options.max_instances 100 -> 10"),
                            ({"score_threshold": 0.3}, "stages.detector.options.score_threshold 0.5 -> 0.3")):
        other = PerceptionConfig(detector=StageSpec("sam3", options=options), segmenter=StageSpec("sam3"))
        assert other.fingerprint() != base.fingerprint()
        assert phrase in describe_changes(base.output_settings(), other.output_settings())
    moved = PerceptionConfig(detector=StageSpec("sam3", "my/sam3"), segmenter=StageSpec("sam3"))
    assert "stages.detector.model_id 'facebook/sam3' -> 'my/sam3'" in describe_changes(base.output_settings(),
                                                                                        moved.output_settings())


# ----------------------------------------------------------------------------- photos -> dataset
W, H = 160, 120
VOCAB = ("chair", "table", "cup", "lamp", "sofa", "red mug")


@pytest.fixture(scope="module")
def models(tmp_path_factory, sam3_dir) -> dict[str, str]:
    from .tiny_clip import build_tiny_clip
    from .tiny_depth import build_tiny_depth_anything

    root = tmp_path_factory.mktemp("tiny_models")
    return {"clip": str(build_tiny_clip(root / "clip")), "da": str(build_tiny_depth_anything(root / "da")),
            "sam3": sam3_dir}


def _photos(folder: Path, n: int, seed: int) -> list[str]:
    from PIL import Image

    from spatialforge.synth import SynthConfig, generate_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(generate_scene(i, seed=seed, config=SynthConfig(width=W, height=H)).image).save(
            folder / f"p{i}.png")
    return [f"p{i}" for i in range(n)]


def test_photos_to_dataset_with_sam3_through_the_command_line(models, tmp_path):
    from spatialforge.cli.main import main
    from spatialforge.io.scene_folder import load_scene

    photos = tmp_path / "photos"
    names = _photos(photos, 3, seed=4)
    vocab = tmp_path / "tags.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    out = tmp_path / "out"
    args = ["generate", str(photos), "--out", str(out), "--no-progress", "--device", "cpu", "--qa-per-image", "6",
            "--filter-model", models["clip"], "--filter-threshold", "0", "--vocabulary", str(vocab),
            "--detector", "sam3", "--detector-model", models["sam3"], "--score-threshold", "0",
            "--captioner", "label", "--depth-model", models["da"], "--embedder-model", models["clip"],
            "--assume-hfov", "60", "--batch-size", "2"]
    assert main(args) == 0
    records = {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}
    assert set(records) == set(names)
    ok = [k for k, r in records.items() if r["status"] == "ok"]
    assert len(ok) >= 2, records
    settings = json.loads((out / "perception" / "config.json").read_text())["settings"]["stages"]
    assert settings["segmenter"] == {"backend": "sam3", "model_id": models["sam3"], "options": {}}
    assert settings["detector"]["options"] == {"mask_threshold": 0.5, "max_instances": 100, "score_threshold": 0.0}
    report = json.loads((out / "perception" / "report.json").read_text())
    assert report["stages"]["segmenter"]["backend"] == "sam3" and report["stages"]["segmenter"]["images"] >= len(ok)
    detector = Sam3Detector(model_id=models["sam3"], score_threshold=0.0)
    filled = []  # the fraction of its box an object's pixels cover
    for k in ok:
        folder = out / "scenes" / k
        scene = load_scene(folder)
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["models"]["detector"] == {"backend": "sam3", "model_id": models["sam3"]}
        assert prov["models"]["segmenter"] == {"backend": "sam3", "model_id": models["sam3"]}
        dets = json.loads((folder / "detections.json").read_text())
        assert {d["label"] for d in dets} <= set(VOCAB) and [d["caption"] for d in dets] == [d["label"] for d in dets]
        assert set(np.unique(scene.instances).tolist()) - {0} == {o.id for o in scene.objects}
        # every object's pixels come from SAM 3's mask of that same detection, inside its box (+2 px), no overlaps
        tags = json.loads((folder / "filter.json").read_text())["tags"]
        again = detector.detect_and_segment([scene.image], [tags])[0]
        sam_masks = again.masks().masks
        for d in dets:
            pixels = scene.instances == d["id"]
            if not pixels.any():
                continue
            match = [i for i, (b, lab) in enumerate(zip(again.detections.boxes, again.detections.labels, strict=True))
                     if lab == d["label"] and np.allclose(b, d["box_xyxy"], atol=0.01)]
            assert len(match) == 1
            assert not np.any(pixels & ~sam_masks[match[0]])
            x0, y0, x1, y1 = d["box_xyxy"]
            rr, cc = np.nonzero(pixels)
            assert cc.min() >= math.floor(x0 - 2) and cc.max() <= math.ceil(x1 + 2)
            assert rr.min() >= math.floor(y0 - 2) and rr.max() <= math.ceil(y1 + 2)
            filled.append(pixels.sum() / ((x1 - x0) * (y1 - y0)))
    assert len(filled) >= 3 and min(filled) < 0.8  # masks, not filled boxes
    # the dataset was written from these scenes; a rerun resumes every photo
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["scenes_found"] == len(ok)
    assert main(args) == 0
    assert json.loads((out / "manifest.json").read_text())["perception"]["resumed"] == len(records)


def test_low_memory_keeps_one_model_resident_with_sam3_and_the_same_scenes(models, tmp_path):
    from spatialforge.perception.pipeline import PerceptionPipeline
    from spatialforge.pipeline.photos import PhotoSource, run_photos

    photos = tmp_path / "photos"
    names = _photos(photos, 3, seed=6)
    results, most = {}, {}
    for low in (False, True):
        cfg = PerceptionConfig(filter=StageSpec("clip", models["clip"], {"threshold": 0.0}),
                               embedder=StageSpec("clip", models["clip"]),
                               detector=StageSpec("sam3", models["sam3"]), segmenter=StageSpec("sam3"),
                               captioner=StageSpec("label"), depth=StageSpec("depth-anything-v2", models["da"]),
                               vocabulary=VOCAB, device="cpu", score_threshold=0.0, batch_size=2, low_memory=low,
                               assumed_hfov_deg=60.0)
        pipe = PerceptionPipeline.from_config(cfg)
        stages = [s for s in {id(s): s for s in pipe.stages.values()}.values() if hasattr(s, "model")]
        assert not hasattr(pipe.stages["segmenter"], "model")  # SAM 3's masks: no segmentation model to hold
        assert {"clip", "depth-anything-v2", "sam3"} <= {s.name for s in stages}
        most[low] = 0

        def counting(load, low=low, stages=stages):
            def load_and_count():
                load()
                most[low] = max(most[low], sum(s.model is not None for s in stages))
            return load_and_count

        for stage in stages:
            stage.load = counting(stage.load)
        out = tmp_path / f"low{low}"
        run_photos(PhotoSource(folder=photos), out, pipe, progress=False)
        assert all(getattr(s, "model", None) is None for s in pipe.stages.values())
        results[low] = {k: (np.load(out / "scenes" / k / "depth.npy"),
                            (out / "scenes" / k / "instances.png").read_bytes())
                        for k in names if (out / "scenes" / k).is_dir()}
    assert results[True].keys() == results[False].keys() and results[True]
    for k, (depth, inst) in results[True].items():
        np.testing.assert_allclose(depth, results[False][k][0], rtol=1e-5)
        assert inst == results[False][k][1]
    assert most == {False: 3, True: 1}  # low memory: one model at a time; SAM 3's masks need no second model
