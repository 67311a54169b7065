"""The photo path end to end with injected stages (no torch needed).

Contract tested: perception produces the same scene container as the RGB-D path, so identical
depth, masks, captions and intrinsics give identical scene graphs and QA; every bad image ends
with a recorded reason; one failing model call costs only its image; runs resume.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene
from spatialforge.errors import SpatialForgeError
from spatialforge.io.scene_folder import save_scene
from spatialforge.perception.backends.stub import (
    BoxSegmenter,
    GivenDepth,
    KeepAllFilter,
    LabelCaptioner,
    NoTextEmbedder,
)
from spatialforge.perception.config import PerceptionConfig, StageSpec
from spatialforge.perception.pipeline import PerceptionPipeline
from spatialforge.perception.types import Detections, FilterDecision, MaskSet
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.pipeline.photos import PhotoSource, run_photos
from spatialforge.qa import QAConfig
from spatialforge.synth import SynthConfig, generate_scene

W, H = 160, 120


def _key(img: np.ndarray) -> bytes:
    return img.tobytes()[:4096] + bytes(str(img.shape), "ascii")


class Oracle:
    """Stages that return the ground truth of known images (keyed by pixel content)."""

    name = "oracle"
    model_id = "oracle"

    def __init__(self) -> None:
        self.truth: dict[bytes, dict] = {}
        self.calls = 0

    def add(self, image, instances, captions, depth, hfov=None):
        self.truth[_key(image)] = {"inst": instances, "captions": captions, "depth": depth, "hfov": hfov}

    def load(self):
        return None

    def unload(self):
        return None

    # detector
    def __call__(self, images, prompts):
        self.calls += 1
        out = []
        for img in images:
            t = self.truth[_key(img)]
            boxes, labels = [], []
            for k, cap in t["captions"].items():
                rr, cc = np.nonzero(t["inst"] == k)
                boxes.append([cc.min(), rr.min(), cc.max() + 1, rr.max() + 1])
                labels.append(cap)
            out.append(Detections(np.array(boxes, np.float32), np.ones(len(boxes), np.float32), tuple(labels)))
        return out


class OracleSegmenter:
    name = "oracle"
    model_id = "oracle"

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def load(self):
        return None

    def unload(self):
        return None

    def __call__(self, images, boxes):
        out = []
        for img, b in zip(images, boxes, strict=True):
            t = self.oracle.truth[_key(img)]
            ids = list(t["captions"])
            masks = np.stack([t["inst"] == ids[i] for i in range(len(b))])
            out.append(MaskSet(masks, np.ones(len(b), np.float32)))
        return out


VOCABULARY = ("box", "chair", "table", "lamp")  # no tagger (filter none): every photo is prompted with all of them


def _pipeline(oracle: Oracle, **cfg) -> PerceptionPipeline:
    cfg.setdefault("vocabulary", VOCABULARY)
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), captioner=StageSpec("label"),
                              segmenter=StageSpec("oracle"), detector=StageSpec("oracle"), depth=StageSpec("oracle"),
                              score_threshold=0.0, min_area_frac=0.0, max_objects=64, min_mask_pixels=1, **cfg)
    depth = GivenDepth(lambda img: (oracle.truth[_key(img)]["depth"], oracle.truth[_key(img)]["hfov"]),
                       model_id="oracle-depth")
    return PerceptionPipeline(config, {"filter": KeepAllFilter(), "detector": oracle,
                                       "captioner": LabelCaptioner(), "segmenter": OracleSegmenter(oracle),
                                       "depth": depth, "embedder": NoTextEmbedder()})


def _centred(fx: float) -> CameraIntrinsics:
    return CameraIntrinsics(fx=fx, fy=fx, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)


def _qa_rows(out) -> dict[str, list]:
    table = pq.read_table(out / "data", columns=["scene_id", "qa"]).to_pylist()
    return {r["scene_id"]: r["qa"] for r in table}


def _graphs(out) -> dict[str, dict]:
    res = {}
    for p in sorted((out / "scene_graphs").glob("*.json")):
        g = json.loads(p.read_text())
        g.pop("provenance")
        res[p.stem] = g
    return res


@pytest.fixture()
def synthetic_photos(tmp_path):
    """Synthetic scenes as photos + the same scenes as RGB-D folders with the perception intrinsics."""
    oracle = Oracle()
    photos, rgbd = tmp_path / "photos", tmp_path / "rgbd"
    photos.mkdir()
    for i in range(4):
        s = generate_scene(i, seed=5, config=SynthConfig(width=W, height=H))
        fx = float(s.camera["fx"])
        caps = {int(o["id"]): o["caption"] for o in s.objects}
        # object ids renumbered 1..K in detection order, as the perception path does
        inst = np.zeros_like(s.instances, dtype=np.int32)
        caps_k = {}
        for k, (oid, cap) in enumerate(sorted(caps.items()), start=1):
            inst[s.instances == oid] = k
            caps_k[k] = cap
        oracle.add(s.image, inst, caps_k, s.depth, hfov=None)
        Image.fromarray(s.image).save(photos / f"img{i}.png")
        objs = tuple(ObjectAnnotation(k, c) for k, c in caps_k.items())
        save_scene(RGBDScene(f"img{i}", s.image, s.depth, inst, _centred(fx), objs), rgbd, depth_format="npy")
        (photos / f"img{i}.focal").write_text(str(fx))
    return oracle, photos, rgbd


def test_model_depth_reproduces_rgbd_results_exactly(synthetic_photos, tmp_path):
    oracle, photos, rgbd = synthetic_photos
    gen = GenerateConfig(qa=QAConfig(qa_per_image=12, seed=3))
    out_rgbd = tmp_path / "out_rgbd"
    run_generate(rgbd, out_rgbd, gen, progress=False)
    # every photo has its own focal length: run them one by one with the user focal length
    out_photo = tmp_path / "out_photo"
    for i in range(4):
        fx = float((photos / f"img{i}.focal").read_text())
        single = tmp_path / f"single{i}"
        single.mkdir()
        (single / f"img{i}.png").write_bytes((photos / f"img{i}.png").read_bytes())
        run_photos(PhotoSource(folder=single), out_photo / f"s{i}", _pipeline(oracle, focal_length_px=fx), gen,
                   progress=False)
    qa_rgbd, graphs_rgbd = _qa_rows(out_rgbd), _graphs(out_rgbd)
    for i in range(4):
        sid = f"img{i}"
        assert _qa_rows(out_photo / f"s{i}")[sid] == qa_rgbd[sid]
        assert _graphs(out_photo / f"s{i}")[sid] == graphs_rgbd[sid]
        prov = json.loads((out_photo / f"s{i}" / "scene_graphs" / f"{sid}.json").read_text())["provenance"]
        assert prov["intrinsics_source"] == "user" and prov["depth_model"] == "oracle-depth"
    assert sum(len(v) for v in qa_rgbd.values()) > 20


def test_constant_depth_plane_lifts_to_exact_metric_points(tmp_path):
    oracle = Oracle()
    img = np.full((H, W, 3), 90, np.uint8)
    img[40:80, 60:100] = (200, 30, 30)
    inst = np.zeros((H, W), np.int32)
    inst[40:80, 60:100] = 1
    depth = np.full((H, W), 2.0, np.float32)
    oracle.add(img, inst, {1: "red poster"}, depth, hfov=90.0)  # the depth model predicts a 90 degree FOV
    photos = tmp_path / "p"
    photos.mkdir()
    Image.fromarray(img).save(photos / "plane.png")
    out = tmp_path / "out"
    m = run_photos(PhotoSource(folder=photos), out, _pipeline(oracle), GenerateConfig(), progress=False)
    assert m["perception"]["intrinsics_sources"] == {"estimated:given": 1}  # the depth model's own FOV
    cam = json.loads((out / "scenes" / "plane" / "camera.json").read_text())
    assert cam["fx"] == pytest.approx((W / 2) / np.tan(np.radians(45)), rel=1e-6)
    graph = json.loads((out / "scene_graphs" / "plane.json").read_text())
    obj = graph["objects"][0]
    # a 40x40 px patch at 2 m with fx = 80 spans 1 m; its points all lie at z-depth 2
    assert obj["camera_distance"] == pytest.approx(np.hypot(2.0, np.hypot(((60 + 99) / 2 - (W - 1) / 2) / 80 * 2,
                                                                          ((40 + 79) / 2 - (H - 1) / 2) / 80 * 2)),
                                                   abs=0.02)
    assert graph["gravity"]["source"] == "camera_prior"  # a wall facing the camera is no floor


def _photo_dir(tmp_path) -> tuple:
    """Good photos in odd modes plus broken files."""
    oracle = Oracle()
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)

    def good(name: str, mode: str, fmt: str = "PNG"):
        base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        pil = Image.fromarray(base)
        pil = pil.convert(mode) if mode != "RGB" else pil
        buf = io.BytesIO()
        pil.save(buf, format=fmt)
        (d / name).write_bytes(buf.getvalue())
        decoded = Image.open(io.BytesIO(buf.getvalue()))
        if decoded.mode in ("RGBA", "LA"):
            bg = Image.new("RGBA", decoded.size, (255, 255, 255, 255))
            rgb = np.asarray(Image.alpha_composite(bg, decoded.convert("RGBA")).convert("RGB"))
        else:
            rgb = np.asarray(decoded.convert("RGB"))
        inst = np.zeros((H, W), np.int32)
        inst[20:60, 20:70] = 1
        inst[50:100, 90:150] = 2
        oracle.add(rgb, inst, {1: "box", 2: "chair"}, np.full((H, W), 3.0, np.float32), hfov=70.0)
        keys[name.split(".")[0]] = _key(rgb)

    keys: dict[str, bytes] = {}
    good("a_rgb.png", "RGB")
    good("b_gray.png", "L")
    good("c_rgba.png", "RGBA")
    good("d_cmyk.jpg", "CMYK", "JPEG")
    (d / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    (d / "f_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(d / "g_tiny.png")
    return oracle, d, keys


def test_bad_images_are_recorded_and_the_run_continues(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)
    out = tmp_path / "out"
    m = run_photos(PhotoSource(folder=photos), out, _pipeline(oracle), GenerateConfig(), progress=False)
    p = m["perception"]
    assert p["images"] == 7 and p["ok"] == 4
    assert p["failed_by_reason"] == {"too_small": 1, "unreadable": 2}
    failures = {f["image_id"]: f for f in p["failures"]}
    assert "e_corrupt.jpg" in failures["e_corrupt"]["message"]
    assert failures["g_tiny"]["reason"] == "too_small"
    assert m["counts"]["scenes_ok"] == 4
    for sid in ("a_rgb", "b_gray", "c_rgba", "d_cmyk"):
        folder = out / "scenes" / sid
        for name in ("image.png", "depth.npy", "instances.png", "camera.json", "objects.json", "filter.json",
                     "detections.json", "provenance.json"):
            assert (folder / name).is_file(), (sid, name)
        assert json.loads((folder / "provenance.json").read_text())["intrinsics_source"] == "estimated:given"


def test_no_detections_and_model_failure_cost_only_their_image(tmp_path):
    oracle, photos, keys = _photo_dir(tmp_path)
    oracle.truth[keys["c_rgba"]]["captions"] = {}  # the detector finds nothing in the RGBA photo

    class Flaky(Oracle):
        """Fails on every batch that contains the grayscale photo (as a CUDA assert would)."""

        def __call__(self, images, prompts):
            if any(_key(i) == keys["b_gray"] for i in images):
                raise RuntimeError("simulated failure on the grayscale image")
            return oracle(images, prompts)

    pipe = _pipeline(oracle, batch_size=4)
    pipe.stages["detector"] = Flaky()
    m = run_photos(PhotoSource(folder=photos), tmp_path / "out", pipe, GenerateConfig(), progress=False)
    p = m["perception"]
    assert p["failed_by_reason"] == {"model_error": 1, "no_detections": 1, "too_small": 1, "unreadable": 2}
    err = next(f for f in p["failures"] if f["reason"] == "model_error")
    assert err["image_id"] == "b_gray" and err["stage"] == "detector"
    assert "simulated failure on the grayscale image" in err["message"]
    assert p["ok"] == 2 and m["counts"]["scenes_ok"] == 2  # the rest of the batch went through


def test_filter_decisions_are_recorded_and_runs_resume(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)

    class HalfFilter(KeepAllFilter):
        name = "half"

        def __call__(self, images):
            return [FilterDecision(bool(i % 2 == 0), "a photo of a room" if i % 2 == 0 else "a drawing",
                                   {"a photo of a room": 0.6, "a drawing": 0.4}, "half") for i, _ in enumerate(images)]

    pipe = _pipeline(oracle, batch_size=8)
    pipe.stages["filter"] = HalfFilter()
    out = tmp_path / "out"
    m1 = run_photos(PhotoSource(folder=photos), out, pipe, GenerateConfig(), progress=False)
    p = m1["perception"]
    assert p["filtered"] == 2 and p["ok"] == 2
    rec = json.loads((out / "perception" / "items" / "b_gray.json").read_text())
    assert rec["status"] == "filtered" and rec["decision"]["label"] == "a drawing"
    calls = oracle.calls
    m2 = run_photos(PhotoSource(folder=photos), out, _pipeline(oracle), GenerateConfig(), progress=False)
    assert oracle.calls == calls  # nothing re-detected
    assert m2["perception"]["resumed"] == 7
    assert m2["counts"]["qa_pairs"] == m1["counts"]["qa_pairs"]


def test_box_segmenter_fills_boxes():
    seg = BoxSegmenter()
    img = np.zeros((H, W, 3), np.uint8)
    (ms,) = seg([img], [np.array([[10.2, 5.0, 20.0, 15.5]])])
    assert ms.masks.shape == (1, H, W) and ms.masks[0, 5:16, 10:20].all() and ms.masks[0].sum() == 11 * 10


def test_huge_images_are_refused_or_downscaled(tmp_path):
    from spatialforge.perception.image_io import ImageLimits, load_image_file

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(big)
    refused = load_image_file(big, "big", ImageLimits(max_pixels=100_000))
    assert refused.reason == "too_large" and "400x300" in refused.message and str(big) in refused.message
    item = load_image_file(big, "big", ImageLimits(max_side=200), focal_length_px=400.0)
    assert item.image.shape == (150, 200, 3)
    assert item.meta == {"original_size": [400, 300], "mode": "RGB", "format": "PNG", "resized_to": [200, 150]}
    assert item.focal_length_px == pytest.approx(200.0) and item.focal_source == "user"  # scaled with the image
    # PIL's own decompression-bomb guard fires before our limit for absurd sizes: same reason, no crash
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(40_000, 40_000))
    assert load_image_file(bomb, "bomb").reason in ("too_large", "unreadable")


def _png_header_only(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_single_image_batches_record_model_errors_and_reruns_retry_them(tmp_path):
    oracle, photos, keys = _photo_dir(tmp_path)

    class Flaky(Oracle):
        broken = True

        def __call__(self, images, prompts):
            if self.broken and any(_key(i) == keys["b_gray"] for i in images):
                raise RuntimeError("simulated failure")
            return oracle(images, prompts)

    flaky = Flaky()
    pipe = _pipeline(oracle, batch_size=1)  # a failing batch of one image must not stop the run
    pipe.stages["detector"] = flaky
    out = tmp_path / "out"
    m = run_photos(PhotoSource(folder=photos), out, pipe, GenerateConfig(), progress=False)
    assert m["perception"]["failed_by_reason"]["model_error"] == 1 and m["perception"]["ok"] == 3
    flaky.broken = False  # the model is fixed: a rerun tries that image again, and only that image
    m2 = run_photos(PhotoSource(folder=photos), out, pipe, GenerateConfig(), progress=False)
    assert m2["perception"]["ok"] == 4 and "model_error" not in m2["perception"]["failed_by_reason"]
    assert m2["perception"]["resumed"] == 6
    assert m2["counts"]["scenes_ok"] == 4  # the dataset was rebuilt with the new scene


def test_a_model_that_cannot_load_stops_the_run_without_recording_failures(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)

    class Unloadable(Oracle):
        def load(self):
            raise OSError("offline: no such checkpoint")

    pipe = _pipeline(oracle, batch_size=2)
    pipe.stages["detector"] = Unloadable()
    out = tmp_path / "out"
    with pytest.raises(SpatialForgeError, match=r"detector: cannot load .*no such checkpoint"):
        run_photos(PhotoSource(folder=photos), out, pipe, GenerateConfig(), progress=False)
    recorded = [json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")]
    assert not [r for r in recorded if r.get("reason") == "model_error"]


def test_wrong_caption_count_is_one_images_failure(tmp_path):
    oracle, photos, keys = _photo_dir(tmp_path)

    class Short(LabelCaptioner):
        def __call__(self, images, detections):
            out = super().__call__(images, detections)
            return [c[:-1] if _key(i) == keys["a_rgb"] else c for i, c in zip(images, out, strict=True)]

    pipe = _pipeline(oracle, batch_size=4)
    pipe.stages["captioner"] = Short()
    m = run_photos(PhotoSource(folder=photos), tmp_path / "out", pipe, GenerateConfig(), progress=False)
    fail = next(f for f in m["perception"]["failures"] if f["image_id"] == "a_rgb")
    assert fail["reason"] == "bad_model_output" and "returned 1 caption for 2 boxes" in fail["message"]
    assert m["perception"]["ok"] == 3


def test_image_ids_are_unique_even_when_names_collide(tmp_path):
    from spatialforge.perception.image_io import list_image_files

    for name in ("a b.jpg", "a_b.jpg", "x.jpg", "x.JPG", "x.png", "y.png"):
        Image.new("RGB", (40, 40)).save(tmp_path / name, format="PNG")
    ids = [i for i, _ in list_image_files(tmp_path)]
    assert len(set(ids)) == 6 and "y" in ids


# ----------------------------------------------------------------------------- issue 8
class Resident:
    """Which models are loaded, and which were loaded while each stage ran."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.during: list[tuple[str, frozenset[str]]] = []


class Tracked:
    """A stage whose ``load``/``unload`` are recorded in ``Resident`` (one model per object, like CLIP's
    filter and caption embedder sharing one)."""

    def __init__(self, inner, label: str, resident: Resident) -> None:
        self.inner, self.label, self.resident = inner, label, resident
        self.name, self.model_id = getattr(inner, "name", label), label

    def load(self):
        self.inner.load()
        self.resident.loaded.add(self.label)

    def unload(self):
        self.inner.unload()
        self.resident.loaded.discard(self.label)

    def _run(self, fn, *args):
        assert self.label in self.resident.loaded, f"{self.label} ran without being loaded"
        self.resident.during.append((self.label, frozenset(self.resident.loaded)))
        return fn(*args)

    def __call__(self, *args, **kwargs):
        return self._run(lambda: self.inner(*args, **kwargs))

    def tags(self, *args):
        return self._run(self.inner.tags, *args)

    def embed_text(self, texts):
        return self._run(self.inner.embed_text, texts)


class WordVectors(KeepAllFilter):
    """A filter and caption embedder in one object (as one CLIP serves both): one-hot word vectors."""

    name = "clip-like"

    def embed_text(self, texts):
        words = sorted({w for t in texts for w in t.split()}) or ["-"]
        return np.array([[float(w in t.split()) for w in words] for t in texts], np.float32).reshape(len(texts), -1)


def _tracked_pipeline(oracle: Oracle, resident: Resident, **cfg) -> PerceptionPipeline:
    pipe = _pipeline(oracle, **cfg)
    shared = Tracked(WordVectors(), "clip", resident)
    st = pipe.stages
    st.update(filter=shared, embedder=shared, detector=Tracked(st["detector"], "detector", resident),
              captioner=Tracked(st["captioner"], "captioner", resident),
              segmenter=Tracked(st["segmenter"], "segmenter", resident), depth=Tracked(st["depth"], "depth", resident))
    return pipe


def _outputs(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "scenes").rglob("*")) if p.is_file()}


def test_low_memory_keeps_one_model_resident_at_a_time_with_the_same_results(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)
    outputs, during = {}, {}
    for low in (False, True):
        resident = Resident()
        pipe = _tracked_pipeline(oracle, resident, batch_size=2, low_memory=low)
        run_photos(PhotoSource(folder=photos), tmp_path / f"out{low}", pipe, GenerateConfig(), progress=False)
        outputs[low], during[low] = _outputs(tmp_path / f"out{low}"), resident.during
        assert not resident.loaded  # everything released at the end
    assert max(len(models) for _, models in during[False]) > 1  # the normal mode keeps models loaded
    # low memory: while any stage runs, its model is the only one loaded (CLIP is reloaded for the captions)
    assert during[True] and all(models == {stage} for stage, models in during[True]), during[True]
    assert [stage for stage, _ in during[True]][:7] == ["clip", "clip", "detector", "captioner", "segmenter",
                                                        "depth", "clip"]
    assert outputs[True] == outputs[False] and len(outputs[True]) >= 4 * 8


def test_a_rerun_with_another_perception_config_is_refused_saying_what_changed(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)
    out = tmp_path / "out"
    run_photos(PhotoSource(folder=photos), out, _pipeline(oracle), GenerateConfig(), progress=False)
    records = {p.name: p.read_bytes() for p in (out / "perception" / "items").iterdir()}
    calls = oracle.calls
    for changes, says in (({"iou_threshold": 0.3}, "iou_threshold 0.5 -> 0.3"),
                          ({"vocabulary": ("box", "chair", "mug")}, "vocabulary: 1 entry added (mug), 2 entries "
                                                                    "removed (table, lamp)"),
                          ({"ambiguity": "drop"}, "ambiguity 'group' -> 'drop'"),
                          ({"focal_length_px": 300.0}, "focal_length_px None -> 300.0")):
        with pytest.raises(SpatialForgeError) as exc:
            run_photos(PhotoSource(folder=photos), out, _pipeline(oracle, **changes), GenerateConfig(), progress=False)
        msg = str(exc.value)
        assert "\n" not in msg and str(out) in msg and says in msg and "--overwrite" in msg, msg
    assert oracle.calls == calls  # nothing was detected again
    assert {p.name: p.read_bytes() for p in (out / "perception" / "items").iterdir()} == records
    # device, batch size and low memory change no output: the run resumes
    m = run_photos(PhotoSource(folder=photos), out, _pipeline(oracle, batch_size=1, low_memory=True, device="cpu"),
                   GenerateConfig(), progress=False)
    assert m["perception"]["resumed"] == 7 and oracle.calls == calls
    # records without the config they were made with (an older spatialforge) are refused too
    (out / "perception" / "config.json").unlink()
    with pytest.raises(SpatialForgeError, match="holds perception records but not the perception config"):
        run_photos(PhotoSource(folder=photos), out, _pipeline(oracle), GenerateConfig(), progress=False)


def _one_photo(tmp_path, captions: dict[int, str]) -> tuple[Oracle, object]:
    oracle = Oracle()
    img = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    inst = np.zeros((H, W), np.int32)
    for k in captions:
        inst[10:40, 10 + 35 * (k - 1):35 + 35 * (k - 1)] = k
    oracle.add(img, inst, captions, np.full((H, W), 2.0, np.float32), hfov=60.0)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(img).save(photos / "p.png")
    return oracle, photos


@pytest.mark.parametrize("captions, kept", [
    ({1: "cup", 2: "cup", 3: "chair"}, ["chair"]),  # the same caption
    ({1: "red cup", 2: "cup", 3: "lamp"}, ["lamp"]),  # one caption's words inside the other's
    ({1: "red cup", 2: "blue cup", 3: "The Lamp"}, ["The Lamp"]),  # the same head noun
])
def test_drop_ambiguous_drops_colliding_captions_without_an_embedder(tmp_path, captions, kept):
    oracle, photos = _one_photo(tmp_path, captions)
    out = tmp_path / "out"
    run_photos(PhotoSource(folder=photos), out, _pipeline(oracle, ambiguity="drop"), GenerateConfig(), progress=False)
    objects = json.loads((out / "scenes" / "p" / "objects.json").read_text())
    assert [o["caption"] for o in objects] == kept
    dets = json.loads((out / "scenes" / "p" / "detections.json").read_text())
    assert [d["dropped_as_ambiguous"] for d in dets] == [c not in kept for c in captions.values()]
    assert dets[0]["ambiguity_group"] == dets[1]["ambiguity_group"] == 0 and dets[2]["ambiguity_group"] is None
    # grouping (the default) keeps them all for the QA engine, which names them by position
    run_photos(PhotoSource(folder=photos), tmp_path / "grouped", _pipeline(oracle), GenerateConfig(), progress=False)
    grouped = json.loads((tmp_path / "grouped" / "scenes" / "p" / "objects.json").read_text())
    assert [o["caption"] for o in grouped] == list(captions.values())


def test_the_report_counts_each_photo_once_per_stage(tmp_path):
    oracle, photos, _ = _photo_dir(tmp_path)
    m = run_photos(PhotoSource(folder=photos), tmp_path / "out", _pipeline(oracle, batch_size=3), GenerateConfig(),
                   progress=False)
    stages = m["perception"]["stages"]
    assert m["perception"]["ok"] == 4  # 4 readable photos, each kept, tagged, detected, ...
    # every photo read is decoded once (7: the 4 readable ones and 3 that fail to decode); each model sees the 4
    assert {s: stages[s]["images"] for s in stages} == {"decode": 7, "filter": 4, "detector": 4, "captioner": 4,
                                                         "segmenter": 4, "depth": 4, "focal_estimator": 0,
                                                         "embedder": 4}
    assert all(stages[s]["gpu_seconds"] == 0 for s in stages)  # on the CPU: no GPU time


def test_no_scene_at_all_is_a_failed_run_saying_why_in_words(tmp_path):
    from spatialforge.errors import RunFailedError

    oracle = Oracle()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(photos / "tiny.png")
    with pytest.raises(RunFailedError, match=r"no image became a scene: 1 image, 0 filtered out, 1 failed "
                                             r"\(too_small 1\)"):
        run_photos(PhotoSource(folder=photos), tmp_path / "out", _pipeline(oracle), GenerateConfig(), progress=False)


def test_a_full_disk_while_writing_scenes_is_one_line_and_the_rerun_completes(tmp_path, monkeypatch):
    import errno

    import spatialforge.perception.pipeline as pl
    from spatialforge.errors import SpatialForgeError

    oracle, photos, _ = _photo_dir(tmp_path)
    out = tmp_path / "out"
    real, calls = pl.save_scene, []

    def full_disk(scene, root, **kw):
        calls.append(scene.scene_id)
        if len(calls) == 3:  # the third scene: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(root / scene.scene_id))
        return real(scene, root, **kw)

    monkeypatch.setattr(pl, "save_scene", full_disk)
    with pytest.raises(SpatialForgeError, match=r"out/scenes/\w+: cannot write \(No space left on device\); the run "
                                                r"stopped"):
        run_photos(PhotoSource(folder=photos), out, _pipeline(oracle, batch_size=2), GenerateConfig(), progress=False)
    done = sorted(p.stem for p in (out / "perception" / "items").glob("*.json"))
    assert calls[2] not in done  # the photo whose scene could not be written has no record: it is redone
    monkeypatch.setattr(pl, "save_scene", real)
    m = run_photos(PhotoSource(folder=photos), out, _pipeline(oracle, batch_size=2), GenerateConfig(), progress=False)
    assert m["perception"]["ok"] == 4 and (out / "scenes" / calls[2] / "objects.json").is_file()
