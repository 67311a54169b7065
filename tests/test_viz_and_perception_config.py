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
    js.write_text(json.dumps({"depth": "depth-pro", "score_threshold": 0.25}))
    cfg = load_perception_config(js)
    assert cfg.depth == StageSpec("depth-pro") and cfg.score_threshold == 0.25


@pytest.mark.parametrize("text, message", [
    ('batch_sise = 2', "unknown key(s) batch_sise"),
    ('batch_size = 0', "batch_size must be >= 1"),
    ('[detector]\nmodel_id = "x"', "'backend' (a backend name) is required"),
    ('[detector]\nbackend = "owlv2"\nthreshold = 0.1', "unknown key(s) threshold"),
    ('[detector]\nbackend = "owlv2"\noptions = 3', "'options' must be a table"),
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
    assert set(DETECTOR_THRESHOLD) == {"grounding-dino", "owlv2"}


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
