"""SAM / SAM 2 box-prompted segmenters on tiny random checkpoints, and the overlap / cleaning helpers of masks.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.sam import Sam2Segmenter, SamSegmenter  # noqa: E402
from spatialforge.perception.masks import clean_instance_mask, resolve_overlaps  # noqa: E402
from spatialforge.perception.ports import Segmenter, Stage  # noqa: E402
from spatialforge.perception.types import MaskSet  # noqa: E402

from .tiny_sam import build_tiny_sam, build_tiny_sam2  # noqa: E402

BACKENDS = {"sam": (SamSegmenter, build_tiny_sam), "sam2": (Sam2Segmenter, build_tiny_sam2)}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {name: str(builder(tmp_path_factory.mktemp(f"tiny_{name}"))) for name, (_, builder) in BACKENDS.items()}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request, model_dirs):
    """(stage class, checkpoint folder, a loaded stage)."""
    cls = BACKENDS[request.param][0]
    return cls, model_dirs[request.param], cls(model_id=model_dirs[request.param])


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A structured RGB image: gradients, a checkerboard and a bright rectangle."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * ((xx // (3 + seed) + yy // (3 + seed)) % 2)
    img[..., 2] = 255 * (yy / max(h - 1, 1)) ** (seed % 3 + 1)
    img[h // 4:h // 2, w // 3:2 * w // 3] = (250, 40, 30)
    return img.astype(np.uint8)


def _boxes(h: int, w: int, n: int) -> np.ndarray:
    """``n`` boxes inside an (h, w) image, in pixel xyxy (x along the width, y along the height)."""
    all_boxes = np.array([
        [w / 3 - 2, h / 4 - 2, 2 * w / 3 + 2, h / 2 + 2],
        [2, h / 2, w / 2, h - 1],
        [w / 2, 1, w - 2, h / 3],
        [0, 0, w, h],
        [5, 5, w / 4, h / 4],
    ])
    return all_boxes[:n].astype(np.float32)


IMAGES = [_image(60, 90, 0), _image(90, 60, 1), _image(45, 45, 2), _image(33, 121, 3)]
BOXES = [_boxes(60, 90, 3), _boxes(90, 60, 1), _boxes(45, 45, 0), _boxes(33, 121, 5)]


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal pixels of two mask stacks of the same shape (1.0 for empty stacks)."""
    assert a.shape == b.shape
    return float((a == b).mean()) if a.size else 1.0


def _reference(cls, folder, image, boxes):
    """The same checkpoint through plain transformers: one image, all its boxes, original-size masks."""
    model = getattr(transformers, cls.model_class_name).from_pretrained(folder).eval()
    processor = getattr(transformers, cls.processor_class_name).from_pretrained(folder)
    enc = processor(images=[image], input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc, multimask_output=False)
    extra = (enc["reshaped_input_sizes"],) if cls is SamSegmenter else ()
    masks = processor.post_process_masks(out.pred_masks, enc["original_sizes"], *extra)[0][:, 0].numpy()
    return masks, out.iou_scores[0, :, 0].numpy()


# ----------------------------------------------------------------------------- lifecycle, registry
def test_lazy_construction_protocols_registry_and_provenance(model_dirs):
    for name, (cls, _) in BACKENDS.items():
        stage = cls(model_id="/nonexistent/folder/never/loaded")
        assert stage.model is None and stage.processor is None  # nothing loaded in __init__
        assert isinstance(stage, Segmenter) and isinstance(stage, Stage)
        assert stage.name == name
        built = build_stage("segmenter", name, model_id=model_dirs[name], batch_size=2)
        assert type(built) is cls and built.batch_size == 2 and built.model is None
        assert built.model_id == model_dirs[name]  # provenance: the checkpoint actually used
        built.load()
        assert built.model is not None and built.device == "cpu"
        assert type(built.model).__name__ == cls.model_class_name
        assert type(built.processor).__name__ == cls.processor_class_name
        built.unload()
        assert built.model is None and built.processor is None
    assert SamSegmenter().model_id == "facebook/sam-vit-huge"
    assert Sam2Segmenter().model_id == "facebook/sam2.1-hiera-large"


# ----------------------------------------------------------------------------- the contract
def test_masks_at_original_size_with_iou_scores(backend):
    cls, _, stage = backend
    out = stage(IMAGES, BOXES)
    assert len(out) == len(IMAGES)
    fractions = []
    for img, boxes, ms in zip(IMAGES, BOXES, out, strict=True):
        assert isinstance(ms, MaskSet)
        assert ms.masks.shape == (len(boxes), *img.shape[:2])  # (N, H, W) at the ORIGINAL, non-square size
        assert ms.masks.dtype == bool
        assert ms.scores.shape == (len(boxes),) and ms.scores.dtype == np.float32
        assert np.all(np.isfinite(ms.scores))
        if cls is Sam2Segmenter:  # SAM 2's IoU head ends in a sigmoid
            assert np.all((ms.scores >= 0) & (ms.scores <= 1))
        fractions += list(ms.masks.mean(axis=(1, 2)))
    # the tiny model gives real masks (not all empty or all full), so the comparisons below mean something
    assert any(0.05 < f < 0.95 for f in fractions)
    assert len({round(float(s), 6) for ms in out for s in ms.scores}) > 3  # scores vary per box


def test_matches_plain_transformers_per_image(backend):
    """The box coordinates reach the model in the original image's pixel space (non-square images)."""
    cls, folder, stage = backend
    out = stage(IMAGES, BOXES)
    for img, boxes, ms in zip(IMAGES, BOXES, out, strict=True):
        if not len(boxes):
            continue
        ref_masks, ref_scores = _reference(cls, folder, img, boxes)
        assert ref_masks.shape == ms.masks.shape
        assert _agreement(ref_masks, ms.masks) > 0.999
        np.testing.assert_allclose(ms.scores, ref_scores, atol=1e-4)
    # a box given transposed (x <-> y) prompts a different region: coordinates are not swapped silently
    img, boxes = IMAGES[0], BOXES[0]
    swapped = boxes[:, [1, 0, 3, 2]]
    ref_swapped, _ = _reference(cls, folder, img, swapped)
    assert not np.array_equal(ref_swapped, out[0].masks)


def test_batching_equals_one_by_one(backend):
    cls, folder, _ = backend
    batched = cls(model_id=folder, batch_size=3)(IMAGES, BOXES)  # mixed box counts: padded in one batch
    chunked = cls(model_id=folder, batch_size=4, box_batch_size=2)(IMAGES, BOXES)  # decoder in box chunks
    single = cls(model_id=folder, batch_size=1)
    for img, boxes, a, c in zip(IMAGES, BOXES, batched, chunked, strict=True):
        s = single([img], [boxes])[0]
        for other in (a, c):
            assert other.masks.shape == s.masks.shape
            assert _agreement(other.masks, s.masks) > 0.999
            np.testing.assert_allclose(other.scores, s.scores, atol=1e-4)
        # each box on its own gives the same mask as with the image's other boxes (boxes are independent)
        for k in range(len(boxes)):
            alone = single([img], [boxes[k:k + 1]])[0]
            assert _agreement(alone.masks[0], s.masks[k]) > 0.999
            assert alone.scores[0] == pytest.approx(float(s.scores[k]), abs=1e-4)


def test_zero_boxes_and_no_images(model_dirs):
    for name, (cls, _) in BACKENDS.items():
        stage = cls(model_id=model_dirs[name])
        img = IMAGES[1]
        out = stage([img, IMAGES[0]], [np.zeros((0, 4), np.float32), []])
        assert [ms.masks.shape for ms in out] == [(0, 90, 60), (0, 60, 90)]
        assert all(ms.masks.dtype == bool and ms.scores.shape == (0,) and ms.scores.dtype == np.float32 for ms in out)
        assert stage.model is None  # nothing to segment: the model is not even loaded
        assert stage([], []) == []


def test_whole_image_box_and_clipping(backend):
    _, _, stage = backend
    img = IMAGES[3]
    h, w = img.shape[:2]
    whole = stage([img], [np.array([[0, 0, w, h]], np.float32)])[0]
    assert whole.masks.shape == (1, h, w)
    # boxes reaching beyond the image are clipped to it first
    beyond = stage([img], [np.array([[-20, -5, w + 30, h + 7]], np.float32)])[0]
    assert np.array_equal(beyond.masks, whole.masks)
    np.testing.assert_allclose(beyond.scores, whole.scores, atol=1e-6)


def test_gray_rgba_and_threshold(backend):
    cls, folder, stage = backend
    img = IMAGES[0]
    rgba = np.concatenate([img, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=2)
    a, b = stage([img, rgba], [BOXES[0], BOXES[0]])
    assert np.array_equal(a.masks, b.masks)
    gray = stage([img.mean(axis=2).astype(np.uint8)], [BOXES[0]])[0]
    assert gray.masks.shape == a.masks.shape
    strict = cls(model_id=folder, mask_threshold=1.0)([img], [BOXES[0]])[0]
    assert np.all(~strict.masks | a.masks)  # a higher logit threshold keeps a subset of the pixels
    assert strict.masks.sum() < a.masks.sum()
    np.testing.assert_allclose(strict.scores, a.scores, atol=1e-6)


def test_bfloat16_runs(model_dirs):
    stage = Sam2Segmenter(model_id=model_dirs["sam2"], dtype="bfloat16")
    out = stage(IMAGES[:2], BOXES[:2])
    assert [ms.masks.shape for ms in out] == [(3, 60, 90), (1, 90, 60)]
    assert out[0].masks.dtype == bool and out[0].scores.dtype == np.float32


def test_bad_inputs_raise(backend):
    _, _, stage = backend
    img = IMAGES[0]
    with pytest.raises(ValueError, match="images but"):
        stage([img, img], [BOXES[0]])
    with pytest.raises(ValueError, match="N, 4"):
        stage([img], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="finite"):
        stage([img], [np.array([[0, 0, np.nan, 5]])])
    with pytest.raises(ValueError, match="x0 <= x1"):
        stage([img], [np.array([[10, 0, 5, 5]])])
    with pytest.raises(ValueError, match="uint8"):
        stage([img.astype(np.float32)], [BOXES[0]])
    with pytest.raises(ValueError, match="sequence"):
        stage(img, [BOXES[0]])
    with pytest.raises(ValueError, match="sequence"):
        stage([img], BOXES[0])


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"batch_size": 1.5}, {"box_batch_size": 0}, {"box_batch_size": True},
    {"mask_threshold": float("nan")}, {"mask_threshold": "0"}, {"dtype": "int8"},
])
def test_bad_configuration_raises_config_error(kwargs):
    for cls in (SamSegmenter, Sam2Segmenter):
        with pytest.raises(ConfigError):
            cls(model_id="unused", **kwargs)


# ----------------------------------------------------------------------------- masks.py: overlaps
def _rect(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_resolve_overlaps_nested_masks_smaller_wins():
    table = _rect(6, 8, 1, 6, 0, 8)  # 40 px
    mug = _rect(6, 8, 2, 4, 3, 5)  # 4 px inside the table
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 2, 2, 1, 1, 1],
        [1, 1, 1, 2, 2, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ], np.int32)
    out = resolve_overlaps(np.stack([table, mug]), np.array([0.99, 0.5]))
    assert out.dtype == np.int32 and out.shape == (6, 8)
    np.testing.assert_array_equal(out, expected)
    # the order of the masks does not matter, only the ids follow it
    np.testing.assert_array_equal(resolve_overlaps(np.stack([mug, table]), np.array([0.5, 0.99])),
                                  np.where(expected == 0, 0, 3 - expected))
    # order="score": the higher score takes the overlap (the table swallows the mug)
    np.testing.assert_array_equal(resolve_overlaps(np.stack([table, mug]), np.array([0.99, 0.5]), order="score"),
                                  np.where(expected > 0, 1, 0))


def test_resolve_overlaps_partial_overlap_and_ties():
    a = _rect(4, 6, 0, 2, 0, 4)  # 8 px
    b = _rect(4, 6, 1, 4, 2, 6)  # 12 px
    expected = np.array([
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 2, 2],
        [0, 0, 2, 2, 2, 2],
        [0, 0, 2, 2, 2, 2],
    ], np.int32)
    np.testing.assert_array_equal(resolve_overlaps(np.stack([a, b]), np.array([0.1, 0.9])), expected)
    by_score = expected.copy()
    by_score[1, 2:4] = 2
    np.testing.assert_array_equal(resolve_overlaps(np.stack([a, b]), np.array([0.1, 0.9]), order="score"), by_score)

    # equal areas: the higher score wins; equal scores too: the lower index wins
    c = _rect(4, 6, 0, 2, 2, 6)  # 8 px, overlaps a on columns 2-3 of rows 0-1
    out = resolve_overlaps(np.stack([a, c]), np.array([0.3, 0.7]))
    assert np.all(out[0:2, 2:4] == 2) and np.all(out[0:2, 0:2] == 1) and np.all(out[0:2, 4:6] == 2)
    out = resolve_overlaps(np.stack([a, c]), np.array([0.5, 0.5]))
    assert np.all(out[0:2, 2:4] == 1)
    out = resolve_overlaps(np.stack([c, a]), np.array([0.5, 0.5]))
    assert np.all(out[0:2, 2:4] == 1)  # now c is mask 0
    # order="score" with equal scores: the smaller area, then the lower index
    out = resolve_overlaps(np.stack([b, a]), np.array([0.5, 0.5]), order="score")
    assert np.all(out[1, 2:4] == 2)


def test_resolve_overlaps_boxes_empty_and_errors():
    leaky = _rect(5, 10, 0, 5, 0, 10)  # the whole image, though prompted with a small box
    small = _rect(5, 10, 1, 3, 7, 9)
    boxes = np.array([[0, 0, 3, 4], [7, 1, 8, 2]], np.float32)
    out = resolve_overlaps(np.stack([leaky, small]), np.array([0.9, 0.9]), boxes, box_margin=1)
    expected = np.zeros((5, 10), np.int32)
    expected[:, 0:5] = 1  # columns floor(0 - 1) .. ceil(3 + 1), all rows
    expected[1:3, 7:9] = 2
    np.testing.assert_array_equal(out, expected)
    # without boxes the leak stays
    assert np.all(resolve_overlaps(np.stack([leaky, small]), np.array([0.9, 0.9]))[:, 5:7] == 1)

    empty = resolve_overlaps(np.zeros((0, 3, 4), bool), np.zeros(0))
    assert empty.shape == (3, 4) and empty.dtype == np.int32 and not empty.any()
    np.testing.assert_array_equal(resolve_overlaps(np.stack([small]).astype(np.uint8), [1.0]), small.astype(np.int32))
    with pytest.raises(ValueError, match="order"):
        resolve_overlaps(np.stack([small]), [1.0], order="size")
    with pytest.raises(ValueError, match="scores"):
        resolve_overlaps(np.stack([small]), [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        resolve_overlaps(np.stack([small]), [np.nan])
    with pytest.raises(ValueError, match="boxes"):
        resolve_overlaps(np.stack([small]), [1.0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="box_margin"):
        resolve_overlaps(np.stack([small]), [1.0], np.zeros((1, 4)), box_margin=-1)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        resolve_overlaps(small, [1.0])


# ----------------------------------------------------------------------------- masks.py: cleaning
def test_clean_instance_mask_components_and_dropped_ids():
    inst = np.array([
        [1, 1, 0, 0, 0, 0, 1],
        [1, 1, 0, 2, 0, 0, 0],
        [0, 0, 2, 0, 0, 3, 3],
        [4, 0, 0, 0, 0, 3, 3],
        [0, 0, 5, 5, 5, 0, 0],
    ], np.int32)
    original = inst.copy()
    cleaned, dropped = clean_instance_mask(inst, min_pixels=3)
    expected = np.array([
        [1, 1, 0, 0, 0, 0, 0],  # the lone 1 at the top right is a second component: removed
        [1, 1, 0, 0, 0, 0, 0],  # 2 is 8-connected (diagonal) but only 2 px: dropped
        [0, 0, 0, 0, 0, 3, 3],
        [0, 0, 0, 0, 0, 3, 3],  # 4 has 1 px: dropped
        [0, 0, 5, 5, 5, 0, 0],
    ], np.int32)
    np.testing.assert_array_equal(cleaned, expected)
    assert dropped == [2, 4]
    assert cleaned.dtype == np.int32
    np.testing.assert_array_equal(inst, original)  # the input is not modified

    # without the component filter the stray pixel of 1 stays; min_pixels 0 drops nothing
    kept, dropped = clean_instance_mask(inst, min_pixels=0, keep_largest_component=False)
    np.testing.assert_array_equal(kept, original)
    assert dropped == []
    # the diagonal pixels of 2 are one 8-connected component (4-connectivity would split them)
    kept, dropped = clean_instance_mask(inst, min_pixels=2)
    assert np.count_nonzero(kept == 2) == 2 and dropped == [4]
    # a large id keeps only its largest piece, which may then be too small
    split = np.zeros((4, 9), np.int64)
    split[0:2, 0:2] = 7  # 4 px
    split[0:3, 5:8] = 7  # 9 px, the largest component
    kept, dropped = clean_instance_mask(split, min_pixels=5)
    assert np.count_nonzero(kept == 7) == 9 and np.all(kept[0:2, 0:2] == 0) and dropped == []
    kept, dropped = clean_instance_mask(split, min_pixels=10)
    assert not kept.any() and dropped == [7]


def test_clean_instance_mask_errors_and_empty():
    cleaned, dropped = clean_instance_mask(np.zeros((3, 4), np.int32), 5)
    assert cleaned.shape == (3, 4) and not cleaned.any() and dropped == []
    with pytest.raises(ValueError, match="min_pixels"):
        clean_instance_mask(np.zeros((3, 4), np.int32), -1)
    with pytest.raises(ValueError, match="min_pixels"):
        clean_instance_mask(np.zeros((3, 4), np.int32), 2.5)
    with pytest.raises(ValueError, match="H, W"):
        clean_instance_mask(np.zeros((2, 3, 4), np.int32), 1)
    with pytest.raises(ValueError, match="integer"):
        clean_instance_mask(np.zeros((3, 4), np.float32), 1)
    with pytest.raises(ValueError, match=">= 0"):
        clean_instance_mask(np.full((3, 4), -1), 1)


def test_resolve_then_clean_on_segmenter_output(model_dirs):
    """The pipeline's use: masks of the segmenter -> one instance map -> cleaned ids."""
    stage = SamSegmenter(model_id=model_dirs["sam"])
    img, boxes = IMAGES[0], BOXES[0]
    ms = stage([img], [boxes])[0]
    inst = resolve_overlaps(ms.masks, ms.scores, boxes)
    assert inst.shape == img.shape[:2] and inst.min() >= 0 and inst.max() <= len(boxes)
    for i in np.unique(inst[inst > 0]):
        assert np.all(ms.masks[i - 1][inst == i])  # a pixel only goes to a mask that covers it
    cleaned, dropped = clean_instance_mask(inst, min_pixels=20)
    assert set(np.unique(cleaned)) - {0} == set(np.unique(inst)) - {0} - set(dropped)


# ----------------------------------------------------------------------------- real weights (opt-in)
@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("SPATIALFORGE_WEIGHTS") != "1", reason="set SPATIALFORGE_WEIGHTS=1 (real SAM)")
@pytest.mark.parametrize("cls", [SamSegmenter, Sam2Segmenter])
def test_real_weights_segment_a_drawn_object(cls):
    # a dark disc on a light, non-square background: the box around it should give the disc
    h, w = 480, 720
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 225, np.uint8)
    disc = (xx - 470) ** 2 + (yy - 220) ** 2 < 90 ** 2
    img[disc] = (30, 60, 160)
    box = np.array([[370, 120, 570, 320]], np.float32)
    ms = cls(device="auto")([img], [box])[0]
    assert ms.masks.shape == (1, h, w)
    inter = np.logical_and(ms.masks[0], disc).sum()
    union = np.logical_or(ms.masks[0], disc).sum()
    assert inter / union > 0.8, inter / union
    assert ms.scores[0] > 0.7
