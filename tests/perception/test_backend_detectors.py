"""Box utilities, and the Grounding DINO and OWLv2 detectors on tiny random checkpoints loaded from folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.grounding_dino import GroundingDinoDetector  # noqa: E402
from spatialforge.perception.backends.owlv2 import Owlv2Detector  # noqa: E402
from spatialforge.perception.boxes import box_iou, clip_boxes, filter_detections, nms  # noqa: E402
from spatialforge.perception.ports import Detector, Stage  # noqa: E402
from spatialforge.perception.types import Detections  # noqa: E402

from .tiny_detectors import build_tiny_grounding_dino, build_tiny_owlv2  # noqa: E402

GD_QUERIES = 10  # num_queries of the tiny Grounding DINO
OWL_PATCHES = 16  # 4 x 4 patch boxes of the tiny OWLv2


# ============================================================================= boxes.py
def test_box_iou_golden_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [10, 0, 20, 10], [20, 20, 30, 30], [1, 1, 10, 10]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 5) and iou.dtype == np.float64
    # 25 / (100 + 100 - 25); identical; touching edge; disjoint; 81 / 100 (contained)
    np.testing.assert_allclose(iou[0], [25 / 175, 1.0, 0.0, 0.0, 0.81], atol=1e-12)
    # [0,0,2,2] vs the others: 0, 4/100, 0, 0, 1/(4+81-1)
    np.testing.assert_allclose(iou[1], [0.0, 0.04, 0.0, 0.0, 1 / 84], atol=1e-12)
    np.testing.assert_allclose(box_iou(b, a), iou.T)  # symmetric
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)
    # zero-area boxes: IoU 0, not NaN
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 0.0
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(np.zeros((2, 3)), b)
    with pytest.raises(ValueError, match="non-finite"):
        box_iou([[0, 0, np.nan, 1]], b)


def test_nms_keeps_the_higher_score_and_distinct_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [5, 5, 15, 15]], np.float32)  # IoU(0,1)=.81, IoU(0,2)=1/7
    keep = nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5)
    assert keep.dtype == np.int64
    assert keep.tolist() == [1, 2]  # box 1 suppresses box 0 (IoU .81); box 2 overlaps but is distinct
    assert nms(boxes, np.array([0.9, 0.5, 0.7]), 0.5).tolist() == [0, 2]
    # a low threshold suppresses the distinct-but-overlapping box too
    assert nms(boxes, np.array([0.9, 0.5, 0.7]), 0.1).tolist() == [0]
    # IoU exactly at the threshold survives (strict >); threshold 1 removes nothing
    assert nms(boxes[:2], np.array([0.9, 0.5]), 0.81).tolist() == [0, 1]
    assert nms(boxes, np.array([0.1, 0.3, 0.2]), 1.0).tolist() == [1, 2, 0]
    # greedy chain: A suppresses B, so C (which only overlaps B) survives
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)  # IoU(A,B)=IoU(B,C)=.43
    assert nms(chain, np.array([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]
    # ties keep the earlier index first
    assert nms(np.array([[0, 0, 1, 1], [5, 5, 6, 6]]), np.array([0.5, 0.5]), 0.5).tolist() == [0, 1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, np.array([0.5, 0.9]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, np.array([0.5, 0.9, 0.7]), 1.5)


def test_clip_boxes():
    out = clip_boxes([[-5, -2, 20, 7], [3, 4, 5, 6]], 16, 8)
    np.testing.assert_array_equal(out, [[0, 0, 16, 7], [3, 4, 5, 6]])


def _dets(boxes, scores, labels, captions=None) -> Detections:
    return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), tuple(labels),
                      None if captions is None else tuple(captions))


def test_filter_detections_clip_threshold_size_nms_sort_cap():
    w, h = 100, 50  # image area 5000
    det = _dets(
        [[-10, -10, 20, 20],   # 0 clipped to [0,0,20,20]: area 400 (.08)
         [120, 10, 130, 20],   # 1 entirely outside: degenerate after clipping
         [50, 10, 70, 30],     # 2 area 400, score below the threshold
         [1, 1, 20, 20],       # 3 IoU with 0 (clipped) = 361/400 > .5: suppressed by 0
         [30, 30, 30.5, 30.5],  # 4 area .25 (5e-5): a speck below min_area_frac
         [0, 0, 100, 50],      # 5 the whole image (1.0 > max_area_frac)
         [10, 10, 30, 30],     # 6 overlaps 0 (IoU 100/700 = .14): kept
         [60, 5, 90, 45]],     # 7 area 1200
        [0.6, 0.99, 0.2, 0.5, 0.9, 0.95, 0.8, 0.7],
        ["a", "b", "c", "d", "e", "f", "g", "h"], captions=[f"cap {i}" for i in range(8)])
    out = filter_detections(det, w, h, score_threshold=0.3, iou_threshold=0.5)
    assert out.labels == ("g", "h", "a")  # sorted by score
    np.testing.assert_allclose(out.scores, [0.8, 0.7, 0.6])
    np.testing.assert_allclose(out.boxes, [[10, 10, 30, 30], [60, 5, 90, 45], [0, 0, 20, 20]])
    assert out.boxes.dtype == np.float32
    assert out.captions == ("cap 6", "cap 7", "cap 0")
    # the cap keeps the best
    capped = filter_detections(det, w, h, score_threshold=0.3, iou_threshold=0.5, max_detections=2)
    assert capped.labels == ("g", "h")
    # no NMS (threshold 1): box 3 comes back; a looser size window keeps the speck and the whole image
    loose = filter_detections(det, w, h, score_threshold=0.3, iou_threshold=1.0, min_area_frac=0.0,
                              max_area_frac=1.0)
    assert loose.labels == ("f", "e", "g", "h", "a", "d")
    # the score threshold is inclusive
    assert filter_detections(det, w, h, score_threshold=0.8, iou_threshold=0.5).labels == ("g",)
    assert len(filter_detections(Detections.empty(), w, h, score_threshold=0.3, iou_threshold=0.5)) == 0
    with pytest.raises(ValueError, match="width"):
        filter_detections(det, 0, h, score_threshold=0.3, iou_threshold=0.5)
    with pytest.raises(ValueError, match="min_area_frac"):
        filter_detections(det, w, h, score_threshold=0.3, iou_threshold=0.5, min_area_frac=0.5, max_area_frac=0.1)
    with pytest.raises(ValueError, match="iou_threshold"):
        filter_detections(det, w, h, score_threshold=0.3, iou_threshold=-0.1)


# ============================================================================= shared fixtures
@pytest.fixture(scope="module")
def gd_dir(tmp_path_factory):
    return str(build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny_gdino"), num_queries=GD_QUERIES))


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return str(build_tiny_owlv2(tmp_path_factory.mktemp("tiny_owlv2")))


@pytest.fixture(scope="module")
def gd_all(gd_dir):
    """Keeps every query box (both thresholds 0)."""
    return GroundingDinoDetector(model_id=gd_dir, box_threshold=0.0, text_threshold=0.0)


@pytest.fixture(scope="module")
def owl_all(owl_dir):
    return Owlv2Detector(model_id=owl_dir, score_threshold=0.0)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A structured RGB image: gradients, a checkerboard and a bright rectangle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 200 * ((xx // (4 + seed) + yy // (4 + seed)) % 2)
    img[..., 2] = rng.uniform(50, 255) * yy / max(h - 1, 1)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(100, 255, 3)
    return img.astype(np.uint8)


def _assert_valid(det: Detections, image: np.ndarray, prompts) -> None:
    h, w = image.shape[:2]
    assert isinstance(det, Detections)
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    assert det.boxes.shape == (len(det), 4) and det.scores.shape == (len(det),)
    assert np.all(np.isfinite(det.boxes))
    assert np.all(det.boxes[:, 0] >= 0) and np.all(det.boxes[:, 2] <= w)
    assert np.all(det.boxes[:, 1] >= 0) and np.all(det.boxes[:, 3] <= h)
    assert np.all(det.boxes[:, 2] >= det.boxes[:, 0]) and np.all(det.boxes[:, 3] >= det.boxes[:, 1])
    assert np.all((det.scores >= 0) & (det.scores <= 1))
    assert set(det.labels) <= set(prompts)
    assert det.captions is None


def _assert_same(a: Detections, b: Detections, atol: float = 1e-4) -> None:
    assert a.labels == b.labels
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol)


def _center_to_corners(boxes: np.ndarray) -> np.ndarray:
    cx, cy, bw, bh = boxes.T
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


# ============================================================================= both detectors
@pytest.mark.parametrize("cls, default", [(GroundingDinoDetector, "IDEA-Research/grounding-dino-base"),
                                          (Owlv2Detector, "google/owlv2-base-patch16-ensemble")])
def test_lazy_construction_protocol_and_provenance(cls, default):
    stage = cls(model_id="/nonexistent/folder/never/loaded")
    assert stage.model is None and stage.processor is None  # nothing loaded in __init__
    assert isinstance(stage, Detector) and isinstance(stage, Stage)
    assert stage.model_id == "/nonexistent/folder/never/loaded"
    assert cls().model_id == default
    # no prompts: no model is needed, nothing is loaded
    img = _image(20, 30, 0)
    out = stage([img, img], [[], []])
    assert [len(d) for d in out] == [0, 0] and all(isinstance(d, Detections) for d in out)
    assert stage.model is None
    assert stage([], []) == []


def test_registry_builds_the_detectors(gd_dir, owl_dir):
    gd = build_stage("detector", "grounding-dino", model_id=gd_dir, box_threshold=0.4, text_threshold=0.1)
    assert type(gd) is GroundingDinoDetector and gd.name == "grounding-dino" and gd.model_id == gd_dir
    assert (gd.box_threshold, gd.text_threshold) == (0.4, 0.1) and gd.model is None
    owl = build_stage("detector", "owlv2", model_id=owl_dir, score_threshold=0.05)
    assert type(owl) is Owlv2Detector and owl.name == "owlv2" and owl.model_id == owl_dir
    assert owl.score_threshold == 0.05 and owl.model is None
    for stage in (gd, owl):
        stage.load()
        assert stage.model is not None and stage.device == "cpu"
        stage.unload()
        assert stage.model is None and stage.processor is None


@pytest.mark.parametrize("which", ["gd", "owl"])
def test_argument_errors(which, gd_dir, owl_dir):
    cls, path = (GroundingDinoDetector, gd_dir) if which == "gd" else (Owlv2Detector, owl_dir)
    stage = cls(model_id=path)
    img = _image(20, 30, 0)
    with pytest.raises(ValueError, match="2 images but 1 prompt"):
        stage([img, img], [["cat"]])
    with pytest.raises(ValueError, match="list of phrases"):
        stage([img], ["cat"])
    with pytest.raises(ValueError, match="prompts must be a sequence"):
        stage([img], "cat")
    with pytest.raises(ValueError, match="string"):
        stage([img], [["cat", 3]])
    with pytest.raises(ValueError, match="phrase"):
        stage([img], [["  "]])
    with pytest.raises(ValueError, match="uint8"):
        stage([img.astype(np.float32)], [["cat"]])
    with pytest.raises(ValueError, match="sequence of"):
        stage(img, [["cat"]])
    with pytest.raises(ConfigError, match="batch_size"):
        cls(model_id=path, batch_size=0)
    thr = {"gd": ("box_threshold", "text_threshold"), "owl": ("score_threshold",)}[which]
    for name in thr:
        for bad in (-0.1, float("nan"), "0.3", True):
            with pytest.raises(ConfigError, match=name):
                cls(model_id=path, **{name: bad})


# ============================================================================= Grounding DINO
def _gd_reference(gd_dir, image, phrases, box_thr, text_thr):
    """Detections of one image through plain transformers; labels from the phrases' token positions."""
    model = transformers.GroundingDinoForObjectDetection.from_pretrained(gd_dir).eval()
    processor = transformers.GroundingDinoProcessor.from_pretrained(gd_dir)
    caption = ". ".join(phrases) + "."
    enc = processor(images=[image], text=caption, return_tensors="pt", input_data_format="channels_last")
    ids = enc["input_ids"][0].tolist()
    # the tiny vocabulary has every test phrase as one token, delimited by "." (1012)
    assert len(ids) == 2 + 2 * len(phrases) and ids[2::2][: len(phrases)] == [1012] * len(phrases)
    positions = list(range(1, 2 * len(phrases), 2))
    with torch.inference_mode():
        out = model(**enc)
    probs = torch.sigmoid(out.logits[0]).numpy()
    h, w = image.shape[:2]
    boxes = _center_to_corners(out.pred_boxes[0].numpy()) * np.array([w, h, w, h])
    boxes = np.clip(boxes, 0, [w, h, w, h])
    keep, labels = [], []
    for q in range(probs.shape[0]):
        phrase_p = probs[q, positions]
        k = int(np.argmax(phrase_p))
        if probs[q].max() > box_thr and phrase_p[k] > text_thr:
            keep.append(q)
            labels.append(phrases[k])
    return Detections(boxes[keep].astype(np.float32), probs.max(axis=1)[keep].astype(np.float32), tuple(labels))


def test_gdino_matches_a_plain_transformers_reference_on_a_non_square_image(gd_dir, gd_all):
    phrases = ["cat", "dog", "lamp"]
    for h, w in ((48, 80), (80, 48)):
        img = _image(h, w, 1)
        det = gd_all([img], [phrases])[0]
        _assert_valid(det, img, phrases)
        assert len(det) == GD_QUERIES  # thresholds 0: every query box
        _assert_same(det, _gd_reference(gd_dir, img, phrases, 0.0, 0.0), atol=1e-5)
        assert len(set(det.labels)) > 1  # labels follow the per-box token probabilities
        # boxes are in the original image's pixels: they spread over the image, not a unit square
        assert det.boxes[:, 2].max() > 1.5 and det.boxes[:, 3].max() > 1.5
    # the default thresholds (0.3 / 0.25), checked the same way
    img = _image(48, 80, 2)
    det = GroundingDinoDetector(model_id=gd_dir)([img], [phrases])[0]
    _assert_same(det, _gd_reference(gd_dir, img, phrases, 0.3, 0.25), atol=1e-5)


def test_gdino_thresholds(gd_dir, gd_all):
    img = _image(48, 80, 3)
    prompts = [["cat", "dog"]]
    everything = gd_all([img], prompts)[0]
    assert len(everything) == GD_QUERIES
    assert len(GroundingDinoDetector(model_id=gd_dir, box_threshold=1.01)([img], prompts)[0]) == 0
    assert len(GroundingDinoDetector(model_id=gd_dir, box_threshold=0, text_threshold=1.01)([img], prompts)[0]) == 0
    thr = float(np.median(everything.scores))
    some = GroundingDinoDetector(model_id=gd_dir, box_threshold=thr, text_threshold=0.0)([img], prompts)[0]
    assert 0 < len(some) < len(everything)
    assert np.all(some.scores > thr)
    expected = everything.select(everything.scores > thr)
    _assert_same(some, expected, atol=1e-6)


def test_a_low_score_threshold_reaches_grounding_dinos_text_threshold(gd_dir):
    from spatialforge.perception.config import PerceptionConfig, StageSpec
    from spatialforge.perception.pipeline import PerceptionPipeline

    def detector(**cfg):
        config = PerceptionConfig(detector=StageSpec("grounding-dino", gd_dir, cfg.pop("options", {})), **cfg)
        return PerceptionPipeline.from_config(config).stages["detector"]

    img, prompts = _image(48, 80, 3), [["cat", "dog"]]
    low = detector(score_threshold=0.0)
    assert (low.box_threshold, low.text_threshold) == (0.0, 0.0)
    # the box threshold alone: the text threshold's default 0.25 still cuts boxes
    only_box = GroundingDinoDetector(model_id=gd_dir, box_threshold=0.0)([img], prompts)[0]
    assert len(low([img], prompts)[0]) == GD_QUERIES > len(only_box)
    given = detector(score_threshold=0.0, options={"text_threshold": 0.25})
    assert given.text_threshold == 0.25 and len(given([img], prompts)[0]) == len(only_box)


def test_gdino_prompts_per_image_batching_and_normalisation(gd_dir):
    stage = GroundingDinoDetector(model_id=gd_dir, box_threshold=0.0, text_threshold=0.0, batch_size=2)
    imgs = [_image(48, 80, s) for s in range(3)]  # same size: batching pads only the captions
    prompts = [["cat", "dog"], ["remote control"], ["lamp", "sofa", "table"]]
    together = stage(imgs, prompts)
    assert len(together) == 3
    for det, img, p in zip(together, imgs, prompts, strict=True):
        _assert_valid(det, img, p)
        assert len(det) == GD_QUERIES
    assert set(together[1].labels) == {"remote control"}
    for det, img, p in zip(together, imgs, prompts, strict=True):
        _assert_same(det, stage([img], [p])[0])
    # an image without prompts in the middle of a batch
    mixed = stage([imgs[0], imgs[1], imgs[2]], [["cat", "dog"], [], prompts[2]])
    assert len(mixed[1]) == 0
    _assert_same(mixed[0], together[0])
    _assert_same(mixed[2], together[2])
    # labels are the caller's spelling; repeats after normalisation count once; "." and "?" are not phrases
    odd = stage([imgs[0]], [["Cat", "cat", " CAT ", "Dog."]])[0]
    _assert_same(odd, stage([imgs[0]], [["Cat", "Dog."]])[0])
    assert set(odd.labels) <= {"Cat", "Dog."}
    np.testing.assert_allclose(odd.scores, together[0].scores, atol=1e-5)
    assert [{"Cat": "cat", "Dog.": "dog"}[lab] for lab in odd.labels] == list(together[0].labels)
    # mixed image sizes in one batch: still one Detections per image, in its own pixel frame
    sizes = [(48, 80), (80, 48), (40, 70)]
    varied = [_image(h, w, 5) for h, w in sizes]
    for det, img in zip(stage(varied, [["cat"], ["dog"], ["cup"]]), varied, strict=True):
        _assert_valid(det, img, ["cat", "dog", "cup"])
        assert len(det) == GD_QUERIES


def test_gdino_long_prompt_lists_are_split_into_passes(gd_dir):
    img = _image(48, 80, 4)
    stage = GroundingDinoDetector(model_id=gd_dir, box_threshold=0.0, text_threshold=0.0, max_text_tokens=6)
    stage.load()
    assert stage.text_limit() == 6
    assert GroundingDinoDetector(model_id=gd_dir).text_limit() == 16  # the tiny model's max_text_len
    forwards = []
    stage.model.register_forward_hook(lambda *_: forwards.append(1))
    # [CLS] cat . dog . [SEP] = 6 tokens; "remote control ." needs 3 more; so: [cat, dog] [remote control] [lamp]
    prompts = ["cat", "dog", "remote control", "lamp"]
    det = stage([img], [prompts])[0]
    assert len(forwards) == 3
    assert len(det) == 3 * GD_QUERIES
    _assert_valid(det, img, prompts)
    parts = [stage([img], [chunk])[0] for chunk in (["cat", "dog"], ["remote control"], ["lamp"])]
    _assert_same(det, Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                                 tuple(lab for p in parts for lab in p.labels)), atol=1e-6)
    assert set(det.labels[2 * GD_QUERIES:]) == {"lamp"}
    # two images with 3 and 1 passes, batched: 3 forwards in all
    forwards.clear()
    out = stage([img, _image(48, 80, 5)], [prompts, ["sofa"]])
    assert len(forwards) == 3 and [len(d) for d in out] == [3 * GD_QUERIES, GD_QUERIES]
    _assert_same(out[0], det)
    # without a cap, the tiny model's 16 tokens hold 7 one-token phrases: 9 phrases take 2 passes
    forwards.clear()
    full = GroundingDinoDetector(model_id=gd_dir, box_threshold=0.0, text_threshold=0.0)
    full.load()
    full.model.register_forward_hook(lambda *_: forwards.append(1))
    nine = ["cat", "dog", "chair", "table", "cup", "lamp", "sofa", "red", "the"]
    assert len(full([img], [nine])[0]) == 2 * GD_QUERIES and len(forwards) == 2
    # a phrase that cannot fit in any caption
    with pytest.raises(ValueError, match="at most 6 tokens"):
        stage([img], [["cat", "remote control table lamp"]])
    with pytest.raises(ConfigError, match="max_text_tokens"):
        GroundingDinoDetector(model_id=gd_dir, max_text_tokens=2)


# ============================================================================= OWLv2
def _owl_reference(owl_dir, image, phrases, thr):
    """Detections of one image through plain transformers, box scale by the padded square side."""
    model = transformers.Owlv2ForObjectDetection.from_pretrained(owl_dir).eval()
    processor = transformers.Owlv2Processor.from_pretrained(owl_dir)
    enc = processor(images=[image], text=[[f"a photo of a {p}" for p in phrases]], return_tensors="pt",
                    input_data_format="channels_last")
    with torch.inference_mode():
        out = model(**enc)
    logits = out.logits[0].numpy()  # (patches, queries)
    scores = 1 / (1 + np.exp(-logits.max(axis=1)))
    best = logits.argmax(axis=1)
    h, w = image.shape[:2]
    side = max(h, w)
    corners = _center_to_corners(out.pred_boxes[0].numpy()) * side
    keep = scores > thr
    boxes = np.clip(corners, 0, [w, h, w, h])[keep]
    unclipped = corners[keep]
    return (Detections(boxes.astype(np.float32), scores[keep].astype(np.float32),
                       tuple(phrases[k] for k in best[keep])), unclipped)


def test_owlv2_boxes_use_the_padded_square_and_the_original_frame(owl_dir, owl_all):
    phrases = ["cat", "dog", "lamp"]
    for h, w in ((48, 80), (80, 48)):
        img = _image(h, w, 1)
        det = owl_all([img], [phrases])[0]
        _assert_valid(det, img, phrases)
        assert len(det) == OWL_PATCHES  # threshold 0: every patch box
        ref, unclipped = _owl_reference(owl_dir, img, phrases, 0.0)
        _assert_same(det, ref, atol=1e-5)
        assert len(set(det.labels)) > 1
        # the quirk: scaling the normalised boxes by (w, h) instead of the square's side would be wrong
        norm = unclipped / max(h, w)
        naive = np.clip(norm * np.array([w, h, w, h]), 0, [w, h, w, h])
        assert not np.allclose(naive, det.boxes, atol=0.5)
        # boxes reaching into the square's padding are clipped to the image
        long_axis = [1, 3] if h < w else [0, 2]
        assert np.any(unclipped[:, long_axis] > min(h, w) + 1e-3)
        assert det.boxes[:, long_axis].max() <= min(h, w)
    # the default threshold (0.2), checked the same way
    img = _image(48, 80, 2)
    det = Owlv2Detector(model_id=owl_dir)([img], [phrases])[0]
    _assert_same(det, _owl_reference(owl_dir, img, phrases, 0.2)[0], atol=1e-5)


def test_owlv2_thresholds_and_query_template(owl_dir, owl_all):
    img = _image(48, 80, 3)
    prompts = [["cat", "dog"]]
    everything = owl_all([img], prompts)[0]
    assert len(everything) == OWL_PATCHES
    assert len(Owlv2Detector(model_id=owl_dir, score_threshold=1.01)([img], prompts)[0]) == 0
    thr = float(np.median(everything.scores))
    some = Owlv2Detector(model_id=owl_dir, score_threshold=thr)([img], prompts)[0]
    assert 0 < len(some) < len(everything) and np.all(some.scores > thr)
    _assert_same(some, everything.select(everything.scores > thr), atol=1e-6)
    # the template reaches the model: another template, other scores
    plain = Owlv2Detector(model_id=owl_dir, score_threshold=0.0, query_template="{phrase}")([img], prompts)[0]
    assert set(plain.labels) <= {"cat", "dog"}
    assert not np.allclose(plain.scores, everything.scores, atol=1e-4)
    for bad in ("a photo", "{phrase} {0}", 3):
        with pytest.raises(ConfigError, match="query_template"):
            Owlv2Detector(model_id=owl_dir, query_template=bad)


def test_owlv2_prompts_per_image_and_batching(owl_all):
    # different sizes and different prompt counts in one batch (the processor pads the query lists)
    imgs = [_image(48, 80, 0), _image(80, 48, 1), _image(40, 40, 2)]
    prompts = [["cat", "dog", "lamp", "sofa"], ["remote control"], ["chair", "cup"]]
    together = owl_all(imgs, prompts)
    for det, img, p in zip(together, imgs, prompts, strict=True):
        _assert_valid(det, img, p)
        assert len(det) == OWL_PATCHES
        # one by one gives the same boxes: the padding queries never win a box
        # (batched and single matmuls round differently: a box may move by ~1e-5 px)
        _assert_same(det, owl_all([img], [p])[0], atol=1e-3)
    assert set(together[1].labels) == {"remote control"}
    # small batches give the same result as one big one
    stage = Owlv2Detector(model_id=owl_all.model_id, score_threshold=0.0, batch_size=2)
    for a, b in zip(stage(imgs, prompts), together, strict=True):
        _assert_same(a, b, atol=1e-3)
    # an image without prompts, repeated prompts, the caller's spelling as the label
    out = owl_all([imgs[0], imgs[1]], [[], ["Cat", "cat", "CAT  ", "dog"]])
    assert len(out[0]) == 0
    ref = owl_all([imgs[1]], [["cat", "dog"]])[0]
    np.testing.assert_allclose(out[1].scores, ref.scores, atol=1e-5)
    assert [{"Cat": "cat", "dog": "dog"}[lab] for lab in out[1].labels] == list(ref.labels)
    # a prompt longer than the 16-token text window is truncated, not an error
    long = owl_all([imgs[0]], [["remote control " * 6]])[0]
    assert len(long) == OWL_PATCHES and set(long.labels) == {"remote control " * 6}


# ============================================================================= real weights (opt-in)
def _shapes_photo() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 480 x 640 picture of a red disk and a blue square on grey, and their true boxes."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 200, np.uint8)
    img[(xx - 180) ** 2 + (yy - 240) ** 2 <= 100 ** 2] = (220, 30, 30)
    img[170:330, 390:550] = (30, 60, 220)
    return img, {"red circle": np.array([80, 140, 281, 341.0]), "blue square": np.array([390, 170, 550, 330.0])}


@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("SPATIALFORGE_WEIGHTS") != "1", reason="set SPATIALFORGE_WEIGHTS=1 (real detectors)")
@pytest.mark.parametrize("cls", [GroundingDinoDetector, Owlv2Detector])
def test_real_detector_weights(cls):
    img, truth = _shapes_photo()
    stage = cls()
    det = stage([img], [list(truth)])[0]
    _assert_valid(det, img, list(truth))
    clean = filter_detections(det, img.shape[1], img.shape[0], score_threshold=0.1, iou_threshold=0.5)
    for label, box in truth.items():
        mine = clean.select([i for i, lab in enumerate(clean.labels) if lab == label])
        assert len(mine), f"{cls.name}: nothing found for {label!r}: {det.to_list()[:5]}"
        assert box_iou(mine.boxes[:1], box[None])[0, 0] > 0.5, (label, mine.to_list()[:3])
