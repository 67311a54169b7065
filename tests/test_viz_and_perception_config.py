"""Torch-free parts of the photo path: the inspect pictures and the perception config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialforge.core.types import CameraIntrinsics, ObjectAnnotation, RGBDScene
from spatialforge.errors import ConfigError
from spatialforge.perception.config import PerceptionConfig, StageSpec, load_perception_config
from spatialforge.viz import _PALETTE, colorize_depth, render_depth, render_overlay


def _scene(w: int = 80, h: int = 60) -> RGBDScene:
    image = np.full((h, w, 3), 128, np.uint8)
    inst = np.zeros((h, w), np.int32)
    inst[10:30, 5:25] = 1
    inst[35:55, 40:70] = 2
    depth = np.linspace(1.0, 5.0, w, dtype=np.float32)[None, :].repeat(h, 0)
    k = CameraIntrinsics(fx=60.0, fy=60.0, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h)
    objs = (ObjectAnnotation(1, "red mug", group=4), ObjectAnnotation(2, "sofa"))
    return RGBDScene("s", image, depth, inst, k, objs)


def test_overlay_tints_masks_upscales_and_has_a_legend():
    scene = _scene()
    pic = np.asarray(render_overlay(scene, alpha=0.5, min_width=240))
    k = 3  # 80 px -> 240 px
    assert pic.shape[1] == 80 * k + 300 and pic.shape[0] >= 60 * k
    inside = pic[20 * k, 15 * k].astype(int)  # object 1, away from its outline
    expected = np.rint(128 * 0.5 + np.array(_PALETTE[0]) * 0.5)
    np.testing.assert_allclose(inside, expected, atol=1)
    assert tuple(pic[5 * k, 75 * k]) == (128, 128, 128)  # background untouched
    # box outline in the object's colour at the mask's left edge (scaled)
    assert tuple(pic[20 * k, 5 * k]) == _PALETTE[0]
    # the legend has a swatch per object, in the object's colour
    legend = pic[:, 80 * k:]
    for colour in _PALETTE[:2]:
        assert np.any(np.all(legend == colour, axis=-1))
    assert not np.any(np.all(legend == _PALETTE[2], axis=-1))


def test_depth_picture_ramp_and_scale_bar():
    d = np.tile(np.linspace(1, 4, 50, dtype=np.float32), (20, 1))
    d[0, 0] = 0.0  # invalid
    rgb = colorize_depth(d, 1.0, 4.0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert rgb[5, 1, 2] > rgb[5, 1, 0]  # near: blue
    assert rgb[5, -1, 0] > rgb[5, -1, 2]  # far: red
    pic = render_depth(d, title="depth: test", min_width=100)
    assert pic.width == 100 and pic.height == 40 + 40  # 2x, plus the bar and title rows


def test_config_from_toml_and_json(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("""
device = "cpu"
batch_size = 4
vocabulary = ["mug", "chair", " "]
[detector]
backend = "owlv2"
model_id = "google/owlv2-base-patch16"
options = { score_threshold = 0.15 }
[filter]
backend = "clip"
options = { keep_labels = ["a photo of a kitchen"], threshold = 0.4 }
[limits]
max_side = 1024
""")
    cfg = load_perception_config(toml)
    assert cfg.detector == StageSpec("owlv2", "google/owlv2-base-patch16", {"score_threshold": 0.15})
    assert cfg.filter.options["threshold"] == 0.4 and cfg.batch_size == 4
    assert cfg.vocabulary == ("mug", "chair") and cfg.limits.max_side == 1024
    assert cfg.segmenter == PerceptionConfig().segmenter  # untouched stages keep the defaults
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"depth": "depth-pro", "detector": "owlv2", "score_threshold": 0.25}))
    cfg = load_perception_config(js)
    assert cfg.depth == StageSpec("depth-pro") and cfg.score_threshold == 0.25


@pytest.mark.parametrize("text, message", [
    ('batch_sise = 2', "unknown key(s) batch_sise"),
    ('batch_size = 0', "batch_size must be an integer >= 1"),
    ('[detector]\nmodel_id = "x"', "'backend' (a backend name) is required"),
    ('[detector]\nbackend = "owlv2"\nthreshold = 0.1', "unknown key(s) threshold"),
    ('[detector]\nbackend = "owlv2"\noptions = 3', "'options' must be a table"),
    ('[detector]\nbackend = "owlv2"\noptions = { score_threshold = -1 }',
     "[detector]: score_threshold must be a finite number >= 0"),
    ('[detector]\nbackend = "yolo"',
     "[detector]: unknown detector backend 'yolo' (known: florence2-regions, grounding-dino, owlv2, sam3"),
    ('ambiguity = "guess"', "ambiguity must be 'group' or 'drop'"),
    ('[limits]\nmax_sides = 3', "limits:"),
    ('vocabulary = "mug"', "'vocabulary' must be a list of strings"),
    ('[detector', "not valid TOML"),
])
def test_config_errors_name_the_file(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_perception_config(p)
    assert str(p) in str(exc.value) and message in str(exc.value)


def test_config_file_kinds(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_perception_config(tmp_path / "missing.toml")
    (tmp_path / "p.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        load_perception_config(tmp_path / "p.yaml")
    (tmp_path / "p.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level"):
        load_perception_config(tmp_path / "p.json")


def test_score_threshold_defaults_to_each_detectors_own():
    from spatialforge.perception.pipeline import DETECTOR_THRESHOLD, PerceptionPipeline

    assert PerceptionConfig().score_threshold is None
    stages = PerceptionPipeline.from_config(PerceptionConfig(detector=StageSpec("owlv2"), device="cpu")).stages
    assert stages["detector"].score_threshold == 0.2  # OWLv2's own default, not overridden
    cfg = PerceptionConfig(detector=StageSpec("grounding-dino"), score_threshold=0.4, device="cpu")
    assert PerceptionPipeline.from_config(cfg).stages["detector"].box_threshold == 0.4
    cfg = PerceptionConfig(detector=StageSpec("owlv2", options={"score_threshold": 0.05}), score_threshold=0.4)
    assert PerceptionPipeline.from_config(cfg).stages["detector"].score_threshold == 0.05  # its own option wins
    assert set(DETECTOR_THRESHOLD) == {"grounding-dino", "owlv2", "sam3"}
    sam3 = PerceptionConfig(detector=StageSpec("sam3"), segmenter=StageSpec("sam3"), device="cpu")
    assert PerceptionPipeline.from_config(sam3).stages["detector"].score_threshold == 0.5  # SAM 3's own default
    low = sam3.with_overrides(score_threshold=0.1)
    assert PerceptionPipeline.from_config(low).stages["detector"].score_threshold == 0.1


def test_config_values_are_typed_and_checked(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('batch_size = "16"\nmin_mask_pixels = 64.0\n')
    cfg = load_perception_config(p)
    assert cfg.batch_size == 16 and cfg.min_mask_pixels == 64 and isinstance(cfg.min_mask_pixels, int)
    for text, msg in (('min_mask_pixels = -1', "min_mask_pixels must be an integer >= 1"),
                      ('max_objects = 0', "max_objects must be an integer >= 1"),
                      ('batch_size = "many"', "batch_size: expected int")):
        p.write_text(text + "\n")
        with pytest.raises(ConfigError, match=msg):
            load_perception_config(p)


def test_hf_image_ids_do_not_depend_on_limit(tmp_path):
    datasets = pytest.importorskip("datasets")
    from spatialforge.perception.image_io import iter_hf_images

    # 100001 rows: ids need 6 digits whether or not --limit asks for a few (rows are not images here:
    # each yields a recorded failure, which carries the same id an image would)
    datasets.Dataset.from_dict({"image": list(range(100_001))}).save_to_disk(str(tmp_path / "hf"))
    some = [i.image_id for i in iter_hf_images(str(tmp_path / "hf"), limit=2)]
    assert some == ["train-000000", "train-000001"]


# ----------------------------------------------------------------------------- issue 8: the photo path's settings
def _generate_args(*flags: str):
    from spatialforge.cli.main import build_parser

    return build_parser().parse_args(["generate", "photos", "--out", "out", *flags])


def _backends():
    from spatialforge.perception.backends import BACKENDS

    return [(kind, name) for kind, names in BACKENDS.items() for name in names]


@pytest.mark.parametrize("kind, name", _backends())
def test_every_backends_unknown_options_are_refused_when_the_config_is_read(tmp_path, kind, name):
    from spatialforge.perception.backends import backend_options, build_stage

    typo = {"grounding-dino": "box_treshold", "owlv2": "batchsize"}.get(name, "batchsize")
    p = tmp_path / "p.toml"
    p.write_text(f'[{kind}]\nbackend = "{name}"\noptions = {{ {typo} = 1 }}\n')
    with pytest.raises(ConfigError) as exc:
        load_perception_config(p)
    msg = str(exc.value)
    assert str(p) in msg and f"[{kind}]" in msg and f"the {name} {kind}" in msg
    assert f"unknown option '{typo}'" in msg
    known = backend_options(kind, name)
    assert all(option in msg for option in known) and ("known options: none" in msg) == (not known)
    # the same from Python, before any model is loaded
    with pytest.raises(ConfigError, match=f"unknown option '{typo}'"):
        PerceptionConfig(**{kind: StageSpec(name, options={typo: 1})})
    kwargs = {} if not known and name in ("none", "label", "box") else {"model_id": "never-loaded"}
    with pytest.raises(ConfigError, match=f"unknown option '{typo}'"):
        build_stage(kind, name, **kwargs, **{typo: 1})


def test_every_declared_option_is_accepted_and_a_model_id_needs_a_model():
    from spatialforge.perception.backends import NO_MODEL_BACKENDS, backend_options, build_stage

    for kind, name in _backends():
        defaults = backend_options(kind, name)
        kwargs = {} if name in NO_MODEL_BACKENDS else {"model_id": "never-loaded"}
        build_stage(kind, name, **kwargs, **defaults)  # every declared option, at its default
        if name in NO_MODEL_BACKENDS:
            with pytest.raises(ConfigError, match="loads no model"):
                PerceptionConfig(**{kind: StageSpec(name, model_id="some/model")}, vocabulary=("cup",))


def test_the_vocabulary_has_no_repeats():
    from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

    assert len(set(DEFAULT_VOCABULARY)) == len(DEFAULT_VOCABULARY) and "bench" in DEFAULT_VOCABULARY
    assert PerceptionConfig(vocabulary=("cup", "bench", "cup")).vocabulary == ("cup", "bench")


def test_no_filter_never_sends_the_whole_vocabulary_silently(tmp_path):
    from spatialforge.cli.photos import perception_config
    from spatialforge.perception.backends.stub import KeepAllFilter

    gd = StageSpec("grounding-dino")  # a prompted detector: the default florence2-regions takes no tags
    with pytest.raises(ConfigError, match=r"no tagger.*1203 tags.*at most 24"):
        PerceptionConfig(filter=StageSpec("none"), detector=gd)
    small = PerceptionConfig(filter=StageSpec("none"), vocabulary=("cup", "chair"))
    assert KeepAllFilter().tags([np.zeros((4, 4, 3), np.uint8)], small.vocabulary, 24) == [["cup", "chair"]]
    with pytest.raises(ValueError, match="has 2 tags, more than the 1 tag per image"):
        KeepAllFilter().tags([np.zeros((4, 4, 3), np.uint8)], ["cup", "chair"], 1)
    with pytest.raises(ConfigError) as exc:
        perception_config(_generate_args("--filter", "none", "--detector", "grounding-dino"))
    assert str(exc.value).startswith("--filter none") and "--vocabulary" in str(exc.value)
    tags = tmp_path / "tags.txt"
    tags.write_text("cup\nchair\ncup\n")
    # filter none decides no scene type: the routed depth needs one scene type for every photo
    cfg = perception_config(_generate_args("--filter", "none", "--vocabulary", str(tags), "--depth-scene", "indoor"))
    assert cfg.filter.backend == "none" and cfg.vocabulary == ("cup", "chair")


def test_filter_model_alone_is_the_caption_embedders_model_too():
    from spatialforge.cli.photos import perception_config
    from spatialforge.perception.pipeline import PerceptionPipeline

    cfg = perception_config(_generate_args("--filter-model", "/models/my-clip"))
    assert cfg.stage_spec("embedder").model_id == "/models/my-clip"
    stages = PerceptionPipeline.from_config(cfg).stages
    assert stages["embedder"] is stages["filter"] and stages["filter"].model_id == "/models/my-clip"
    cfg = perception_config(_generate_args("--filter-model", "/models/my-clip", "--embedder-model", "/models/other"))
    stages = PerceptionPipeline.from_config(cfg).stages
    assert stages["embedder"] is not stages["filter"] and stages["embedder"].model_id == "/models/other"
    assert PerceptionConfig(filter=StageSpec("none"), vocabulary=("cup",)).stage_spec("embedder").model_id is None


def test_score_threshold_lowers_grounding_dinos_text_threshold_unless_given():
    from spatialforge.cli.photos import perception_config
    from spatialforge.perception.pipeline import PerceptionPipeline

    def detector(*flags: str):
        args = _generate_args("--detector", "grounding-dino", *flags)
        return PerceptionPipeline.from_config(perception_config(args)).stages["detector"]

    assert (detector().box_threshold, detector().text_threshold) == (0.3, 0.25)
    low = detector("--score-threshold", "0.1")
    assert (low.box_threshold, low.text_threshold) == (0.1, 0.1)
    given = detector("--score-threshold", "0.1", "--text-threshold", "0.2")
    assert (given.box_threshold, given.text_threshold) == (0.1, 0.2)
    assert detector("--text-threshold", "0.05").text_threshold == 0.05
    with pytest.raises(ConfigError, match=r"--text-threshold needs --detector grounding-dino"):
        perception_config(_generate_args("--detector", "owlv2", "--text-threshold", "0.2"))


@pytest.mark.parametrize("flags, flag", [
    (("--batch-size", "0"), "--batch-size"),
    (("--score-threshold", "1.5"), "--score-threshold"),
    (("--text-threshold", "-0.1"), "--text-threshold"),
    (("--limit", "0"), "--limit"),
    (("--focal-length", "-3"), "--focal-length"),
    (("--focal-length", "0"), "--focal-length"),
    (("--assume-hfov", "5"), "--assume-hfov"),
    (("--filter-threshold", "nan"), "--filter-threshold"),
    (("--caption-similarity", "2"), "--caption-similarity"),
    (("--device", "gpu"), "--device"),
    (("--dtype", "int8"), "--dtype"),
    (("--keep-labels", "a room,,a kitchen"), "--keep-labels"),
])
def test_photo_options_are_checked_when_parsed(tmp_path, capsys, flags, flag):
    from spatialforge.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["generate", str(photos), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {flag}" in err[0]
    assert not (tmp_path / "out").exists()


def test_assume_hfov_takes_degrees_or_none():
    from spatialforge.cli.photos import perception_config

    assert perception_config(_generate_args("--assume-hfov", "none")).assumed_hfov_deg is None
    assert perception_config(_generate_args("--assume-hfov", "75")).assumed_hfov_deg == 75.0
    assert perception_config(_generate_args()).assumed_hfov_deg is None  # never assumed unless asked for


@pytest.mark.parametrize("flags, start", [
    (("--keep-labels", "a room", "--drop-labels", "a room"), "--keep-labels, --drop-labels: [filter]"),
    (("--captioner", "label", "--captioner-model", "x/y"), "--captioner-model: the captioner backend 'label'"),
    (("--filter", "none", "--keep-labels", "a room"), "--keep-labels needs --filter clip"),
])
def test_config_errors_name_the_flag_that_caused_them(flags, start):
    from spatialforge.cli.photos import perception_config

    with pytest.raises(ConfigError) as exc:
        perception_config(_generate_args(*flags))
    assert str(exc.value).startswith(start)


def test_the_fingerprint_covers_what_changes_outputs_only():
    from spatialforge.perception.config import describe_changes

    gd = StageSpec("grounding-dino")  # tag-then-detect: the vocabulary and thresholds count
    base = PerceptionConfig(detector=gd)
    same = [base.with_overrides(device="cuda", batch_size=2, low_memory=True),
            PerceptionConfig(detector=StageSpec("grounding-dino", "IDEA-Research/grounding-dino-base",
                                                {"box_threshold": 0.3, "batch_size": 1})),
            PerceptionConfig(detector=gd, filter=StageSpec("clip", options={"batch_size": 2, "text_batch_size": 8}))]
    for cfg in same:
        assert cfg.fingerprint() == base.fingerprint()
    changed = {
        "stages.detector.backend 'grounding-dino' -> 'owlv2'": PerceptionConfig(detector=StageSpec("owlv2")),
        "stages.depth.model_id": PerceptionConfig(depth=StageSpec("depth-anything-v2", "my/depth")),
        "score_threshold None -> 0.1": base.with_overrides(score_threshold=0.1),
        "stages.detector.options.text_threshold 0.25 -> 0.1": base.with_overrides(score_threshold=0.1),
        "vocabulary: 1 entry added (teapot shelf)": PerceptionConfig(detector=gd,
                                                                     vocabulary=(*base.vocabulary, "teapot shelf")),
        "dtype 'float32' -> 'bfloat16'": base.with_overrides(dtype="bfloat16"),
        "ambiguity 'group' -> 'drop'": base.with_overrides(ambiguity="drop"),
        "stages.filter.options.threshold 0.5 -> 0.7": PerceptionConfig(filter=StageSpec("clip", options={
            "threshold": 0.7})),
    }
    for phrase, cfg in changed.items():
        assert cfg.fingerprint() != base.fingerprint(), phrase
        assert any(c.startswith(phrase) for c in describe_changes(base.output_settings(), cfg.output_settings())), \
            (phrase, describe_changes(base.output_settings(), cfg.output_settings()))


def test_one_threshold_checker_and_one_box_clipper():
    from pathlib import Path

    import spatialforge.perception as perception
    from spatialforge.perception.backends.clip import ClipFilter
    from spatialforge.perception.backends.florence2 import Florence2Captioner
    from spatialforge.perception.backends.grounding_dino import GroundingDinoDetector
    from spatialforge.perception.backends.owlv2 import Owlv2Detector
    from spatialforge.perception.backends.sam import Sam2Segmenter
    from spatialforge.perception.boxes import clip_boxes
    from spatialforge.perception.checks import check_number

    assert check_number(0.5, "t", low=0.0, high=1.0) == 0.5 and check_number(-3, "t") == -3.0
    for bad in (float("nan"), float("inf"), True, "0.3", None, -0.1):
        with pytest.raises(ConfigError, match=r"^t must be a finite number >= 0, got"):
            check_number(bad, "t", low=0.0)
    with pytest.raises(ValueError, match=r"^t must be a number in \[0, 1\], got 2"):
        check_number(2, "t", low=0.0, high=1.0, error=ValueError)
    with pytest.raises(ConfigError, match=r"must be a finite number > 0"):
        check_number(0.0, "t", low=0.0, strict_low=True)
    # every backend words a bad threshold the same way (they share the checker)
    for make, option in ((GroundingDinoDetector, "box_threshold"), (GroundingDinoDetector, "text_threshold"),
                         (Owlv2Detector, "score_threshold"), (ClipFilter, "threshold"),
                         (Florence2Captioner, "crop_margin")):
        with pytest.raises(ConfigError, match=rf"{option} must be a finite number >= 0\b.*got nan"):
            make(model_id="never-loaded", **{option: float("nan")})
    with pytest.raises(ConfigError, match=r"mask_threshold must be a finite number \(a logit\), got inf"):
        Sam2Segmenter(model_id="never-loaded", mask_threshold=float("inf"))
    boxes = clip_boxes(np.array([[-5, -2, 50, 10], [3, 4, 5, 6]]), 40, 8)
    np.testing.assert_array_equal(boxes, [[0, 0, 40, 8], [3, 4, 5, 6]])
    # the old copies are gone: no module clips boxes or checks a threshold by hand any more
    root = Path(perception.__file__).parent
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if path.name not in ("boxes.py", "checks.py"):
            assert "[:, [0, 2]] = np.clip" not in text, f"{path.name} clips boxes itself: use boxes.clip_boxes"
        if path.name != "checks.py":
            assert "isinstance(value, Real)" not in text and "not isinstance(threshold, Real)" not in text, path.name
