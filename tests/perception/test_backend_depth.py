"""Metric depth backends (Depth Anything V2 metric, ZoeDepth, Depth Pro) and the Depth Pro focal estimator on tiny
random checkpoints; intrinsics helpers."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import ExifTags, Image  # noqa: E402

from spatialforge.errors import ConfigError, SceneError, SpatialForgeError  # noqa: E402
from spatialforge.perception.backends import DEFAULT_MODELS, build_stage  # noqa: E402
from spatialforge.perception.backends.depth import (  # noqa: E402
    DA_V2_INDOOR,
    DA_V2_OUTDOOR,
    DepthAnythingV2Checkpoint,
    DepthAnythingV2Depth,
    DepthProDepth,
    DepthProFocal,
    NoFocalEstimator,
    ZoeDepthDepth,
)
from spatialforge.perception.intrinsics import (  # noqa: E402
    exif_focal_length_px,
    intrinsics_from_focal,
    intrinsics_from_hfov,
    resolve_intrinsics,
)
from spatialforge.perception.ports import DepthEstimator, FocalEstimator, Stage  # noqa: E402
from spatialforge.perception.types import DepthPrediction, FocalEstimate  # noqa: E402

from .tiny_depth import DEPTH_ANYTHING_SIZE, DEPTH_PRO_SIZE, build_tiny_depth_anything, build_tiny_depth_pro  # noqa: E402
from .tiny_zoedepth import build_tiny_zoedepth  # noqa: E402

MAX_DEPTH = 20


# ============================================================================= intrinsics
def test_intrinsics_from_hfov_golden():
    k = intrinsics_from_hfov(640, 480, 90.0)
    assert k.fx == pytest.approx(320.0, abs=1e-9)  # (640 / 2) / tan(45 deg)
    assert k.fy == k.fx
    assert (k.cx, k.cy) == (319.5, 239.5)  # pixel centres at integer coordinates: ((W - 1) / 2, (H - 1) / 2)
    assert (k.width, k.height) == (640, 480)
    assert k.hfov_deg == pytest.approx(90.0)
    k60 = intrinsics_from_hfov(640, 480, 60.0)
    assert k60.fx == pytest.approx(320.0 * math.sqrt(3.0), rel=1e-12)  # 320 / tan(30 deg) = 554.256
    assert intrinsics_from_hfov(101, 37, 73.0).hfov_deg == pytest.approx(73.0)


def test_intrinsics_from_focal_and_errors():
    k = intrinsics_from_focal(300, 200, 250.0)
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (250.0, 250.0, 149.5, 99.5, 300, 200)
    for bad in (0.0, 180.0, -5.0, float("nan"), 200.0):
        with pytest.raises(ValueError):
            intrinsics_from_hfov(640, 480, bad)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError):
            intrinsics_from_focal(640, 480, bad)
    with pytest.raises(ValueError):
        intrinsics_from_focal(0, 480, 100.0)


def _jpeg(size: tuple[int, int], base: dict[int, object] | None = None,
          sub: dict[int, object] | None = None) -> Image.Image:
    """A JPEG (written and re-opened) of ``size`` with the given IFD0 and Exif sub-IFD tags."""
    exif = Image.Exif()
    for tag, value in (base or {}).items():
        exif[tag] = value
    if sub:
        ifd = exif.get_ifd(ExifTags.IFD.Exif)
        for tag, value in sub.items():
            ifd[tag] = value
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buf, "JPEG", exif=exif)
    return Image.open(io.BytesIO(buf.getvalue()))


F35 = ExifTags.Base.FocalLengthIn35mmFilm


def test_exif_35mm_equivalent_diagonal():
    # 3:2 image: the diagonal and the 36 mm width conventions agree: 28 mm * 600 px / 36 mm
    assert exif_focal_length_px(_jpeg((600, 400), sub={F35: 28})) == pytest.approx(28 * 600 / 36, rel=1e-9)
    # 4:3 image: diagonal equivalence, 28 mm * 800 px / 43.2666 mm = 517.72 px
    f = exif_focal_length_px(_jpeg((640, 480), sub={F35: 28}))
    assert f == pytest.approx(28 * 800 / math.hypot(36, 24), rel=1e-9)
    assert f == pytest.approx(517.72, abs=0.01)
    # the tag in IFD0 (some writers put it there) is read too
    assert exif_focal_length_px(_jpeg((640, 480), base={F35: 28})) == pytest.approx(f, rel=1e-9)


def test_exif_absent_or_implausible_is_none():
    assert exif_focal_length_px(_jpeg((640, 480))) is None
    assert exif_focal_length_px(Image.new("RGB", (64, 48))) is None
    assert exif_focal_length_px(_jpeg((640, 480), sub={F35: 400})) is None  # hfov ~ 5 deg
    assert exif_focal_length_px(_jpeg((640, 480), sub={F35: 6})) is None  # hfov ~ 134 deg
    assert exif_focal_length_px(_jpeg((640, 480), sub={F35: 0})) is None


def test_exif_orientation_and_resize():
    stored = _jpeg((600, 400), base={ExifTags.Base.Orientation: 6}, sub={F35: 28})
    f = exif_focal_length_px(stored)  # default oriented size: (400, 600), diagonal unchanged
    assert f == pytest.approx(466.6667, abs=1e-3)
    assert exif_focal_length_px(stored, oriented_size=(400, 600)) == pytest.approx(f, rel=1e-12)
    assert exif_focal_length_px(stored, oriented_size=(200, 300)) == pytest.approx(f / 2, rel=1e-9)
    # the plausibility test uses the displayed width: 9 mm equivalent = 150 px, 127 deg across 600 px (rejected)
    # but 106 deg across the 400 px of the image rotated upright (accepted)
    assert exif_focal_length_px(_jpeg((600, 400), sub={F35: 9})) is None
    rotated = _jpeg((600, 400), base={ExifTags.Base.Orientation: 6}, sub={F35: 9})
    assert exif_focal_length_px(rotated) == pytest.approx(150.0, rel=1e-9)
    assert exif_focal_length_px(rotated, oriented_size=(600, 400)) is None  # the caller says it is not rotated


def test_exif_focal_plane_resolution():
    fl, res = ExifTags.Base.FocalLength, ExifTags.Base.FocalPlaneXResolution
    unit = ExifTags.Base.FocalPlaneResolutionUnit
    # 4 mm lens, 100 px per mm -> 400 px
    assert exif_focal_length_px(_jpeg((600, 400), sub={fl: 4.0, res: 100.0, unit: 4})) == pytest.approx(400.0)
    assert exif_focal_length_px(_jpeg((600, 400), sub={fl: 4.0, res: 2540.0, unit: 2})) == pytest.approx(400.0)
    assert exif_focal_length_px(_jpeg((600, 400), sub={fl: 4.0, res: 2540.0})) == pytest.approx(400.0)  # inch default
    # the camera wrote 1200 x 800 (the resolution refers to that grid): stored at half size -> 400 px
    px, py = ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight
    assert exif_focal_length_px(_jpeg((600, 400), sub={fl: 4.0, res: 200.0, unit: 4, px: 1200, py: 800})) == \
        pytest.approx(400.0)
    # unit 1 (no absolute unit) cannot be used
    assert exif_focal_length_px(_jpeg((600, 400), sub={fl: 4.0, res: 100.0, unit: 1})) is None
    # the 35 mm equivalent is preferred when both are present
    both = _jpeg((600, 400), sub={fl: 4.0, res: 100.0, unit: 4, F35: 28})
    assert exif_focal_length_px(both) == pytest.approx(28 * 600 / 36)


def test_resolve_intrinsics_precedence():
    w, h = 640, 480
    every = dict(user_focal_px=500.0, exif_focal_px=600.0, estimated_focal_px=700.0, estimated_hfov_deg=90.0,
                 estimated_by="depth-pro", assumed_hfov_deg=60.0)
    k, src = resolve_intrinsics(w, h, **every)
    assert (src, k.fx) == ("user", 500.0)
    k, src = resolve_intrinsics(w, h, **{**every, "user_focal_px": None})
    assert (src, k.fx) == ("exif", 600.0)
    k, src = resolve_intrinsics(w, h, **{**every, "user_focal_px": None, "exif_focal_px": None})
    assert (src, k.fx) == ("estimated:depth-pro", 700.0)  # the estimate's focal before its FOV, before an assumption
    k, src = resolve_intrinsics(w, h, estimated_hfov_deg=90.0, estimated_by="depth-pro", assumed_hfov_deg=60.0)
    assert src == "estimated:depth-pro"
    assert k.fx == pytest.approx(320.0)
    k, src = resolve_intrinsics(w, h, assumed_hfov_deg=60.0)
    assert src == "assumed:hfov_60"
    assert k.fx == pytest.approx(320.0 * math.sqrt(3.0))
    assert (k.cx, k.cy) == (319.5, 239.5)
    k, src = resolve_intrinsics(w, h, assumed_hfov_deg=75.0)
    assert src == "assumed:hfov_75"
    assert k.hfov_deg == pytest.approx(75.0)
    # bad values are errors, not silently skipped
    with pytest.raises(ConfigError):
        resolve_intrinsics(w, h, user_focal_px=-3.0)
    with pytest.raises(ValueError):
        resolve_intrinsics(w, h, estimated_hfov_deg=float("nan"), estimated_by="depth-pro")
    with pytest.raises(ConfigError, match="estimated_by"):
        resolve_intrinsics(w, h, estimated_focal_px=500.0)  # an estimate must say where it comes from
    with pytest.raises(ConfigError):
        resolve_intrinsics(w, h, assumed_hfov_deg=0.0)


def test_no_field_of_view_is_assumed_unless_asked_for():
    """Without a focal length, an estimate or an assumed FOV there are no intrinsics: never a silent 60 degrees."""
    with pytest.raises(SpatialForgeError, match="no intrinsics") as err:
        resolve_intrinsics(640, 480)
    assert isinstance(err.value, SceneError)
    assert err.value.reason == "no_intrinsics"
    assert "--assume-hfov" in str(err.value) and "--focal-length" in str(err.value)


# ============================================================================= backends
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {
        "da": str(build_tiny_depth_anything(tmp_path_factory.mktemp("tiny_da"), max_depth=MAX_DEPTH)),
        "da_relative": str(build_tiny_depth_anything(tmp_path_factory.mktemp("tiny_da_rel"),
                                                     depth_estimation_type="relative")),
        "dp": str(build_tiny_depth_pro(tmp_path_factory.mktemp("tiny_dp"))),
        "zoe": str(build_tiny_zoedepth(tmp_path_factory.mktemp("tiny_zoe"))),
        # NK routing: the domain classifier sends some of IMAGES to the nyu head (10 m), some to kitti (80 m)
        "zoe_nk": str(build_tiny_zoedepth(tmp_path_factory.mktemp("tiny_zoe_nk"), heads=2, split_images=IMAGES)),
    }


@pytest.fixture(scope="module")
def da(model_dirs):
    return DepthAnythingV2Depth(model_id=model_dirs["da"], batch_size=4)


@pytest.fixture(scope="module")
def dp(model_dirs):
    return DepthProDepth(model_id=model_dirs["dp"], batch_size=4)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A structured RGB image: gradients, a checkerboard and a bright rectangle."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * ((xx // (3 + seed) + yy // (3 + seed)) % 2)
    img[..., 2] = 255 * (yy / max(h - 1, 1)) ** (seed % 3 + 1)
    img[h // 4:h // 2, w // 3:2 * w // 3] = (250, 40, 30)
    return img.astype(np.uint8)


# two images of the same size (batched in one forward by both models), non-square both ways, odd sizes
IMAGES = [_image(30, 50, 0), _image(50, 30, 1), _image(30, 50, 2), _image(33, 71, 3)]


def test_construction_loads_nothing_and_registry(model_dirs):
    for name, cls in (("depth-anything-v2", DepthAnythingV2Depth), ("depth-pro", DepthProDepth),
                      ("zoedepth", ZoeDepthDepth)):
        stage = build_stage("depth", name, model_id=model_dirs["da"])
        assert type(stage) is cls
        assert stage.model is None and stage.processor is None
        assert isinstance(stage, Stage) and isinstance(stage, DepthEstimator)
        assert cls().model_id == DEFAULT_MODELS[name] == cls.default_model_id
    assert DepthAnythingV2Depth.default_model_id == "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"
    assert DepthProDepth.default_model_id == "apple/DepthPro-hf"
    assert ZoeDepthDepth.default_model_id == "Intel/zoedepth-nyu-kitti"
    assert DepthAnythingV2Depth().checkpoints == {"indoor": DA_V2_INDOOR, "outdoor": DA_V2_OUTDOOR}
    assert DA_V2_OUTDOOR == "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"
    focal = build_stage("focal_estimator", "depth-pro", model_id=model_dirs["dp"])
    assert type(focal) is DepthProFocal and focal.model is None and isinstance(focal, FocalEstimator)
    assert DepthProFocal().model_id == DEFAULT_MODELS["depth-pro"]
    assert isinstance(build_stage("focal_estimator", "none"), NoFocalEstimator)
    with pytest.raises(ConfigError):
        DepthProDepth(model_id=model_dirs["dp"], batch_size=0)
    with pytest.raises(ConfigError):
        DepthAnythingV2Depth(model_id=model_dirs["da"], dtype="float64")


def _check_contract(preds, model_id):
    assert isinstance(preds, list) and len(preds) == len(IMAGES)
    for img, p in zip(IMAGES, preds, strict=True):
        assert isinstance(p, DepthPrediction)
        assert p.depth.shape == img.shape[:2]  # the ORIGINAL (H, W), not the network size, not transposed
        assert p.depth.dtype == np.float32
        assert np.all(np.isfinite(p.depth)) and np.all(p.depth >= 0)
        assert np.all(p.depth > 0)  # the tiny models predict a valid depth everywhere
        assert float(p.depth.std()) > 1e-4  # not a constant map: it depends on the image
        assert p.model == model_id


def test_depth_anything_contract(da, model_dirs):
    preds = da(IMAGES)
    _check_contract(preds, model_dirs["da"])
    for p in preds:
        assert p.hfov_deg is None and p.focal_length_px is None
        assert float(p.depth.max()) <= MAX_DEPTH  # sigmoid * max_depth: metres straight from the model


def test_depth_anything_matches_model_output_resized(da):
    """The depth is the model's own output (no scale factor), bilinearly resized to the original size."""
    da.load()
    img = IMAGES[3]  # 33 x 71: the processor keeps the aspect ratio (32 x 68 at a multiple of 4)
    inputs = da.processor(images=img, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (DEPTH_ANYTHING_SIZE, 68)
    with torch.no_grad():
        raw = da.model(**inputs).predicted_depth  # (1, 32, 68)
    assert float(raw.max()) < 0.97 * MAX_DEPTH  # nothing at the max range: every pixel is a measurement
    ref = torch.nn.functional.interpolate(raw[:, None], size=img.shape[:2], mode="bilinear", align_corners=False)
    pred = da([img])[0]
    np.testing.assert_allclose(pred.depth, ref[0, 0].numpy(), rtol=1e-5, atol=1e-5)
    assert pred.max_range_m == MAX_DEPTH and pred.info == {"beyond_range_fraction": 0.0}  # one checkpoint: no scene


def test_depth_pro_contract_and_fov(dp, model_dirs):
    preds = dp(IMAGES)
    _check_contract(preds, model_dirs["dp"])
    for img, p in zip(IMAGES, preds, strict=True):
        w = img.shape[1]
        assert p.hfov_deg is not None and 0.0 < p.hfov_deg < 180.0
        assert 40.0 < p.hfov_deg < 80.0  # the tiny FOV head is biased to ~60 degrees
        assert p.focal_length_px == pytest.approx((w / 2) / math.tan(math.radians(p.hfov_deg) / 2), rel=1e-9)
        assert intrinsics_from_focal(w, img.shape[0], p.focal_length_px).hfov_deg == pytest.approx(p.hfov_deg)


def test_depth_pro_matches_reference_post_processing(dp):
    """Depth = f_px / (W * canonical inverse depth), resized per image; hfov = the model's field_of_view."""
    dp.load()
    imgs = [IMAGES[0], IMAGES[1]]
    inputs = dp.processor(images=imgs, return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 3, DEPTH_PRO_SIZE, DEPTH_PRO_SIZE)
    with torch.no_grad():
        out = dp.model(**inputs)
    preds = dp(imgs)
    for k, (img, p) in enumerate(zip(imgs, preds, strict=True)):
        h, w = img.shape[:2]
        fov = float(out.field_of_view[k])
        assert p.hfov_deg == pytest.approx(fov, rel=1e-5)
        f = 0.5 * w / math.tan(math.radians(fov) / 2)
        inv = torch.nn.functional.interpolate((out.predicted_depth[k] * w / f)[None, None], size=(h, w),
                                              mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(p.depth, (1.0 / inv.clamp(1e-4, 1e4)).numpy(), rtol=1e-4)


def test_depth_pro_known_focal_rescales_depth(dp):
    base = dp(IMAGES[:2])
    known = [2.0 * base[0].focal_length_px, None]
    scaled = dp(IMAGES[:2], focal_lengths_px=known)
    np.testing.assert_allclose(scaled[0].depth, 2.0 * base[0].depth, rtol=1e-5)  # depth is proportional to f
    np.testing.assert_allclose(scaled[1].depth, base[1].depth, rtol=1e-6)
    assert scaled[0].hfov_deg == pytest.approx(base[0].hfov_deg)  # still the model's own prediction
    with pytest.raises(ValueError, match="has 1 entry for 2 images"):
        dp(IMAGES[:2], focal_lengths_px=[100.0])
    with pytest.raises(ValueError, match="focal_lengths_px"):
        dp(IMAGES[:1], focal_lengths_px=[-1.0])


@pytest.mark.parametrize("which", ["da", "dp"])
def test_batch_equals_one_by_one(which, model_dirs):
    cls = DepthAnythingV2Depth if which == "da" else DepthProDepth
    batched = cls(model_id=model_dirs[which], batch_size=4)(IMAGES)
    single = cls(model_id=model_dirs[which], batch_size=1)
    for img, b in zip(IMAGES, batched, strict=True):
        s = single([img])[0]
        np.testing.assert_allclose(b.depth, s.depth, rtol=1e-4, atol=1e-4)
        if which == "dp":
            assert b.hfov_deg == pytest.approx(s.hfov_deg, abs=1e-4)
            assert b.focal_length_px == pytest.approx(s.focal_length_px, rel=1e-4)


def test_depth_anything_refuses_relative_checkpoint(model_dirs):
    stage = DepthAnythingV2Depth(model_id=model_dirs["da_relative"])
    with pytest.raises(ConfigError, match="not metric") as err:
        stage.load()
    assert "Metric-Indoor" in str(err.value) and "Metric-Outdoor" in str(err.value)
    assert stage.model is None  # refused before loading the weights
    with pytest.raises(ConfigError):
        stage(IMAGES[:1])


def test_wrong_architecture_is_config_error(model_dirs):
    with pytest.raises(ConfigError, match="depth_pro"):
        DepthAnythingV2Depth(model_id=model_dirs["dp"]).load()
    with pytest.raises(ConfigError, match="depth_anything"):
        DepthProDepth(model_id=model_dirs["da"]).load()


def test_depth_pro_without_fov_head(tmp_path):
    folder = build_tiny_depth_pro(tmp_path / "nofov", use_fov_model=False)
    stage = DepthProDepth(model_id=str(folder))
    with pytest.raises(ConfigError, match="FOV"):
        stage(IMAGES[:1])
    w = IMAGES[0].shape[1]
    p = stage(IMAGES[:1], focal_lengths_px=[float(w)])[0]
    assert p.hfov_deg is None and p.focal_length_px is None
    assert p.depth.shape == IMAGES[0].shape[:2] and np.all(p.depth > 0)
    p2 = stage(IMAGES[:1], focal_lengths_px=[2.0 * w])[0]
    np.testing.assert_allclose(p2.depth, 2.0 * p.depth, rtol=1e-5)


def test_inputs_validation_and_lifecycle(model_dirs):
    stage = DepthAnythingV2Depth(model_id=model_dirs["da"])
    assert stage([]) == []
    assert stage.model is None  # nothing to do: nothing loaded
    with pytest.raises(ValueError, match="uint8"):
        stage([IMAGES[0].astype(np.float32)])
    with pytest.raises(ValueError, match="sequence"):
        stage(IMAGES[0])
    gray = IMAGES[1][..., 0]
    p = stage([gray])[0]
    assert p.depth.shape == gray.shape
    stage.unload()
    assert stage.model is None
    assert stage([IMAGES[1]])[0].depth.shape == IMAGES[1].shape[:2]  # reloads lazily


# ============================================================================= maximum range
def _da_near_its_max(src: str, dst, image: np.ndarray, fraction: float = 0.97):
    """A copy of the tiny Depth Anything whose output's median on ``image`` is ``fraction`` of its max_depth."""
    stage = DepthAnythingV2Checkpoint(src)
    stage.load()
    with torch.no_grad():
        raw = stage._network_depth([image])[0]
        z = torch.logit(raw / stage.max_range_m)  # the sigmoid's input
        stage.model.head.conv3.bias += math.log(fraction / (1 - fraction)) - float(z.median())
    stage.model.save_pretrained(dst)
    stage.processor.save_pretrained(dst)
    return str(dst)


def test_depth_at_the_max_range_is_invalid_not_a_point_at_20_m(model_dirs, tmp_path):
    img = IMAGES[3]
    near_max = _da_near_its_max(model_dirs["da"], tmp_path / "near_max", img)
    stage = DepthAnythingV2Depth(model_id=near_max)  # default range_margin 0.97
    assert stage.range_margin == 0.97
    pred = stage([img])[0]
    stage.load()
    with torch.no_grad():
        raw = stage.active._network_depth([img])[0]
    ref = torch.nn.functional.interpolate(raw[None, None], size=img.shape[:2], mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    cap = 0.97 * MAX_DEPTH
    valid = pred.depth > 0
    assert np.all(pred.depth[ref >= cap] == 0)  # at or near the max range: no measurement
    assert float((ref >= cap).mean()) > 0.2 and valid.any()  # the map straddles the cap
    np.testing.assert_allclose(pred.depth[valid], ref[valid], rtol=1e-5)  # the rest is the model's depth
    assert float(pred.depth.max()) < cap
    # a pixel blended from a capped network pixel is no measurement either (no sky-to-foreground ramp)
    assert int((~valid).sum()) >= int((ref >= cap).sum())
    assert pred.info["beyond_range_fraction"] == pytest.approx(float((~valid).mean()), abs=1e-6)
    # margin 1.0: only depth at the max itself is invalid (sigmoid < 1: none here)
    loose = DepthAnythingV2Depth(model_id=near_max, range_margin=1.0)([img])[0]
    assert np.all(loose.depth > 0)
    for bad in (0.0, 1.5, float("nan"), "0.9"):
        with pytest.raises(ConfigError, match="range_margin"):
            DepthAnythingV2Depth(model_id=near_max, range_margin=bad)


def test_depth_pro_caps_at_its_documented_max_range(dp):
    base = dp(IMAGES[:1])[0]
    assert base.max_range_m == 100.0 and np.all(base.depth > 0)  # the tiny model's depths are far below 100 m
    median = float(np.median(base.depth))
    capped = DepthProDepth(model_id=dp.model_id, max_range=median / 0.97)(IMAGES[:1])[0]
    assert np.all(capped.depth[base.depth >= median] == 0)
    np.testing.assert_allclose(capped.depth[base.depth < median], base.depth[base.depth < median], rtol=1e-6)
    assert capped.info["beyond_range_fraction"] == pytest.approx(float((base.depth >= median).mean()))
    with pytest.raises(ConfigError, match="max_range"):
        DepthProDepth(model_id=dp.model_id, max_range=0)


# ============================================================================= Depth Anything V2: indoor / outdoor
def test_depth_anything_routes_between_an_indoor_and_an_outdoor_checkpoint(model_dirs, tmp_path):
    outdoor = str(build_tiny_depth_anything(tmp_path / "out", seed=1, max_depth=80))
    stage = build_stage("depth", "depth-anything-v2", indoor_model=model_dirs["da"], outdoor_model=outdoor,
                        device="cpu")
    assert stage.routes_by_scene and stage.scene_types == ("indoor", "outdoor")
    assert stage.resident() == []  # nothing loaded by building it
    stage.select("outdoor")
    out = stage(IMAGES[:2])
    assert stage.resident() == [outdoor]  # only the selected checkpoint loads
    assert [p.model for p in out] == [outdoor, outdoor] and out[0].max_range_m == 80.0
    assert out[0].info["scene"] == "outdoor"
    stage.select("indoor")
    inside = stage(IMAGES[:2])
    assert [p.model for p in inside] == [model_dirs["da"]] * 2 and inside[0].max_range_m == MAX_DEPTH
    assert inside[0].info["scene"] == "indoor" and stage.model_id == model_dirs["da"]
    assert not np.allclose(inside[0].depth, out[0].depth)  # two different models
    stage.unload()
    assert stage.resident() == []
    with pytest.raises(ValueError, match="scene"):
        stage.select("underwater")


def test_depth_anything_scene_and_model_id_options(model_dirs):
    fixed = DepthAnythingV2Depth(model_id=model_dirs["da"])
    assert not fixed.routes_by_scene and fixed.checkpoints == {"indoor": model_dirs["da"], "outdoor": model_dirs["da"]}
    assert "scene" not in fixed(IMAGES[:1])[0].info  # one checkpoint for every photo: not chosen by scene type
    outdoor_only = DepthAnythingV2Depth(scene="outdoor", outdoor_model=model_dirs["da"])
    assert not outdoor_only.routes_by_scene and outdoor_only.model_id == model_dirs["da"]
    assert outdoor_only(IMAGES[:1])[0].info["scene"] == "outdoor"
    with pytest.raises(ConfigError, match="one checkpoint for every photo"):
        DepthAnythingV2Depth(model_id=model_dirs["da"], scene="outdoor")
    with pytest.raises(ConfigError, match="one checkpoint for every photo"):
        DepthAnythingV2Depth(model_id=model_dirs["da"], outdoor_model="x/y")
    with pytest.raises(ConfigError, match="scene must be one of auto, indoor, outdoor"):
        DepthAnythingV2Depth(scene="kitchen")
    with pytest.raises(ConfigError, match="unknown option 'scenes'"):
        DepthAnythingV2Depth(scenes="auto")


# ============================================================================= ZoeDepth
def test_zoedepth_contract_and_padding_removal(model_dirs):
    stage = ZoeDepthDepth(model_id=model_dirs["zoe"], batch_size=4)
    preds = stage(IMAGES)
    _check_contract(preds, model_dirs["zoe"])
    stage.load()
    for img, p in zip(IMAGES, preds, strict=True):
        assert p.hfov_deg is None and p.focal_length_px is None  # predicts no intrinsics
        assert p.max_range_m == 10.0 and p.info["head"] == "nyu"  # the single head's bins end at 10 m
        inputs = stage.processor(images=[img], return_tensors="pt")
        with torch.no_grad():
            out = stage.model(**inputs)
        # transformers' own post-processing (bicubic) resizes to the padded source size and crops the padding:
        # the same map up to the interpolation
        ref = stage.processor.post_process_depth_estimation(out, source_sizes=[img.shape[:2]])[0]["predicted_depth"]
        ref = ref.numpy()
        assert ref.shape == p.depth.shape
        assert np.corrcoef(ref.ravel(), p.depth.ravel())[0, 1] > 0.995
        np.testing.assert_allclose(p.depth, ref, rtol=2e-3)
        # not the same as ignoring the padding
        whole = torch.nn.functional.interpolate(out.predicted_depth[:, None], size=img.shape[:2], mode="bilinear",
                                                align_corners=False)[0, 0].numpy()
        assert np.corrcoef(ref.ravel(), whole.ravel())[0, 1] < 0.95


def test_zoedepth_nk_routes_each_image_to_its_own_head(model_dirs):
    stage = ZoeDepthDepth(model_id=model_dirs["zoe_nk"], batch_size=4)
    batched = stage(IMAGES)
    heads = [p.info["head"] for p in batched]
    assert set(heads) == {"nyu", "kitti"}  # both heads in one batch: the vote is per image, not per batch
    for img, p in zip(IMAGES, batched, strict=True):
        alone = stage([img])[0]
        assert alone.info["head"] == p.info["head"]
        np.testing.assert_allclose(p.depth, alone.depth, rtol=1e-5)
        assert p.max_range_m == {"nyu": 10.0, "kitti": 80.0}[p.info["head"]]
        scores = p.info["head_scores"]
        assert set(scores) == {"nyu", "kitti"} and max(scores, key=scores.get) == p.info["head"]


def test_zoedepth_caps_at_its_heads_max_range(model_dirs):
    base = ZoeDepthDepth(model_id=model_dirs["zoe"])(IMAGES[:1])[0]
    median = float(np.median(base.depth))
    capped = ZoeDepthDepth(model_id=model_dirs["zoe"], range_margin=median / 10.0)(IMAGES[:1])[0]
    assert np.all(capped.depth[base.depth >= median] == 0)
    assert 0.3 < capped.info["beyond_range_fraction"] < 0.9
    kept = capped.depth > 0
    np.testing.assert_allclose(capped.depth[kept], base.depth[kept], rtol=1e-6)


def test_zoedepth_refuses_another_architecture(model_dirs):
    with pytest.raises(ConfigError, match="zoedepth"):
        ZoeDepthDepth(model_id=model_dirs["da"]).load()


# ============================================================================= focal estimators
def test_depth_pro_focal_estimator_is_depth_pros_fov_head(model_dirs, dp):
    est = DepthProFocal(model_id=model_dirs["dp"], batch_size=3)
    estimates = est(IMAGES)
    depth = dp(IMAGES)
    assert len(estimates) == len(IMAGES)
    for img, e, d in zip(IMAGES, estimates, depth, strict=True):
        assert isinstance(e, FocalEstimate) and e.method == "depth-pro" and e.model == model_dirs["dp"]
        assert e.hfov_deg == pytest.approx(d.hfov_deg, rel=1e-5)  # the same head as in a full Depth Pro run
        assert e.focal_length_px == pytest.approx(0.5 * img.shape[1] / math.tan(math.radians(e.hfov_deg) / 2))
    assert est([]) == []
    assert NoFocalEstimator()(IMAGES[:2]) == [None, None]


def test_depth_pro_focal_estimator_refuses_what_cannot_estimate(model_dirs, tmp_path):
    nofov = build_tiny_depth_pro(tmp_path / "nofov", use_fov_model=False)
    with pytest.raises(ConfigError, match="no field-of-view head"):
        DepthProFocal(model_id=str(nofov)).load()
    with pytest.raises(ConfigError, match="not a Depth Pro checkpoint"):
        DepthProFocal(model_id=model_dirs["da"]).load()
    # not on disk and no hub (offline): one line saying what else works
    with pytest.raises(ConfigError) as err:
        DepthProFocal(model_id=str(tmp_path / "missing")).load()
    msg = str(err.value)
    assert "\n" not in msg and "--assume-hfov" in msg and "--focal-estimator none" in msg


# ============================================================================= real weights (opt-in)
@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("SPATIALFORGE_WEIGHTS") != "1",
                    reason="set SPATIALFORGE_WEIGHTS=1 (real checkpoints)")
@pytest.mark.parametrize("cls", [DepthAnythingV2Depth, DepthProDepth, ZoeDepthDepth])
def test_real_checkpoint_sensible(cls):
    """A synthetic room-like image (floor gradient below a wall): depths of metres, a sensible FOV."""
    h, w = 480, 640
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 190, 170)  # wall
    ramp = np.linspace(90, 160, h - h // 2, dtype=np.float64)[:, None]
    img[h // 2:] = np.stack([ramp * 0.8, ramp * 0.6, ramp * 0.4], axis=-1).astype(np.uint8)  # floor
    stage = cls(device="auto")
    p = stage([img, img[:, : w // 2].copy()])
    for pred, im in zip(p, [img, img[:, : w // 2]], strict=True):
        assert pred.depth.shape == im.shape[:2]
        valid = pred.depth[pred.depth > 0]
        assert valid.size > 0.9 * pred.depth.size
        assert 0.1 < float(np.median(valid)) < 50.0
        if cls is DepthProDepth:
            assert 20.0 < pred.hfov_deg < 150.0
            assert pred.focal_length_px == pytest.approx(0.5 * im.shape[1] / math.tan(math.radians(pred.hfov_deg) / 2))
