"""Benchmark loaders: spatialforge datasets, Q-Spatial Bench, SpatialRGPT-Bench, synthetic benchmarks."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spatialforge.errors import ConfigError, DatasetError
from spatialforge.eval.benchmarks import (
    Benchmark,
    build_synthetic_benchmark,
    load_benchmark,
    load_qspatial,
    load_spatialforge,
    load_spatialrgpt,
    parse_length_m,
)
from spatialforge.eval.regions import RegionMarkedItem
from spatialforge.eval.types import BenchmarkItem
from spatialforge.io.dataset import ROW_SCHEMA, iter_rows
from tests.eval import bench_fixtures as fx

# --------------------------------------------------------------------------------------------------
# spatialforge datasets


@pytest.fixture(scope="module")
def generated(synth_dir, tmp_path_factory):
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.qa import QAConfig

    out = tmp_path_factory.mktemp("generated")
    run_generate(synth_dir, out, GenerateConfig(qa=QAConfig(qa_per_image=12, seed=3)), progress=False,
                 log=lambda m: None)
    return out


def test_load_spatialforge_matches_qa_records(generated):
    bench = load_spatialforge(generated)
    records = {qa["id"]: (row, qa) for row in iter_rows(generated) for qa in row["qa"]}
    assert len(bench) == len(records) > 0 and bench.skipped == []
    assert bench.name == generated.name and bench.source == str(generated)
    kinds = set()
    for item in bench:
        row, qa = records[item.id]
        kinds.add(item.kind)
        assert item.id.startswith(row["scene_id"] + "-")
        assert (item.kind, item.type, item.question) == (qa["kind"], qa["type"], qa["question"])
        assert item.image_bytes == row["image"]["bytes"] and item.reference_answer == qa["answer"]
        if item.kind == "quantitative":
            assert item.unit == qa["unit"]
            if item.unit == "clock":
                assert isinstance(item.truth, int) and item.truth == qa["value"]
            else:
                assert item.truth == qa["value"]
        elif item.kind == "yes_no":
            assert item.unit == "bool" and item.truth is bool(qa["value"])
        else:
            # the candidates are the subjects in roles A and B (a reference object C is not an option)
            cands = [n for n, r in zip(qa["names"], qa["roles"], strict=True) if r in ("A", "B")]
            assert item.unit == "option" and item.options == tuple(cands) and len(cands) == 2
            assert item.options[item.truth] == qa["names"][qa["subjects"].index(int(qa["value"]))]
    assert kinds == {"quantitative", "yes_no", "choice"}
    assert bench.by_id(bench.items[0].id).load_image().size == (320, 240)
    # the data/ folder works too, and gives the same items
    assert [i.id for i in load_spatialforge(generated / "data", name="x")] == [i.id for i in bench]


def test_load_spatialforge_skips_bad_pairs(tmp_path):
    def qa(i, kind, value, unit, subjects=(1, 2)):
        return {"id": f"s-{i:03d}", "type": "t", "kind": kind, "question": "q?", "answer": "a.", "value": value,
                "unit": unit, "subjects": list(subjects), "roles": ["A", "B"][:len(subjects)],
                "names": [f"the thing {s}" for s in subjects]}

    rows = [
        {"scene_id": "s", "image": {"bytes": fx.jpeg_bytes(0), "path": "s/image.jpg"}, "width": 64, "height": 48,
         "messages": [], "gravity_source": "plane",
         "qa": [qa(0, "quantitative", 1.25, "m"), qa(1, "quantitative", 2.0, "furlong"),
                qa(2, "choice", 7.0, "object"), qa(3, "yes_no", 0.5, "bool"), qa(4, "quantitative", 13.0, "clock"),
                qa(5, "choice", 2.0, "object"), qa(5, "yes_no", 1.0, "bool")]},
        {"scene_id": "t", "image": {"bytes": None, "path": "t/image.png"}, "width": 64, "height": 48,
         "messages": [], "gravity_source": "plane", "qa": [qa(9, "yes_no", 1.0, "bool")]},
    ]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), tmp_path / "data" / "train-00000-of-00001.parquet")
    bench = load_spatialforge(tmp_path)
    assert [i.id for i in bench] == ["s-000", "s-005"]
    assert bench.by_id("s-005").truth == 1 and bench.by_id("s-005").options[1] == "the thing 2"
    reasons = {s["id"]: s["reason"] for s in bench.skipped}
    assert reasons == {"s-001": "unknown_unit", "s-002": "bad_truth", "s-003": "bad_truth", "s-004": "bad_truth",
                       "s-005": "duplicate_id", "s-009": "missing_image"}
    assert all(s["message"] and s["where"].startswith("train-00000") for s in bench.skipped)
    assert bench.info["skipped_by_reason"]["bad_truth"] == 3


def test_load_spatialforge_malformed(tmp_path):
    with pytest.raises(DatasetError, match="not a spatialforge dataset"):
        load_spatialforge(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match=r"train-00000-of-00001.parquet.*not a readable Parquet"):
        load_spatialforge(tmp_path)
    pq.write_table(pa.table({"scene_id": ["a"]}), tmp_path / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(DatasetError, match=r"missing column.*image, qa"):
        load_spatialforge(tmp_path)


# --------------------------------------------------------------------------------------------------
# Benchmark container


def _item(i: int, kind: str = "yes_no", type_: str = "t") -> BenchmarkItem:
    if kind == "choice":
        return BenchmarkItem(f"i{i:03d}", "b", "q?", "choice", type_, 0, "option", options=("a", "b"))
    if kind == "quantitative":
        return BenchmarkItem(f"i{i:03d}", "b", "q?", "quantitative", type_, 1.0, "m")
    return BenchmarkItem(f"i{i:03d}", "b", "q?", "yes_no", type_, True, "bool")


def test_subset_is_deterministic_and_nested():
    items = [_item(i, ("yes_no", "choice", "quantitative")[i % 3], f"t{i % 2}") for i in range(60)]
    bench = Benchmark("b", items, "src", [{"id": None, "reason": "x", "message": "m", "where": "w"}])
    a, b = bench.subset(limit=10, seed=4), bench.subset(limit=10, seed=4)
    assert [i.id for i in a] == [i.id for i in b] and len(a) == 10
    assert [i.id for i in a] != [i.id for i in bench.subset(limit=10, seed=5)]
    assert set(i.id for i in bench.subset(limit=5, seed=4)) <= set(i.id for i in a)
    assert [i.id for i in a] == sorted(i.id for i in a)  # original order kept
    # independent of the order of the items
    shuffled = Benchmark("b", list(reversed(items)))
    assert sorted(i.id for i in shuffled.subset(limit=10, seed=4)) == sorted(i.id for i in a)
    yn = bench.subset(kinds="yes_no")
    assert len(yn) == 20 and all(i.kind == "yes_no" for i in yn)
    t0 = bench.subset(types=["t0"], kinds=("choice", "quantitative"))
    assert all(i.type == "t0" and i.kind != "yes_no" for i in t0) and len(t0) == 20
    assert len(bench.subset(limit=1000)) == 60 and len(bench.subset(limit=0)) == 0
    assert a.skipped == bench.skipped and a.info["subset"] == {"types": None, "kinds": None, "limit": 10, "seed": 4,
                                                              "of": 60}
    with pytest.raises(ConfigError, match="unknown kind"):
        bench.subset(kinds=["yesno"])
    with pytest.raises(ConfigError, match="limit"):
        bench.subset(limit=-1)
    assert bench.by_id("i007").id == "i007"
    with pytest.raises(KeyError, match="no item 'nope'"):
        bench.by_id("nope")
    with pytest.raises(ConfigError, match="duplicate item id"):
        Benchmark("b", [_item(1), _item(1)])
    assert bench.counts()["per_kind"] == {"choice": 20, "quantitative": 20, "yes_no": 20}


# --------------------------------------------------------------------------------------------------
# Q-Spatial Bench


def _check_qspatial(bench, expected_ids):
    assert [i.id for i in bench] == expected_ids
    for item in bench:
        assert item.kind == "quantitative" and item.unit == "m" and item.benchmark == "qspatial"
        assert item.truth == pytest.approx(fx.QSPATIAL_EXPECTED[item.id], abs=1e-9)
        assert item.load_image().size == (64, 48)
    reasons = {s["id"]: s["reason"] for s in bench.skipped}
    assert reasons == {k: v for k, v in fx.QSPATIAL_SKIPS.items() if k.rsplit("-", 1)[0] in bench.info["splits"]}
    assert all(s["id"] in s["message"] for s in bench.skipped)


def test_load_qspatial_parquet(tmp_path):
    root = fx.write_qspatial_parquet(tmp_path / "qs")
    images = fx.write_scannet_images(tmp_path / "scannet")
    bench = load_qspatial(root, image_root=images)
    _check_qspatial(bench, list(fx.QSPATIAL_EXPECTED))
    plus = bench.by_id("QSpatial_plus-0000")
    assert plus.type == "horizontal_distance" and plus.image_bytes is not None
    assert plus.reference_answer == "96 centimeter"
    assert plus.meta["question_type"] == "horizontal_distance" and plus.meta["split"] == "QSpatial_plus"
    assert bench.by_id("QSpatial_plus-0001").truth == 0.3  # float32 0.3 read back as 0.3
    feet = bench.by_id("QSpatial_plus-0002")
    assert feet.truth == 0.9144 and feet.type == "1d_horizontal"  # 3 feet
    scan = bench.by_id("QSpatial_scannet-0000")
    assert scan.type == "height" and scan.image_bytes is None and scan.image_path.endswith("scene0015_00/color/0.jpg")
    # one split, and one file
    only = load_qspatial(root, split="QSpatial_plus")
    _check_qspatial(only, [k for k in fx.QSPATIAL_EXPECTED if k.startswith("QSpatial_plus")])
    one = load_qspatial(root / "data" / "QSpatial_scannet-00000-of-00001.parquet")
    assert [s["reason"] for s in one.skipped] == ["missing_image", "missing_image"] and len(one) == 0
    assert "pass image_root" in one.skipped[0]["message"]
    with pytest.raises(ConfigError, match=r"no split 'QSpatial_other'.*QSpatial_plus"):
        load_qspatial(root, split="QSpatial_other")


def test_load_qspatial_save_to_disk_and_jsonl(tmp_path):
    images = fx.write_scannet_images(tmp_path / "scannet")
    disk = fx.write_qspatial_save_to_disk(tmp_path / "disk")
    bench = load_qspatial(disk, image_root=images)
    _check_qspatial(bench, list(fx.QSPATIAL_EXPECTED))
    parquet = load_qspatial(fx.write_qspatial_parquet(tmp_path / "pq"), image_root=images)
    assert [(i.id, i.truth, i.image_bytes) for i in bench] == [(i.id, i.truth, i.image_bytes) for i in parquet]
    jl = load_qspatial(fx.write_qspatial_jsonl(tmp_path / "export" / "QSpatial_scannet.jsonl"), image_root=images)
    assert [i.id for i in jl] == ["QSpatial_scannet-0000"] and jl.items[0].truth == 1.0
    assert sorted(s["reason"] for s in jl.skipped) == ["bad_record", "missing_image"]


def test_load_qspatial_malformed(tmp_path):
    bad = tmp_path / "data" / "QSpatial_plus-00000-of-00001.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"QSpatial_plus-00000-of-00001.parquet.*not a readable Parquet"):
        load_qspatial(tmp_path)
    pq.write_table(pa.table({"question": ["q"], "answer": [1.0]}), bad)
    with pytest.raises(DatasetError, match=r"missing column.*answer_value, answer_unit"):
        load_qspatial(tmp_path)
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_qspatial(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="Hugging Face Hub"):  # the tests run offline
        load_qspatial("andrewliao11/Q-Spatial-Bench", split="QSpatial_plus")


def test_parse_length_units():
    assert parse_length_m("3 feet") == pytest.approx(0.9144)
    assert parse_length_m("Region [0] is 30 inches in height.") == pytest.approx(0.762)
    assert parse_length_m("It is 48.47 centimeters.") == pytest.approx(0.4847)
    assert parse_length_m("5 feet 3 inches") == pytest.approx(1.6002)
    assert parse_length_m("1,250 mm") == pytest.approx(1.25)
    assert parse_length_m("Region [0] and Region [1] are 11.4 meters apart.") == pytest.approx(11.4)
    for text in ("no vertical distance", "30 in height", "2 m or 3 m", "Region [1]"):
        assert parse_length_m(text) is None, text


# --------------------------------------------------------------------------------------------------
# SpatialRGPT-Bench


def _check_spatialrgpt(bench):
    assert [i.id for i in bench] == list(fx.SPATIALRGPT_EXPECTED)
    for item in bench:
        kind, type_, unit, truth, options = fx.SPATIALRGPT_EXPECTED[item.id]
        assert (item.kind, item.type, item.unit, item.options) == (kind, type_, unit, options), item.id
        assert item.truth == pytest.approx(truth) and type(item.truth) is type(truth), item.id
        assert "<mask>" not in item.question and "Region [0]" in item.question
        assert item.meta["bbox"] and item.meta["rle"][0]["size"] == [48, 64]
        assert "<mask>" in item.meta["conversation_question"]
        # the regions are drawn on the image by default; clock answers use the benchmark's rounding
        assert isinstance(item, RegionMarkedItem) and item.benchmark == bench.name == "spatialrgpt+regions"
        assert [r.index for r in item.regions] == list(range(len(item.meta["bbox"])))
        assert item.meta["region_marks"] == "draw" and item.meta["clock_rounding"] == "up"


def test_load_spatialrgpt_json(tmp_path):
    path = fx.write_spatialrgpt(tmp_path / "bench")
    bench = load_spatialrgpt(path)
    _check_spatialrgpt(bench)
    assert {s["id"]: s["reason"] for s in bench.skipped} == fx.SPATIALRGPT_SKIPS
    item = bench.by_id("qualitative_TallCho1ce0")
    assert item.question == "Who is taller, Region [0] or Region [1]?" and item.options[item.truth] == "Region [1]"
    assert item.meta["category"] == "tall_choice" and item.meta["qa_type"] == "qualitative"
    assert item.meta["regions"] == 2 and item.meta["bbox"][1] == [12, 6, 38, 40]
    assert item.load_image().size == (64, 48) and item.image_path.endswith("NYU0001.jpg")
    # the folder works too, and an explicit image root
    assert [i.id for i in load_spatialrgpt(tmp_path / "bench", image_root=tmp_path / "bench")] == [i.id for i in bench]


def test_load_spatialrgpt_jsonl_and_malformed(tmp_path):
    path = fx.write_spatialrgpt_jsonl(tmp_path / "ann" / "bench.jsonl")
    images = fx.write_spatialrgpt_images(tmp_path / "omni3d")
    bench = load_spatialrgpt(path, image_root=images)
    _check_spatialrgpt(bench)
    assert sum(s["reason"] == "bad_record" for s in bench.skipped) == 1
    # without the image root every record lacks its image (checked before the answer)
    blind = load_spatialrgpt(path)
    assert len(blind) == 0
    assert sum(s["reason"] == "missing_image" for s in blind.skipped) == len(fx.SPATIALRGPT_RECORDS)
    # a Parquet export with stringified nested fields and embedded images
    exported = load_spatialrgpt(fx.write_spatialrgpt_parquet(tmp_path / "pq"))
    _check_spatialrgpt(exported)
    assert {s["id"]: s["reason"] for s in exported.skipped} == fx.SPATIALRGPT_SKIPS
    assert exported.items[0].image_bytes is not None
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"id\": 1,", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.json.*not valid JSON"):
        load_spatialrgpt(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"id": "a", "question": "q"}]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"other.json.*conversations"):
        load_spatialrgpt(other)
    (tmp_path / "two").mkdir()
    for n in ("a.json", "b.jsonl"):
        (tmp_path / "two" / n).write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match="cannot tell which file"):
        load_spatialrgpt(tmp_path / "two")


# --------------------------------------------------------------------------------------------------
# Synthetic benchmark and dispatch


def test_build_synthetic_benchmark_is_deterministic(tmp_path):
    from spatialforge.synth import SynthConfig

    small = SynthConfig(width=320, height=240)
    a = build_synthetic_benchmark(tmp_path / "a", n_scenes=3, seed=11, qa_per_image=8, progress=False, synth=small)
    b = build_synthetic_benchmark(tmp_path / "b", n_scenes=3, seed=11, qa_per_image=8, progress=False, synth=small)
    ba, bb = load_spatialforge(a), load_spatialforge(b)
    assert len(ba) > 0 and ba.name == "spatialforge-synthetic-11"
    assert [(i.id, i.truth, i.options) for i in ba] == [(i.id, i.truth, i.options) for i in bb]
    desc = json.loads((a / "benchmark.json").read_text())
    assert desc == json.loads((b / "benchmark.json").read_text())
    assert desc["seed"] == 11 and desc["n_scenes"] == 3 and desc["counts"]["items"] == len(ba)
    assert desc["created_by"].endswith("build_synthetic_benchmark") and desc["spatialforge_version"]
    assert ba.info["descriptor"] == desc and not (a / "_scenes").exists()
    assert [i.id for i in load_benchmark(str(a))] == [i.id for i in ba]
    with pytest.raises(ConfigError, match="already holds a benchmark"):
        build_synthetic_benchmark(a, n_scenes=3, progress=False, synth=small)
    with pytest.raises(ConfigError, match="n_scenes"):
        build_synthetic_benchmark(tmp_path / "c", n_scenes=0, progress=False)


def test_load_benchmark_dispatch(tmp_path, generated):
    root = fx.write_qspatial_parquet(tmp_path / "qs")
    plus = load_benchmark(f"qspatial:{root}:QSpatial_plus")
    assert plus.info["splits"] == ["QSpatial_plus"] and len(plus) == 3
    assert len(load_benchmark(f"qspatial:{root}")) == 3  # the scannet frames are missing here
    srgpt = fx.write_spatialrgpt(tmp_path / "srgpt")
    assert len(load_benchmark(f"spatialrgpt:{srgpt}")) == len(fx.SPATIALRGPT_EXPECTED)
    assert len(load_benchmark(f"spatialforge:{generated}")) == len(load_spatialforge(generated))
    for spec in ("mmbench:foo", str(tmp_path / "missing"), "", "qspatial:"):
        with pytest.raises(ConfigError, match="qspatial:PATH_OR_HUB"):
            load_benchmark(spec)


def test_qspatial_split_over_several_parquet_files_keeps_every_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .bench_fixtures import QSPATIAL_PLUS, _qspatial_records, _qspatial_schema

    rows = [r for r in QSPATIAL_PLUS if r[5]]  # rows with an embedded image
    half = len(rows) // 2
    for k, part in enumerate((rows[:half], rows[half:])):
        path = tmp_path / "data" / f"QSpatial_plus-{k:05d}-of-00002.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(_qspatial_records(part), schema=_qspatial_schema()), path)
    bench = load_qspatial(tmp_path, "QSpatial_plus")
    ids = sorted([it.id for it in bench] + [s["id"] for s in bench.skipped])  # one row has an unknown unit
    assert ids == [f"QSpatial_plus-{i:04d}" for i in range(len(rows))]
    assert not [s for s in bench.skipped if s["reason"] == "duplicate_id"]
