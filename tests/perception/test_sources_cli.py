"""A large mixed batch of photo inputs through ``spatialforge generate``, with tiny random models on disk.

One folder holds photo files, a WebDataset tar shard and two Parquet tables, with every kind of bad
item among good ones; the command line reads it all, records each bad item with its reason, skips
duplicates, writes nothing outside ``--out``, and a rerun resumes without opening the complete shards.
The tiny models (OWLv2, Depth Anything V2) are built from configs and passed as ``--*-model``
folders, as in ``test_end_to_end_tiny.py``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialforge.cli.main import build_parser
from spatialforge.cli.photos import photo_source
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.synth import SynthConfig, generate_scene

from .test_sources import _png_of_zeros

W, H = 160, 120


def _args(*argv: str):
    return build_parser().parse_args(["generate", *argv, "--out", "out"])


def test_the_command_line_names_each_source_once(tmp_path):
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w"):
        pass
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.array([b"x"], pa.binary()), "key": ["a"]}), table)
    src = photo_source(_args("--webdataset", str(tmp_path / "s-{000..001}.tar"), "--webdataset", "http://h/x.tar"))
    assert src.webdataset == (str(tmp_path / "s-{000..001}.tar"), "http://h/x.tar")
    src = photo_source(_args("--parquet", str(table), "--id-column", "key", "--focal-column", "f", "--path-root",
                             str(tmp_path), "--image-column", "img", "--limit", "3"))
    assert (src.parquet, src.id_column, src.focal_column, src.path_root, src.image_column, src.limit) == (
        table, "key", "f", tmp_path, "img", 3)
    assert photo_source(_args("--hf-dataset", "user/photos", "--streaming", "--split", "val")).streaming is True
    assert photo_source(_args("--parquet", str(table))).inputs() == [table]
    assert photo_source(_args("--webdataset", str(shard))).inputs() == [shard]
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "only.tar").write_bytes(shard.read_bytes())
    assert photo_source(_args(str(folder))).folder == folder  # a folder of shards is a photo input
    for argv, says in (([str(folder), "--parquet", str(table)], "give one source of inputs, not a folder and "
                                                                 "--parquet"),
                       (["--hf-dataset", "x", "--webdataset", str(shard)], "not --hf-dataset and --webdataset"),
                       ([], "give a folder (RGB-D scenes, or photos / WebDataset shards / Parquet tables)"),
                       (["--parquet", str(table), "--streaming"], "--streaming reads a Hugging Face dataset"),
                       ([str(tmp_path / "missing")], "no such folder")):
        with pytest.raises(SpatialForgeError, match=says.replace("(", r"\(").replace(")", r"\)")):
            photo_source(_args(*argv))
    scenes = tmp_path / "rgbd" / "scene0"
    scenes.mkdir(parents=True)
    (scenes / "objects.json").write_text("[]")
    assert photo_source(_args(str(tmp_path / "rgbd"))) is None  # RGB-D scenes: not a photo source
    with pytest.raises(ConfigError):
        photo_source(_args("--webdataset", str(shard), "--id-column", "k"))


# ----------------------------------------------------------------------------- the mixed batch
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from .tiny_depth import build_tiny_depth_anything
    from .tiny_detectors import build_tiny_owlv2

    root = tmp_path_factory.mktemp("tiny_source_models")
    return {"owl": build_tiny_owlv2(root / "owl"), "da": build_tiny_depth_anything(root / "da")}


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(generate_scene(seed, seed=17, config=SynthConfig(width=W, height=H)).image)


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _mixed_batch(root: Path) -> tuple[Path, dict[str, str]]:
    """The input folder and, per expected id, its expected outcome (``ok``, a reason, or ``dup:<first id>``)."""
    d = root / "in"
    (d / "imgs").mkdir(parents=True)
    expect: dict[str, str] = {}
    good = [_bytes(_photo(k), "JPEG") for k in range(3)]
    for k, data in enumerate(good):
        (d / f"good{k}.jpg").write_bytes(data)
        expect[f"good{k}"] = "ok"
    (d / "good0_copy.jpg").write_bytes(good[0])  # sorted after good0.jpg: the copy is the duplicate
    expect["good0_copy"] = "dup:good0"
    (d / "png_named.jpg").write_bytes(_bytes(_photo(3), "PNG"))
    expect["png_named"] = "ok"
    sixteen = (np.asarray(_photo(4).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(d / "sixteen.png")
    expect["sixteen"] = "ok"
    _photo(5).convert("CMYK").save(d / "cmyk.jpg")
    expect["cmyk"] = "ok"
    (d / "truncated.jpg").write_bytes(_bytes(_photo(6), "JPEG")[:1500])
    expect["truncated"] = "unreadable"
    (d / "empty.jpg").write_bytes(b"")
    expect["empty"] = "empty"
    (d / "huge.png").write_bytes(_png_of_zeros(20_000, 20_000))
    expect["huge"] = "too_large"

    members = [("s0.jpg", _bytes(_photo(7), "JPEG")), ("s0.json", b'{"caption": "a room"}'),
               ("s1.png", _bytes(_photo(8), "PNG")), ("../evil.jpg", good[2]), ("notes.txt", b"text only"),
               ("s2.jpg", good[1])]
    with tarfile.open(d / "shard-000.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("s3.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
        tar.addfile(link)
    expect.update({"s0": "ok", "s1": "ok", "notes": "no_image", "s2": "dup:good1", "rejected:bad_name": "bad_name",
                   "rejected:not_a_file": "not_a_file"})

    pq.write_table(pa.table({"image": pa.array([_bytes(_photo(9), "PNG"), None], pa.binary())}), d / "bytes.parquet")
    expect.update({"bytes-00000": "ok", "bytes-00001": "null_image"})
    _photo(10).save(d / "imgs" / "t0.png")
    _photo(11).save(root / "outside.png")
    pq.write_table(pa.table({"image": pa.array(["imgs/t0.png", "../outside.png", "imgs/missing.png",
                                                str(root / "outside.png")], pa.string())}), d / "paths.parquet")
    expect.update({"paths-00000": "ok", "paths-00001": "outside_root", "paths-00002": "missing_file",
                   "paths-00003": "outside_root"})
    return d, expect


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*") if not p.is_relative_to(skip)}


def test_a_mixed_batch_through_the_cli_records_every_bad_item_and_keeps_every_good_one(models, tmp_path, capsys):
    from spatialforge.cli.main import main
    from spatialforge.pipeline.generate import DATASET_OUTPUT

    folder, expect = _mixed_batch(tmp_path)
    tags = tmp_path / "tags.txt"
    tags.write_text("chair\ntable\ncup\n")
    out = tmp_path / "out"
    argv = ["generate", str(folder), "--out", str(out), "--no-progress", "--device", "cpu", "--qa-per-image", "6",
            "--filter", "none", "--vocabulary", str(tags), "--embedder", "none", "--captioner", "label",
            "--segmenter", "box", "--detector", "owlv2", "--detector-model", str(models["owl"]),
            "--score-threshold", "0", "--depth-model", str(models["da"]), "--assume-hfov", "60", "--batch-size", "4"]
    before = _tree(tmp_path, out)
    cwd_before = sorted(os.listdir(Path.cwd()))
    assert main(argv) == 0
    assert _tree(tmp_path, out) == before and sorted(os.listdir(Path.cwd())) == cwd_before  # nothing outside --out
    assert all(DATASET_OUTPUT.owned(entry) for entry in os.listdir(out))  # --overwrite can clean all of it

    records = {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}
    rejected = {k: r for k, r in records.items() if k.startswith("rejected-")}
    assert sorted(r["reason"] for r in rejected.values()) == ["bad_name", "not_a_file"]
    assert len(records) == len(expect)
    for image_id, want in expect.items():
        if image_id.startswith("rejected:"):
            continue
        rec = records[image_id]
        if want == "ok":  # every good photo was read and decoded, and became a scene
            assert rec["status"] == "ok", (image_id, rec)
            assert (out / "scenes" / image_id / "image.png").is_file()
        elif want.startswith("dup:"):
            assert rec["status"] == "duplicate" and rec["duplicate_of"] == want[4:], (image_id, rec)
        else:
            assert rec["status"] == "failed" and rec["reason"] == want and rec["stage"] == "load", (image_id, rec)
            assert rec["message"].startswith(rec["source"]), rec
    assert records["png_named"]["image_meta"]["format"] == "PNG"
    assert records["sixteen"]["image_meta"]["converted_from"] == "I;16"
    assert records["cmyk"]["image_meta"]["converted_from"] == "CMYK"
    assert load_ok(out) == sorted(k for k, v in expect.items() if v == "ok")

    manifest = json.loads((out / "manifest.json").read_text())
    p = manifest["perception"]
    assert p["duplicates"] == 2 and p["ok"] == 10
    assert p["failed_by_reason"] == {"bad_name": 1, "empty": 1, "missing_file": 1, "no_image": 1, "not_a_file": 1,
                                     "null_image": 1, "outside_root": 2, "too_large": 1, "unreadable": 1}
    assert p["source"]["kind"] == "folder" and p["source"]["shards"] == 4 and p["source"]["shards_failed"] == 0
    assert manifest["counts"]["scenes_found"] == 10

    # the same command again: everything resumes; the tar shard and the tables are not opened
    capsys.readouterr()
    assert main(argv) == 0
    again = json.loads((out / "manifest.json").read_text())["perception"]
    assert again["resumed"] == len(records) and again["stages"]["depth"]["images"] == 0
    assert again["source"]["shards_resumed"] == 3 and again["source"]["shards_read"] == 1  # the photo files' listing


def load_ok(out: Path) -> list[str]:
    from spatialforge.io.scene_folder import load_scene

    ok = sorted(p.name for p in (out / "scenes").iterdir() if p.is_dir())
    for image_id in ok:
        scene = load_scene(out / "scenes" / image_id)
        assert scene.image.shape == (H, W, 3) and scene.image.dtype == np.uint8
    return ok


@pytest.mark.parametrize("flag", ["--webdataset", "--parquet"])
def test_the_command_line_reads_webdataset_shards_and_parquet_tables_named_by_flag(models, tmp_path, flag, capsys):
    from spatialforge.cli.main import main

    folder, _expect = _mixed_batch(tmp_path)
    source = folder / ("shard-000.tar" if flag == "--webdataset" else "bytes.parquet")
    tags = tmp_path / "tags.txt"
    tags.write_text("chair\ntable\ncup\n")
    out = tmp_path / "out"
    argv = ["generate", flag, str(source), "--out", str(out), "--no-progress", "--device", "cpu",
            "--qa-per-image", "6", "--filter", "none", "--vocabulary", str(tags), "--embedder", "none",
            "--captioner", "label", "--segmenter", "box", "--detector", "owlv2", "--detector-model",
            str(models["owl"]), "--score-threshold", "0", "--depth-model", str(models["da"]), "--assume-hfov", "60"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    p = manifest["perception"]
    want_ok = ["s0", "s1", "s2"] if flag == "--webdataset" else ["bytes-00000"]
    assert load_ok(out) == want_ok
    assert p["source"]["kind"] == ("webdataset" if flag == "--webdataset" else "parquet")
    # the source's bad items are recorded (the tar's duplicate of good1 is no duplicate on its own)
    assert p["ok"] == len(want_ok) and p["failed"] == (3 if flag == "--webdataset" else 1)
    capsys.readouterr()
    assert main([*argv[:3], "--out", str(source.parent), "--overwrite", *argv[5:]]) == 2  # --out holds the source
    assert f"contains the input {source}" in capsys.readouterr().err and source.is_file()
