"""Metric depth that fits the photo, through the photo pipeline: indoor/outdoor routing of Depth Anything V2 by
the CLIP filter's scene decision, the maximum range, and where each photo's focal length comes from.

Tiny random models (CLIP, two Depth Anything V2 checkpoints, Depth Pro's FOV head) load through the real
``from_pretrained`` path; detection and masks come from the oracle stages of ``test_photo_pipeline``.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from spatialforge.errors import ConfigError, SpatialForgeError  # noqa: E402
from spatialforge.perception.backends import build_stage  # noqa: E402
from spatialforge.perception.backends.depth import DepthAnythingV2Checkpoint  # noqa: E402
from spatialforge.perception.backends.stub import (  # noqa: E402
    GivenDepth,
    KeepAllFilter,
    LabelCaptioner,
    NoTextEmbedder,
)
from spatialforge.perception.config import PerceptionConfig, StageSpec  # noqa: E402
from spatialforge.perception.pipeline import PerceptionPipeline  # noqa: E402
from spatialforge.pipeline import GenerateConfig  # noqa: E402
from spatialforge.pipeline.photos import PhotoSource, run_photos  # noqa: E402
from spatialforge.synth import SynthConfig, generate_scene  # noqa: E402

from .test_photo_pipeline import Oracle, OracleSegmenter, _key  # noqa: E402
from .tiny_clip import build_tiny_clip  # noqa: E402
from .tiny_depth import build_tiny_depth_anything, build_tiny_depth_pro  # noqa: E402

W, H = 160, 120
WORDS = ("room", "street", "garden", "kitchen", "office", "park", "forest", "beach", "hall", "road")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("routing_models")
    return {"clip": str(build_tiny_clip(root / "clip")),
            "indoor": str(build_tiny_depth_anything(root / "indoor", seed=0, max_depth=20)),
            "outdoor": str(build_tiny_depth_anything(root / "outdoor", seed=1, max_depth=80)),
            "dp": str(build_tiny_depth_pro(root / "dp"))}


def _scenes(n: int, seed: int = 3) -> list:
    return [generate_scene(i, seed=seed, config=SynthConfig(width=W, height=H)) for i in range(n)]


def _add_truth(oracle: Oracle, image: np.ndarray, scene, hfov: float | None = None) -> None:
    inst = np.zeros(scene.instances.shape, np.int32)
    captions = {}
    for k, obj in enumerate(sorted(scene.objects, key=lambda o: int(o["id"])), start=1):
        inst[scene.instances == int(obj["id"])] = k
        captions[k] = obj["caption"]
    oracle.add(image, inst, captions, scene.depth, hfov=hfov)


def _scene_labels(clip: str, images: list[np.ndarray]) -> tuple[list[str], list[str], list[str]]:
    """Indoor / outdoor prompts under which the tiny random CLIP calls at least two photos of each type
    (its default prompts call every synthetic photo outdoor), and the scene of each photo."""
    for a, b in itertools.permutations(WORDS, 2):
        labels = [f"a photo of a {a}"], [f"a photo of a {b}"]
        flt = build_stage("filter", "clip", model_id=clip, device="cpu", threshold=0.0, indoor_labels=labels[0],
                          outdoor_labels=labels[1])
        scenes = [d.scene for d in flt(images)]
        if min(scenes.count("indoor"), scenes.count("outdoor")) >= 2:
            return labels[0], labels[1], scenes
    raise AssertionError("no prompt pair splits the photos into indoor and outdoor")


def test_the_clip_filter_decides_each_photos_scene_type_from_two_prompt_ensembles(models):
    images = [s.image for s in _scenes(3)]
    flt = build_stage("filter", "clip", model_id=models["clip"], device="cpu")
    decisions = flt(images)
    image_emb = flt._encode_images(images).astype(np.float64)
    classes = []
    # the defaults: the keep labels split by scene type (their embeddings serve the keep decision too)
    assert flt.outdoor_labels == ("a photo of a street", "a photo of a garden")
    assert set(flt.indoor_labels) | set(flt.outdoor_labels) == set(flt.keep_labels)
    for labels in (flt.indoor_labels, flt.outdoor_labels):
        mean = flt.embed_text(list(labels)).astype(np.float64).mean(axis=0)
        classes.append(mean / np.linalg.norm(mean))
    logits = flt._logit_scale() * image_emb @ np.stack(classes).T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    for d, (p_in, p_out) in zip(decisions, expected, strict=True):
        assert d.scene_scores == pytest.approx({"indoor": p_in, "outdoor": p_out}, abs=1e-6)
        assert d.scene == ("outdoor" if p_out > p_in else "indoor")
        assert d.to_dict()["scene"] == d.scene and set(d.to_dict()["scene_scores"]) == {"indoor", "outdoor"}
    with pytest.raises(ConfigError, match="labels in both indoor_labels and outdoor_labels"):
        build_stage("filter", "clip", indoor_labels=["a photo of a yard"], outdoor_labels=["a photo of a yard"])
    with pytest.raises(ConfigError, match="outdoor_labels must not be empty"):
        build_stage("filter", "clip", outdoor_labels=[])


def _routing_pipeline(models: dict[str, str], oracle: Oracle, labels: tuple[list[str], list[str]],
                      **cfg) -> PerceptionPipeline:
    config = PerceptionConfig(
        filter=StageSpec("clip", models["clip"], {"threshold": 0.0, "indoor_labels": labels[0],
                                                  "outdoor_labels": labels[1]}),
        embedder=StageSpec("none"), detector=StageSpec("oracle"), captioner=StageSpec("label"),
        segmenter=StageSpec("oracle"),
        depth=StageSpec("depth-anything-v2", options={"indoor_model": models["indoor"],
                                                      "outdoor_model": models["outdoor"]}),
        focal_estimator=StageSpec("depth-pro", models["dp"]), device="cpu", score_threshold=0.0,
        min_area_frac=0.0, max_objects=64, min_mask_pixels=1, **cfg)
    stages = {kind: build_stage(kind, config.stage_spec(kind).backend, **config.stage_kwargs(kind))
              for kind in ("filter", "depth", "focal_estimator")}
    stages.update(detector=oracle, segmenter=OracleSegmenter(oracle), captioner=LabelCaptioner(),
                  embedder=NoTextEmbedder())
    return PerceptionPipeline(config, stages)


@pytest.fixture(scope="module")
def routed_photos(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("routed_photos")
    oracle = Oracle()
    scenes = _scenes(6)
    for i, s in enumerate(scenes):
        Image.fromarray(s.image).save(folder / f"p{i}.png")
        _add_truth(oracle, s.image, s)
    indoor, outdoor, decided = _scene_labels(models["clip"], [s.image for s in scenes])
    return folder, oracle, (indoor, outdoor), {f"p{i}": d for i, d in enumerate(decided)}


def test_photos_the_filter_calls_outdoor_get_the_outdoor_checkpoint(models, routed_photos, tmp_path):
    folder, oracle, labels, decided = routed_photos
    out = tmp_path / "out"
    manifest = run_photos(PhotoSource(folder=folder), out, _routing_pipeline(models, oracle, labels, batch_size=4),
                          GenerateConfig(), progress=False)
    assert manifest["perception"]["ok"] == len(decided)
    for image_id, scene_type in decided.items():
        folder_out = out / "scenes" / image_id
        prov = json.loads((folder_out / "provenance.json").read_text())
        decision = json.loads((folder_out / "filter.json").read_text())["decision"]
        assert decision["scene"] == prov["scene_type"] == scene_type  # the filter's decision, recorded
        assert set(decision["scene_scores"]) == {"indoor", "outdoor"}
        assert (decision["scene_scores"]["outdoor"] > 0.5) == (scene_type == "outdoor")
        assert prov["depth_model"] == models[scene_type]  # the checkpoint that made this photo's depth
        assert prov["models"]["depth"] == {"backend": "depth-anything-v2", "model_id": models[scene_type]}
        assert prov["depth_info"]["scene"] == scene_type
        assert prov["depth_max_range_m"] == {"indoor": 20.0, "outdoor": 80.0}[scene_type]
        # no EXIF, no focal length given, Depth Anything predicts none: Depth Pro's FOV head estimated it
        assert prov["intrinsics_source"] == "estimated:depth-pro" and prov["intrinsics_model"] == models["dp"]
        depth = np.load(folder_out / "depth.npy")
        assert np.all(depth <= 0.97 * prov["depth_max_range_m"])
    graph = json.loads((out / "scene_graphs" / "p0.json").read_text())
    assert graph["provenance"]["depth_model"] == models[decided["p0"]]  # the scene graph carries it too
    depth_report = manifest["perception"]["stages"]["depth"]
    assert depth_report["checkpoints"] == {"indoor": models["indoor"], "outdoor": models["outdoor"]}
    assert depth_report["images"] == len(decided)  # each photo counted once, whichever checkpoint ran it


@pytest.mark.parametrize("low_memory", [False, True])
def test_routing_loads_each_checkpoint_once_per_chunk_and_one_at_a_time_in_low_memory(models, routed_photos,
                                                                                      tmp_path, low_memory):
    folder, oracle, labels, decided = routed_photos
    pipe = _routing_pipeline(models, oracle, labels, batch_size=len(decided), low_memory=low_memory)
    router = pipe.stages["depth"]
    loads: dict[str, int] = {}
    most = 0
    for sub in {id(s): s for s in router._stages.values()}.values():
        def load(sub=sub, original=sub.load):
            nonlocal most
            if sub.model is None:
                loads[sub.model_id] = loads.get(sub.model_id, 0) + 1
            original()
            most = max(most, len(router.resident()))
        sub.load = load
    run_photos(PhotoSource(folder=folder), tmp_path / "out", pipe, GenerateConfig(), progress=False)
    # one chunk holding both scene types: the photos are grouped, so each checkpoint loads once
    assert loads == {models["indoor"]: 1, models["outdoor"]: 1}
    assert most == (1 if low_memory else 2)  # low memory: never both checkpoints at once
    assert router.resident() == []  # all released at the end of the run


def test_filter_none_cannot_route_by_scene_type(tmp_path, capsys):
    config = PerceptionConfig(filter=StageSpec("none"), vocabulary=("cup", "chair"))
    with pytest.raises(ConfigError, match=r"^\[filter\]: filter 'none' decides no scene type.*--depth-scene"):
        config.check()
    PerceptionConfig(filter=StageSpec("none"), vocabulary=("cup",),
                     depth=StageSpec("depth-anything-v2", options={"scene": "indoor"})).check()
    PerceptionConfig(filter=StageSpec("none"), vocabulary=("cup",), depth=StageSpec("zoedepth")).check()
    from spatialforge.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_scenes(1)[0].image).save(photos / "a.png")
    tags = tmp_path / "tags.txt"
    tags.write_text("cup\nchair\n")
    assert main(["generate", str(photos), "--out", str(tmp_path / "out"), "--filter", "none",
                 "--vocabulary", str(tags)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].count("--filter none") >= 1 and "--depth-scene" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_filter_without_scene_types_stops_a_routing_run(models, tmp_path):
    oracle = Oracle()
    scene = _scenes(1)[0]
    _add_truth(oracle, scene.image, scene)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(scene.image).save(photos / "a.png")
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), detector=StageSpec("oracle"),
                              captioner=StageSpec("label"), segmenter=StageSpec("oracle"), vocabulary=("cup",),
                              focal_length_px=100.0, min_area_frac=0.0, min_mask_pixels=1, device="cpu")
    stages = {"filter": KeepAllFilter(), "detector": oracle, "segmenter": OracleSegmenter(oracle),
              "captioner": LabelCaptioner(), "embedder": NoTextEmbedder(),
              "depth": build_stage("depth", "depth-anything-v2", indoor_model=models["indoor"],
                                   outdoor_model=models["outdoor"], device="cpu")}
    with pytest.raises(SpatialForgeError, match="routes each photo by the filter's scene type"):
        run_photos(PhotoSource(folder=photos), tmp_path / "out", PerceptionPipeline(config, stages), progress=False)


# ============================================================================= maximum range
class _NoNetwork:
    def eval(self) -> _NoNetwork:
        return self


class GivenNetworkDepth(DepthAnythingV2Checkpoint):
    """Depth Anything V2's own post-processing (bilinear resize, max-range cap) of a network output given per
    image: as if the model had predicted it."""

    def __init__(self, maps: dict[bytes, np.ndarray], max_depth: float) -> None:
        super().__init__(model_id="given-network-depth", device="cpu")
        self.maps, self._max_depth = maps, max_depth

    def _load(self):
        self.max_range_m = float(self._max_depth)
        return _NoNetwork(), None

    def _network_depth(self, images):
        return [torch.as_tensor(self.maps[_key(img)], dtype=torch.float32) for img in images]


def test_an_object_at_the_max_range_is_skipped_with_a_reason(tmp_path):
    """A kite against the sky (network depth at the 20 m max) has no measurement: the geometry skips it with
    reason no_valid_depth; the box on the ground at 4 m is measured."""
    img = np.full((H, W, 3), 120, np.uint8)
    img[:60] = (140, 190, 240)  # sky
    img[15:40, 20:60] = (200, 40, 40)  # kite
    img[75:110, 80:130] = (60, 140, 60)  # box
    inst = np.zeros((H, W), np.int32)
    inst[15:40, 20:60] = 1
    inst[75:110, 80:130] = 2
    oracle = Oracle()
    oracle.add(img, inst, {1: "red kite", 2: "green box"}, np.zeros((H, W), np.float32))
    net = np.full((30, 40), 20.0, np.float32)  # the network's resolution: sky saturates at max_depth
    net[15:] = np.linspace(6.0, 3.0, 15, dtype=np.float32)[:, None]  # the ground: 6 m far up to 3 m near
    depth_stage = GivenNetworkDepth({_key(img): net}, max_depth=20)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(img).save(photos / "kite.png")
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), detector=StageSpec("oracle"),
                              captioner=StageSpec("label"), segmenter=StageSpec("oracle"), depth=StageSpec("oracle"),
                              vocabulary=("kite", "box"), focal_length_px=150.0, score_threshold=0.0,
                              min_area_frac=0.0, min_mask_pixels=1, device="cpu")
    pipe = PerceptionPipeline(config, {"filter": KeepAllFilter(), "detector": oracle,
                                       "segmenter": OracleSegmenter(oracle), "captioner": LabelCaptioner(),
                                       "embedder": NoTextEmbedder(), "depth": depth_stage})
    out = tmp_path / "out"
    manifest = run_photos(PhotoSource(folder=photos), out, pipe, GenerateConfig(), progress=False)
    depth = np.load(out / "scenes" / "kite" / "depth.npy")
    assert np.all(depth[:60] == 0)  # the sky: no measurement, not a wall at 20 m
    assert np.all(depth[64:] > 0) and float(depth.max()) < 6.5  # the ground: measured (a blend row or two is not)
    graph = json.loads((out / "scene_graphs" / "kite.json").read_text())
    assert [o["caption"] for o in graph["objects"]] == ["green box"]
    assert graph["skipped_objects"] == [{"id": 1, "caption": "red kite", "reason": "no_valid_depth",
                                         "detail": "1000 pixels, none with depth"}]
    assert manifest["counts"]["objects_skipped"] == {"no_valid_depth": 1}  # counted in the manifest: not silent
    prov = graph["provenance"]
    assert prov["depth_max_range_m"] == 20.0 and 0.5 <= prov["depth_info"]["beyond_range_fraction"] < 0.6


# ============================================================================= where the focal length comes from
def _exif_jpeg(path: Path, image: np.ndarray, f35: float) -> np.ndarray:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = f35
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95, exif=exif)
    path.write_bytes(buf.getvalue())
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture()
def focal_photos(tmp_path):
    """One photo with an EXIF focal length and one without; the depth model predicts no field of view."""
    oracle = Oracle()
    folder = tmp_path / "photos"
    folder.mkdir()
    a, b = _scenes(2, seed=8)
    decoded = _exif_jpeg(folder / "exif.jpg", a.image, f35=28)
    _add_truth(oracle, decoded, a)
    Image.fromarray(b.image).save(folder / "plain.png")
    _add_truth(oracle, b.image, b)
    return oracle, folder


def _focal_run(models, oracle, folder, out, **cfg):
    config = PerceptionConfig(filter=StageSpec("none"), embedder=StageSpec("none"), detector=StageSpec("oracle"),
                              captioner=StageSpec("label"), segmenter=StageSpec("oracle"), depth=StageSpec("oracle"),
                              vocabulary=("cup",), score_threshold=0.0, min_area_frac=0.0, max_objects=64,
                              min_mask_pixels=1, device="cpu", **cfg)
    stages = {"filter": KeepAllFilter(), "detector": oracle, "segmenter": OracleSegmenter(oracle),
              "captioner": LabelCaptioner(), "embedder": NoTextEmbedder(),
              "depth": GivenDepth(lambda img: (oracle.truth[_key(img)]["depth"], None), model_id="oracle-depth"),
              "focal_estimator": build_stage("focal_estimator", config.focal_estimator.backend,
                                             **config.stage_kwargs("focal_estimator"))}
    pipe = PerceptionPipeline(config, stages)
    run_photos(PhotoSource(folder=folder), out, pipe, GenerateConfig(), progress=False)
    records = {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}
    return records, stages["focal_estimator"]


def test_provenance_says_where_each_focal_length_comes_from(models, focal_photos, tmp_path):
    oracle, folder = focal_photos
    assert PerceptionConfig().assumed_hfov_deg is None  # the default assumes nothing
    assert PerceptionConfig().focal_estimator == StageSpec("depth-pro")

    # default: EXIF where present, else Depth Pro's field-of-view head
    records, estimator = _focal_run(models, oracle, folder, tmp_path / "estimated",
                                    focal_estimator=StageSpec("depth-pro", models["dp"]))
    assert {k: r["intrinsics_source"] for k, r in records.items()} == {"exif": "exif",
                                                                      "plain": "estimated:depth-pro"}
    prov = json.loads((tmp_path / "estimated" / "scenes" / "plain" / "provenance.json").read_text())
    assert prov["intrinsics_model"] == models["dp"] and 40 < prov["hfov_deg"] < 80  # the tiny head's ~60 degrees
    estimate = estimator([np.array(Image.open(folder / "plain.png"))])[0]
    assert prov["focal_length_px"] == pytest.approx(estimate.focal_length_px, abs=1e-3)
    exif_prov = json.loads((tmp_path / "estimated" / "scenes" / "exif" / "provenance.json").read_text())
    assert exif_prov["intrinsics_model"] is None
    assert exif_prov["focal_length_px"] == pytest.approx(28 * np.hypot(W, H) / np.hypot(36, 24), abs=1e-3)

    # an assumed FOV, asked for: it replaces the estimator, which never loads
    records, estimator = _focal_run(models, oracle, folder, tmp_path / "assumed", assumed_hfov_deg=60.0,
                                    focal_estimator=StageSpec("depth-pro", str(tmp_path / "no-such-model")))
    assert {k: r["intrinsics_source"] for k, r in records.items()} == {"exif": "exif", "plain": "assumed:hfov_60"}
    assert estimator.model is None

    # no estimator and nothing assumed: the photo without a focal length is left out, with its reason
    records, _ = _focal_run(models, oracle, folder, tmp_path / "none", focal_estimator=StageSpec("none"))
    assert records["exif"]["status"] == "ok" and records["exif"]["intrinsics_source"] == "exif"
    assert records["plain"]["status"] == "failed" and records["plain"]["reason"] == "no_intrinsics"
    assert "plain.png" in records["plain"]["message"] and "--assume-hfov" in records["plain"]["message"]

    # the user's focal length wins over EXIF
    records, _ = _focal_run(models, oracle, folder, tmp_path / "user", focal_length_px=150.0,
                            focal_estimator=StageSpec("none"))
    assert {k: r["intrinsics_source"] for k, r in records.items()} == {"exif": "user", "plain": "user"}


def test_an_unavailable_focal_estimator_stops_the_run_with_what_to_do(models, focal_photos, tmp_path):
    oracle, folder = focal_photos
    with pytest.raises(ConfigError) as err:
        _focal_run(models, oracle, folder, tmp_path / "out",
                   focal_estimator=StageSpec("depth-pro", str(tmp_path / "no-such-model")))
    assert "--assume-hfov" in str(err.value) and "--focal-estimator none" in str(err.value)


# ============================================================================= the command line
def test_cli_routes_by_scene_type_with_the_indoor_and_outdoor_models(models, routed_photos, tmp_path):
    from spatialforge.cli.main import main
    from spatialforge.cli.photos import perception_config

    folder, _, labels, decided = routed_photos
    config = tmp_path / "perception.toml"
    config.write_text(f"[filter]\nbackend = \"clip\"\nmodel_id = \"{models['clip']}\"\n"
                      f"options = {{ threshold = 0.0, indoor_labels = {json.dumps(labels[0])}, "
                      f"outdoor_labels = {json.dumps(labels[1])} }}\n")
    tags = tmp_path / "tags.txt"
    tags.write_text("chair\ntable\nlamp\n")
    out = tmp_path / "out"
    args = [str(folder), "--out", str(out), "--perception-config", str(config), "--vocabulary", str(tags),
            "--detector", "owlv2", "--detector-model", str(build_tiny_owlv2_dir(tmp_path)), "--score-threshold", "0",
            "--captioner", "label", "--segmenter", "box", "--embedder", "none",
            "--depth-indoor-model", models["indoor"], "--depth-outdoor-model", models["outdoor"],
            "--focal-estimator-model", models["dp"], "--no-progress", "--device", "cpu", "--qa-per-image", "4"]
    assert main(["generate", *args]) == 0
    ok = [p.name for p in (out / "scenes").iterdir() if (p / "provenance.json").is_file()]
    assert {decided[k] for k in ok} == {"indoor", "outdoor"}
    for k in ok:
        prov = json.loads((out / "scenes" / k / "provenance.json").read_text())
        assert prov["scene_type"] == decided[k] and prov["depth_model"] == models[decided[k]]
        assert prov["intrinsics_source"] == "estimated:depth-pro"
    # the routing flags are depth-anything-v2 options; another depth backend refuses them, naming the flag
    parsed = _parse(["--depth", "zoedepth", "--depth-scene", "indoor"])
    with pytest.raises(ConfigError, match=r"^--depth-scene needs --depth depth-anything-v2"):
        perception_config(parsed)
    both = _parse(["--depth-model", "a/b", "--depth-outdoor-model", "c/d"])
    with pytest.raises(ConfigError, match=r"^--depth-model, --depth-outdoor-model: .*one checkpoint for every photo"):
        perception_config(both)
    margin = perception_config(_parse(["--depth", "zoedepth", "--depth-range-margin", "0.9"]))
    assert margin.depth == StageSpec("zoedepth", None, {"range_margin": 0.9})


def build_tiny_owlv2_dir(tmp_path: Path) -> Path:
    from .tiny_detectors import build_tiny_owlv2

    return build_tiny_owlv2(tmp_path / "owl")


def _parse(flags: list[str]):
    from spatialforge.cli.main import build_parser

    return build_parser().parse_args(["generate", "photos", "--out", "o", *flags])
