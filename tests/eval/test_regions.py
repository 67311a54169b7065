"""SpatialRGPT-Bench regions drawn on the image a model receives (spatialforge.eval.regions)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from spatialforge.errors import ConfigError
from spatialforge.eval.benchmarks import benchmark_path, load_benchmark, load_qspatial, load_spatialrgpt
from spatialforge.eval.metrics import score_item
from spatialforge.eval.regions import (
    REGION_COLOURS,
    Region,
    RegionMarkedItem,
    decode_rle,
    mark_layout,
    mark_sizes,
    parse_regions,
    rle_runs,
)
from spatialforge.eval.types import BenchmarkItem, ParsedAnswer
from tests.eval import bench_fixtures as fx


@pytest.fixture(scope="module")
def region_bench(tmp_path_factory):
    return fx.write_spatialrgpt_regions(tmp_path_factory.mktemp("regions") / "bench")


def _plain(item) -> np.ndarray:
    return np.asarray(BenchmarkItem.load_image(item))


def _box_outline(box, line):
    """Pixels in the middle of the outline band of an (exclusive-end) box, along its four sides."""
    x1, y1, x2, y2 = box
    inset = line // 2
    xs = np.arange(x1 + line + 2, x2 - line - 2, 5)
    ys = np.arange(y1 + line + 2, y2 - line - 2, 5)
    return ([(x, y1 + inset) for x in xs] + [(x, y2 - 1 - inset) for x in xs]
            + [(x1 + inset, y) for y in ys] + [(x2 - 1 - inset, y) for y in ys])


def _outside_tags(points, marks):
    return [(x, y) for x, y in points
            if not any(m.tag[0] <= x <= m.tag[2] and m.tag[1] <= y <= m.tag[3] for m in marks)]


def _ink(img: np.ndarray, fill) -> np.ndarray:
    """The pixels of a tag that are not its fill colour, cropped to their extent."""
    ink = np.any(img != np.asarray(fill, np.uint8), axis=-1)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _rendered_ink(text: str, px: int, fill) -> np.ndarray:
    font = ImageFont.load_default(size=px)
    canvas = Image.new("RGB", (px * len(text) + 20, 3 * px), fill)
    ImageDraw.Draw(canvas).text((10, 10), text, fill=(0, 0, 0) if sum(fill) > 400 else (255, 255, 255), font=font)
    return _ink(np.asarray(canvas), fill)


# --------------------------------------------------------------------------------------------------
# RLE


def test_rle_decoder_matches_the_coco_format():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        counts = fx.encode_rle(mask)
        got = decode_rle(Region(0, mask_size=(h, w), mask_counts=counts))
        assert got.shape == (h, w) and (got == mask).all()
        # the built-in decoder alone (what runs without pycocotools) gives the same mask
        runs = rle_runs(counts)
        assert sum(runs) == h * w
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(w, h).T
        assert (flat == mask).all()
        # uncompressed RLE (a list of run lengths) too
        assert (decode_rle(Region(0, mask_size=(h, w), mask_counts=tuple(runs))) == mask).all()


def test_rle_decoder_agrees_with_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        mask = rng.random((h, w)) < rng.random()
        counts = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
        assert counts == fx.encode_rle(mask)
        runs = rle_runs(counts)
        assert (mask == np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(w, h).T).all()


@pytest.mark.parametrize(("counts", "match"), [("P", "ends inside"), ("a~b", "character"), ([3, -1], "non-negative"),
                                               (3.5, "string or a list")])
def test_rle_runs_rejects_what_is_not_rle(counts, match):
    with pytest.raises(ValueError, match=match):
        rle_runs(counts)


def test_parse_regions_keeps_boxes_and_masks_and_names_problems():
    good = {"size": [10, 12], "counts": fx.encode_rle(fx.ellipse_mask(10, 12, [2, 2, 9, 8]))}
    empty = {"size": [10, 12], "counts": fx.encode_rle(np.zeros((10, 12), bool))}
    regions, problems = parse_regions([[1, 1, 5, 5], [0, 0, 3, 3], "nope", [4, 4, 2, 2]],
                                      [good, {"size": [10, 12], "counts": "0"}, empty, None], frame=(12, 10))
    assert [(r.index, r.box is not None, r.has_mask) for r in regions] == [(0, True, True), (1, True, False)]
    assert regions[0].frame == (12, 10)
    assert len(problems) == 4
    assert "region 1" in problems[0] and "box is drawn instead" in problems[0]
    assert "region 2" in problems[1] and "not [x1, y1, x2, y2]" in problems[1]
    assert "region 2" in problems[2] and "empty" in problems[2]
    assert "region 3" in problems[3]


# --------------------------------------------------------------------------------------------------
# What is drawn


def test_boxes_are_drawn_where_the_boxes_are_with_their_tags(region_bench):
    bench = load_spatialrgpt(region_bench)
    item = bench.by_id("qualitative_BoxesOnly00")
    assert isinstance(item, RegionMarkedItem) and not any(r.has_mask for r in item.regions)
    img = np.asarray(item.load_image())
    plain = _plain(item)
    assert img.shape == plain.shape == (240, 320, 3) and (plain == fx.REGION_GREY).all()
    line, text_px = mark_sizes(320, 240)
    marks = mark_layout(item.regions, 320, 240)
    assert [m.index for m in marks] == [0, 1]
    bbox = fx.REGION_RECORDS[item.id][2]
    for k, box in enumerate(bbox):
        colour = REGION_COLOURS[k]
        # region k is outlined in colour k all around bbox k (and not in the other region's colour)
        points = _outside_tags(_box_outline(box, line), marks)
        assert len(points) > 40
        assert all(tuple(img[y, x]) == colour for x, y in points)
        # inside the box (away from the tags) the image is untouched: a box, not a fill
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        assert tuple(img[cy, cx]) == fx.REGION_GREY
        # its tag touches the box's top-left corner: just above it, starting at its left edge
        m = marks[k]
        assert m.colour == colour and m.label == f"Region [{k}]"
        assert m.tag[0] == box[0] and m.tag[3] == box[1] - 1
        tag = img[m.tag[1]:m.tag[3] + 1, m.tag[0]:m.tag[2] + 1]
        assert (tag == colour).all(axis=-1).mean() > 0.5  # filled with the region's colour
        # the tag reads "Region [k]" (the same text rendered alone), not another region's tag
        ink = _ink(tag, colour)
        assert ink.shape == _rendered_ink(f"Region [{k}]", text_px, colour).shape
        assert (ink == _rendered_ink(f"Region [{k}]", text_px, colour)).all()
        other = _rendered_ink(f"Region [{1 - k}]", text_px, colour)
        assert ink.shape != other.shape or not (ink == other).all()
    # nothing else changed: every changed pixel lies on a box outline band or in a tag
    changed = np.any(img != plain, axis=-1)
    allowed = np.zeros_like(changed)
    for box, m in zip(bbox, marks, strict=True):
        x1, y1, x2, y2 = box
        allowed[y1:y2, x1:x2] = True
        allowed[y1 + line:y2 - line, x1 + line:x2 - line] = False
        allowed[m.tag[1]:m.tag[3] + 1, m.tag[0]:m.tag[2] + 1] = True
    assert changed.any() and not (changed & ~allowed).any()


def test_masks_are_outlined_where_rle_is_given(region_bench):
    item = load_spatialrgpt(region_bench).by_id("qualitative_MasksBoth00")
    assert all(r.has_mask for r in item.regions)
    img = np.asarray(item.load_image())
    plain = _plain(item)
    line, _ = mark_sizes(320, 240)
    marks = mark_layout(item.regions, 320, 240)
    for k, box in enumerate(fx.REGION_RECORDS[item.id][2]):
        colour = np.asarray(REGION_COLOURS[k])
        mask = fx.ellipse_mask(240, 320, box)
        assert (marks[k].mask == mask).all()
        border = mask & ~binary_erosion(mask, border_value=0)
        ys, xs = np.nonzero(border)
        pts = _outside_tags(list(zip(xs.tolist(), ys.tolist(), strict=True)), marks)
        assert len(pts) > 100 and all((img[y, x] == colour).all() for x, y in pts)
        # the inside is tinted towards the colour, not covered
        inner = binary_erosion(mask, iterations=line + 1, border_value=0)
        expected = np.rint(plain[inner] * 0.75 + colour * 0.25)
        assert np.abs(img[inner].astype(float) - expected).max() <= 1
        # an ellipse, not its box: the box's bottom-right corner (outside the mask) is untouched
        assert (img[box[3] - 1, box[2] - 1] == plain[box[3] - 1, box[2] - 1]).all()
        assert marks[k].box == (box[0], box[1], box[2] - 1, box[3] - 1)
    # outside every mask and tag nothing changed
    outside = ~(fx.ellipse_mask(240, 320, fx.REGION_RECORDS[item.id][2][0])
                | fx.ellipse_mask(240, 320, fx.REGION_RECORDS[item.id][2][1]))
    for m in marks:
        outside[m.tag[1]:m.tag[3] + 1, m.tag[0]:m.tag[2] + 1] = False
    assert (img[outside] == plain[outside]).all()


def test_an_unreadable_mask_falls_back_to_its_box_and_is_noted(region_bench):
    bench = load_spatialrgpt(region_bench)
    item = bench.by_id("qualitative_BadMask0000")
    assert [r.has_mask for r in item.regions] == [True, False]
    assert len(item.meta["region_notes"]) == 1 and "region 1" in item.meta["region_notes"][0]
    assert bench.info["regions"]["notes"] == 1
    img = np.asarray(item.load_image())
    line, _ = mark_sizes(320, 240)
    marks = mark_layout(item.regions, 320, 240)
    box = fx.REGION_RECORDS[item.id][2][1]
    assert all(tuple(img[y, x]) == REGION_COLOURS[1] for x, y in _outside_tags(_box_outline(box, line), marks))


def test_a_region_the_record_lacks_skips_the_question_only_when_drawing(region_bench):
    drawn = load_spatialrgpt(region_bench)
    assert {s["id"]: s["reason"] for s in drawn.skipped} == {"qualitative_NoRegion100": "bad_region"}
    assert "region 1" in drawn.skipped[0]["message"]
    plain = load_spatialrgpt(region_bench, regions="none")
    assert plain.skipped == [] and "qualitative_NoRegion100" in {i.id for i in plain}


def test_tags_and_lines_grow_with_the_image():
    small, large = mark_sizes(64, 48), mark_sizes(1600, 900)
    assert small[0] >= 3 and small[1] >= 11
    assert large[1] >= 40 and large[0] > small[0]
    # a small image gets short tags ("[k]"), a large one "Region [k]"
    regions = (Region(0, box=(4, 6, 30, 40)), Region(1, box=(12, 6, 38, 40)))
    assert [m.label for m in mark_layout(regions, 64, 48)] == ["[0]", "[1]"]
    big = tuple(Region(k, box=(100 + 400 * k, 300, 400 + 400 * k, 800), frame=(1600, 900)) for k in range(2))
    marks = mark_layout(big, 1600, 900)
    assert [m.label for m in marks] == ["Region [0]", "Region [1]"]
    assert marks[0].tag[3] - marks[0].tag[1] + 1 >= large[1]
    # boxes and masks given for the original image follow it when the image was resized
    assert mark_layout(big, 800, 450)[1].box == (250, 150, 399, 399)
    mask = fx.ellipse_mask(240, 320, [40, 60, 200, 180])
    masked = Region(0, mask_size=(240, 320), mask_counts=fx.encode_rle(mask))
    (half,) = mark_layout((masked,), 160, 120)
    assert half.mask.shape == (120, 160) and half.box == (20, 30, 99, 89)
    sliver = np.zeros((240, 320), bool)
    sliver[100, 200:260] = True  # one row: lost when the image is a quarter of the size, outlined where it was
    (lost,) = mark_layout((Region(1, mask_size=(240, 320), mask_counts=fx.encode_rle(sliver)),), 80, 60)
    assert lost.mask is None and lost.box == (50, 25, 64, 25)


def test_regions_drawn_by_default_and_recorded_so_runs_do_not_mix(region_bench):
    drawn, plain = load_spatialrgpt(region_bench), load_spatialrgpt(region_bench, regions="none")
    assert drawn.name == "spatialrgpt+regions" and plain.name == "spatialrgpt"
    assert drawn.info["regions"]["mode"] == "draw" and drawn.info["regions"]["marks_version"] == 1
    assert drawn.info["regions"]["masks"] == 3 and drawn.info["regions"]["boxes"] == 5
    assert plain.info["regions"]["mode"] == "none"
    assert all(i.meta["region_marks"] == "draw" and i.benchmark == drawn.name for i in drawn)
    for item in plain:
        assert type(item) is BenchmarkItem and item.meta["region_marks"] == "none"
        assert (np.asarray(item.load_image()) == fx.REGION_GREY).all()
    # the spec takes the option too; the path it reads is found without it
    spec = f"spatialrgpt:{region_bench}"
    assert load_benchmark(spec).name == "spatialrgpt+regions"
    assert load_benchmark(spec + ":regions=none").name == "spatialrgpt"
    assert load_benchmark(spec, regions="none").name == "spatialrgpt"
    assert benchmark_path(spec + ":regions=none") == region_bench
    with pytest.raises(ConfigError, match="regions"):
        load_benchmark(spec + ":regions=boxes")
    with pytest.raises(ConfigError, match="regions"):
        load_benchmark(spec + ":regions=none", regions="draw")
    with pytest.raises(ConfigError, match="regions must be one of draw, none"):
        load_spatialrgpt(region_bench, regions="yes")


def test_nothing_is_drawn_for_other_benchmarks(tmp_path, synth_dir):
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.qa import QAConfig

    qs = load_qspatial(fx.write_qspatial_parquet(tmp_path / "qs"), "QSpatial_plus")
    out = tmp_path / "gen"
    run_generate(synth_dir, out, GenerateConfig(qa=QAConfig(qa_per_image=4, seed=1)), progress=False,
                 log=lambda m: None)
    sf = load_benchmark(str(out))
    for bench in (qs, sf):
        assert len(bench) > 0 and "regions" not in bench.info
        for item in bench.items[:5]:
            assert type(item) is BenchmarkItem
            decoded = np.asarray(Image.open(io.BytesIO(item.image_bytes)).convert("RGB"))
            assert (np.asarray(item.load_image()) == decoded).all()
    with pytest.raises(ConfigError, match="only SpatialRGPT-Bench"):
        load_benchmark(str(out), regions="draw")
    assert len(load_benchmark(str(out), regions="none")) == len(sf)


# --------------------------------------------------------------------------------------------------
# The image a model receives


def test_the_image_sent_to_a_model_carries_the_regions(region_bench, tmp_path):
    from spatialforge.eval.models.openai_api import OpenAICompatibleModel
    from spatialforge.eval.runner import run_eval
    from tests.eval.fake_openai_server import FakeOpenAIServer

    bench = load_spatialrgpt(region_bench).subset(types=["left_predicate"])
    with FakeOpenAIServer() as server:
        model = OpenAICompatibleModel("fake-vlm", base_url=server.base_url, api_key_env="SF_NO_SUCH_KEY",
                                      max_retries=0, timeout_s=10)
        run_eval(bench, model, tmp_path / "run", progress=False, n_boot=0)
        sent = {}
        for rec in server.requests:
            (url,) = rec.image_urls
            raw = base64.b64decode(url.split(",", 1)[1])
            text = rec.user_text
            item = next(i for i in bench if i.question in text)
            sent[item.id] = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)
        assert set(sent) == {i.id for i in bench}
        line, _ = mark_sizes(320, 240)
        for item_id, img in sent.items():
            marks = mark_layout(bench.by_id(item_id).regions, 320, 240)
            for m in marks:
                # JPEG: the colours survive to within a few levels along the outline (on the mask or box)
                if m.mask is not None:
                    ys, xs = np.nonzero(m.mask & ~binary_erosion(m.mask, iterations=line, border_value=0))
                    pts = list(zip(xs.tolist(), ys.tolist(), strict=True))
                else:
                    x1, y1, x2, y2 = m.box
                    pts = _box_outline((x1, y1, x2 + 1, y2 + 1), line)
                pts = _outside_tags(pts, marks)
                got = np.median(np.array([img[y, x] for x, y in pts]), axis=0)
                own = np.linalg.norm(got - np.asarray(m.colour))
                others = [np.linalg.norm(got - np.asarray(c)) for c in (fx.REGION_GREY, *REGION_COLOURS)
                          if c != m.colour]
                assert own < 60 and own < min(others) / 2, (item_id, m.index, got)
            # far from every region the picture is the plain grey
            assert np.abs(img[5, 160] - np.asarray(fx.REGION_GREY)).max() <= 8
        # the same folder refuses a run without the marks (another benchmark), so answers never mix
        plain = load_spatialrgpt(region_bench, regions="none").subset(types=["left_predicate"])
        with pytest.raises(ConfigError, match="benchmark"):
            run_eval(plain, model, tmp_path / "run", progress=False, n_boot=0)
    fingerprint = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert fingerprint["benchmark"] == "spatialrgpt+regions"


# --------------------------------------------------------------------------------------------------
# Clock answers on SpatialRGPT items use the benchmark's rounding


def test_spatialrgpt_clock_answers_use_the_benchmarks_rounding(region_bench, tmp_path, synth_dir):
    item = load_spatialrgpt(region_bench).by_id("quantitative_Clock00000")
    assert item.unit == "clock" and item.truth == 11 and item.meta["clock_rounding"] == "up"
    # 10:20 lies in the sector the benchmark labels 11 (its hour is the clockwise end of the sector)
    rec = score_item(item, ParsedAnswer("ok", 10 + 20 / 60), "about 10:20")
    assert rec["hour"] == 11 and rec["correct"] is True
    assert score_item(item, ParsedAnswer("ok", 11.0), "11 o'clock")["correct"] is True
    assert score_item(item, ParsedAnswer("ok", 11 + 20 / 60), "11:20")["hour_err"] == 1
    # spatialforge's own questions keep the nearest hour
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.qa import QAConfig

    out = tmp_path / "gen"
    run_generate(synth_dir, out, GenerateConfig(qa=QAConfig(qa_per_image=40, seed=2)), progress=False,
                 log=lambda m: None)
    clocks = [i for i in load_benchmark(str(out)) if i.unit == "clock"]
    assert clocks, "the generated dataset has no clock question"
    own = clocks[0]
    assert "clock_rounding" not in own.meta
    before = own.truth - 1 + 20 / 60  # 20 minutes past the hour before the truth: the nearest hour is wrong
    assert score_item(own, ParsedAnswer("ok", before), "")["correct"] is False
    assert score_item(own, ParsedAnswer("ok", own.truth - 20 / 60), "")["correct"] is True
