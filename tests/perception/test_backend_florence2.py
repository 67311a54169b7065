"""The Florence-2 region captioner on a tiny random Florence-2 loaded from a folder, and its pure helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialforge.errors import ConfigError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.florence2 import (  # noqa: E402
    NATIVE_CHECKPOINTS,
    Florence2Captioner,
    box_to_loc_tokens,
    clean_caption,
    crop_box,
)
from spatialforge.perception.ports import RegionCaptioner, Stage  # noqa: E402
from spatialforge.perception.types import Detections  # noqa: E402

from .tiny_florence2 import build_tiny_florence2  # noqa: E402

REGION_PROMPT = "What does the region {input} describe?"  # Florence2Processor's <REGION_TO_DESCRIPTION> template


@pytest.fixture(scope="module")
def f2_dir(tmp_path_factory):
    return str(build_tiny_florence2(tmp_path_factory.mktemp("tiny_florence2")))


@pytest.fixture(scope="module")
def captioner(f2_dir):
    stage = Florence2Captioner(model_id=f2_dir)
    stage.load()
    return stage


@pytest.fixture(scope="module")
def processor(f2_dir):
    return transformers.Florence2Processor.from_pretrained(f2_dir)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * xx / max(w - 1, 1), 255 * ((xx // 5 + yy // 5) % 2), rng.uniform(0, 255, (h, w))], axis=2)
    return img.astype(np.uint8)


def _dets(boxes, labels) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.ones(len(boxes), np.float32), tuple(labels))


def _scene():
    """Three non-square images (wide, tall, wide) with 3, 0 and 2 boxes: 5 regions."""
    images = [_image(30, 64, 0), _image(48, 20, 1), _image(25, 40, 2)]
    dets = [_dets([[0, 0, 64, 30], [8, 4, 20, 26], [40.5, 2.2, 63.9, 29.5]], ["chair", "mug", "lamp"]),
            Detections.empty(),
            _dets([[2, 2, 10, 10], [0, 0, 1, 1]], ["cup", "book"])]
    return images, dets


class _GenerateSpy:
    """Wraps ``model.generate``: records every call's inputs (the precomputed image features of
    ``mm_encoder_outputs`` as ``features``); ``edit`` may rewrite the output ids."""

    def __init__(self, model, edit=None):
        self.model, self.real, self.edit = model, model.generate, edit
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        call = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        if "mm_encoder_outputs" in kwargs:
            call["features"] = kwargs["mm_encoder_outputs"]["image"].pooler_output.detach().clone()
        self.calls.append(call)
        out = self.real(**kwargs)
        return self.edit(out) if self.edit is not None else out


@pytest.fixture
def spy(captioner, monkeypatch):
    s = _GenerateSpy(captioner.model)
    monkeypatch.setattr(captioner.model, "generate", s)
    return s


def _assert_clean(captions, max_words: int) -> None:
    for c in captions:
        assert isinstance(c, str) and c
        assert "<" not in c and ">" not in c
        assert c == c.lower() and c == " ".join(c.split())
        assert len(c.split()) <= max_words
        assert c.split()[0] not in ("a", "an", "the")


# ----------------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize(("raw", "max_words", "expected"), [
    ("</s><s>A Red  mug.<loc_12><loc_40><loc_88><loc_99></s><pad><pad>", 6, "red mug"),
    ("<s>The wooden chair</s>", 6, "wooden chair"),
    ("an apple", 6, "apple"),
    ("the a lamp", 6, "lamp"),  # every leading article goes
    ("theater seat", 6, "theater seat"),  # an article prefix is not an article
    ("Red\n\tMUG", 6, "red mug"),
    ("one two three four five six seven", 3, "one two three"),
    ("a b c d e f g h", 6, "b c d e f g"),  # the article is dropped before counting
    ("kid's red-handled mug!", 6, "kid's red-handled mug"),
    ("a <3 heart -- pillow", 6, "3 heart pillow"),  # stray '<' and lone hyphens go
    ("car<loc_53><loc_334><loc_933><loc_775>", 6, "car"),
    ("</s><s><loc_1><loc_2></s>", 6, ""),
    ("The", 6, ""),
    ("", 6, ""),
    ("  ...  ", 6, ""),
    ("<od>Mug</od><poly><sep>", 6, "mug"),
    ("Café Crème", 6, "café crème"),
])
def test_clean_caption_golden(raw, max_words, expected):
    assert clean_caption(raw, max_words) == expected


@pytest.mark.parametrize("max_words", [0, -1, True, 2.0, None])
def test_clean_caption_rejects_bad_max_words(max_words):
    with pytest.raises(ValueError, match="max_words"):
        clean_caption("red mug", max_words)


def test_clean_caption_rejects_non_string():
    with pytest.raises(ValueError, match="text must be a string"):
        clean_caption(None, 6)  # type: ignore[arg-type]


@pytest.mark.parametrize(("box", "w", "h", "expected"), [
    ((0, 0, 640, 480), 640, 480, (0, 0, 999, 999)),  # corners: 0 and 999 (1000 clamps to 999)
    ((320, 240, 639.9, 479.5), 640, 480, (500, 500, 999, 998)),
    ((64, 48, 128, 96), 640, 480, (100, 100, 200, 200)),  # exactly on bin edges: the bin they start
    ((0.5, 0.47, 1.0, 0.49), 640, 480, (0, 0, 1, 1)),  # floor, not round
    ((100, 100, 100, 100), 1000, 200, (100, 500, 100, 500)),  # x against the width, y against the height
    ((-5, -1, 700, 500), 640, 480, (0, 0, 999, 999)),  # outside the image: clamped
    ((2.9, 0, 3.0, 1.0), 3, 1, (966, 0, 999, 999)),
])
def test_box_to_loc_tokens_golden(box, w, h, expected):
    assert box_to_loc_tokens(box, w, h) == "".join(f"<loc_{q}>" for q in expected)
    assert box_to_loc_tokens(np.asarray(box, np.float32), w, h) == box_to_loc_tokens(box, w, h)


def test_box_to_loc_tokens_matches_the_florence2_quantizer(processor):
    """Integer pixel boxes quantise exactly as ``Florence2PostProcessor.quantize`` (the training quantiser)."""
    rng = np.random.default_rng(0)
    for w, h in ((640, 480), (1333, 750), (97, 301)):
        lo = rng.integers(0, [w, h], size=(50, 2))
        hi = lo + rng.integers(0, [w, h], size=(50, 2))
        boxes = np.concatenate([lo, np.minimum(hi, [w, h])], axis=1)
        ref = processor.post_processor.quantize(torch.tensor(boxes, dtype=torch.float64), (w, h)).tolist()
        got = [box_to_loc_tokens(b, w, h) for b in boxes]
        assert got == ["".join(f"<loc_{q}>" for q in r) for r in ref]


@pytest.mark.parametrize(("box", "w", "h", "match"), [
    ((0, 0, 1, 1), 0, 10, "width"),
    ((0, 0, 1, 1), 10, float("nan"), "height"),
    ((0, 0, 1), 10, 10, "4 finite"),
    ((0, 0, float("inf"), 1), 10, 10, "4 finite"),
    ((5, 0, 1, 1), 10, 10, "x0 <= x1"),
])
def test_box_to_loc_tokens_rejects_bad_input(box, w, h, match):
    with pytest.raises(ValueError, match=match):
        box_to_loc_tokens(box, w, h)


def test_crop_box_margin_clipping_and_minimum_size():
    assert crop_box((10, 20, 30, 60), 100, 100, 0.0) == (10, 20, 30, 60)
    assert crop_box((10, 20, 30, 60), 100, 100, 0.1) == (8, 16, 32, 64)  # 0.1 * 20 px, 0.1 * 40 px
    assert crop_box((10.5, 20.2, 29.5, 59.9), 100, 100, 0.0) == (10, 20, 30, 60)  # rounded outwards
    assert crop_box((0, 0, 100, 50), 100, 50, 0.5) == (0, 0, 100, 50)  # clipped to the image
    assert crop_box((5, 5, 5, 5), 10, 10, 0.1) == (5, 5, 6, 6)  # zero-area box: one pixel
    assert crop_box((10, 10, 10, 10), 10, 10, 0.1) == (9, 9, 10, 10)  # on the far edge: still inside
    for bad in ((0, 0, np.nan, 1), (3, 0, 1, 1), (0, 0, 1)):
        with pytest.raises(ValueError, match="box"):
            crop_box(bad, 10, 10, 0.1)
    with pytest.raises(ValueError, match="margin"):
        crop_box((0, 0, 1, 1), 10, 10, -0.5)


# ----------------------------------------------------------------------------- construction
def test_lazy_construction_defaults_protocol_and_registry():
    stage = Florence2Captioner(model_id="/nonexistent/folder/never/loaded")
    assert stage.model is None and stage.processor is None
    assert isinstance(stage, RegionCaptioner) and isinstance(stage, Stage)
    default = Florence2Captioner()
    assert default.name == "florence2" and default.model_id == "florence-community/Florence-2-large"
    assert (default.mode, default.task, default.batch_size, default.max_new_tokens, default.max_words) == \
        ("region", "<REGION_TO_DESCRIPTION>", 16, 20, 6)
    assert default.fallbacks == 0
    built = build_stage("captioner", "florence2", model_id=None, device="cpu", dtype="float32", batch_size=4)
    assert isinstance(built, Florence2Captioner) and built.batch_size == 4 and built.model is None


def test_microsoft_ids_map_to_native_conversions():
    stage = Florence2Captioner(model_id="microsoft/Florence-2-large")
    assert stage.model_id == "florence-community/Florence-2-large"
    assert stage.requested_model_id == "microsoft/Florence-2-large"
    assert all(v.startswith("florence-community/") for v in NATIVE_CHECKPOINTS.values())
    assert Florence2Captioner(model_id="me/my-florence").model_id == "me/my-florence"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "whole"}, "mode"),
    ({"task": "<CAPTION>"}, "task"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_words": True}, "max_words"),
    ({"crop_margin": -0.1}, "crop_margin"),
    ({"crop_margin": float("nan")}, "crop_margin"),
    ({"max_word": 3}, "unknown option"),
    ({"dtype": "int8"}, "dtype"),
])
def test_bad_options_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Florence2Captioner(model_id="x", **kwargs)


# ----------------------------------------------------------------------------- region mode
def test_region_captions_contract(captioner, spy):
    images, dets = _scene()
    out = captioner(images, dets)
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(t, tuple) for t in out)
    assert [len(t) for t in out] == [3, 0, 2]
    assert out[1] == ()
    _assert_clean([c for t in out for c in t], 6)
    assert captioner.fallbacks == 0  # the tiny model always writes some letters
    assert len(spy.calls) == 1  # 5 regions <= batch_size 16: one generate() call
    call = spy.calls[0]
    assert call["input_ids"].shape[0] == 5 and call["features"].shape[0] == 5 and "pixel_values" not in call
    assert call["do_sample"] is False and call["num_beams"] == 1 and call["max_new_tokens"] == 20


def test_region_prompts_carry_each_box_in_its_image_pixel_space(captioner, spy, processor):
    """The prompt of every region holds its box quantised against its own (non-square) image size."""
    images, dets = _scene()
    captioner(images, dets)
    ids = spy.calls[0]["input_ids"]
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=False)
    regions = [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    n_img = processor.num_image_tokens
    for text, (i, k) in zip(texts, regions, strict=True):
        h, w = images[i].shape[:2]
        prompt = REGION_PROMPT.format(input=box_to_loc_tokens(dets[i].boxes[k], w, h))
        assert text.replace("<pad>", "") == "<image>" * n_img + "<s>" + prompt + "</s>"
    # golden values for the wide first image (64 x 30): x by 64, y by 30
    assert "<loc_632><loc_73><loc_998><loc_983>" in texts[2]
    # the image features of each region are those of its own image, as the model computes them from its pixels
    feats = spy.calls[0]["features"]
    with torch.inference_mode():
        for row, (i, _) in zip(feats, regions, strict=True):
            pixels = processor.image_processor(images=[images[i]], return_tensors="pt",
                                               input_data_format="channels_last")["pixel_values"]
            expected = captioner.model.get_image_features(pixel_values=pixels).pooler_output[0]
            torch.testing.assert_close(row, expected)


def test_inputs_match_the_processor_layout(captioner, processor):
    """The hand-built batch equals ``Florence2Processor(text=task + locations, images=...)`` exactly."""
    images, dets = _scene()
    regions = [(0, 0), (0, 2), (2, 1)]
    mine = captioner._region_inputs(images, dets, regions)
    texts = ["<REGION_TO_DESCRIPTION>" + box_to_loc_tokens(dets[i].boxes[k], images[i].shape[1], images[i].shape[0])
             for i, k in regions]
    ref = processor(text=texts, images=[images[i] for i, _ in regions], return_tensors="pt", padding=True)
    assert torch.equal(mine["input_ids"], ref["input_ids"])
    assert torch.equal(mine["attention_mask"], ref["attention_mask"])
    assert mine["images"] == [0, 2] and mine["rows"].tolist() == [0, 0, 1]  # each image once, rows point at it
    pixels = captioner._pixels([images[i] for i in mine["images"]]).index_select(0, mine["rows"])
    torch.testing.assert_close(pixels, ref["pixel_values"])


def test_regions_are_batched_and_batching_does_not_change_captions(f2_dir, monkeypatch):
    images, dets = _scene()
    one_call = Florence2Captioner(model_id=f2_dir)
    expected = one_call(images, dets)
    stage = Florence2Captioner(model_id=f2_dir, batch_size=2)
    stage.load()
    spy = _GenerateSpy(stage.model)
    monkeypatch.setattr(stage.model, "generate", spy)
    got = stage(images, dets)
    assert len(spy.calls) == 3 and stage.generate_calls == 3  # 5 regions, batches of 2, 2, 1
    assert [c["input_ids"].shape[0] for c in spy.calls] == [2, 2, 1]
    assert got == expected
    single = Florence2Captioner(model_id=f2_dir, batch_size=1)
    assert single(images, dets) == expected and single.generate_calls == 5


# ----------------------------------------------------------------------------- one vision pass per image
class TowerCounter:
    """Counts the images Florence-2's vision tower encodes (wraps the tower's forward)."""

    def __init__(self, model, monkeypatch):
        tower = model.model.vision_tower
        real = tower.forward
        self.images: list[int] = []

        def forward(pixel_values, *args, **kwargs):
            self.images.append(int(pixel_values.shape[0]))
            return real(pixel_values, *args, **kwargs)

        monkeypatch.setattr(tower, "forward", forward)

    @property
    def total(self) -> int:
        return sum(self.images)


def test_the_vision_tower_runs_once_per_image_not_once_per_region(f2_dir, monkeypatch):
    images, dets = _scene()  # 3 + 0 + 2 regions
    stage = Florence2Captioner(model_id=f2_dir, batch_size=2)  # 3 generate() calls: image 0 spans two of them
    stage.load()
    tower = TowerCounter(stage.model, monkeypatch)
    first = stage(images, dets)
    assert stage.generate_calls == 3
    assert tower.total == 2  # images 0 and 2, once each (per region it would be 5); image 1 has no region
    assert stage(images, dets) == first and tower.total == 2  # kept features: the same photos are not encoded again
    stage.unload()
    stage.load()
    tower = TowerCounter(stage.model, monkeypatch)
    assert stage(images, dets) == first and tower.total == 2  # unloading drops the kept features


def test_captions_equal_the_per_region_pixel_path(captioner, processor):
    """Shared image features give exactly the captions of ``generate(pixel_values=<one row per region>)``."""
    images, dets = _scene()
    regions = [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    texts = ["<REGION_TO_DESCRIPTION>" + box_to_loc_tokens(dets[i].boxes[k], images[i].shape[1], images[i].shape[0])
             for i, k in regions]
    enc = processor(text=texts, images=[images[i] for i, _ in regions], return_tensors="pt", padding=True)
    with torch.inference_mode():
        ids = captioner.model.generate(**enc, max_new_tokens=20, do_sample=False, num_beams=1)
    raw = processor.batch_decode(ids, skip_special_tokens=False)
    expected: list[list[str]] = [[], [], []]
    for (i, k), text in zip(regions, raw, strict=True):
        expected[i].append(clean_caption(text, 6) or dets[i].labels[k])
    assert captioner(images, dets) == [tuple(c) for c in expected]
    assert len(set(expected[0])) > 1  # the comparison is not between constant outputs


def test_deterministic(captioner):
    images, dets = _scene()
    assert captioner(images, dets) == captioner(images, dets)


def test_captions_depend_on_the_region(captioner):
    img = _image(40, 60, 5)
    boxes = [[0, 0, 60, 40], [5, 5, 15, 12], [30, 10, 59, 39], [0, 20, 20, 40]]
    out = captioner([img], [_dets(boxes, ["a", "b", "c", "d"])])[0]
    assert len(set(out)) > 1


def test_max_words_cuts_captions(f2_dir):
    images, dets = _scene()
    stage = Florence2Captioner(model_id=f2_dir, max_words=1)
    out = stage(images, dets)
    _assert_clean([c for t in out for c in t], 1)
    assert all(len(c.split()) == 1 for t in out for c in t)


def test_category_task(f2_dir, monkeypatch):
    images, dets = _scene()
    stage = Florence2Captioner(model_id=f2_dir, task="<REGION_TO_CATEGORY>")
    stage.load()
    spy = _GenerateSpy(stage.model)
    monkeypatch.setattr(stage.model, "generate", spy)
    out = stage(images, dets)
    assert [len(t) for t in out] == [3, 0, 2]
    text = stage.processor.tokenizer.decode(spy.calls[0]["input_ids"][0], skip_special_tokens=False)
    assert "What is the region <loc_0><loc_0><loc_999><loc_999>?" in text


def _only_markup(processor, rows):
    """An ``edit`` for the spy: the given output rows become markup only (</s><s><loc_5><loc_6></s><pad>...)."""
    tok = processor.tokenizer
    seq = [tok.eos_token_id, tok.bos_token_id, *tok.convert_tokens_to_ids(["<loc_5>", "<loc_6>", "<od>"]),
           tok.eos_token_id]

    def edit(out):
        out = out.clone()
        for r in rows:
            out[r] = tok.pad_token_id
            n = min(len(seq), out.shape[1])
            out[r, :n] = torch.tensor(seq[:n])
        return out
    return edit


def test_empty_captions_fall_back_to_the_label_and_are_counted(captioner, processor, monkeypatch):
    images, dets = _scene()
    normal = captioner(images, dets)
    monkeypatch.setattr(captioner.model, "generate", _GenerateSpy(captioner.model, _only_markup(processor, [1, 3])))
    out = captioner(images, dets)
    assert captioner.fallbacks == 2
    assert out[0] == (normal[0][0], "mug", normal[0][2])  # regions 1 and 3 of the batch: mug and cup
    assert out[2] == ("cup", normal[2][1])
    monkeypatch.undo()
    assert captioner(images, dets) == normal and captioner.fallbacks == 0  # the counter is per call


# ----------------------------------------------------------------------------- crop mode
def test_crop_mode(f2_dir, monkeypatch):
    images, dets = _scene()
    stage = Florence2Captioner(model_id=f2_dir, mode="crop", batch_size=4, crop_margin=0.25)
    stage.load()
    spy = _GenerateSpy(stage.model)
    monkeypatch.setattr(stage.model, "generate", spy)
    out = stage(images, dets)
    assert [len(t) for t in out] == [3, 0, 2] and out[1] == ()
    _assert_clean([c for t in out for c in t], 6)
    assert [c["input_ids"].shape[0] for c in spy.calls] == [4, 1]
    tok = stage.processor.tokenizer
    for call in spy.calls:
        for row in call["input_ids"]:
            assert tok.decode(row, skip_special_tokens=False).endswith("<s>What does the image describe?</s>")
    # each region's pixels are its crop (box widened by 25 % per side, clipped), preprocessed
    pix = torch.cat([c["pixel_values"] for c in spy.calls])
    regions = [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    for row, (i, k) in zip(pix, regions, strict=True):
        h, w = images[i].shape[:2]
        c0, r0, c1, r1 = crop_box(dets[i].boxes[k], w, h, 0.25)
        ref = stage.processor.image_processor(images=[images[i][r0:r1, c0:c1]], return_tensors="pt",
                                              input_data_format="channels_last")["pixel_values"][0]
        torch.testing.assert_close(row, ref)
    assert crop_box(dets[0].boxes[1], 64, 30, 0.25) == (5, 0, 23, 30)
    assert stage(images, dets) == out  # deterministic


# ----------------------------------------------------------------------------- edge cases and errors
def test_no_boxes_gives_empty_tuples_without_loading(f2_dir):
    stage = Florence2Captioner(model_id=f2_dir)
    assert stage([_image(10, 20, 0), _image(30, 10, 1)], [Detections.empty(), Detections.empty()]) == [(), ()]
    assert stage([], []) == []
    assert stage.model is None and stage.fallbacks == 0 and stage.generate_calls == 0


def test_bad_inputs_raise(captioner):
    img = _image(10, 20, 0)
    one = _dets([[0, 0, 5, 5]], ["cup"])
    with pytest.raises(ValueError, match="got 1 image but 2 detection sets"):
        captioner([img], [one, one])
    with pytest.raises(ValueError, match="expected a Detections"):
        captioner([img], [np.zeros((1, 4))])
    with pytest.raises(ValueError, match="uint8"):
        captioner([img.astype(np.float32)], [one])
    with pytest.raises(ValueError, match="sequence of"):
        captioner(img, [one])
    with pytest.raises(ValueError, match="finite"):
        captioner([img], [_dets([[0, 0, np.inf, 5]], ["cup"])])
    crop = Florence2Captioner(model_id=captioner.model_id, mode="crop")
    crop.model, crop.processor, crop.device = captioner.model, captioner.processor, "cpu"  # share the loaded model
    with pytest.raises(ValueError, match="finite"):
        crop([img], [_dets([[0, 0, np.inf, 5]], ["cup"])])


def test_unload_and_reload(f2_dir):
    images, dets = _scene()
    stage = Florence2Captioner(model_id=f2_dir)
    first = stage(images, dets)
    stage.unload()
    assert stage.model is None and stage.processor is None
    assert stage(images, dets) == first


# ----------------------------------------------------------------------------- real weights (opt-in)
@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("SPATIALFORGE_WEIGHTS") != "1", reason="set SPATIALFORGE_WEIGHTS=1 to run")
@pytest.mark.parametrize("mode", ["region", "crop"])
def test_real_florence2_large_captions(mode):
    data = pytest.importorskip("skimage.data")
    cat, coffee = data.chelsea(), data.coffee()  # a cat filling the frame; a cup of coffee on a saucer
    h, w = coffee.shape[:2]
    dets = [_dets([[60, 20, 400, 300]], ["animal"]), _dets([[0.15 * w, 0.05 * h, 0.85 * w, 0.75 * h]], ["thing"])]
    stage = Florence2Captioner(mode=mode, device="auto")
    out = stage([cat, coffee], dets)
    _assert_clean([c for t in out for c in t], 6)
    assert stage.fallbacks == 0
    assert any(word in out[0][0] for word in ("cat", "kitten", "tabby")), out
    assert any(word in out[1][0] for word in ("coffee", "cup", "mug", "latte", "cappuccino", "espresso")), out
