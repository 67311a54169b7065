"""End to end: run_generate on scene folders -> Parquet shards, scene graphs, manifest, export."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialforge.errors import SpatialForgeError
from spatialforge.io.export import export_llava
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.qa import QAConfig

BROKEN = "synth_000002_broken"
QA_KEYS = {"id", "type", "kind", "question", "answer", "value", "unit", "subjects", "roles", "names"}
KINDS = {"quantitative", "yes_no", "choice"}


def _cfg(seed: int = 0, shard_size: int = 2, **qa) -> GenerateConfig:
    return GenerateConfig(qa=QAConfig(seed=seed, **qa), shard_size=shard_size)


def _rows(out: Path, columns=("scene_id", "qa", "messages")) -> list[dict]:
    files = sorted((out / "data").glob("*.parquet"))
    assert files, f"no shards under {out}/data"
    rows = [r for f in files for r in pq.read_table(f, columns=list(columns)).to_pylist()]
    return sorted(rows, key=lambda r: r["scene_id"])


@pytest.fixture(scope="module")
def scenes(synth_dir, tmp_path_factory) -> Path:
    """synth_dir plus one scene whose camera.json has a negative focal length."""
    root = tmp_path_factory.mktemp("pipe") / "scenes"
    shutil.copytree(synth_dir, root)
    shutil.copytree(root / "synth_000002", root / BROKEN)
    cam = json.loads((root / BROKEN / "camera.json").read_text())
    cam["fx"] = -cam["fx"]
    (root / BROKEN / "camera.json").write_text(json.dumps(cam))
    return root


@pytest.fixture(scope="module")
def ok_ids(scenes) -> list[str]:
    return sorted(p.name for p in scenes.iterdir() if p.is_dir() and p.name != BROKEN)


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    """One generate run (seed 0, 2 scenes per shard -> 4 shards for 7 scenes)."""
    out = tmp_path_factory.mktemp("pipe_out") / "out"
    manifest = run_generate(scenes, out, _cfg(), progress=False, log=lambda m: None)
    return out, manifest


# ----------------------------------------------------------------------------- manifest


def test_manifest_counts(run, scenes, ok_ids):
    out, m = run
    c = m["counts"]
    assert c["scenes_found"] == len(ok_ids) + 1 == 7
    assert c["scenes_ok"] == len(ok_ids)
    assert c["rows"] == len(ok_ids)
    assert c["scenes_rejected"] == 1
    assert c["scenes_failed"] == 0
    assert c["rejected_by_reason"] == {"bad_intrinsics": 1}
    assert c["qa_pairs"] > 0
    assert sum(c["per_type"].values()) == c["qa_pairs"]
    assert sum(c["per_kind"].values()) == c["qa_pairs"]
    assert set(c["per_kind"]) <= KINDS
    assert c["gravity"]["plane"] + c["gravity"]["camera_prior"] == len(ok_ids)
    assert c["qa_per_scene"] == pytest.approx(c["qa_pairs"] / len(ok_ids), abs=1e-3)
    assert m["shards"] == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    assert m["shards_resumed"] == 0
    assert m["fingerprint"] == _cfg().fingerprint()
    # the manifest on disk is the returned one
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(m))
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(_cfg().to_dict()))


def test_manifest_rejected_entry(run, scenes):
    _, m = run
    [rej] = m["rejected"]
    assert rej["scene_id"] == BROKEN
    assert rej["path"] == str(scenes / BROKEN)
    assert rej["reason"] == "bad_intrinsics"
    assert "camera.json" in rej["message"] and "focal lengths must be positive" in rej["message"]
    assert BROKEN in rej["message"]
    assert m["failed"] == []


def test_manifest_matches_parquet(run):
    out, m = run
    rows = _rows(out)
    per_type = Counter(q["type"] for r in rows for q in r["qa"])
    per_kind = Counter(q["kind"] for r in rows for q in r["qa"])
    assert sum(len(r["qa"]) for r in rows) == m["counts"]["qa_pairs"]
    assert dict(per_type) == m["counts"]["per_type"]
    assert dict(per_kind) == m["counts"]["per_kind"]
    for r in rows:
        assert 0 < len(r["qa"]) <= QAConfig().qa_per_image


def test_rejection_is_logged(scenes, tmp_path):
    messages: list[str] = []
    run_generate(scenes, tmp_path / "o", GenerateConfig(), progress=False, log=messages.append)
    assert len(messages) == 1
    assert messages[0].startswith("rejected: ") and BROKEN in messages[0]


# ----------------------------------------------------------------------------- scene graphs


def test_one_scene_graph_per_ok_scene(run, ok_ids):
    out, _ = run
    files = sorted(p.name for p in (out / "scene_graphs").iterdir())
    assert files == [f"{s}.json" for s in ok_ids]
    for s in ok_ids:
        g = json.loads((out / "scene_graphs" / f"{s}.json").read_text())
        assert g["scene_id"] == s
        assert g["format"] == "spatialforge-scene-graph/1"
        assert g["objects"], s
        assert set(g["references"]) <= {str(o["id"]) for o in g["objects"]}


def test_caption_without_pixels_is_skipped_not_visible(synth_dir, tmp_path):
    scenes = tmp_path / "scenes"
    shutil.copytree(synth_dir, scenes)
    objs_path = scenes / "synth_000000" / "objects.json"
    objs = json.loads(objs_path.read_text())
    objs.append({"id": 999, "caption": "green lamp"})
    objs_path.write_text(json.dumps(objs))
    m = run_generate(scenes, tmp_path / "o", GenerateConfig(), progress=False, log=lambda s: None)
    assert m["counts"]["scenes_rejected"] == 0
    assert m["counts"]["objects_skipped"].get("not_visible") == 1
    g = json.loads((tmp_path / "o" / "scene_graphs" / "synth_000000.json").read_text())
    assert [(s["id"], s["reason"]) for s in g["skipped_objects"] if s["id"] == 999] == [(999, "not_visible")]
    assert all(999 not in q["subjects"] for r in _rows(tmp_path / "o") for q in r["qa"])


# ----------------------------------------------------------------------------- Parquet + HF datasets


@pytest.fixture(scope="module")
def hf_rows(run, tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    out, _ = run
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path_factory.mktemp("hf_cache")))
    return ds


def test_hf_load_and_image(hf_rows, scenes, ok_ids):
    ds = hf_rows
    assert ds.num_rows == len(ok_ids)
    assert sorted(ds["scene_id"]) == ok_ids
    assert type(ds.features["image"]).__name__ == "Image"
    for row in ds:
        img = row["image"]
        assert isinstance(img, Image.Image)
        ref = Image.open(scenes / row["scene_id"] / "image.png")
        assert img.size == ref.size == (row["width"], row["height"]) == (320, 240)
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), np.asarray(ref.convert("RGB")))
        assert row["gravity_source"] in ("plane", "camera_prior")


def test_hf_messages_chat_format(hf_rows):
    for row in hf_rows:
        msgs, qa = row["messages"], row["qa"]
        assert len(msgs) == 2 * len(qa)
        assert [m["role"] for m in msgs] == ["user", "assistant"] * len(qa)
        first = msgs[0]["content"]
        assert [c["type"] for c in first] == ["image", "text"]
        assert first[0]["text"] is None
        for i, pair in enumerate(qa):
            user, assistant = msgs[2 * i]["content"], msgs[2 * i + 1]["content"]
            if i > 0:
                assert [c["type"] for c in user] == ["text"]  # the image only in the first turn
            assert user[-1]["type"] == "text" and user[-1]["text"] == pair["question"]
            assert len(assistant) == 1 and assistant[0]["type"] == "text"
            assert assistant[0]["text"] == pair["answer"]


def test_hf_qa_records(hf_rows, scenes):
    ids = []
    for row in hf_rows:
        objects = json.loads((scenes / row["scene_id"] / "objects.json").read_text())
        known = {o["id"] for o in objects}
        for q in row["qa"]:
            assert set(q) == QA_KEYS
            ids.append(q["id"])
            assert q["id"].startswith(row["scene_id"] + "-")
            assert q["kind"] in KINDS
            assert q["question"].strip() and q["answer"].strip()
            assert q["question"] != q["answer"]
            assert q["subjects"], q
            assert set(q["subjects"]) <= known, (q, known)
            assert len(q["roles"]) == len(q["subjects"])
            assert set(q["roles"]) <= {"A", "B", "C"}
            assert len(set(q["roles"])) == len(q["roles"])
            assert len(q["names"]) == len(q["subjects"])
            for name in q["names"]:  # every subject is named in the question as the QA engine referred to it
                assert name.lower() in q["question"].lower(), (name, q["question"])
            if q["kind"] == "choice":  # the answer names the chosen object
                chosen = q["names"][q["subjects"].index(int(q["value"]))]
                assert chosen.split()[-1].lower() in q["answer"].lower(), (chosen, q["answer"])
            assert np.isfinite(q["value"])
            if q["kind"] == "yes_no":
                assert q["value"] in (0.0, 1.0) and q["unit"] == "bool"
            elif q["kind"] == "choice":
                assert q["unit"] == "object"
                assert int(q["value"]) in q["subjects"]
            else:
                assert q["unit"] in ("m", "ratio", "clock")
                if q["unit"] == "m":
                    assert q["value"] >= 0
    assert len(ids) == len(set(ids)), "qa ids must be unique"


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_content(run, scenes, tmp_path):
    out, m = run
    # a different shard size must not change any scene's content (randomness is per scene)
    m2 = run_generate(scenes, tmp_path / "again", _cfg(seed=0, shard_size=256), progress=False,
                      log=lambda s: None)
    assert _rows(out) == _rows(tmp_path / "again")
    assert m2["counts"]["per_type"] == m["counts"]["per_type"]


def test_different_seed_different_questions(run, scenes, tmp_path):
    out, _ = run
    run_generate(scenes, tmp_path / "seed1", _cfg(seed=1), progress=False, log=lambda s: None)
    a = [q["question"] for r in _rows(out) for q in r["qa"]]
    b = [q["question"] for r in _rows(tmp_path / "seed1") for q in r["qa"]]
    assert a != b
    assert len(set(a) ^ set(b)) > len(a) // 2


# ----------------------------------------------------------------------------- resume


def test_resume_rewrites_only_missing_shard(run, scenes, tmp_path):
    src, m1 = run
    out = tmp_path / "resume"
    shutil.copytree(src, out)
    shards = sorted((out / "data").glob("*.parquet"))
    assert len(shards) == 4
    victim = shards[1]
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in shards if p != victim}

    m2 = run_generate(scenes, out, _cfg(), progress=False, log=lambda s: None)

    assert victim.is_file()
    assert m2["shards_resumed"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in shards if p != victim} == before  # untouched
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == m1["shards"]
    assert _rows(out, ("scene_id", "qa", "messages", "image", "width", "height")) == \
        _rows(src, ("scene_id", "qa", "messages", "image", "width", "height"))
    for key in ("scenes_found", "scenes_ok", "scenes_rejected", "qa_pairs", "per_type", "per_kind",
                "rejected_by_reason"):
        assert m2["counts"][key] == m1["counts"][key], key
    assert m2["rejected"] == m1["rejected"]


def test_resume_complete_output_reuses_every_shard(run, scenes, tmp_path):
    src, m1 = run
    out = tmp_path / "complete"
    shutil.copytree(src, out)
    m2 = run_generate(scenes, out, _cfg(), progress=False, log=lambda s: None)
    assert m2["shards_resumed"] == 4
    assert m2["counts"]["qa_pairs"] == m1["counts"]["qa_pairs"]
    assert _rows(out) == _rows(src)


def test_different_config_into_same_out_raises(run, scenes, tmp_path):
    src, _ = run
    out = tmp_path / "other_cfg"
    shutil.copytree(src, out)
    with pytest.raises(SpatialForgeError, match=r"configuration changed \(.*qa\.seed 0 -> 1"):
        run_generate(scenes, out, _cfg(seed=1), progress=False, log=lambda s: None)
    with pytest.raises(SpatialForgeError, match=r"configuration changed \(qa\.qa_per_image 10 -> 3\)"):
        run_generate(scenes, out, _cfg(qa_per_image=3), progress=False, log=lambda s: None)
    assert _rows(out) == _rows(src)  # nothing was overwritten


def test_different_shard_size_into_same_out_raises(run, scenes, tmp_path):
    src, _ = run
    out = tmp_path / "other_shards"
    shutil.copytree(src, out)
    with pytest.raises(SpatialForgeError, match=r"configuration changed \(shard_size 2 -> 3\)"):
        run_generate(scenes, out, _cfg(shard_size=3), progress=False, log=lambda s: None)


def test_added_scene_does_not_leave_stale_shards(run, scenes, tmp_path):
    src, _m1 = run
    out = tmp_path / "grown"
    shutil.copytree(src, out)
    more = tmp_path / "more_scenes"
    shutil.copytree(scenes, more)
    shutil.copytree(more / "synth_000000", more / "synth_000008")
    shutil.copytree(more / "synth_000000", more / "synth_000009")  # 9 scenes -> 5 shards of 2
    shutil.rmtree(more / "synth_000003")
    with pytest.raises(SpatialForgeError, match=r"scenes changed .*: 2 scenes added \(synth_000008, synth_000009\), "
                                                r"1 scene removed \(synth_000003\)"):
        run_generate(more, out, _cfg(), progress=False, log=lambda s: None)
    assert _rows(out) == _rows(src)  # nothing was overwritten


# ----------------------------------------------------------------------------- internal errors


def test_internal_error_is_counted_not_fatal(scenes, tmp_path, monkeypatch):
    import spatialforge.pipeline.generate as gen

    real = gen.build_scene_graph

    def flaky(scene, config):
        if scene.scene_id == "synth_000001":
            raise RuntimeError("boom")
        return real(scene, config)

    monkeypatch.setattr(gen, "build_scene_graph", flaky)
    logged: list[str] = []
    m = run_generate(scenes, tmp_path / "o", _cfg(), progress=False, log=logged.append)
    assert m["counts"]["scenes_failed"] == 1
    assert m["counts"]["scenes_ok"] == 5
    [f] = m["failed"]
    assert f["scene_id"] == "synth_000001" and "RuntimeError: boom" in f["error"]
    assert any("boom" in line for line in logged)
    with pytest.raises(RuntimeError, match="boom"):
        run_generate(scenes, tmp_path / "o2", GenerateConfig(fail_fast=True), progress=False,
                     log=lambda s: None)


# ----------------------------------------------------------------------------- LLaVA export


def test_export_llava(run, tmp_path, ok_ids, scenes):
    out, m = run
    info = export_llava(out, tmp_path / "llava")
    path = tmp_path / "llava" / "llava.json"
    assert info["path"] == str(path)
    records = json.loads(path.read_text())
    assert info["records"] == len(records) == len(ok_ids)
    assert info["qa_pairs"] == m["counts"]["qa_pairs"]
    assert sorted(r["id"] for r in records) == ok_ids
    for rec in records:
        img = tmp_path / "llava" / rec["image"]
        assert img.is_file()
        assert img.read_bytes() == (scenes / rec["id"] / "image.png").read_bytes()
        conv = rec["conversations"]
        assert len(conv) % 2 == 0 and conv
        assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("<image>\n")
        assert conv[0]["value"].count("<image>") == 1
        assert all("<image>" not in c["value"] for c in conv[1:])


def test_export_llava_without_shards(tmp_path):
    with pytest.raises(SpatialForgeError, match="no Parquet shards"):
        export_llava(tmp_path, tmp_path / "dest")


# ----------------------------------------------------------------------------- QA options


@pytest.mark.parametrize("share, allowed", [(1.0, {"quantitative"}), (0.0, {"yes_no", "choice"})])
def test_quantitative_share_extremes(synth_dir, tmp_path, share, allowed):
    m = run_generate(synth_dir, tmp_path / "o",
                     _cfg(shard_size=256, qa_per_image=4, quantitative_share=share), progress=False,
                     log=lambda s: None)
    kinds = Counter(q["kind"] for r in _rows(tmp_path / "o") for q in r["qa"])
    assert kinds and set(kinds) <= allowed, kinds
    assert sum(kinds.values()) == m["counts"]["qa_pairs"] == 4 * m["counts"]["scenes_ok"]


_IMPERIAL = re.compile(r"\b(inch|inches|foot|feet)\b")


def test_imperial_units(synth_dir, tmp_path):
    run_generate(synth_dir, tmp_path / "o", _cfg(shard_size=256, units="imperial", quantitative_share=1.0),
                 progress=False, log=lambda s: None)
    qa = [q for r in _rows(tmp_path / "o") for q in r["qa"]]
    lengths = [q for q in qa if q["unit"] == "m"]
    assert lengths
    for q in lengths:
        assert _IMPERIAL.search(q["answer"]), q["answer"]
    for q in qa:
        assert "metre" not in q["answer"].lower(), q["answer"]


def test_metric_units_by_default(run):
    out, _ = run
    lengths = [q for r in _rows(out) for q in r["qa"] if q["unit"] == "m"]
    assert lengths
    for q in lengths:
        assert "metre" in q["answer"], q["answer"]
        assert not _IMPERIAL.search(q["answer"]), q["answer"]


# ----------------------------------------------------------------------------- bad input


def test_empty_scenes_dir_raises(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(SpatialForgeError, match="no scene folders found"):
        run_generate(empty, tmp_path / "o", progress=False)


def test_missing_scenes_dir_raises(tmp_path):
    with pytest.raises(SpatialForgeError, match="no such directory"):
        run_generate(tmp_path / "absent", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_bad_shard_size():
    with pytest.raises(SpatialForgeError, match="shard_size"):
        GenerateConfig(shard_size=0)
