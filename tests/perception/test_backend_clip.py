"""The CLIP filter, tagger and text embedder on a tiny random CLIP loaded from a folder, and caption grouping."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.clip import (  # noqa: E402
    DEFAULT_DROP_LABELS,
    DEFAULT_KEEP_LABELS,
    ClipFilter,
    ClipTextEmbedder,
    near_duplicate_groups,
    pad_to_square,
    square_tiles,
)
from spatialforge.perception.ports import ImageFilter, Stage, TextEmbedder  # noqa: E402
from spatialforge.perception.types import FilterDecision  # noqa: E402

from .tiny_clip import TINY_CLIP_DIM, build_tiny_clip  # noqa: E402

VOCAB = ["chair", "table", "sofa", "lamp", "cup", "bottle", "plant", "window"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="module")
def clip_filter(clip_dir):
    return ClipFilter(model_id=clip_dir)


@pytest.fixture(scope="module")
def reference(clip_dir):
    """The same checkpoint through plain transformers, for independent expected values."""
    model = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    processor = transformers.CLIPProcessor.from_pretrained(clip_dir)
    return model, processor


def _images(n: int = 6) -> list[np.ndarray]:
    """Structured RGB images of different sizes and aspect ratios (not all square)."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        h, w = 30 + 13 * i, 70 - 7 * i
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.zeros((h, w, 3), np.float64)
        img[..., 0] = 255 * xx / max(w - 1, 1)
        img[..., 1] = 255 * ((xx // (3 + i) + yy // (3 + i)) % 2)
        img[..., 2] = rng.uniform(0, 255) * (yy / max(h - 1, 1)) ** (i % 3 + 1)
        out.append(img.astype(np.uint8))
    return out


def _keep_mass(decision: FilterDecision, keep_labels) -> float:
    return sum(decision.scores[lab] for lab in keep_labels)


def _reference_probs(reference, images, labels) -> np.ndarray:
    model, processor = reference
    enc = processor(text=list(labels), images=images, padding=True, return_tensors="pt",
                    input_data_format="channels_last")
    with torch.inference_mode():
        return model(**enc).logits_per_image.softmax(dim=-1).numpy()


# ----------------------------------------------------------------------------- lifecycle, registry
def test_lazy_construction_protocols_and_registry(clip_dir):
    stage = ClipFilter(model_id="/nonexistent/folder/never/loaded")
    assert stage.model is None and stage.processor is None  # nothing loaded in __init__
    assert ClipFilter().model_id == "openai/clip-vit-large-patch14" == ClipTextEmbedder().model_id
    assert isinstance(stage, ImageFilter) and isinstance(stage, Stage) and isinstance(stage, TextEmbedder)
    assert isinstance(ClipTextEmbedder(), TextEmbedder)
    assert stage.name == ClipTextEmbedder.name == "clip"

    built = build_stage("filter", "clip", model_id=clip_dir, threshold=0.3)
    assert type(built) is ClipFilter and built.threshold == 0.3 and built.model is None
    assert type(build_stage("embedder", "clip", model_id=clip_dir)) is ClipTextEmbedder
    built.load()
    assert built.model is not None and built.device == "cpu"
    built.unload()
    assert built.model is None


# ----------------------------------------------------------------------------- the filter
def test_decisions_are_a_softmax_over_all_labels(clip_filter, reference):
    images = _images(6)
    decisions = clip_filter(images)
    labels = list(DEFAULT_KEEP_LABELS) + list(DEFAULT_DROP_LABELS)
    assert len(decisions) == len(images)
    expected = _reference_probs(reference, images, labels)
    for d, ref in zip(decisions, expected, strict=True):
        assert isinstance(d, FilterDecision)
        assert list(d.scores) == labels
        probs = np.array(list(d.scores.values()))
        assert np.all((probs >= 0) & (probs <= 1))
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        assert d.label == labels[int(np.argmax(probs))] == max(d.scores, key=d.scores.get)
        assert d.keep == (_keep_mass(d, DEFAULT_KEEP_LABELS) >= 0.5)
        assert d.model == clip_filter.model_id
        assert isinstance(d.keep, bool)
        # the model's own logits_per_image (logit_scale * cosine) through plain transformers
        np.testing.assert_allclose(probs, ref, atol=2e-5)
    # the images differ, so do their scores (the decision is not a constant)
    assert len({round(_keep_mass(d, DEFAULT_KEEP_LABELS), 6) for d in decisions}) > 1
    assert clip_filter([]) == []


def test_threshold_controls_keep(clip_dir):
    images = _images(6)
    all_kept = ClipFilter(model_id=clip_dir, threshold=0.0)(images)
    assert all(d.keep for d in all_kept)
    assert not any(d.keep for d in ClipFilter(model_id=clip_dir, threshold=1.01)(images))

    masses = sorted(_keep_mass(d, DEFAULT_KEEP_LABELS) for d in all_kept)
    mid = (masses[2] + masses[3]) / 2
    decisions = ClipFilter(model_id=clip_dir, threshold=mid)(images)
    assert [d.keep for d in decisions] == [_keep_mass(d, DEFAULT_KEEP_LABELS) >= mid for d in decisions]
    assert sum(d.keep for d in decisions) == 3


def test_custom_label_sets_are_used(clip_dir, reference):
    keep, drop = ["a photo of a bedroom", "a photo of a lab"], ["a sketch", "a map", "an icon"]
    stage = ClipFilter(model_id=clip_dir, keep_labels=keep, drop_labels=drop, threshold=0.4)
    images = _images(4)
    decisions = stage(images)
    expected = _reference_probs(reference, images, keep + drop)
    for d, ref in zip(decisions, expected, strict=True):
        assert list(d.scores) == keep + drop
        assert d.label in keep + drop
        assert d.keep == (_keep_mass(d, keep) >= 0.4)
        np.testing.assert_allclose(list(d.scores.values()), ref, atol=2e-5)


def test_batching_gives_the_same_result_as_one_by_one(clip_dir):
    images = _images(3)
    stage = ClipFilter(model_id=clip_dir, batch_size=2)  # 3 images: two forwards
    together = stage(images)
    single = [stage([img])[0] for img in images]
    for a, b in zip(together, single, strict=True):
        assert a.label == b.label and a.keep == b.keep
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-6)
    assert stage.tags(images, VOCAB, 4) == [stage.tags([img], VOCAB, 4)[0] for img in images]


def test_label_embeddings_are_cached_per_load(clip_dir, monkeypatch):
    stage = ClipFilter(model_id=clip_dir)
    calls = []
    original = stage._encode_texts
    monkeypatch.setattr(stage, "_encode_texts", lambda texts: calls.append(tuple(texts)) or original(texts))
    images = _images(2)
    first = stage(images)
    stage(images[:1])
    assert calls == [stage.labels]  # the label set was encoded once
    stage.tags(images, VOCAB, 2)
    stage.tags(images[:1], VOCAB, 3)
    assert len(calls) == 2 and calls[1] == tuple(f"a photo of a {v}" for v in VOCAB)
    stage.tags(images, VOCAB[:3], 2)
    assert len(calls) == 3  # another vocabulary, another entry
    stage.unload()
    again = stage(images)
    assert len(calls) == 4  # recomputed after a reload
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-6)


# ----------------------------------------------------------------------------- tags
def test_tags_rank_the_vocabulary_by_similarity(clip_dir, reference):
    clip_filter = ClipFilter(model_id=clip_dir, tag_views="center")  # CLIP's own view: the reference's probabilities
    images = _images(3)
    tags = clip_filter.tags(images, VOCAB, 3)
    assert len(tags) == 3
    prompts = [f"a photo of a {v}" for v in VOCAB]
    expected = _reference_probs(reference, images, prompts)
    for row, ref in zip(tags, expected, strict=True):
        assert len(row) == 3 and len(set(row)) == 3 and set(row) <= set(VOCAB)
        assert row == [VOCAB[i] for i in np.argsort(-ref, kind="stable")[:3]]
    assert clip_filter.tags(images, VOCAB, 3) == tags  # deterministic
    full = clip_filter.tags(images, VOCAB, 100)  # top_k beyond the vocabulary: all of it, ranked
    assert all(sorted(r) == sorted(VOCAB) and r[:3] == t for r, t in zip(full, tags, strict=True))
    dup = clip_filter.tags(images, VOCAB + VOCAB[:2], 100)  # repeated entries count once
    assert dup == full
    assert clip_filter.tags(images, [], 3) == [[], [], []]
    assert clip_filter.tags([], VOCAB, 3) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            clip_filter.tags(images, VOCAB, bad)
    with pytest.raises(ValueError, match="vocabulary"):
        clip_filter.tags(images, "chair", 1)


# ----------------------------------------------------------------------------- images
def test_gray_nonsquare_and_bad_images(clip_filter):
    rgb = _images(1)[0]
    gray = rgb.mean(axis=2).astype(np.uint8)
    gray_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    wide = np.ascontiguousarray(np.tile(rgb, (1, 3, 1)))  # 30 x 210
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))  # 210 x 30
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    decisions = clip_filter([gray_rgb, gray, gray[:, :, None], wide, tall, rgba, rgb])
    assert len(decisions) == 7
    for d in decisions:
        assert sum(d.scores.values()) == pytest.approx(1.0, abs=1e-6)
    for d in decisions[1:3]:  # (H, W) and (H, W, 1) gray equal the gray RGB image
        np.testing.assert_allclose(list(d.scores.values()), list(decisions[0].scores.values()), atol=1e-6)
    np.testing.assert_allclose(list(decisions[5].scores.values()), list(decisions[6].scores.values()), atol=1e-6)
    assert len(clip_filter.tags([wide, tall], VOCAB, 2)) == 2

    with pytest.raises(ValueError, match="uint8"):
        clip_filter([rgb.astype(np.float32)])
    with pytest.raises(ValueError, match="shape"):
        clip_filter([np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(ValueError, match="sequence"):
        clip_filter(rgb)  # one image, not a batch
    stacked = np.stack([rgb, rgb])  # an (N, H, W, 3) array is a batch
    assert len(clip_filter(stacked)) == 2


# ----------------------------------------------------------------------------- text embeddings
def test_embed_text(clip_dir, clip_filter, reference):
    embedder = ClipTextEmbedder(model_id=clip_dir, text_batch_size=2)
    texts = ["sofa", "couch", "a red chair", "sofa", "", "Sofa"]
    emb = embedder.embed_text(texts)
    assert emb.shape == (6, TINY_CLIP_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb[0], emb[3])  # identical strings, identical vectors
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    np.testing.assert_allclose(emb[0], emb[5], atol=1e-6)  # the CLIP tokenizer lower-cases
    np.testing.assert_allclose(embedder.embed_text(["couch"])[0], emb[1], atol=1e-5)  # batch == single

    model, processor = reference
    enc = processor(text=["sofa", "couch", "a red chair"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = model.get_text_features(**enc).pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(emb[:3], ref, atol=1e-5)

    empty = embedder.embed_text([])
    assert empty.shape == (0, TINY_CLIP_DIM) and empty.dtype == np.float32
    np.testing.assert_allclose(clip_filter.embed_text(texts), emb, atol=1e-6)  # the filter embeds too
    with pytest.raises(ValueError):
        embedder.embed_text("sofa")
    with pytest.raises(ValueError):
        embedder.embed_text(["sofa", 3])


# ----------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("kwargs", [
    {"threshold": -0.1}, {"threshold": float("nan")}, {"threshold": float("inf")}, {"threshold": "0.5"},
    {"threshold": True}, {"keep_labels": []}, {"drop_labels": ()}, {"keep_labels": "a photo of a room"},
    {"keep_labels": ["a room", ""]}, {"drop_labels": ["a logo", "a logo"]},
    {"keep_labels": ["a room", "a logo"], "drop_labels": ["a logo"]}, {"tag_template": "a photo of a {}"},
    {"batch_size": 0}, {"text_batch_size": 2.5}, {"dtype": "int8"}, {"tag_views": "whole"}, {"tag_views": None},
])
def test_bad_configuration_raises_config_error(kwargs):
    with pytest.raises(ConfigError):
        ClipFilter(model_id="unused", **kwargs)


# ----------------------------------------------------------------------------- caption grouping
def test_near_duplicate_groups_on_hand_made_vectors():
    vecs = np.array([
        [1.0, 0.0, 0.0],     # 0
        [0.0, 1.0, 0.0],     # 1
        [5.0, 0.3, 0.0],     # 2 ~ 0 (norm does not matter)
        [0.0, 0.0, 1.0],     # 3 alone
        [0.0, 0.98, 0.2],    # 4 ~ 1
        [-1.0, 0.0, 0.0],    # 5 opposite of 0: alone
        [0.0, 0.0, 0.0],     # 6 zero vector: alone
    ])
    assert near_duplicate_groups(vecs, 0.95) == [0, 1, 0, 3, 1, 5, 6]
    assert near_duplicate_groups(vecs, 1.01) == list(range(7))  # nothing links
    assert near_duplicate_groups(vecs[[3, 1, 4]], 0.95) == [0, 1, 1]  # ids are the smallest member's index

    # linking is transitive: a ~ b and b ~ c put a and c together even though a !~ c
    angles = np.radians([0.0, 20.0, 40.0, 90.0])
    chain = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert float(chain[0] @ chain[2]) < 0.9
    assert near_duplicate_groups(chain, 0.9) == [0, 0, 0, 3]
    assert near_duplicate_groups(chain[::-1], 0.9) == [0, 1, 1, 1]

    assert near_duplicate_groups(np.zeros((0, 8)), 0.9) == []
    assert near_duplicate_groups(np.zeros((3, 0)), 0.9) == [0, 1, 2]  # the "none" embedder's (N, 0)
    with pytest.raises(ConfigError):
        near_duplicate_groups(vecs, float("nan"))
    with pytest.raises(ValueError):
        near_duplicate_groups(np.ones(3), 0.9)
    with pytest.raises(ValueError):
        near_duplicate_groups(np.array([[np.nan, 1.0]]), 0.9)


def test_near_duplicate_groups_on_clip_text(clip_dir):
    embedder = ClipTextEmbedder(model_id=clip_dir)
    emb = embedder.embed_text(["lamp", "chair", "lamp", "table"])
    groups = near_duplicate_groups(emb, 0.9999)
    assert groups[0] == groups[2] == 0 and len(groups) == 4


# ----------------------------------------------------------------------------- real weights (opt-in)
@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("SPATIALFORGE_WEIGHTS") != "1", reason="set SPATIALFORGE_WEIGHTS=1 (real CLIP-L)")
def test_real_clip_weights():
    pil = pytest.importorskip("PIL.ImageDraw")
    from PIL import Image

    stage = ClipFilter()
    # a page of black text on white paper: not a scene
    page = Image.new("RGB", (448, 600), "white")
    draw = pil.Draw(page)
    for row in range(30):
        draw.text((20, 15 + 19 * row), "The quick brown fox jumps over the lazy dog. " * 2, fill="black")
    decision = stage([np.asarray(page)])[0]
    assert not decision.keep and decision.label in DEFAULT_DROP_LABELS, decision

    embedder = ClipTextEmbedder()
    emb = embedder.embed_text(["a sofa", "a couch", "an airplane"])
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.05
    assert embedder.embedding_dim == emb.shape[1] == 768


def test_filter_and_tags_run_the_image_tower_once(clip_dir):
    stage = ClipFilter(model_id=str(clip_dir), batch_size=4)
    stage.load()
    calls = []
    original = stage.model.get_image_features

    def counting(*args, **kwargs):
        calls.append(kwargs["pixel_values"].shape[0])
        return original(*args, **kwargs)

    stage.model.get_image_features = counting
    images = _images(6)  # one square photo, five wide or tall ones
    decisions = stage(images)
    tags = stage.tags(images, ["chair", "table", "mug"], 2)
    tiles = sum(len(square_tiles(img)) for img in images if img.shape[0] != img.shape[1])
    assert tiles == 12 and len(decisions) == len(tags) == 6
    assert sum(calls) == 6 + tiles  # the square photo's tile is the photo: the filter's embedding served its tags
    again = ClipFilter(model_id=str(clip_dir), batch_size=4).tags(images, ["chair", "table", "mug"], 2)
    assert again == tags  # cached embeddings give the same answers as fresh ones
    stage.unload()
    assert not stage._image_cache
    center = ClipFilter(model_id=str(clip_dir), batch_size=4, tag_views="center")
    center.load()
    calls.clear()
    center.model.get_image_features = counting
    center(images)
    center.tags(images, ["chair", "table", "mug"], 2)
    assert sum(calls) == 6  # the centre-crop view: one embedding per photo serves the decision and the tags


# ----------------------------------------------------------------------------- tags see the whole photo
def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def _reference_ranking(reference, views_per_image, vocab):
    """Each image's vocabulary ranking by its best view, through plain transformers."""
    model, processor = reference
    text = processor(text=[f"a photo of a {v}" for v in vocab], padding=True, return_tensors="pt")
    with torch.inference_mode():
        t = _unit(model.get_text_features(**text).pooler_output)
        out = []
        for views in views_per_image:
            pix = processor(images=views, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
            sims = _unit(model.get_image_features(pixel_values=pix).pooler_output) @ t.T
            best = sims.max(dim=0).values.numpy()
            out.append([vocab[i] for i in np.argsort(-best, kind="stable")])
    return out


def test_square_tiles_cover_the_photo_and_pad_centres_it():
    img = np.arange(30 * 70 * 3, dtype=np.int64).reshape(30, 70, 3).astype(np.uint8)
    tiles = square_tiles(img)  # ceil(70 / 30) = 3 tiles at columns 0, 20, 40
    assert [t.shape for t in tiles] == [(30, 30, 3)] * 3
    for t, c in zip(tiles, (0, 20, 40), strict=True):
        assert np.array_equal(t, img[:, c:c + 30])
    tall = np.ascontiguousarray(img.transpose(1, 0, 2))
    assert [np.array_equal(t, tall[r:r + 30]) for t, r in zip(square_tiles(tall), (0, 20, 40), strict=True)] == \
        [True] * 3
    two = square_tiles(img[:, :60])  # 60 / 30: two tiles that touch, no overlap
    assert len(two) == 2 and np.array_equal(two[1], img[:, 30:60])
    square = img[:, :30]
    assert square_tiles(square)[0] is square and pad_to_square(square, (1, 2, 3)) is square
    padded = pad_to_square(img, (7, 8, 9))
    assert padded.shape == (70, 70, 3)
    assert np.array_equal(padded[20:50], img)  # centred: 20 rows above, 20 below
    assert np.all(padded[:20] == [7, 8, 9]) and np.all(padded[50:] == [7, 8, 9])


def test_tags_rank_each_name_by_its_best_tile(clip_filter, reference):
    """The default view: square tiles covering the photo, each name scored by its best tile."""
    images = _images(5)
    tags = clip_filter.tags(images, VOCAB, len(VOCAB))
    assert tags == _reference_ranking(reference, [square_tiles(img) for img in images], VOCAB)


def test_pad_view_ranks_the_photo_padded_to_a_square(clip_dir, reference):
    stage = ClipFilter(model_id=clip_dir, tag_views="pad")
    images = _images(3)
    fill = [round(255 * m) for m in reference[1].image_processor.image_mean]
    expected = _reference_ranking(reference, [[pad_to_square(img, fill)] for img in images], VOCAB)
    assert stage.tags(images, VOCAB, len(VOCAB)) == expected


def test_a_thing_at_the_edge_of_a_wide_photo_reaches_its_tags(clip_filter, clip_dir):
    """A 3:1 photo whose only object sits at its right edge: CLIP's centre crop never sees it, the tiles do."""
    h, w = 32, 96
    plain = np.full((h, w, 3), 128, np.uint8)
    rng = np.random.default_rng(7)
    thing = plain.copy()
    thing[6:26, w - 22:w - 2] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # outside the centre 32 px
    center = ClipFilter(model_id=clip_dir, tag_views="center")
    assert center.tags([thing], VOCAB, len(VOCAB)) == center.tags([plain], VOCAB, len(VOCAB))  # the crop is blind
    with_thing, without = clip_filter.tags([thing, plain], VOCAB, len(VOCAB))
    assert with_thing != without
    # the object's tile decides: ranking by the best of the plain tiles and the object's tile
    edge = clip_filter.tags([thing[:, w - h:]], VOCAB, len(VOCAB))[0]
    assert edge != without and with_thing[0] in (edge[0], without[0])
