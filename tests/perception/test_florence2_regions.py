"""The florence2-regions detector (class-agnostic regions, SpatialVLM style) on tiny Florence-2 models from a folder.

The detector's model is :func:`build_tiny_florence2_regions` (a random Florence-2 rewired so that its
outputs are well-formed region lists), loaded with ``from_pretrained(folder)`` as a hub id would be.
Expected boxes come from plain transformers (``generate(pixel_values=...)`` and the processor's own
``post_process_generation``) or from hand-written model outputs, never from the stage itself.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.florence2 import (  # noqa: E402
    REGION_SCORE,
    UNNAMED_LABEL,
    Florence2Captioner,
    Florence2RegionDetector,
    clean_caption,
    share_model,
)
from spatialforge.perception.ports import Detector, Stage  # noqa: E402
from spatialforge.perception.types import Detections  # noqa: E402
from spatialforge.synth import SynthConfig, generate_scene  # noqa: E402

from .test_backend_florence2 import TowerCounter  # noqa: E402
from .tiny_florence2 import build_tiny_florence2  # noqa: E402
from .tiny_florence2_regions import REGIONS, build_tiny_florence2_regions  # noqa: E402

TASKS = ("<DENSE_REGION_CAPTION>", "<OD>", "<REGION_PROPOSAL>")


@pytest.fixture(scope="module")
def regions_dir(tmp_path_factory):
    return str(build_tiny_florence2_regions(tmp_path_factory.mktemp("tiny_florence2_regions")))


@pytest.fixture(scope="module")
def processor(regions_dir):
    return transformers.Florence2Processor.from_pretrained(regions_dir)


@pytest.fixture(scope="module")
def reference_model(regions_dir):
    return transformers.Florence2ForConditionalGeneration.from_pretrained(regions_dir).eval()


def _photos(n: int = 4, w: int = 160, h: int = 120) -> list[np.ndarray]:
    return [generate_scene(i, seed=3, config=SynthConfig(width=w, height=h)).image for i in range(n)]


def _expected(reference_model, processor, images, task, *, num_beams, max_new_tokens=64, max_words=6):
    """Boxes and labels through plain transformers: pixels in, the processor's parser out, corners ordered."""
    enc = processor(text=[task] * len(images), images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        ids = reference_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams)
    out = []
    for text, img in zip(processor.batch_decode(ids, skip_special_tokens=False), images, strict=True):
        h, w = img.shape[:2]
        parsed = processor.post_process_generation(text, task=task, image_size=(w, h))[task]
        boxes = [[min(b[0], b[2]), min(b[1], b[3]), min(max(b[0], b[2]), w), min(max(b[1], b[3]), h)]
                 for b in parsed["bboxes"]]
        labels = [clean_caption(lab, max_words) or UNNAMED_LABEL for lab in parsed["labels"]]
        out.append((np.asarray(boxes, np.float32).reshape(-1, 4), labels))
    return out


# ----------------------------------------------------------------------------- construction
def test_registered_lazy_and_declared_honestly():
    stage = build_stage("detector", "florence2-regions", model_id="/never/loaded")
    assert isinstance(stage, Florence2RegionDetector) and stage.model is None
    assert isinstance(stage, Detector) and isinstance(stage, Stage)
    assert stage.takes_prompts is False and stage.gives_scores is False
    default = Florence2RegionDetector()
    assert default.model_id == "florence-community/Florence-2-large"
    assert (default.task, default.max_new_tokens, default.num_beams, default.max_words, default.batch_size) == \
        ("<DENSE_REGION_CAPTION>", 1024, 3, 6, 4)
    assert Florence2RegionDetector(model_id="microsoft/Florence-2-base").model_id == \
        "florence-community/Florence-2-base"
    assert not hasattr(default, "score_threshold")  # no threshold option: it has no scores


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task": "<CAPTION>"}, "task must be one of <DENSE_REGION_CAPTION>, <OD>, <REGION_PROPOSAL>"),
    ({"num_beams": 0}, "num_beams"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"max_words": True}, "max_words"),
    ({"batch_size": 0}, "batch_size"),
    ({"score_threshold": 0.3}, "unknown option 'score_threshold'"),
    ({"box_threshold": 0.3}, "unknown option 'box_threshold'"),
])
def test_bad_options_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Florence2RegionDetector(model_id="x", **kwargs)


# ----------------------------------------------------------------------------- parsing
def test_parse_golden_boxes_labels_and_scores(regions_dir):
    stage = Florence2RegionDetector(model_id=regions_dir)
    text = ("</s><s>A Red mug.<loc_100><loc_200><loc_300><loc_400>wooden chair<loc_900><loc_50><loc_500><loc_950>"
            "cups<loc_0><loc_0><loc_10><loc_10><loc_998><loc_997><loc_999><loc_999></s><pad>")
    det = stage.parse(text, 640, 480)
    # bins back to pixels at each bin's centre, as Florence2PostProcessor.dequantize: int((bin + 0.5) * size / 1000)
    np.testing.assert_array_equal(det.boxes, np.array([[64, 96, 192, 192],
                                                       [320, 24, 576, 456],  # x written 900 then 500: ordered
                                                       [0, 0, 6, 5],
                                                       [639, 478, 639, 479]], np.float32))
    assert det.labels == ("red mug", "wooden chair", "cups", "cups")  # a label with two boxes names both
    assert det.scores.tolist() == [REGION_SCORE] * 4 == [1.0] * 4
    assert det.captions is None


def test_region_proposals_have_no_names(regions_dir):
    stage = Florence2RegionDetector(model_id=regions_dir, task="<REGION_PROPOSAL>")
    det = stage.parse("</s><s><loc_10><loc_20><loc_30><loc_40><loc_500><loc_500><loc_600><loc_700></s>", 1000, 100)
    np.testing.assert_array_equal(det.boxes, [[10, 2, 30, 4], [500, 50, 600, 70]])
    assert det.labels == (UNNAMED_LABEL, UNNAMED_LABEL) == ("object", "object")
    assert len(stage.parse("</s><s>nothing here</s>", 10, 10)) == 0


# ----------------------------------------------------------------------------- the model through the stage
@pytest.mark.parametrize("task", TASKS)
def test_regions_equal_the_plain_transformers_pixel_path(regions_dir, reference_model, processor, task):
    images = [*_photos(4), _photos(1, w=90, h=150)[0]]
    stage = Florence2RegionDetector(model_id=regions_dir, task=task, max_new_tokens=64, batch_size=2)
    got = stage(images)
    expected = _expected(reference_model, processor, images, task, num_beams=3)
    assert len(got) == len(images)
    for det, (boxes, labels), img in zip(got, expected, images, strict=True):
        assert isinstance(det, Detections) and len(det) == REGIONS
        np.testing.assert_array_equal(det.boxes, boxes)
        assert list(det.labels) == labels
        assert np.all(det.scores == REGION_SCORE)
        h, w = img.shape[:2]
        assert np.all(det.boxes[:, :2] <= det.boxes[:, 2:]) and np.all(det.boxes[:, [0, 2]] <= w)
        assert np.all(det.boxes[:, [1, 3]] <= h) and np.all(det.boxes >= 0)
    if task != "<REGION_PROPOSAL>":
        assert all(lab != UNNAMED_LABEL and lab.isalpha() for det in got for lab in det.labels)
    # the boxes follow the photo, not a constant
    assert len({tuple(map(tuple, det.boxes.tolist())) for det in got}) > 1


def test_greedy_and_prompts_are_accepted_but_unused(regions_dir, reference_model, processor):
    images = _photos(3)
    stage = Florence2RegionDetector(model_id=regions_dir, num_beams=1, max_new_tokens=64)
    got = stage(images, [["chair"], [], ["lamp", "sofa"]])
    expected = _expected(reference_model, processor, images, "<DENSE_REGION_CAPTION>", num_beams=1)
    for det, (boxes, labels) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(det.boxes, boxes)
        assert list(det.labels) == labels
    assert [d.labels for d in stage(images)] == [d.labels for d in got]
    with pytest.raises(ValueError, match="one list per image"):
        stage(images, [["chair"]])
    assert stage([]) == []


def test_the_vision_tower_runs_once_per_photo_for_regions_and_their_captions(regions_dir, monkeypatch):
    images = _photos(3)
    detector = Florence2RegionDetector(model_id=regions_dir, max_new_tokens=64, batch_size=2)
    captioner = Florence2Captioner(model_id=regions_dir, batch_size=4)
    assert share_model(detector, captioner)
    detector.load()
    tower = TowerCounter(detector.model, monkeypatch)
    dets = detector(images)
    assert tower.total == 3
    captions = captioner(images, dets)
    assert tower.total == 3  # the captions reused the regions' image features
    assert captioner.model is detector.model  # one model
    assert [len(c) for c in captions] == [len(d) for d in dets]
    # the same captions as a captioner with a model of its own
    alone = Florence2Captioner(model_id=regions_dir, batch_size=4)
    assert alone(images, dets) == captions


def test_share_model_only_for_the_same_checkpoint_device_and_dtype(regions_dir, tmp_path):
    other = str(build_tiny_florence2(tmp_path / "other"))
    detector = Florence2RegionDetector(model_id=regions_dir)
    assert not share_model(detector, Florence2Captioner(model_id=other))
    assert not share_model(detector, Florence2Captioner(model_id=regions_dir, dtype="bfloat16"))
    assert not share_model(detector, object())
    captioner = Florence2Captioner(model_id=regions_dir)
    assert share_model(detector, captioner) and share_model(detector, captioner)  # idempotent
    captioner.load()
    assert detector.model is not None and captioner.model is detector.model
    captioner.unload()  # releasing the captioner releases the shared model (the low-memory mode's one-at-a-time)
    assert detector.model is None and captioner.model is None
    detector.load()
    detector.unload()
    assert detector.model is None


def test_a_processor_that_cannot_parse_the_task_is_a_config_error(regions_dir, tmp_path):
    processor = transformers.Florence2Processor.from_pretrained(regions_dir)
    processor.post_processor.parse_task_config.pop("bboxes")
    processor.save_pretrained(tmp_path / "p")
    model = transformers.Florence2ForConditionalGeneration.from_pretrained(regions_dir)
    model.save_pretrained(tmp_path / "p")
    assert Florence2RegionDetector(model_id=str(tmp_path / "p"), task="<OD>", max_new_tokens=8)(_photos(1))
    with pytest.raises(ConfigError, match=r"cannot parse <REGION_PROPOSAL> outputs.*'bboxes'"):
        Florence2RegionDetector(model_id=str(tmp_path / "p"), task="<REGION_PROPOSAL>").load()


def test_bad_inputs_raise(regions_dir):
    stage = Florence2RegionDetector(model_id=regions_dir)
    img = _photos(1)[0]
    with pytest.raises(ValueError, match="uint8"):
        stage([img.astype(np.float32)])
    with pytest.raises(ValueError, match="sequence"):
        stage(img)
