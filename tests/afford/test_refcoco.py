"""The refer-distribution loader (spatialforge.afford.refcoco) on tiny datasets in the exact on-disk format."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spatialforge.afford.refcoco import (
    ConcatRefDataset,
    RefDataset,
    RefSample,
    open_refer,
    parse_refer_name,
)
from spatialforge.errors import ConfigError, DatasetError, MissingExtraError

from .refcoco_fixture import (
    COLOURS,
    py2_pickle_dumps,
    read_manifest,
    read_truth,
    write_refer_dataset,
    write_refer_index,
)

BROKEN = {"missing_annotation": True, "no_sentences": True, "empty_mask": True, "missing_image": True,
          "missing_image_record": True, "duplicate_ref": True}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def edit_instances(root: Path, fn, dataset: str = "refcoco") -> None:
    path = root / dataset / "instances.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def fatal(exc_info, *fragments: str) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    for frag in fragments:
        assert frag in text, (frag, text)
    return text


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """refcoco/unc with 8 images x 2 shapes, shared by the read-only tests."""
    return write_refer_dataset(tmp_path_factory.mktemp("refer"), n_images=8, seed=3, non_ascii=True)


# ---------------------------------------------------------------- the written refs come back

@pytest.mark.parametrize("split", ["train", "val", "testA", "testB"])
def test_loads_exactly_the_written_refs_per_split(clean, split):
    man = read_manifest(clean)
    ds = RefDataset(clean, "refcoco", split=split)
    assert [s.ref_id for s in ds] == man["refs"][split]
    assert ds.skipped == []
    for s in ds:
        assert isinstance(s, RefSample) and s.split == split and s.dataset == "refcoco"
        assert list(s.sentences) == man["sentences"][str(s.ref_id)]
        assert s.ann_id == man["ann_of_ref"][str(s.ref_id)]
        assert (s.height, s.width) == (64, 80)
        assert s.image_path.is_file() and s.image_path.name == f"COCO_train2014_{s.image_id:012d}.jpg"
        assert ds.category_name(s) == man["shapes"][str(s.ann_id)]["kind"]
    summary = ds.summary()
    assert summary["refs"] == len(ds) == len(man["refs"][split])
    assert summary["splits_in_file"] == {k: len(v) for k, v in man["refs"].items()}
    assert summary["sentences"] == sum(len(s.sentences) for s in ds)
    assert summary["images"] == len({s.image_id for s in ds}) and summary["skipped"] == {}


def test_several_splits_and_all(clean):
    man = read_manifest(clean)
    both = RefDataset(clean, split=["val", "testA"])
    assert [s.ref_id for s in both] == sorted(man["refs"]["val"] + man["refs"]["testA"])  # file order
    assert both.split == "val,testA" and {s.split for s in both} == {"val", "testA"}
    every = RefDataset(clean, split="all")
    assert len(every) == sum(len(v) for v in man["refs"].values())
    assert every.summary()["refs_per_split"] == {k: len(v) for k, v in man["refs"].items()}


def test_non_ascii_sentence_and_text_field(clean):
    man = read_manifest(clean)
    ds = RefDataset(clean, split="train")
    first = ds[0]
    assert "café" in first.sentences[0]  # UTF-8 bytes of a Python 2 str, read as latin-1, repaired
    raw = RefDataset(clean, split="train", text_field="raw")
    assert raw[0].sentences == tuple(t.upper() for t in man["sentences"][str(first.ref_id)])
    with pytest.raises(ConfigError, match="text_field"):
        RefDataset(clean, text_field="tokens")


# ---------------------------------------------------------------- masks and images

def test_polygon_masks_match_the_drawn_shapes(clean):
    truth = read_truth(clean)
    ds = RefDataset(clean, split="all")
    kinds = set()
    for s in ds:
        m = ds.mask(s)
        assert m.dtype == bool and m.shape == (s.height, s.width)
        assert iou(m, truth[s.ann_id]) > 0.95, s
        kinds.add(read_manifest(clean)["shapes"][str(s.ann_id)]["kind"])
    assert kinds == {"square", "circle", "triangle"}
    assert np.array_equal(ds.mask(0), ds.mask(ds[0]))


def test_rle_masks_decode(tmp_path):
    root = write_refer_dataset(tmp_path, rle=True, n_images=2)
    man, truth = read_manifest(root), read_truth(root)
    assert len(man["rle_ann_ids"]) == 2  # one compressed, one uncompressed
    ds = RefDataset(root, split="all")
    rle_samples = [s for s in ds if s.ann_id in man["rle_ann_ids"]]
    assert len(rle_samples) == 2
    for s in rle_samples:
        assert np.array_equal(ds.mask(s), truth[s.ann_id])


def test_image_is_rgb_and_shows_the_shape(clean):
    ds = RefDataset(clean, split="train")
    man = read_manifest(clean)
    for s in ds:
        img = ds.image(s)
        assert img.dtype == np.uint8 and img.shape == (64, 80, 3) and img.flags.writeable
        inside = img[ds.mask(s)].astype(float).mean(axis=0)
        colour = np.array(COLOURS[man["shapes"][str(s.ann_id)]["colour"]], float)
        assert np.abs(inside - colour).max() < 30


def test_grayscale_images_are_converted(tmp_path):
    root = write_refer_dataset(tmp_path, grayscale=True, n_images=1)
    ds = RefDataset(root)
    img = ds.image(0)
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 1])


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=2, missing_image=True)
    ds = RefDataset(root)  # images are not opened at construction
    lost = next(s for s in ds if s.ref_id in read_manifest(root)["broken"]["missing_image"])
    with pytest.raises(DatasetError) as exc:
        ds.image(lost)
    fatal(exc, "image not found", str(lost.image_path))
    assert exc.value.path == str(lost.image_path)
    ds[0].image_path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError) as exc:
        ds.image(0)
    fatal(exc, str(ds[0].image_path), "cannot read image")


def test_image_size_mismatch_is_an_error(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=1)
    edit_instances(root, lambda d: d["images"][0].update(height=65))
    ds = RefDataset(root)
    with pytest.raises(DatasetError) as exc:
        ds.image(0)
    fatal(exc, "80x64", "80x65")


def test_image_dir_fallbacks(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=1)
    shutil.move(root / "images" / "mscoco" / "images" / "train2014", root / "train2014")
    shutil.rmtree(root / "images")
    ds = RefDataset(root, check_images=True)
    assert ds.image_dir == root / "train2014" and len(ds) == 2 and ds.image(0).shape == (64, 80, 3)
    moved = tmp_path / "elsewhere"
    shutil.move(root / "train2014", moved)
    assert len(RefDataset(root, image_dir=moved, check_images=True)) == 2
    with pytest.raises(DatasetError) as exc:
        RefDataset(root, check_images=True)
    fatal(exc, "image folder not found", "train2014")


# ---------------------------------------------------------------- sentences

def test_sentence_sampling_is_deterministic_and_uniform(clean):
    ds = RefDataset(clean, split="all")
    s = next(s for s in ds if len(s.sentences) == 3)
    a = [ds.sentence(s, np.random.default_rng(11)) for _ in range(5)]
    b = [ds.sentence(s, np.random.default_rng(11)) for _ in range(5)]
    assert a == b
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    seq1 = [ds.sentence(s, rng1) for _ in range(50)]
    assert seq1 == [ds.sentence(s, rng2) for _ in range(50)]
    rng = np.random.default_rng(0)
    counts = {t: 0 for t in s.sentences}
    for _ in range(3000):
        counts[ds.sentence(s, rng)] += 1
    assert all(850 < c < 1150 for c in counts.values()), counts
    with pytest.raises(ConfigError, match="Generator"):
        ds.sentence(s, 3)


# ---------------------------------------------------------------- several datasets

@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("three")
    write_refer_dataset(root, "refcoco", "unc", n_images=3, seed=1)
    write_refer_dataset(root, "refcoco+", "unc", n_images=4, seed=2, missing_annotation=True)
    write_refer_dataset(root, "refcocog", "umd", n_images=5, seed=3)
    return root


def test_concat_indexes_across_members(three):
    ds = open_refer(three, ["refcoco", "refcoco+/unc", "refcocog/umd"], split="train")
    assert isinstance(ds, ConcatRefDataset)
    members = [RefDataset(three, d, split="train") for d in ("refcoco", "refcoco+", "refcocog")]
    flat = [s for m in members for s in m.samples]
    assert len(ds) == len(flat) and list(ds) == flat and [ds[i] for i in range(len(ds))] == flat
    assert ds[-1] == flat[-1]
    truths = {d: read_truth(three, d, sb) for d, sb in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd"))}
    for i, s in enumerate(flat):  # ann ids repeat across datasets: the right member must decode
        assert ds.member_of(i).dataset == s.dataset and ds.member_of(s).dataset == s.dataset
        assert iou(ds.mask(i), truths[s.dataset][s.ann_id]) > 0.95
        assert np.array_equal(ds.mask(s), ds.mask(i))
        assert ds.image(i).shape == (s.height, s.width, 3)
    assert ds.sentence(0, np.random.default_rng(0)) in flat[0].sentences
    summary = ds.summary()
    assert [m["dataset"] for m in summary["members"]] == ["refcoco", "refcoco+", "refcocog"]
    assert summary["refs"] == len(flat) and summary["skipped"] == {"missing_annotation": 1}
    assert ds.skipped_by_reason() == {"missing_annotation": 1}
    assert ds.skipped[0]["dataset"] == "refcoco+/unc"
    with pytest.raises(IndexError):
        ds.member_of(len(ds))


def test_open_refer_names(three):
    single = open_refer(three, "refcocog/umd", split="test")
    assert isinstance(single, RefDataset) and single.split_by == "umd" and single.split == "test"
    assert parse_refer_name("refcoco") == ("refcoco", "unc")
    assert parse_refer_name(" RefCOCOg/google ") == ("refcocog", "google")
    with pytest.raises(ConfigError) as exc:
        open_refer(three, ["refcoco", "refcoco/unc"])
    fatal(exc, "refcoco/unc", "twice")
    with pytest.raises(ConfigError) as exc:
        open_refer(three, "refclef")
    fatal(exc, "refclef", "refcoco, refcoco+, refcocog")
    with pytest.raises(ConfigError) as exc:
        open_refer(three, "refcocog/unc")
    fatal(exc, "'unc'", "umd, google")
    with pytest.raises(ConfigError):
        open_refer(three, [])


def test_sample_from_another_dataset_is_refused(three):
    coco = RefDataset(three, "refcoco")
    cocog = RefDataset(three, "refcocog", split="train")
    with pytest.raises(ConfigError, match="not a sample"):
        coco.mask(cocog[0])


# ---------------------------------------------------------------- broken refs are skipped and counted

def test_every_broken_case_is_skipped_with_its_reason(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=4, **BROKEN)
    man = read_manifest(root)
    ds = RefDataset(root, split="train", check_images=True)
    expected = {reason: sorted(ids) for reason, ids in man["broken"].items()}
    got: dict[str, list[int]] = {}
    for entry in ds.skipped:
        assert set(entry) == {"ref_id", "reason", "detail"} and entry["detail"]
        got.setdefault(entry["reason"], []).append(entry["ref_id"])
    assert {k: sorted(v) for k, v in got.items()} == expected
    assert ds.skipped_by_reason() == {k: len(v) for k, v in sorted(expected.items())}
    assert ds.summary()["skipped_total"] == sum(len(v) for v in expected.values())
    assert [s.ref_id for s in ds] == man["refs"]["train"]  # the duplicate keeps the first ref
    assert all(ds.mask(s).any() for s in ds)
    loose = RefDataset(root, split="train")  # without check_images the image-less ref stays
    assert "missing_image" not in loose.skipped_by_reason()
    assert man["broken"]["missing_image"][0] in {s.ref_id for s in loose}


def test_bad_segmentations_and_mismatched_annotations(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=4, splits=("train",))

    def damage(data):
        anns = data["annotations"]
        anns[0]["segmentation"] = [[1, 2, 3, 4, 5]]  # odd number of coordinates
        anns[1]["segmentation"] = {"size": [10, 10], "counts": "abc"}  # RLE of the wrong size
        anns[2]["segmentation"] = [[1, 1, 5, 5]]  # two points: no area
        anns[3]["image_id"] = 12345  # not the ref's image
        anns[4]["segmentation"] = "polygon"
        anns[5]["segmentation"] = {"size": ["64", 80], "counts": "abc"}

    edit_instances(root, damage)
    ds = RefDataset(root)
    assert ds.skipped_by_reason() == {"annotation_image_mismatch": 1, "bad_segmentation": 4, "empty_mask": 1}
    assert len(ds) == 2
    details = " | ".join(e["detail"] for e in ds.skipped)
    assert "odd number" in details and "RLE size" in details and "12345" in details


def test_empty_rle_raises_on_decode_or_is_skipped_with_check_masks(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=1, rle=True)
    import pycocotools.mask as mask_api

    zeros = mask_api.encode(np.zeros((64, 80), np.uint8, order="F"))
    edit_instances(root, lambda d: d["annotations"][0].update(
        segmentation={"size": [64, 80], "counts": zeros["counts"].decode()}))
    ds = RefDataset(root)
    assert len(ds) == 2
    with pytest.raises(DatasetError) as exc:
        ds.mask(0)
    fatal(exc, "instances.json", "empty mask", "annotation 1")
    checked = RefDataset(root, check_masks=True)
    assert len(checked) == 1 and checked.skipped_by_reason() == {"empty_mask": 1}


# ---------------------------------------------------------------- fatal errors: one line naming the file

def test_missing_refs_pickle_lists_the_present_ones(tmp_path):
    root = write_refer_dataset(tmp_path, n_images=1)
    with pytest.raises(DatasetError) as exc:
        RefDataset(root, "refcoco", split_by="google")
    fatal(exc, "refs(google).p", "refs(unc).p", "not found")
    with pytest.raises(DatasetError) as exc:
        RefDataset(root, "refcocog")
    fatal(exc, "refcocog", "not found", "refcoco")
    with pytest.raises(DatasetError) as exc:
        RefDataset(tmp_path / "nowhere")
    fatal(exc, "nowhere")


@pytest.mark.parametrize(("content", "fragment"), [
    (b"garbage that is no pickle", "corrupt or not a refs pickle"),
    (b"", "corrupt or not a refs pickle"),
    (pickle.dumps([{"ref_id": 1}], protocol=2)[:-6], "corrupt or not a refs pickle"),
    (pickle.dumps({"refs": []}, protocol=2), "expected a list of refs"),
    (pickle.dumps([{"ref_id": 1, "image_id": 2, "split": "train", "sentences": []}], protocol=2),
     "ref #0 has no 'ann_id' key"),
    (pickle.dumps([{"ref_id": 1, "ann_id": "x", "image_id": 2, "split": "train", "sentences": []}], protocol=2),
     "ref #0 'ann_id' is not an integer"),
    (pickle.dumps([{"ref_id": 1, "ann_id": 1, "image_id": 2, "split": "train", "sentences": 5}], protocol=2),
     "ref #0 'sentences' is a int"),
    (pickle.dumps([7], protocol=2), "ref #0 is a int"),
    (b"cos\nsystem\n(S'echo pwned'\ntR.", "os.system"),  # a hostile pickle: refused, never run
])
def test_bad_refs_pickle(tmp_path, content, fragment):
    root = write_refer_dataset(tmp_path, n_images=1, shapes=False)
    path = root / "refcoco" / "refs(unc).p"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as exc:
        RefDataset(root)
    fatal(exc, str(path), fragment)
    assert exc.value.path == str(path)


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "instances file not found"),
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"images": []}', "'annotations' is missing"),
    ('{"images": [{"file_name": "a.jpg"}], "annotations": []}', "images[0] has no 'id'"),
])
def test_bad_instances_json(tmp_path, content, fragment):
    root = write_refer_dataset(tmp_path, n_images=1, shapes=False)
    path = root / "refcoco" / "instances.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(DatasetError) as exc:
        RefDataset(root)
    fatal(exc, str(path), fragment)


def test_unknown_split_and_split_by(clean):
    with pytest.raises(ConfigError) as exc:
        RefDataset(clean, split="test")
    fatal(exc, "'test'", "refs(unc).p", "train, val, testA, testB")
    with pytest.raises(ConfigError) as exc:
        RefDataset(clean, split_by="umd")
    fatal(exc, "'umd'", "unc, google")
    with pytest.raises(ConfigError) as exc:
        RefDataset(clean, dataset="refclef")
    fatal(exc, "refclef")
    with pytest.raises(ConfigError):
        RefDataset(clean, split=[])


# ---------------------------------------------------------------- the pickle as Python 2 wrote it

@pytest.mark.parametrize("style", ["py2", "py3", "bytes_keys"])
def test_pickle_styles_load_the_same(tmp_path, style):
    root = write_refer_dataset(tmp_path, n_images=2, shapes=False, pickle_style=style, non_ascii=True)
    man = read_manifest(root)
    ds = RefDataset(root, split="all")
    assert {str(s.ref_id): list(s.sentences) for s in ds} == man["sentences"]
    assert all(isinstance(s.split, str) and isinstance(s.ref_id, int) for s in ds)


def test_py2_pickle_needs_latin1(tmp_path):
    blob = py2_pickle_dumps([{b"sent": "café".encode(), "raw": "café", "ref_id": 2**40}])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(blob)  # what a plain Python 3 load of a Python 2 pickle does
    loaded = pickle.loads(blob, encoding="latin1")
    assert loaded == [{"sent": "cafÃ©", "raw": "café", "ref_id": 2**40}]
    bytes_keys = pickle.loads(pickle.dumps([{b"ref_id": 1, b"split": b"train"}], protocol=2), encoding="latin1")
    assert bytes_keys == [{b"ref_id": 1, b"split": b"train"}]


# ---------------------------------------------------------------- speed, optional deps

def test_index_of_20k_refs_builds_fast(tmp_path):
    root = write_refer_index(tmp_path, n_refs=20_000, extra_annotations=20_000)
    start = time.perf_counter()
    ds = RefDataset(root, split="train")
    elapsed = time.perf_counter() - start
    assert len(ds) == ds.summary()["splits_in_file"]["train"] > 4000
    assert sum(ds.summary()["splits_in_file"].values()) == 20_000
    assert elapsed < 10, elapsed


def test_module_imports_without_torch_or_pycocotools():
    code = ("import sys; sys.modules['torch'] = None; import spatialforge.afford.refcoco as m; "
            "assert 'pycocotools' not in sys.modules and 'torch' not in [k for k in sys.modules if sys.modules[k]]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_datasets_pickle_for_worker_processes(three):
    ds = open_refer(three, ["refcoco", "refcocog/umd"])
    clone = pickle.loads(pickle.dumps(ds))
    assert list(clone) == list(ds) and np.array_equal(clone.mask(3), ds.mask(3))


def test_missing_pycocotools_names_the_extra(clean, monkeypatch):
    ds = RefDataset(clean)
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(MissingExtraError, match=r"spatialforge\[afford\]"):
        ds.mask(0)
