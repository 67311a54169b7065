"""Open vocabulary by default, without torch: the default detector, its settings, the tag vocabulary, no tagging pass.

The ``florence2-regions`` detector proposes regions without prompts and gives no scores; these tests
check what the configuration, the command line and the pipeline make of that, with injected stages
(numpy only). The detector itself runs on tiny models in ``test_florence2_regions.py``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.stub import BoxSegmenter, GivenDepth, LabelCaptioner, NoTextEmbedder
from spatialforge.perception.config import PerceptionConfig, StageSpec, describe_changes, load_perception_config
from spatialforge.perception.lvis_vocabulary import LVIS_VOCABULARY
from spatialforge.perception.pipeline import PerceptionPipeline
from spatialforge.perception.types import Detections, FilterDecision, ImageItem
from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

F2 = "florence-community/Florence-2-large"


def _args(*flags: str):
    from spatialforge.cli.main import build_parser

    return build_parser().parse_args(["generate", "photos", "--out", "out", *flags])


def _config(*flags: str) -> PerceptionConfig:
    from spatialforge.cli.photos import perception_config

    return perception_config(_args(*flags))


# ----------------------------------------------------------------------------- the default detector
def test_the_default_detector_is_florence2_regions_on_the_captioners_model():
    cfg = PerceptionConfig()
    assert cfg.detector == StageSpec("florence2-regions") and cfg.captioner == StageSpec("florence2")
    stages = cfg.output_settings()["stages"]
    assert stages["detector"]["model_id"] == stages["captioner"]["model_id"] == F2
    assert stages["detector"]["options"] == {"max_new_tokens": 1024, "max_words": 6, "num_beams": 3,
                                             "task": "<DENSE_REGION_CAPTION>"}  # batch_size only tunes speed
    # --captioner-model alone is the detector's model too, and one stage object holds it
    cfg = _config("--captioner-model", "/models/florence")
    assert cfg.stage_spec("detector") == StageSpec("florence2-regions", "/models/florence")
    pipe = PerceptionPipeline.from_config(cfg)
    det, cap = pipe.stages["detector"], pipe.stages["captioner"]
    assert det.model_id == cap.model_id == "/models/florence" and cap._model_source is det
    # a detector model of its own, or another captioner: no sharing, the detector keeps its model
    pipe = PerceptionPipeline.from_config(_config("--captioner-model", "/models/a", "--detector-model", "/models/b"))
    assert pipe.stages["detector"].model_id == "/models/b" and pipe.stages["captioner"]._model_source is None
    cfg = _config("--captioner", "label")
    assert cfg.stage_spec("detector").model_id is None
    assert PerceptionPipeline.from_config(cfg).stages["detector"].model_id == F2
    assert PerceptionPipeline.from_config(_config("--captioner-model", "microsoft/Florence-2-base")) \
        .stages["captioner"]._model_source is not None  # translated ids still share


def test_tag_then_detect_stays_a_choice():
    cfg = _config("--detector", "grounding-dino")
    assert cfg.detector == StageSpec("grounding-dino") and cfg.vocabulary == DEFAULT_VOCABULARY
    stages = PerceptionPipeline.from_config(cfg).stages
    assert stages["detector"].name == "grounding-dino" and stages["captioner"]._model_source is None
    assert "vocabulary" in cfg.output_settings() and cfg.output_settings()["tags_per_image"] == 24


def test_a_score_threshold_is_refused_for_a_detector_without_scores(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^score_threshold: the florence2-regions detector gives no scores"):
        PerceptionConfig(score_threshold=0.3)
    with pytest.raises(ConfigError) as exc:
        _config("--score-threshold", "0.3")
    assert str(exc.value).startswith("--score-threshold: the florence2-regions detector gives no scores")
    assert "--detector grounding-dino, owlv2 or sam3" in str(exc.value)
    assert _config("--score-threshold", "0.3", "--detector", "owlv2").score_threshold == 0.3
    p = tmp_path / "p.toml"
    p.write_text("score_threshold = 0.2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: score_threshold: the florence2-regions detector")):
        load_perception_config(p)
    p.write_text('score_threshold = 0.2\n[detector]\nbackend = "grounding-dino"\n')
    assert load_perception_config(p).stage_spec("detector").options["box_threshold"] == 0.2
    from PIL import Image

    from spatialforge.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48)).save(photos / "a.png")
    assert main(["generate", str(photos), "--out", str(tmp_path / "o"), "--score-threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--score-threshold: the florence2-regions detector gives no scores" in err[0]
    assert not (tmp_path / "o").exists()


def test_no_filter_needs_no_small_vocabulary_when_the_detector_takes_no_prompts():
    depth = StageSpec("depth-pro")  # a depth model that needs no scene type from the filter
    assert PerceptionConfig(filter=StageSpec("none"), depth=depth).filter.backend == "none"
    assert _config("--filter", "none", "--depth", "depth-pro").filter.backend == "none"
    with pytest.raises(ConfigError, match=r"no tagger.*1203 tags.*at most 24"):
        PerceptionConfig(filter=StageSpec("none"), detector=StageSpec("grounding-dino"), depth=depth)
    with pytest.raises(ConfigError, match=r"^--filter none has no tagger"):
        _config("--filter", "none", "--detector", "owlv2", "--depth", "depth-pro")


def test_region_proposals_need_a_captioner_that_names_them():
    proposals = StageSpec("florence2-regions", options={"task": "<REGION_PROPOSAL>"})
    with pytest.raises(ConfigError, match=r"\[captioner\]: .*<REGION_PROPOSAL> boxes have no names"):
        PerceptionConfig(detector=proposals, captioner=StageSpec("label"))
    assert PerceptionConfig(detector=proposals).detector.options["task"] == "<REGION_PROPOSAL>"
    assert PerceptionConfig(captioner=StageSpec("label")).captioner.backend == "label"  # dense captions name them


def test_the_vocabulary_changes_the_fingerprint_only_for_a_prompted_detector():
    regions, more = PerceptionConfig(), PerceptionConfig(vocabulary=("cup", "chair"))
    assert "vocabulary" not in regions.output_settings() and "tags_per_image" not in regions.output_settings()
    assert regions.fingerprint() == more.fingerprint()  # no photo is tagged: a rerun with another one resumes
    gd = StageSpec("grounding-dino")
    a, b = PerceptionConfig(detector=gd), PerceptionConfig(detector=gd, vocabulary=("cup", "chair"))
    assert a.fingerprint() != b.fingerprint()
    changes = describe_changes(a.output_settings(), b.output_settings())
    assert any(c.startswith("vocabulary: ") and "1201 entries removed" in c for c in changes)


# ----------------------------------------------------------------------------- the LVIS vocabulary
def test_the_default_vocabulary_is_the_lvis_categories_as_readable_prompts():
    import spatialforge.perception.lvis_vocabulary as lvis

    assert DEFAULT_VOCABULARY is LVIS_VOCABULARY
    assert len(LVIS_VOCABULARY) == 1203 == len(set(LVIS_VOCABULARY))  # LVIS v1's 1203 categories, each once
    assert len({v.lower() for v in LVIS_VOCABULARY}) == 1203
    for name in LVIS_VOCABULARY:
        assert name == " ".join(name.split()) and name
        assert not set(name) & set("_()[]{}"), name  # readable: no underscores, no "(notes)"
    assert LVIS_VOCABULARY[:3] == ("aerosol can", "air conditioner", "airplane")  # LVIS category id order
    assert LVIS_VOCABULARY[-1] == "zucchini"
    for name in ("bus", "orange", "car", "bench", "trash can", "computer mouse", "computer monitor", "archery bow",
                 "ribbon bow", "cooking pan", "metal pan", "fish", "cooked fish", "salmon", "salmon fillet",
                 "drinking glass", "Christmas tree"):
        assert name in LVIS_VOCABULARY, name
    assert "bow" not in LVIS_VOCABULARY and "pan" not in LVIS_VOCABULARY  # homonyms told apart in words
    doc = lvis.__doc__
    assert "CC BY 4.0" in doc and "lvisdataset.org" in doc and "Gupta" in doc  # the data's attribution


# ----------------------------------------------------------------------------- no tagging pass
class _Filter:
    name, model_id = "recording-filter", "none"

    def __init__(self) -> None:
        self.tagged = 0

    def load(self):
        return None

    def unload(self):
        return None

    def __call__(self, images):
        return [FilterDecision(True, "kept", {}, "none") for _ in images]

    def tags(self, images, vocabulary, top_k):
        self.tagged += len(images)
        return [list(vocabulary)[:top_k] for _ in images]


class _Regions:
    """A detector double: one box per image, and what it was prompted with."""

    name, model_id = "regions-double", "none"

    def __init__(self, takes_prompts: bool) -> None:
        self.takes_prompts = takes_prompts
        self.prompts: list = []

    def load(self):
        return None

    def unload(self):
        return None

    def __call__(self, images, prompts):
        self.prompts.extend(prompts)
        return [Detections(np.array([[4, 4, 40, 30]], np.float32), np.ones(1, np.float32), ("red mug",))
                for _ in images]


@pytest.mark.parametrize("takes_prompts", [False, True])
def test_the_pipeline_tags_photos_only_for_a_detector_that_takes_prompts(takes_prompts):
    cfg = PerceptionConfig(filter=StageSpec("recording"), detector=StageSpec("regions"), captioner=StageSpec("label"),
                           segmenter=StageSpec("box"), depth=StageSpec("given"), embedder=StageSpec("none"),
                           vocabulary=("cup", "chair", "lamp"), tags_per_image=2, min_mask_pixels=1)
    flt, det = _Filter(), _Regions(takes_prompts)
    depth = GivenDepth(lambda img: (np.full(img.shape[:2], 2.0, np.float32), 60.0))
    pipe = PerceptionPipeline(cfg, {"filter": flt, "detector": det, "captioner": LabelCaptioner(),
                                    "segmenter": BoxSegmenter(), "depth": depth, "embedder": NoTextEmbedder()})
    items = [ImageItem(f"img{i}", np.full((48, 64, 3), 40 * i, np.uint8), f"img{i}.png") for i in range(3)]
    scenes, failed, filtered = pipe.process_chunk(items)
    assert not failed and not filtered and len(scenes) == 3
    tags = [extras["filter.json"]["tags"] for _, extras in scenes]
    if takes_prompts:
        assert flt.tagged == 3 and det.prompts == [["cup", "chair"]] * 3 and tags == [["cup", "chair"]] * 3
    else:
        assert flt.tagged == 0 and det.prompts == [[], [], []] and tags == [[], [], []]
    for scene, extras in scenes:
        assert [o.caption for o in scene.objects] == ["red mug"]
        assert json.loads(json.dumps(extras["detections.json"]))[0]["score"] == 1.0
