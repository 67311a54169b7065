"""The AGD20K test-set loader, prediction reading, scoring and report (torch-free, tiny fixture trees)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from spatialforge.afford.agd20k import (
    AGD20KTestSet,
    AGDItem,
    aspect_problem,
    read_gt,
    read_prediction,
    read_test_image,
    score,
    write_report,
)
from spatialforge.afford.metrics import score_map
from spatialforge.errors import ConfigError, DatasetError

from .agd20k_fixture import BROKEN_GT, ORPHAN_GT, ORPHAN_IMAGE, write_agd20k

AFFS = {"cut_with": ["knife"], "pour": ["cup", "bottle"], "sit_on": ["chair"]}


def _expected_keys(affs=AFFS, per_object=2):
    return sorted(f"{a}/{o}/{o}_{i:06d}" for a, objs in affs.items() for o in objs for i in range(per_object))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("agd")
    write_agd20k(root, "Seen", AFFS, per_object=2, seed=0)
    return root


@pytest.fixture(scope="module")
def testset(tree):
    return AGD20KTestSet(tree, "Seen")


@pytest.fixture(scope="module")
def perfect_dir(tree, testset, tmp_path_factory):
    """The GT PNGs copied as predictions."""
    out = tmp_path_factory.mktemp("pred_perfect")
    for it in testset:
        dst = out / it.affordance / it.object / f"{it.stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(it.gt_path, dst)
    return out


# ---------------------------------------------------------------------------------------------- loader


def test_loader_finds_exactly_the_written_items(testset, tree):
    assert [it.key for it in testset] == _expected_keys()
    assert len(testset) == 8
    assert testset.affordances == ["cut_with", "pour", "sit_on"]
    assert testset.objects == ["bottle", "chair", "cup", "knife"]
    assert testset.skipped == []
    assert testset.split == "Seen"
    assert testset.split_root == tree / "Seen"
    it = testset.items[0]
    assert isinstance(it, AGDItem)
    assert it.image_path == tree / "Seen/testset/egocentric/cut_with/knife/knife_000000.jpg"
    assert it.gt_path == tree / "Seen/testset/GT/cut_with/knife/knife_000000.png"


def test_prompts(testset):
    prompts = {it.affordance: it.prompt for it in testset}
    assert prompts == {"cut_with": "cut with", "pour": "pour", "sit_on": "sit on"}


def test_root_can_be_the_split_folder_and_split_is_case_insensitive(tree, testset):
    for root, split in [(tree / "Seen", "Seen"), (tree, "seen"), (tree / "Seen", "SEEN")]:
        ts = AGD20KTestSet(root, split)
        assert [it.key for it in ts] == [it.key for it in testset]
        assert ts.split == "Seen"


def test_unseen_split_and_image_suffixes(tmp_path):
    write_agd20k(tmp_path, "Unseen", {"hold": ["cup"]}, per_object=3, seed=1)
    ego = tmp_path / "Unseen/testset/egocentric/hold/cup"
    (ego / "cup_000001.jpg").rename(ego / "cup_000001.JPEG")
    (ego / "cup_000002.jpg").rename(ego / "cup_000002.png")
    (ego / ".DS_Store").write_bytes(b"x")  # hidden files are ignored
    ts = AGD20KTestSet(tmp_path, "unseen")
    assert [it.key for it in ts] == ["hold/cup/cup_000000", "hold/cup/cup_000001", "hold/cup/cup_000002"]
    assert ts.skipped == []
    assert ts.official_affordances[0] == "carry" and len(ts.official_affordances) == 25


def test_broken_cases_are_skipped_with_reasons(tmp_path):
    write_agd20k(tmp_path, "Seen", AFFS, per_object=1, image_without_gt=True, gt_without_image=True, unreadable_gt=True)
    ego = tmp_path / "Seen/testset/egocentric/pour/cup"
    (ego / "notes.txt").write_text("stray")
    shutil.copyfile(ego / "cup_000000.jpg", ego / "cup_000000.png")  # a second image with the same stem
    ts = AGD20KTestSet(tmp_path, "Seen")
    assert [it.key for it in ts] == _expected_keys(per_object=1)
    reasons = {s["key"]: s["reason"] for s in ts.skipped}
    assert reasons == {
        f"cut_with/knife/{ORPHAN_IMAGE}": "missing_gt",
        f"cut_with/knife/{ORPHAN_GT}": "missing_image",
        f"cut_with/knife/{BROKEN_GT}": "unreadable_gt",
        "pour/cup/notes": "unexpected_file",
        "pour/cup/cup_000000": "duplicate_image",
    }
    for s in ts.skipped:
        assert set(s) == {"key", "path", "reason", "message"} and s["message"]
    # the skips are carried into the score report and counted
    report = score(ts, lambda item: ts.load_gt(item), progress=False)
    assert report["n_images"] == 4 and report["n_scored"] == 4
    assert report["skipped_by_reason"] == {
        "duplicate_image": 1, "missing_gt": 1, "missing_image": 1, "unexpected_file": 1, "unreadable_gt": 1,
    }  # fmt: skip


def test_unreadable_gt_without_upfront_check_is_skipped_at_scoring(tmp_path):
    write_agd20k(tmp_path, "Seen", {"pour": ["cup"]}, per_object=1, unreadable_gt=True)
    ts = AGD20KTestSet(tmp_path, "Seen", check_gt=False)
    assert len(ts) == 2
    broken = next(it for it in ts if it.stem == BROKEN_GT)
    with pytest.raises(DatasetError) as e:
        ts.load_gt(broken)
    assert str(broken.gt_path) in str(e.value) and "\n" not in str(e.value)
    assert e.value.path == str(broken.gt_path)
    report = score(ts, lambda item: np.ones((4, 4)), progress=False)
    assert report["n_scored"] == 1
    assert report["skipped_by_reason"] == {"unreadable_gt": 1}


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: root / "nope", "AGD20K root is not a folder"),
        (lambda root: root, "split folder not found"),
        (lambda root: root / "Seen", "testset folder not found"),
    ],
)
def test_missing_folders_raise_one_line_errors_naming_the_path(tmp_path, make, needle):
    (tmp_path / "Seen").mkdir()
    root = make(tmp_path)
    with pytest.raises(DatasetError) as e:
        AGD20KTestSet(root, "Unseen" if root == tmp_path else "Seen")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert e.value.path is not None and e.value.path in msg


def test_missing_gt_folder_and_empty_tree(tmp_path):
    (tmp_path / "Seen/testset/egocentric").mkdir(parents=True)
    with pytest.raises(DatasetError, match="test GT folder not found") as e:
        AGD20KTestSet(tmp_path, "Seen")
    assert e.value.path == str(tmp_path / "Seen/testset/GT")
    (tmp_path / "Seen/testset/GT").mkdir()
    with pytest.raises(DatasetError, match="no scorable AGD20K test images"):
        AGD20KTestSet(tmp_path, "Seen")


def test_bad_split_arguments(tree):
    with pytest.raises(ConfigError, match="split must be one of"):
        AGD20KTestSet(tree, "train")
    with pytest.raises(ConfigError, match="is the Seen split folder"):
        AGD20KTestSet(tree / "Seen", "Unseen")


# ---------------------------------------------------------------------------------------------- GT reading


def test_load_gt_is_png_over_255(testset):
    it = testset.items[0]
    gt = testset.load_gt(it)
    raw = np.asarray(Image.open(it.gt_path))
    assert gt.dtype == np.float64 and gt.shape == (48, 64)
    np.testing.assert_array_equal(gt, raw / 255.0)
    assert gt.max() == 1.0 and gt.min() == 0.0


def _gt_variants(tmp_path):
    """GT PNGs in the modes the archive could hold: grey, RGB, RGBA, palette, 16-bit grey."""
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    files = {}
    files["L"] = Image.fromarray(rgb[..., 0])
    files["RGB"] = Image.fromarray(rgb)
    files["RGBA"] = Image.fromarray(np.dstack([rgb, rgb[..., 1]]))
    files["P"] = Image.fromarray(rgb).convert("P")
    files["I16"] = Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16))
    out = {}
    for name, im in files.items():
        p = tmp_path / f"{name}.png"
        im.save(p)
        out[name] = p
    return rgb, out


def test_load_gt_converts_colour_like_libpng(tmp_path):
    rgb, files = _gt_variants(tmp_path)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    expected = ((9797 * r + 19234 * g + 3737 * b) >> 15) / 255.0
    np.testing.assert_array_equal(read_gt(files["RGB"]), expected)
    np.testing.assert_array_equal(read_gt(files["RGBA"]), expected)  # alpha ignored
    grey = np.full((2, 3, 3), 77, dtype=np.uint8)  # grey stored as RGB stays exact
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_gt(tmp_path / "grey.png"), np.full((2, 3), 77 / 255.0))


def test_load_gt_matches_cv2_imread_grayscale(tmp_path):
    import cv2  # in [dev]: these parity checks must run, never skip
    _, files = _gt_variants(tmp_path)
    for name, p in files.items():
        ref = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        assert ref.dtype == np.uint8, name
        np.testing.assert_array_equal(read_gt(p), ref / 255.0, err_msg=name)


# ---------------------------------------------------------------------------------------------- predictions


def test_read_prediction_formats(tmp_path):
    it = AGDItem("pour", "cup", "cup_000000", tmp_path / "x.jpg", tmp_path / "x.png")
    d = tmp_path / "pred" / "pour" / "cup"
    assert read_prediction(tmp_path / "pred", it) is None
    d.mkdir(parents=True)
    Image.fromarray(np.array([[0, 65535], [7, 9]], dtype=np.uint16)).save(d / "cup_000000.png")
    np.testing.assert_array_equal(read_prediction(tmp_path / "pred", it), [[0, 65535], [7, 9]])
    Image.fromarray(np.full((2, 2, 3), 5, dtype=np.uint8)).save(d / "cup_000000.png")  # grey stored as RGB
    np.testing.assert_array_equal(read_prediction(tmp_path / "pred", it), np.full((2, 2), 5.0))
    np.save(d / "cup_000000.npy", np.array([[0.5, 0.25]], dtype=np.float32))  # .npy wins over .png
    np.testing.assert_array_equal(read_prediction(tmp_path / "pred", it), [[0.5, 0.25]])
    (d / "cup_000000.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as e:
        read_prediction(tmp_path / "pred", it)
    assert str(d / "cup_000000.npy") in str(e.value) and "\n" not in str(e.value)


def test_perfect_predictions(testset, perfect_dir):
    report = score(testset, perfect_dir, progress=False)
    assert report["n_images"] == report["n_scored"] == 8
    assert report["skipped"] == [] and report["skipped_by_reason"] == {}
    assert report["SIM"] == pytest.approx(1.0, abs=1e-6)
    assert abs(report["KLD"]) < 1e-6
    assert report["NSS"] > 1.0
    for row in report["per_image"]:
        assert row["SIM"] == pytest.approx(1.0, abs=1e-6)
    assert report["split"] == "Seen"
    assert report["protocol"]["size"] == 224


def test_constant_and_noisy_predictions(testset):
    const = score(testset, lambda item: np.full((7, 7), 0.3), progress=False)
    assert const["SIM"] == 0.0 and const["NSS"] == 0.0
    assert 10.0 < const["KLD"] < 28.0  # sum g * ln(g * 1e12): large but finite
    rng = np.random.default_rng(0)
    noise = {it.key: rng.random((30, 40)) for it in testset}
    noisy = score(testset, lambda item: noise[item.key], progress=False)
    assert 0.0 < noisy["SIM"] < 1.0 and 0.0 < noisy["KLD"] < const["KLD"]
    assert all(math.isfinite(noisy[m]) for m in ("KLD", "SIM", "NSS"))
    # per image values are those of score_map
    first = testset.items[0]
    expected = score_map(noise[first.key], testset.load_gt(first))
    got = next(r for r in noisy["per_image"] if r["key"] == first.key)
    for m in ("KLD", "SIM", "NSS"):
        assert got[m] == pytest.approx(expected[m], rel=1e-12)


def test_per_affordance_and_per_object_means(testset):
    # perfect on "pour", constant elsewhere: per-affordance SIM is 1 / 0, overall = 4 of 8 images
    def predict(item):
        return testset.load_gt(item) if item.affordance == "pour" else np.zeros((3, 3))

    report = score(testset, predict, progress=False)
    per = report["per_affordance"]
    assert list(per) == ["cut_with", "pour", "sit_on"]
    assert {a: per[a]["n"] for a in per} == {"cut_with": 2, "pour": 4, "sit_on": 2}
    assert per["pour"]["SIM"] == pytest.approx(1.0, abs=1e-6)
    assert per["cut_with"]["SIM"] == 0.0 and per["sit_on"]["SIM"] == 0.0
    assert report["SIM"] == pytest.approx(0.5, abs=1e-6)  # plain mean over images, not over classes
    for aff, row in per.items():
        rows = [r for r in report["per_image"] if r["affordance"] == aff]
        for m in ("KLD", "SIM", "NSS"):
            assert row[m] == pytest.approx(float(np.mean([r[m] for r in rows])), rel=1e-12)
    assert report["KLD"] == pytest.approx(float(np.mean([r["KLD"] for r in report["per_image"]])), rel=1e-12)
    assert report["per_object"]["cup"]["n"] == 2 and report["per_object"]["cup"]["SIM"] == pytest.approx(1.0, abs=1e-6)


def test_missing_and_bad_predictions_are_counted(testset, perfect_dir, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(perfect_dir, pred)
    (pred / "pour/cup/cup_000000.png").unlink()
    (pred / "sit_on/chair/chair_000001.png").unlink()
    np.save(pred / "sit_on/chair/chair_000001.npy", np.zeros((2, 3, 4)))  # 3-D: bad
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        pred / "pour/bottle/bottle_000001.png"
    )  # a colour-mapped heatmap: bad
    (pred / "cut_with/knife/knife_000000.png").write_bytes(b"junk")  # unreadable: bad
    report = score(testset, pred, progress=False)
    assert report["n_images"] == 8 and report["n_scored"] == 4
    assert report["skipped_by_reason"] == {"bad_prediction": 3, "missing_prediction": 1}
    by_key = {s["key"]: s for s in report["skipped"]}
    assert by_key["pour/cup/cup_000000"]["reason"] == "missing_prediction"
    assert "(2, 3, 4)" in by_key["sit_on/chair/chair_000001"]["message"]
    assert "(8, 8, 3)" in by_key["pour/bottle/bottle_000001"]["message"]
    assert by_key["cut_with/knife/knife_000000"]["path"].endswith("knife_000000.png")
    assert report["per_affordance"]["pour"]["n"] == 2 and report["per_affordance"]["pour"]["n_images"] == 4
    assert report["SIM"] == pytest.approx(1.0, abs=1e-6)


def test_prediction_shapes_accepted_and_rejected(testset):
    ok = score(testset, lambda item: np.ones((1, 1, 5, 6, 1)) * np.arange(6)[:, None], progress=False)
    assert ok["n_scored"] == 8
    bad = score(testset, lambda item: np.full((4, 4), np.nan), progress=False)
    assert bad["n_scored"] == 0 and bad["skipped_by_reason"] == {"bad_prediction": 8}
    assert "NaN" in bad["skipped"][0]["message"]
    assert bad["KLD"] is None and bad["per_affordance"]["pour"]["SIM"] is None
    flat = score(testset, lambda item: np.ones(5), progress=False)
    assert flat["skipped_by_reason"] == {"bad_prediction": 8}


def test_score_argument_errors(testset, tmp_path):
    with pytest.raises(DatasetError, match="prediction folder not found"):
        score(testset, tmp_path / "nope", progress=False)
    with pytest.raises(ConfigError, match="predict must be"):
        score(testset, 42, progress=False)
    with pytest.raises(ConfigError, match="size"):
        score(testset, tmp_path, size=0, progress=False)


# ---------------------------------------------------------------------------------------------- report


def test_write_report(testset, tmp_path):
    report = score(testset, lambda item: testset.load_gt(item) if item.object != "cup" else None, progress=False)
    json_path, md_path = write_report(report, tmp_path / "out", name="seen")
    assert json_path == tmp_path / "out/seen.json" and md_path == tmp_path / "out/seen.md"
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    md = md_path.read_text()
    assert "Scored 6 of 8 test images" in md and "missing_prediction 2" in md
    overall = f"| **all** | 6 | {max(report['KLD'], 0.0):.3f} | {report['SIM']:.3f} | {report['NSS']:.3f} |"
    assert overall in md
    for aff, row in report["per_affordance"].items():
        assert f"| {aff} | {row['n']} | " in md
        assert f"{row['NSS']:.3f}" in md
    assert "| pour | 2 |" in md


def test_write_report_without_scores_has_no_nan(testset, tmp_path):
    report = score(testset, lambda item: None, progress=False)
    json_path, md_path = write_report(report, tmp_path)
    text = json_path.read_text()
    assert "NaN" not in text and json.loads(text)["KLD"] is None
    assert "| **all** | 0 | n/a | n/a | n/a |" in md_path.read_text()
    with pytest.raises(ConfigError, match="report lacks"):
        write_report({"split": "Seen"}, tmp_path)


# ---------------------------------------------------------------------------------------------- aspect, EXIF


def test_a_prediction_with_another_aspect_ratio_is_refused_naming_the_file(testset, tmp_path):
    """The fixture's maps are 48 x 64 (H x W): a transposed 64 x 48 map is not a map of that image."""
    transposed = score(testset, lambda item: np.random.default_rng(0).random((64, 48)), progress=False)
    assert transposed["n_scored"] == 0 and transposed["skipped_by_reason"] == {"bad_prediction": 8}
    assert "swapped" in transposed["skipped"][0]["message"] and "48x64" in transposed["skipped"][0]["message"]
    # from a folder, the message names the prediction file
    pred = tmp_path / "pred"
    for it in testset:
        (pred / it.affordance / it.object).mkdir(parents=True, exist_ok=True)
        np.save(pred / it.affordance / it.object / f"{it.stem}.npy", read_gt(it.gt_path).T)
    by_folder = score(testset, pred, progress=False)
    assert by_folder["skipped_by_reason"] == {"bad_prediction": 8}
    first = by_folder["skipped"][0]
    assert first["path"].endswith(".npy") and first["message"].startswith(first["path"])
    # the same aspect at any scale (rounded sides), and the protocol's square frame, are scored
    for shape in ((24, 32), (7, 9), (480, 640), (224, 224), (13, 13)):
        ok = score(testset, lambda item, shape=shape: np.random.default_rng(1).random(shape), progress=False)
        assert ok["n_scored"] == 8, shape
    assert aspect_problem((64, 48), (48, 64)) is not None and aspect_problem((30, 64), (48, 64)) is not None
    assert aspect_problem((36, 48), (48, 64)) is None and aspect_problem((100, 101), (100, 101)) is None


def test_test_images_are_read_in_stored_pixel_order(tmp_path):
    """An EXIF Orientation tag is ignored: the GT maps are stored in the photo's stored order."""
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=exif)
    assert Image.open(tmp_path / "a.png").getexif().get(0x0112) == 6
    img = read_test_image(tmp_path / "a.png")
    assert img.shape == (30, 50, 3) and np.array_equal(img, pixels)
    rgba = np.dstack([pixels, np.zeros((30, 50), np.uint8)])  # fully transparent: white, as predict does
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (read_test_image(tmp_path / "t.png") == 255).all()
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"bad\.jpg"):
        read_test_image(tmp_path / "bad.jpg")
    with pytest.raises(DatasetError, match="pixel limit"):
        read_test_image(tmp_path / "a.png", max_pixels=100)
