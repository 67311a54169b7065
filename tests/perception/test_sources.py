"""Photo sources at scale: folders, WebDataset tar shards, Parquet tables, Hugging Face datasets (streaming).

Every source is written here in its real on-disk format (tar files, Parquet files, a Hugging Face
data folder) and read through :func:`run_photos` with stub stages (no torch): what is checked is
the source contract - stable, safe, unique ids; every bad item recorded with its reason while the
run goes on; duplicates by content hash skipped and counted; resume by id without reading or
decoding finished items; input shards recorded and skipped when complete.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialforge.errors import ConfigError, RunFailedError, SpatialForgeError
from spatialforge.perception import image_io
from spatialforge.perception.backends.stub import (
    BoxSegmenter,
    GivenDepth,
    GivenDetector,
    KeepAllFilter,
    LabelCaptioner,
    NoTextEmbedder,
)
from spatialforge.perception.config import PerceptionConfig, StageSpec
from spatialforge.perception.image_io import SourceItem, safe_id
from spatialforge.perception.pipeline import PerceptionPipeline
from spatialforge.perception.types import Detections
from spatialforge.pipeline import GenerateConfig
from spatialforge.pipeline.photos import PhotoSource, run_photos
from spatialforge.pipeline.sources import IdAllocator, ParquetSource, SourceReader, WebDatasetSource

W, H = 96, 72


# ----------------------------------------------------------------------------- helpers
def _image(seed: int, fmt: str = "PNG", mode: str | None = None, size: tuple[int, int] = (W, H)) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pil = Image.fromarray(rgb)
    if mode is not None:
        pil = pil.convert(mode)
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]], links: tuple[tuple[str, str], ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _boxes(img: np.ndarray, prompts) -> Detections:
    h, w = img.shape[:2]
    return Detections(np.array([[w * .1, h * .1, w * .45, h * .55], [w * .5, h * .4, w * .9, h * .9]], np.float32),
                      np.ones(2, np.float32), ("box", "chair"))


def _pipeline(**cfg) -> PerceptionPipeline:
    """Stub stages that make a scene of any photo: two boxes, box masks, a 2 m plane, a 60 degree FOV."""
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), captioner=StageSpec("label"),
                              segmenter=StageSpec("box"), detector=StageSpec("given"), depth=StageSpec("given"),
                              score_threshold=0.0, min_area_frac=0.0, vocabulary=("box", "chair"),
                              assumed_hfov_deg=60.0, **cfg)
    depth = GivenDepth(lambda img: (np.full(img.shape[:2], 2.0, np.float32), None))
    return PerceptionPipeline(config, {"filter": KeepAllFilter(), "detector": GivenDetector(_boxes),
                                       "captioner": LabelCaptioner(), "segmenter": BoxSegmenter(), "depth": depth,
                                       "embedder": NoTextEmbedder()})


def _run(source, out: Path, **cfg) -> dict:
    return run_photos(source, out, _pipeline(**cfg), GenerateConfig(), progress=False)


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "perception" / "items").glob("*.json"))}


def _reasons(out: Path) -> dict[str, str]:
    return {k: r.get("reason", r["status"]) for k, r in _records(out).items()}


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` except under ``skip``: (size, mtime_ns)."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
            if not p.is_relative_to(skip)}


@pytest.fixture()
def decodes(monkeypatch) -> list[str]:
    """The ids of the photos decoded (``decode_image`` calls) while the test runs."""
    seen: list[str] = []
    real = image_io.decode_image

    def counting(img, image_id, *args, **kwargs):
        seen.append(image_id)
        return real(img, image_id, *args, **kwargs)

    monkeypatch.setattr(image_io, "decode_image", counting)
    return seen


class _Server:
    """A static HTTP server on 127.0.0.1 for a folder, recording the paths requested."""

    def __init__(self, folder: Path) -> None:
        requested = self.requested = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                requested.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    s = _Server(folder)
    s.folder = folder
    yield s
    s.close()


# ----------------------------------------------------------------------------- ids
def test_ids_are_safe_folder_names_unique_in_order_and_bounded():
    ids = IdAllocator()
    got = [ids.claim(k) for k in ("../../etc/passwd", "a/b", "a_b", "a b", "..", "", "/abs", "C:\\win\\x",
                                  "x" * 300, "x" * 299 + "y", "a_b")]
    assert got[:8] == ["etc_passwd", "a_b", "a_b_2", "a_b_3", "image", "image_2", "abs", "C_win_x"]
    assert got[10] == "a_b_4"
    assert len(set(got)) == len(got)
    for sid in got:
        assert "/" not in sid and "\\" not in sid and not sid.startswith(".") and sid not in (".", "..")
        assert len(sid) <= 100
    assert got[8] != got[9] and got[8].startswith("x" * 80)  # long names are cut, told apart by a hash
    assert safe_id("x" * 300) == got[8]  # the same name always gives the same id


# ----------------------------------------------------------------------------- WebDataset
def test_webdataset_brace_pattern_gives_key_ids_groups_members_and_records_shards(tmp_path):
    d = tmp_path / "wds"
    _tar(d / "shards-000.tar", [("000.jpg", _image(0, "JPEG")), ("000.json", b'{"caption": "x"}'),
                                ("./001.png", _image(1)), ("001.txt", b"a caption")])
    _tar(d / "shards-001.tar", [("sub/002.png", _image(2)), ("sub/002.jpg", _image(3, "JPEG")),
                                ("003.seg.png", _image(4)), ("003.webp", _image(5, "WEBP"))])
    _tar(d / "shards-002.tar", [("004.jpg", _image(6, "JPEG"))])
    out = tmp_path / "out"
    m = _run(PhotoSource(webdataset=str(d / "shards-{000..002}.tar")), out)
    recs = _records(out)
    assert set(recs) == {"000", "001", "sub_002", "003", "004"}
    assert all(r["status"] == "ok" for r in recs.values()) and m["perception"]["ok"] == 5
    assert recs["000"]["source"] == f"{d / 'shards-000.tar'}#000.jpg"
    assert recs["sub_002"]["source"].endswith("shards-001.tar#sub/002.jpg")  # jpg is preferred over png
    assert recs["003"]["source"].endswith("#003.webp")  # seg.png is another field, not the photo
    assert recs["003"]["image_meta"]["format"] == "WEBP"
    summary = m["perception"]["source"]
    assert summary["kind"] == "webdataset" and summary["shards"] == 3 and summary["shards_read"] == 3
    shard_records = [json.loads(p.read_text()) for p in sorted((out / "perception" / "shards").glob("*.json"))]
    assert sorted(tuple(r["ids"]) for r in shard_records) == [("000", "001"), ("004",), ("sub_002", "003")]
    assert json.loads((out / "perception" / "source.json").read_text())["shards_read"] == 3


def test_bad_tar_members_are_recorded_never_read_and_nothing_is_written_outside_out(tmp_path, decodes):
    d = tmp_path / "in"
    shard = _tar(d / "s.tar", [("good.jpg", _image(0, "JPEG")), ("../evil.jpg", _image(1, "JPEG")),
                               ("/abs.jpg", _image(2, "JPEG")), ("README", b"hello"), (".hidden.jpg", _image(3)),
                               ("bad\x01name.jpg", _image(4)), ("meta.txt", b"only text"),
                               ("empty.png", b""), ("png_named.jpg", _image(5, "PNG"))],
                 links=(("link.jpg", "/etc/passwd"),))
    before = _tree(tmp_path, tmp_path / "out")
    out = tmp_path / "out"
    m = _run(PhotoSource(webdataset=str(shard)), out)
    after = _tree(tmp_path, out)
    assert after == before  # no input touched, nothing extracted beside the shard or above it
    assert not (tmp_path / "evil.jpg").exists() and not Path("/abs.jpg").exists()
    reasons = _reasons(out)
    assert reasons["good"] == "ok" and reasons["png_named"] == "ok"  # the content decides, not the name
    assert reasons["meta"] == "no_image" and reasons["empty"] == "empty"
    rejected = {k: v for k, v in reasons.items() if k.startswith("rejected-")}
    assert sorted(rejected.values()) == ["bad_name"] * 5 + ["not_a_file"]
    msgs = " | ".join(r["message"] for r in _records(out).values() if r.get("reason") in ("bad_name", "not_a_file"))
    for shown in ("'../evil.jpg'", "'/abs.jpg'", "'README'", "'.hidden.jpg'", "'bad\\x01name.jpg'",
                  "'link.jpg' is a symbolic link"):
        assert shown in msgs, msgs
    assert m["perception"]["failed_by_reason"] == {"bad_name": 5, "empty": 1, "no_image": 1, "not_a_file": 1}
    assert sorted(decodes) == ["good", "png_named"]  # rejected members were never decoded
    assert _records(out)["png_named"]["image_meta"]["format"] == "PNG"


def test_webdataset_over_http_and_file_urls_a_missing_shard_is_recorded_and_retried(tmp_path, server):
    for k in range(3):
        _tar(tmp_path / "src" / f"shards-{k:03d}.tar", [(f"{k}{j}.png", _image(10 * k + j)) for j in range(2)])
    for k in (0, 1):
        (server.folder / f"shards-{k:03d}.tar").write_bytes((tmp_path / "src" / f"shards-{k:03d}.tar").read_bytes())
    out = tmp_path / "out"
    pattern = f"{server.url}/shards-{{000..002}}.tar"
    m = _run(PhotoSource(webdataset=pattern), out)
    assert set(_records(out)) == {"00", "01", "10", "11"} and m["perception"]["ok"] == 4
    summary = m["perception"]["source"]
    assert summary["shards_failed"] == 1 and summary["shards_read"] == 2
    (failure,) = summary["shard_failures"]
    assert failure["reason"] == "shard_unreadable" and "shards-002.tar" in failure["message"]
    assert "404" in failure["message"]
    # the shard appears: a rerun reads it and no other
    (server.folder / "shards-002.tar").write_bytes((tmp_path / "src" / "shards-002.tar").read_bytes())
    server.requested.clear()
    m2 = _run(PhotoSource(webdataset=pattern), out)
    assert [p for p in server.requested if p.endswith(".tar")] == ["/shards-002.tar"]
    assert set(_records(out)) == {"00", "01", "10", "11", "20", "21"} and m2["perception"]["resumed"] == 4
    assert m2["perception"]["source"]["shards_resumed"] == 2 and m2["perception"]["source"]["shards_failed"] == 0
    # a file:// URL of a local shard is the same shard
    out_file = tmp_path / "out_file"
    _run(PhotoSource(webdataset=(tmp_path / "src" / "shards-001.tar").as_uri()), out_file)
    assert set(_records(out_file)) == {"10", "11"}


def test_a_truncated_tar_shard_keeps_its_first_items_and_the_rerun_finishes_it(tmp_path):
    full = _tar(tmp_path / "full" / "s.tar", [(f"{k:03d}.png", _image(k, size=(200, 150))) for k in range(6)])
    d = tmp_path / "in"
    d.mkdir()
    data = full.read_bytes()
    (d / "s.tar").write_bytes(data[: len(data) * 3 // 5])  # cut inside the 4th member
    _tar(d / "t.tar", [("100.png", _image(100))])
    out = tmp_path / "out"
    m = _run(PhotoSource(webdataset=str(d)), out)  # a folder of shards: every shard in it, sorted
    recs = _records(out)
    assert {"000", "001", "002", "100"} <= set(recs)
    assert all(recs[k]["status"] == "ok" for k in ("000", "001", "100"))
    (failure,) = m["perception"]["source"]["shard_failures"]
    assert failure["shard"] == str(d / "s.tar") and failure["items_read"] >= 3
    (d / "s.tar").write_bytes(data)  # repaired: the rerun reads it again, the complete t.tar is skipped
    m2 = _run(PhotoSource(webdataset=str(d)), out)
    assert {k for k, r in _records(out).items() if r["status"] == "ok"} == {f"{k:03d}" for k in range(6)} | {"100"}
    assert m2["perception"]["source"]["shards_resumed"] == 1 and m2["perception"]["source"]["shards_failed"] == 0


def test_webdataset_image_field_and_local_shard_errors_are_one_line(tmp_path):
    shard = _tar(tmp_path / "s.tar", [("a.jpg", _image(0, "JPEG")), ("a.depth.png", _image(1))])
    out = tmp_path / "out"
    _run(PhotoSource(webdataset=str(shard), image_column="depth.png"), out)
    assert _records(out)["a"]["source"].endswith("#a.depth.png")
    with pytest.raises(ConfigError, match=r"shards-\{002\.\.003\}\.tar: no such shard: .*shards-002\.tar"):
        WebDatasetSource(str(tmp_path / "shards-{002..003}.tar")).open()
    with pytest.raises(ConfigError, match="named twice"):
        WebDatasetSource([str(shard), str(shard)]).open()
    with pytest.raises(ConfigError, match="--id-column, --focal-column and --path-root are for tables"):
        PhotoSource(webdataset=str(shard), id_column="id")


# ----------------------------------------------------------------------------- Parquet
def _write_table(path: Path, columns: dict, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, **kw)
    return path


def test_parquet_bytes_and_paths_with_every_bad_row_recorded(tmp_path, server):
    d = tmp_path / "data"
    (d / "imgs").mkdir(parents=True)
    (d / "imgs" / "p0.png").write_bytes(_image(20))
    (d / "imgs" / "p1.jpg").write_bytes(_image(21, "PNG"))  # a PNG named .jpg
    (tmp_path / "outside.png").write_bytes(_image(22))
    os.symlink(tmp_path / "outside.png", d / "imgs" / "sneaky.png")
    (server.folder / "web.png").write_bytes(_image(23))
    _write_table(d / "bytes.parquet", {"image": pa.array([_image(10), None, b"", _image(11, "JPEG", "CMYK"),
                                                          b"\x89PNG truncated"], pa.binary())})
    _write_table(d / "paths.parquet", {"image": pa.array([
        "imgs/p0.png", str(d / "imgs" / "p1.jpg"), "../outside.png", str(tmp_path / "outside.png"),
        "imgs/missing.png", "imgs/sneaky.png", "s3://bucket/x.png", (d / "imgs" / "p0.png").as_uri(),
        f"{server.url}/web.png", f"{server.url}/gone.png", None, "  "], pa.string())})
    out = tmp_path / "out"
    m = _run(PhotoSource(parquet=d), out)
    assert _reasons(out) == {
        "bytes-00000": "ok", "bytes-00001": "null_image", "bytes-00002": "empty", "bytes-00003": "ok",
        "bytes-00004": "unreadable",
        "paths-00000": "ok", "paths-00001": "ok", "paths-00002": "outside_root", "paths-00003": "outside_root",
        "paths-00004": "missing_file", "paths-00005": "outside_root", "paths-00006": "unsupported_url",
        "paths-00007": "duplicate", "paths-00008": "ok", "paths-00009": "fetch_failed", "paths-00010": "null_image",
        "paths-00011": "null_image"}
    recs = _records(out)
    assert recs["paths-00007"]["duplicate_of"] == "paths-00000"  # the same file through a file:// URL
    assert recs["bytes-00003"]["image_meta"]["converted_from"] == "CMYK"
    assert recs["paths-00001"]["image_meta"]["format"] == "PNG"
    assert "outside.png" in recs["paths-00002"]["message"] and "--path-root" in recs["paths-00002"]["message"]
    assert recs["paths-00009"]["message"].count("HTTP 404") == 1
    assert m["perception"]["source"]["shards"] == 2
    # a wider root lets the table read beside itself; the failed download is tried again, and only it
    (server.folder / "gone.png").write_bytes(_image(24))
    out2 = tmp_path / "out2"
    _run(PhotoSource(parquet=d, path_root=tmp_path), out2)
    assert _reasons(out2)["paths-00002"] == "ok" and _reasons(out2)["paths-00005"] == "duplicate"
    m3 = _run(PhotoSource(parquet=d), out)
    assert _reasons(out)["paths-00009"] == "ok" and m3["perception"]["resumed"] == 16


def test_parquet_id_column_maps_unsafe_ids_hashes_empty_ones_and_reads_focal_lengths(tmp_path):
    rows = [_image(k) for k in range(6)]
    table = _write_table(tmp_path / "t" / "photos.parquet", {
        "image": pa.array(rows, pa.binary()), "key": ["../../x", "a/b", "a_b", None, "", "a_b"],
        "f": [300.0, None, -1.0, None, None, None]})
    out = tmp_path / "out"
    _run(PhotoSource(parquet=table, id_column="key", focal_column="f"), out)
    import hashlib

    hashed = [f"sha256-{hashlib.sha256(rows[k]).hexdigest()[:16]}" for k in (3, 4)]
    assert set(_reasons(out)) == {"x", "a_b", "a_b_2", *hashed, "a_b_3"}
    assert _reasons(out)["a_b_2"] == "bad_metadata"  # focal length -1
    cam = json.loads((out / "scenes" / "x" / "camera.json").read_text())
    assert cam["fx"] == pytest.approx(300.0)
    assert _records(out)["x"]["intrinsics_source"] == "user" and _records(out)["a_b"]["intrinsics_source"] != "user"
    with pytest.raises(ConfigError, match=r"--id-column nope: .*photos\.parquet has no such column"):
        ParquetSource(table, id_column="nope").open()
    with pytest.raises(ConfigError, match=r"no column 'photo' \(columns: image, key, f\)"):
        ParquetSource(table, image_column="photo").open()


def test_parquet_row_groups_are_shards_and_a_rerun_opens_only_unfinished_ones(tmp_path, monkeypatch, decodes):
    table = _write_table(tmp_path / "t.parquet", {"image": pa.array([_image(k) for k in range(5)], pa.binary())},
                         row_group_size=2)
    out = tmp_path / "out"
    m = _run(PhotoSource(parquet=table), out)
    assert m["perception"]["source"]["shards"] == 3 and m["perception"]["ok"] == 5
    reads: list = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        reads.append(kwargs.get("row_groups"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    decodes.clear()
    m2 = _run(PhotoSource(parquet=table), out)
    assert reads == [] and decodes == [] and m2["perception"]["resumed"] == 5
    (out / "perception" / "items" / "t-00003.json").unlink()  # one photo's record is gone: only its row group
    m3 = _run(PhotoSource(parquet=table), out)
    assert reads == [[1]] and decodes == ["t-00003"] and m3["perception"]["resumed"] == 4


# ----------------------------------------------------------------------------- Hugging Face datasets
def _hf_data_folder(root: Path, n_files: int = 3, per_file: int = 2) -> Path:
    """A Hugging Face data folder as the hub holds one: Parquet files with an Image struct column and an id."""
    datasets = pytest.importorskip("datasets")
    for f in range(n_files):
        ds = datasets.Dataset.from_dict(
            {"image": [{"bytes": _image(100 + f * per_file + k), "path": None} for k in range(per_file)],
             "uid": [f"u{f}{k}" for k in range(per_file)]},
            features=datasets.Features({"image": datasets.Image(), "uid": datasets.Value("string")}))
        ds.to_parquet(str(root / "data" / f"train-{f:05d}-of-{n_files:05d}.parquet"))
    return root


def test_hf_streaming_gives_the_ids_of_a_full_load_and_resumes_by_id_without_decoding(tmp_path, monkeypatch,
                                                                                       decodes):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # the full load's cache
    data = _hf_data_folder(tmp_path / "hfdata")
    full, streamed = tmp_path / "full", tmp_path / "streamed"
    _run(PhotoSource(hf_dataset=str(data)), full)
    decodes.clear()
    m = _run(PhotoSource(hf_dataset=str(data), streaming=True), streamed)
    assert set(_records(streamed)) == set(_records(full)) == {f"train-{k:05d}" for k in range(6)}
    assert len(decodes) == 6
    for k in _records(full):
        assert (full / "scenes" / k / "image.png").read_bytes() == (streamed / "scenes" / k / "image.png").read_bytes()
    assert m["perception"]["source"]["shards"] == 3 and m["perception"]["source"]["streaming"] is True
    # the rerun opens none of the streamed data files and decodes nothing
    shard_reads: list[int] = []
    real_shard = datasets.IterableDataset.shard

    def counting(self, num_shards, index, **kwargs):
        shard_reads.append(index)
        return real_shard(self, num_shards, index, **kwargs)

    monkeypatch.setattr(datasets.IterableDataset, "shard", counting)
    decodes.clear()
    m2 = _run(PhotoSource(hf_dataset=str(data), streaming=True), streamed)
    assert decodes == [] and shard_reads == [] and m2["perception"]["resumed"] == 6
    (streamed / "perception" / "items" / "train-00004.json").unlink()
    m3 = _run(PhotoSource(hf_dataset=str(data), streaming=True), streamed)
    assert shard_reads == [2] and decodes == ["train-00004"] and m3["perception"]["resumed"] == 5
    # an id column names the photos, streamed or not
    ided = tmp_path / "ided"
    _run(PhotoSource(hf_dataset=str(data), streaming=True, id_column="uid"), ided)
    assert set(_records(ided)) == {"u00", "u01", "u10", "u11", "u20", "u21"}


def test_hf_saved_dataset_is_read_lazily_and_a_limit_keeps_the_ids(tmp_path, decodes):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": [Image.open(io.BytesIO(_image(k))) for k in range(4)]},
                                    features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "out"
    _run(PhotoSource(hf_dataset=str(tmp_path / "saved"), limit=2), out)
    assert set(_records(out)) == {"train-00000", "train-00001"}
    decodes.clear()
    m = _run(PhotoSource(hf_dataset=str(tmp_path / "saved")), out)
    assert sorted(decodes) == ["train-00002", "train-00003"] and m["perception"]["resumed"] == 2


# ----------------------------------------------------------------------------- duplicates
def test_duplicates_by_file_bytes_are_skipped_counted_never_decoded_and_stable_on_resume(tmp_path, decodes):
    d = tmp_path / "in"
    d.mkdir()
    a, b = _image(1), _image(2, "JPEG")
    (d / "a.png").write_bytes(a)
    (d / "b.jpg").write_bytes(b)
    (d / "c_copy_of_a.png").write_bytes(a)
    (d / "z.png").write_bytes(a)
    _tar(d / "s.tar", [("k1.png", a), ("k2.jpg", b), ("k3.png", _image(3))])
    out = tmp_path / "out"
    m = _run(PhotoSource(folder=d), out)
    p = m["perception"]
    assert p["duplicate_of"] == {"c_copy_of_a": "a", "z": "a", "k1": "a", "k2": "b"}
    assert p["duplicates"] == 4 and p["ok"] == 3 and p["failed"] == 0
    assert sorted(decodes) == ["a", "b", "k3"]  # a duplicate is never decoded
    assert not (out / "scenes" / "z").exists()
    recs = _records(out)
    assert recs["k1"] == {"status": "duplicate", "reason": "duplicate", "image_id": "k1", "duplicate_of": "a",
                          "source": f"{d / 's.tar'}#k1.png", "sha256": recs["a"]["sha256"]}
    # resumed: the same duplicates, from the records alone; a copy run gives the same records
    decodes.clear()
    m2 = _run(PhotoSource(folder=d), out)
    assert m2["perception"]["duplicate_of"] == p["duplicate_of"] and decodes == [] and m2["perception"]["resumed"] == 7
    (out / "perception" / "items" / "z.json").unlink()
    m3 = _run(PhotoSource(folder=d), out)
    assert m3["perception"]["duplicate_of"]["z"] == "a" and decodes == []
    again = tmp_path / "again"
    _run(PhotoSource(folder=d), again)
    assert _records(again) == _records(out)  # deterministic: the same ids, duplicates and records


# ----------------------------------------------------------------------------- odd and hostile images
def _png_of_zeros(w: int, h: int) -> bytes:
    """A valid grayscale PNG of w x h black pixels, compressed row by row (small on disk, huge decoded)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp, row, parts = zlib.compressobj(9), b"\x00" * (w + 1), []
    for _ in range(h):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_a_20000_pixel_square_image_is_refused_from_its_header_without_allocating_it(tmp_path):
    (tmp_path / "huge.png").write_bytes(_png_of_zeros(20_000, 20_000))  # 400 MB decoded, 1.2 GB as RGB
    (tmp_path / "big.png").write_bytes(_png_of_zeros(12_000, 12_000))  # over our 100 MP limit, under PIL's
    if not Path("/proc/self/status").is_file():
        pytest.skip("measures the peak memory of a process from /proc (Linux)")
    # the peak resident memory of this process's own address space (ru_maxrss would count the forking parent)
    code = textwrap.dedent(f"""
        from pathlib import Path
        from spatialforge.perception.image_io import SourceItem
        for name in ("huge.png", "big.png"):
            path = Path(r"{tmp_path}") / name
            for item in (SourceItem(name, name, path=path), SourceItem(name, name, data=path.read_bytes())):
                f = item.decode()
                print(name, f.reason, f.message)
        hwm = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
        print("MAXRSS_MB", int(hwm.split()[1]) / 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines[:4]] == [["huge.png", "too_large"]] * 2 + [["big.png", "too_large"]] * 2
    assert "12000x12000 exceeds the 100000000 pixel limit" in lines[2]
    peak = float(lines[-1].split()[1])
    assert peak < 300, f"peak memory {peak:.0f} MB: the image was decoded"


def test_png_named_jpg_16_bit_and_cmyk_photos_load_and_their_conversion_is_recorded(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "png_named.jpg").write_bytes(_image(1, "PNG"))
    wide = (np.arange(W * H, dtype=np.uint32).reshape(H, W) * 7 % 65535).astype(np.uint16)
    Image.fromarray(wide).save(d / "sixteen.png")  # 16-bit grayscale: PIL mode I;16
    (d / "cmyk.jpg").write_bytes(_image(2, "JPEG", "CMYK"))
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(_image(3, "JPEG", size=(400, 300))[:2000])
    (d / ("long" * 62 + ".png")).write_bytes(_image(4))  # a 252-character name: its record would be 257
    out = tmp_path / "out"
    m = _run(PhotoSource(folder=d), out)
    recs = _records(out)
    (long_id,) = [k for k in recs if k.startswith("long")]
    assert len(long_id) <= 100 and recs[long_id]["status"] == "ok" and recs[long_id]["source"].endswith(".png")
    assert recs["png_named"]["status"] == "ok" and recs["png_named"]["image_meta"]["format"] == "PNG"
    assert recs["sixteen"]["image_meta"]["converted_from"] == "I;16"
    assert recs["cmyk"]["image_meta"]["converted_from"] == "CMYK"
    assert m["perception"]["converted_from"] == {"CMYK": 1, "I;16": 1}
    assert _reasons(out)["empty"] == "empty" and _reasons(out)["truncated"] == "unreadable"
    scene = np.asarray(Image.open(out / "scenes" / "sixteen" / "image.png"))
    assert scene.shape == (H, W, 3) and scene.dtype == np.uint8 and scene.max() > 200  # scaled, not clipped


def test_a_run_of_only_bad_items_fails_saying_why(tmp_path):
    table = _write_table(tmp_path / "t.parquet", {"image": pa.array([None, b""], pa.binary())})
    with pytest.raises(RunFailedError, match=r"no image became a scene: 2 images, 0 filtered out, 2 failed "
                                             r"\(empty 1, null_image 1\)"):
        _run(PhotoSource(parquet=table), tmp_path / "out")


def test_sources_check_themselves_before_anything_is_written(tmp_path):
    table = _write_table(tmp_path / "t.parquet", {"img": pa.array([_image(0)], pa.binary())})
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"t\.parquet: no column 'image' \(columns: img\)"):
        _run(PhotoSource(parquet=table), out)
    assert not out.exists()
    with pytest.raises(SpatialForgeError, match="give exactly one source of photos"):
        PhotoSource(folder=tmp_path, parquet=table)
    with pytest.raises(ConfigError, match="--streaming reads a Hugging Face dataset"):
        PhotoSource(parquet=table, streaming=True)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConfigError, match=r"no image files .*WebDataset shards .*Parquet tables"):
        _run(PhotoSource(folder=tmp_path / "nothing"), tmp_path / "out2")


def test_a_reader_without_an_output_folder_and_a_limit(tmp_path):
    shard = _tar(tmp_path / "s.tar", [(f"{k}.png", _image(k)) for k in range(4)])
    src = WebDatasetSource(str(shard))
    src.open()
    reader = SourceReader(src, limit=3)
    items = list(reader.items())
    assert [i.image_id for i in items] == ["0", "1", "2"] and all(isinstance(i, SourceItem) for i in items)
    assert reader.summary()["shards_read"] == 0  # cut by the limit: not a complete read
    assert items[0].read() is None and items[0].digest is not None and items[0].decode().size == (W, H)
