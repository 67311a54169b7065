"""Metric monocular depth and focal-length estimation.

Depth stages (kind ``depth``): ``depth-anything-v2`` (:class:`DepthAnythingV2Depth`, routed per
photo between an indoor and an outdoor checkpoint), ``zoedepth`` (:class:`ZoeDepthDepth`) and
``depth-pro`` (:class:`DepthProDepth`). Each takes RGB images and returns one
:class:`~spatialforge.perception.types.DepthPrediction` per image: z-depth in metres, float32, at
the image's original ``(H, W)``; 0 marks invalid pixels ("no measurement").

Focal estimators (kind ``focal_estimator``): ``depth-pro`` (:class:`DepthProFocal`, Depth Pro's
field-of-view head) and ``none`` (:class:`NoFocalEstimator`), for photos without a known focal length.

Maximum range
-------------
A metric depth model saturates at its maximum range: Depth Anything V2's metric head is
``sigmoid * max_depth``, so sky and far background come out at (nearly) 20 m indoors or 80 m
outdoors, and ZoeDepth's bins end at their ``max_depth``. Such a value is not a measurement: a
pixel whose depth is at least ``range_margin * max_range`` (option ``range_margin``, default
:data:`DEFAULT_RANGE_MARGIN` = 0.97) is made invalid (0), and so is every pixel whose bilinear
resize to the image size draws on such a network pixel (no blend of sky and foreground at their
border). The max range is, per backend: Depth Anything V2 metric, the checkpoint's
``config.max_depth``; ZoeDepth, the ``max_depth`` of the bin configuration (head) that predicted
the image; Depth Pro, which has no trained maximum (its post-processing clamps at 10 km), the
option ``max_range`` (default :data:`DEPTH_PRO_MAX_RANGE_M` = 100 m: beyond the 80 m of the
outdoor benchmarks, where monocular metric depth is no longer a measurement). Each prediction
records ``max_range_m`` and, in ``info``, ``beyond_range_fraction`` (the share of pixels made
invalid by the cap); an object standing entirely there has no depth and the geometry skips it
with reason ``no_valid_depth``.

Depth Anything V2 (metric): routing by scene type
-------------------------------------------------
``transformers.DepthAnythingForDepthEstimation`` + ``AutoImageProcessor`` (a ``DPTImageProcessor``:
aspect ratio kept, sides a multiple of 14, ~518 px). The metric checkpoints
(``depth-anything/Depth-Anything-V2-Metric-{Indoor,Outdoor}-{Small,Base,Large}-hf``) end with
``sigmoid * config.max_depth`` (20 m indoor, 80 m outdoor): the model output *is* metres and is used
as such (no scale factor here). A checkpoint whose config is not ``depth_estimation_type="metric"``
(the plain Depth Anything V1/V2 checkpoints predict relative inverse depth, with no scale) is refused
with a :class:`~spatialforge.errors.ConfigError` before its weights are loaded. The prediction (at
the processor's size) is resized to the original size with **bilinear** interpolation
(``align_corners=False``); the DPT processor's own ``post_process_depth_estimation`` is bicubic,
which overshoots at depth discontinuities (ringing, even negative depths), so it is not used.
Images of one call are preprocessed together; since the kept aspect ratio gives images of different
shapes different network sizes, images are grouped by processed shape and each group runs as one
forward (at most ``batch_size`` images). ``hfov_deg`` is None: the model predicts no intrinsics.

As ZoeDepth's NK model routes each image to its indoor (NYU) or outdoor (KITTI) head, the stage
holds two checkpoints, ``indoor_model`` (default :data:`DA_V2_INDOOR`, max 20 m) and
``outdoor_model`` (default :data:`DA_V2_OUTDOOR`, max 80 m), and option ``scene`` says which runs:
``"auto"`` (default) routes each photo by the filter's indoor/outdoor decision
(:attr:`FilterDecision.scene <spatialforge.perception.types.FilterDecision>`): the pipeline groups
a chunk's photos by scene type and calls :meth:`DepthAnythingV2Depth.select` before each group,
so each checkpoint loads once and, in low-memory mode (released between groups), only one is
resident at a time; ``"indoor"`` / ``"outdoor"`` use that checkpoint for every photo. A
``model_id`` (``--depth-model``) is one checkpoint for every photo, with no routing (then
``scene``, ``indoor_model`` and ``outdoor_model`` must stay at their defaults). Each prediction
records the scene type it was routed by (``info["scene"]``) and ``model`` is the checkpoint that
produced it.

ZoeDepth
--------
``transformers.ZoeDepthForDepthEstimation`` + its ``ZoeDepthImageProcessor`` (default
``Intel/zoedepth-nyu-kitti``). The processor pads each image by reflection, ``int(sqrt(h / 2) * 3)``
rows and ``int(sqrt(w / 2) * 3)`` columns on each side (from the image's own size), then resizes it
keeping the aspect ratio (384 x 512, sides a multiple of 32, for the Intel checkpoints). The model
predicts metric z-depth (trained on NYU and KITTI z-depth maps) at a fraction of the network size;
transformers' ``post_process_depth_estimation(outputs, source_sizes=...)`` resizes it to the padded
source size and crops the padding away, bicubically. The same is done here bilinearly (no
overshoot), and the padding comes from the loaded processor's ``do_pad``. The prediction depends on
no focal length; ``hfov_deg`` is None.

A checkpoint with several bin configurations (NK: ``nyu``, max 10 m, and ``kitti``, max 80 m) routes
itself: a classifier picks one head. transformers picks it *per forward*, by the summed vote of the
whole batch, so such a checkpoint runs **one image per forward** (``batch_size`` only batches
single-head checkpoints); each prediction records ``info["head"]`` and the head probabilities
``info["head_scores"]``, and its max range is that head's ``max_depth``. The original's
flip-averaging test-time augmentation is not used.

Depth Pro
---------
``transformers.DepthProForDepthEstimation`` + ``DepthProImageProcessor`` (every image resized to a
fixed square, 1536 x 1536 for ``apple/DepthPro-hf``, so a batch of any sizes is one forward). The
network predicts a *canonical inverse depth* map and, with its FOV head (``use_fov_model``), the
field of view in degrees. Semantics, from Apple's reference ``DepthPro.infer`` and transformers'
``DepthProImageProcessor.post_process_depth_estimation``:

* ``field_of_view`` (shape ``(B,)``) is the **horizontal** FOV in **degrees** of each image: the
  reference converts it with the image *width*, ``f_px = 0.5 * W / tan(0.5 * fov)``. The image is
  stretched to the square network input, which maps the left and right edges onto themselves, so
  the angle is the same for the original image: ``hfov_deg = field_of_view``.
* ``focal_length_px = 0.5 * W / tan(0.5 * hfov)`` in pixels of the original image (width ``W``),
  square pixels assumed. ``post_process_depth_estimation(outputs, target_sizes=[(H, W), ...])``
  returns this value as ``focal_length`` per image, and ``predicted_depth = 1 / clamp(resize(inv *
  W / f_px), 1e-4, 1e4)`` in metres (bilinear resize of the inverse depth to ``(H, W)``), i.e.
  ``depth = f_px / (W * canonical_inverse_depth)``. It is post-processed per image with its own
  target size, so images of different sizes share one forward.
* Depth at the clamp limits (``1e4`` m: sky) is marked invalid (0), and so is depth at or beyond
  ``range_margin * max_range`` (see above).
* Known focal lengths: depth scales linearly with the focal length used, so when the caller passes
  ``focal_lengths_px`` (e.g. the user's or EXIF's, in pixels of the image), the depth is rescaled by
  ``f_known / f_model``, as the reference does when ``f_px`` is given; the returned ``hfov_deg`` and
  ``focal_length_px`` remain the model's own prediction. A checkpoint without the FOV head gives
  metric depth only with a known focal length (``ConfigError`` otherwise).

Focal estimation
----------------
:class:`DepthProFocal` runs Depth Pro's encoder and its field-of-view head only (not the depth
decoder) on photos with no focal length from the user or EXIF, when the depth model predicts none;
the estimate is recorded as ``intrinsics_source: "estimated:depth-pro"``. :class:`NoFocalEstimator`
estimates nothing (such photos then need an explicitly assumed field of view, else they fail with
reason ``no_intrinsics``).

All stages load lazily (first call or ``load()``); ``dtype`` applies to the weights and pixel
values, outputs are post-processed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, check_options, declared_options, image_list
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import SCENE_TYPES, DepthPrediction, FocalEstimate

__all__ = ["DA_V2_INDOOR", "DA_V2_OUTDOOR", "DEFAULT_RANGE_MARGIN", "DEPTH_PRO_MAX_RANGE_M", "SCENES",
           "DepthAnythingV2Checkpoint", "DepthAnythingV2Depth", "DepthProDepth", "DepthProFocal",
           "NoFocalEstimator", "ZoeDepthDepth", "beyond_range"]

DA_V2_INDOOR = "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"  # max_depth 20 m
DA_V2_OUTDOOR = "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"  # max_depth 80 m
DEFAULT_RANGE_MARGIN = 0.97  # depth at or beyond this fraction of the model's max range is invalid
DEPTH_PRO_MAX_RANGE_M = 100.0  # Depth Pro has no trained maximum: our cap
SCENES = ("auto", *SCENE_TYPES)  # the values of Depth Anything V2's ``scene`` option

_DEPTH_PRO_INVERSE_CLAMP = (1e-4, 1e4)  # the post-processor clamps the metric inverse depth to this range
_METRIC_DEPTH_ANYTHING = ("depth-anything/Depth-Anything-V2-Metric-Indoor-{Small,Base,Large}-hf (max_depth 20 m) or "
                          "depth-anything/Depth-Anything-V2-Metric-Outdoor-{Small,Base,Large}-hf (max_depth 80 m)")


# ----------------------------------------------------------------------------- validation helpers
def _focal_list(focal_lengths_px: Sequence[float | None] | None, n: int) -> list[float | None]:
    """One known focal length (pixels, finite > 0) or None per image."""
    if focal_lengths_px is None:
        return [None] * n
    focals = list(focal_lengths_px)
    if len(focals) != n:
        raise ValueError(f"focal_lengths_px has {count(len(focals), 'entry', 'entries')} for {count(n, 'image')}")
    out: list[float | None] = []
    for i, f in enumerate(focals):
        if f is None:
            out.append(None)
            continue
        out.append(check_number(f, f"focal_lengths_px[{i}]", low=0.0, strict_low=True, note=" (pixels)",
                                error=ValueError))
    return out


def _margin(value: Any) -> float:
    return check_number(value, "range_margin", low=0.0, high=1.0, strict_low=True,
                        note=" (the fraction of the model's max range from which depth is invalid)")


def beyond_range(depth: np.ndarray, max_range_m: float, margin: float = DEFAULT_RANGE_MARGIN) -> np.ndarray:
    """Where ``depth`` is at or beyond ``margin * max_range_m``: no measurement (sky, far background)."""
    return np.asarray(depth) >= margin * max_range_m


def _resized(torch: Any, pred: Any, size: tuple[int, int], cap: float | None,
             crop: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, float]:
    """A network-resolution depth map ``pred`` (h', w') resized bilinearly to ``size``, then cropped to
    ``crop`` (top, left, height, width; ZoeDepth's padding), with the max-range cap applied.

    A pixel is invalid (0) when its depth is ``>= cap`` or when its bilinear interpolation draws on a
    network pixel ``>= cap``. Returns the float32 map and the fraction of its pixels the cap invalidated.
    """
    interpolate = torch.nn.functional.interpolate
    depth = interpolate(pred[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    far = None
    if cap is not None:
        far = interpolate((pred >= cap).float()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    if crop is not None:
        top, left, h, w = crop
        depth = depth[top:top + h, left:left + w]
        far = None if far is None else far[top:top + h, left:left + w]
    out = depth.cpu().numpy().astype(np.float32)
    if far is None:
        return out, 0.0
    invalid = (far.cpu().numpy() > 0) | (out >= cap)
    out[invalid] = 0.0
    return out, float(invalid.mean())


# ----------------------------------------------------------------------------- shared plumbing
class _DepthStage(HFStage):
    """Settings and call plumbing shared by the depth stages (subclasses implement ``_predict``)."""

    kind = "depth"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, range_margin: float = DEFAULT_RANGE_MARGIN, **options: Any) -> None:
        """Store settings only (nothing is loaded here).

        Args:
            model_id: hub id or local folder (default: the class's ``default_model_id``).
            device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
            dtype: ``float32``, ``float16`` or ``bfloat16`` (weights and pixel values).
            batch_size: images per forward.
            range_margin: depth at or beyond this fraction of the model's max range is invalid (0, 1].
        """
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.range_margin = _margin(range_margin)

    def __call__(self, images: Sequence[np.ndarray],
                 focal_lengths_px: Sequence[float | None] | None = None) -> list[DepthPrediction]:
        """Metric z-depth per image at the image's size.

        Args:
            images: RGB images, (H, W, 3) uint8 (gray and RGBA are converted), any sizes.
            focal_lengths_px: optionally, a known focal length in pixels (or None) per image; Depth
                Pro scales its depth with it, Depth Anything's and ZoeDepth's metric heads do not use it.
        """
        imgs = image_list(images)
        focals = _focal_list(focal_lengths_px, len(imgs))
        if not imgs:
            return []
        self.load()
        out: list[DepthPrediction] = []
        for start in range(0, len(imgs), self.batch_size):
            out.extend(self._predict(imgs[start:start + self.batch_size], focals[start:start + self.batch_size]))
        return out

    def _predict(self, images: list[np.ndarray], focals: list[float | None]) -> list[DepthPrediction]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _load_config(self, model_type: str, what: str) -> Any:
        config = self.transformers.AutoConfig.from_pretrained(self.model_id)
        if getattr(config, "model_type", None) != model_type:
            raise ConfigError(f"{self.name}: {self.model_id!r} is a {getattr(config, 'model_type', '?')!r} checkpoint, "
                              f"not {what} ({model_type!r})")
        return config


# ----------------------------------------------------------------------------- Depth Anything V2
class DepthAnythingV2Checkpoint(_DepthStage):
    """One Depth Anything V2 metric checkpoint (metres straight from the model; no FOV)."""

    name = "depth-anything-v2"
    default_model_id = DA_V2_INDOOR

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, range_margin: float = DEFAULT_RANGE_MARGIN, scene: str | None = None,
                 **options: Any) -> None:
        """``scene``: the scene type this checkpoint was chosen for (recorded per prediction), if any."""
        super().__init__(model_id=model_id, device=device, dtype=dtype, batch_size=batch_size,
                         range_margin=range_margin, **options)
        self.scene = scene
        self.max_range_m: float | None = None

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        config = self._load_config("depth_anything", "a Depth Anything checkpoint")
        kind = getattr(config, "depth_estimation_type", None)
        if kind != "metric":
            raise ConfigError(f"{self.name}: {self.model_id!r} predicts {kind!r} depth (depth_estimation_type), which "
                              f"is not metric: relative depth has no scale in metres. Use a metric checkpoint: "
                              f"{_METRIC_DEPTH_ANYTHING}")
        max_depth = getattr(config, "max_depth", None)
        if max_depth is None or not float(max_depth) > 0:
            raise ConfigError(f"{self.name}: {self.model_id!r} is metric but has no positive max_depth ({max_depth!r})")
        self.max_range_m = float(max_depth)
        model = self._from_pretrained(tf.DepthAnythingForDepthEstimation, config=config)
        processor = tf.AutoImageProcessor.from_pretrained(self.model_id)
        return model, processor

    def _network_depth(self, images: list[np.ndarray]) -> list[Any]:
        """The model's metric depth of each image at the network's resolution (float32 tensors (h', w'))."""
        torch = self.torch
        # do_pad=False: the prediction must cover exactly the (resized) image; the DA processors never pad
        processed = self.processor(images=images, do_pad=False)["pixel_values"]
        pixels = [torch.as_tensor(np.asarray(p) if not torch.is_tensor(p) else p) for p in processed]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        raw: list[Any] = [None] * len(images)
        for idx in groups.values():
            batch = torch.stack([pixels[i] for i in idx]).to(self.device, self.dtype)
            pred = self.model(pixel_values=batch).predicted_depth.float()  # (B, h, w) metres
            for k, i in enumerate(idx):
                raw[i] = pred[k]
        return raw

    def _predict(self, images: list[np.ndarray], focals: list[float | None]) -> list[DepthPrediction]:
        torch = self.torch
        cap = self.range_margin * self.max_range_m
        out = []
        with torch.inference_mode():
            for img, pred in zip(images, self._network_depth(images), strict=True):
                depth, far = _resized(torch, pred, img.shape[:2], cap)
                info: dict[str, Any] = {"beyond_range_fraction": round(far, 6)}
                if self.scene is not None:
                    info["scene"] = self.scene
                out.append(DepthPrediction(depth=depth, model=self.model_id, max_range_m=self.max_range_m, info=info))
        return out


class DepthAnythingV2Depth:
    """Depth Anything V2 metric depth routed by scene type (an indoor and an outdoor checkpoint), or one checkpoint.

    Options: ``scene`` (``"auto"``: by the filter's decision per photo; ``"indoor"`` / ``"outdoor"``:
    that checkpoint for every photo), ``indoor_model``, ``outdoor_model``, ``batch_size`` (images per
    forward, default 4), ``range_margin`` (default 0.97). A ``model_id`` is one checkpoint for every
    photo (no routing). Nothing is loaded until ``load()`` or a call, and only the selected
    checkpoint (:meth:`select`).
    """

    name = "depth-anything-v2"
    kind = "depth"
    default_model_id = DA_V2_INDOOR
    TUNING_OPTIONS: ClassVar[frozenset[str]] = frozenset({"batch_size"})
    scene_types = SCENE_TYPES

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 scene: str = "auto", indoor_model: str = DA_V2_INDOOR, outdoor_model: str = DA_V2_OUTDOOR,
                 batch_size: int = 4, range_margin: float = DEFAULT_RANGE_MARGIN, **unknown: Any) -> None:
        check_options(self.name, self.kind, unknown, declared_options(type(self)))
        if scene not in SCENES:
            raise ConfigError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
        for what, value in (("indoor_model", indoor_model), ("outdoor_model", outdoor_model)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{what} must be a model id or folder, got {value!r}")
        if model_id is not None:
            given = [f"{k} {v!r}" for k, v, default in (("scene", scene, "auto"),
                                                        ("indoor_model", indoor_model, DA_V2_INDOOR),
                                                        ("outdoor_model", outdoor_model, DA_V2_OUTDOOR))
                     if v != default]
            if given:
                raise ConfigError(f"a model id ({model_id!r}) is one checkpoint for every photo, but "
                                  f"{', '.join(given)} choose(s) between the indoor and the outdoor checkpoint: "
                                  f"give one or the other")
        self.scene = scene
        self.routes_by_scene = model_id is None and scene == "auto"
        chosen = {"indoor": indoor_model, "outdoor": outdoor_model}
        kwargs = {"device": device, "dtype": dtype, "batch_size": batch_size, "range_margin": range_margin}
        self._stages: dict[str, DepthAnythingV2Checkpoint] = {}
        for s in SCENE_TYPES:
            if model_id is not None:
                mid, recorded = model_id, None
            else:
                mid, recorded = chosen[s if scene == "auto" else scene], s if scene == "auto" else scene
            self._stages[s] = DepthAnythingV2Checkpoint(mid, scene=recorded, **kwargs)
        if model_id is not None or scene != "auto":  # one checkpoint: one stage object serves both scene types
            self._stages["outdoor"] = self._stages["indoor"]
        self._active = "outdoor" if scene == "outdoor" else "indoor"
        self.batch_size = self._stages["indoor"].batch_size
        self.range_margin = self._stages["indoor"].range_margin

    # -- routing
    def select(self, scene: str) -> None:
        """Run the checkpoint of scene type ``scene`` from now on (loads nothing)."""
        if scene not in SCENE_TYPES:
            raise ValueError(f"scene must be one of {', '.join(SCENE_TYPES)}, got {scene!r}")
        self._active = scene

    @property
    def checkpoints(self) -> dict[str, str]:
        """The checkpoint of each scene type (the same for both without routing)."""
        return {s: st.model_id for s, st in self._stages.items()}

    @property
    def active(self) -> DepthAnythingV2Checkpoint:
        return self._stages[self._active]

    # -- the stage
    @property
    def model_id(self) -> str:
        """The selected checkpoint (each prediction's ``model`` names the one that made it)."""
        return self.active.model_id

    @property
    def model(self) -> Any:
        return self.active.model

    @property
    def processor(self) -> Any:
        return self.active.processor

    def resident(self) -> list[str]:
        """The checkpoints loaded now."""
        return sorted({st.model_id for st in self._stages.values() if st.model is not None})

    def load(self) -> None:
        """Load the selected checkpoint (the other one stays as it is)."""
        self.active.load()

    def unload(self) -> None:
        for st in {id(s): s for s in self._stages.values()}.values():
            st.unload()

    def __call__(self, images: Sequence[np.ndarray],
                 focal_lengths_px: Sequence[float | None] | None = None) -> list[DepthPrediction]:
        """Metric z-depth per image from the selected checkpoint (see :meth:`select`)."""
        return self.active(images, focal_lengths_px=focal_lengths_px)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(checkpoints={self.checkpoints!r}, routes_by_scene={self.routes_by_scene})"


# ----------------------------------------------------------------------------- ZoeDepth
class ZoeDepthDepth(_DepthStage):
    """ZoeDepth metric depth; a multi-head checkpoint (NK) routes each image to its indoor or outdoor head."""

    name = "zoedepth"
    default_model_id = "Intel/zoedepth-nyu-kitti"

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        config = self._load_config("zoedepth", "a ZoeDepth checkpoint")
        heads = list(getattr(config, "bin_configurations", None) or [])
        if not heads or any(not float(h.get("max_depth", 0)) > 0 for h in heads):
            raise ConfigError(f"{self.name}: {self.model_id!r} has no bin configuration with a positive max_depth")
        model = self._from_pretrained(tf.ZoeDepthForDepthEstimation, config=config)
        processor = tf.AutoImageProcessor.from_pretrained(self.model_id)
        return model, processor

    @property
    def heads(self) -> list[dict[str, Any]]:
        """The bin configurations (heads), in the order of the model's domain logits (loads the model)."""
        self.load()
        return [dict(h) for h in self.model.config.bin_configurations]

    def _predict(self, images: list[np.ndarray], focals: list[float | None]) -> list[DepthPrediction]:
        torch = self.torch
        heads = self.heads
        multi = len(heads) > 1
        do_pad = bool(getattr(self.processor, "do_pad", True))
        pixels = [self.processor(images=[img], return_tensors="pt")["pixel_values"][0] for img in images]
        # a multi-head model votes for one head per forward: one image per forward, so each image gets its own
        groups: list[list[int]] = []
        if multi:
            groups = [[i] for i in range(len(images))]
        else:
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, p in enumerate(pixels):
                by_shape.setdefault(tuple(p.shape), []).append(i)
            groups = list(by_shape.values())
        out: list[DepthPrediction | None] = [None] * len(images)
        with torch.inference_mode():
            for idx in groups:
                batch = torch.stack([pixels[i] for i in idx]).to(self.device, self.dtype)
                result = self.model(pixel_values=batch)
                pred = result.predicted_depth.float()  # (B, h', w') metres
                if multi:
                    logits = result.domain_logits.float()[0]
                    probs = torch.softmax(logits, dim=-1).cpu().numpy()
                    head = heads[int(torch.argmax(logits))]
                    info: dict[str, Any] = {"head": head.get("name"),
                                            "head_scores": {str(h.get("name")): round(float(p), 5)
                                                            for h, p in zip(heads, probs, strict=True)}}
                else:
                    head, info = heads[0], {"head": heads[0].get("name")}
                max_range = float(head["max_depth"])
                for k, i in enumerate(idx):
                    h, w = images[i].shape[:2]
                    pad_h, pad_w = (int(np.sqrt(h / 2) * 3), int(np.sqrt(w / 2) * 3)) if do_pad else (0, 0)
                    depth, far = _resized(torch, pred[k], (h + 2 * pad_h, w + 2 * pad_w),
                                          self.range_margin * max_range, crop=(pad_h, pad_w, h, w))
                    out[i] = DepthPrediction(depth=depth, model=self.model_id, max_range_m=max_range,
                                             info={**info, "beyond_range_fraction": round(far, 6)})
        return [p for p in out if p is not None]


# ----------------------------------------------------------------------------- Depth Pro
class DepthProDepth(_DepthStage):
    """Apple Depth Pro: metric depth, the horizontal FOV and the focal length (pixels) per image."""

    name = "depth-pro"
    default_model_id = "apple/DepthPro-hf"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, range_margin: float = DEFAULT_RANGE_MARGIN,
                 max_range: float = DEPTH_PRO_MAX_RANGE_M, **options: Any) -> None:
        """``max_range``: metres; depth at or beyond ``range_margin * max_range`` is invalid (Depth Pro
        itself has no maximum)."""
        super().__init__(model_id=model_id, device=device, dtype=dtype, batch_size=batch_size,
                         range_margin=range_margin, **options)
        self.max_range = check_number(max_range, "max_range", low=0.0, strict_low=True, note=" (metres)")

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        config = self._load_config("depth_pro", "a Depth Pro checkpoint")
        model = self._from_pretrained(tf.DepthProForDepthEstimation, config=config)
        processor = tf.DepthProImageProcessor.from_pretrained(self.model_id)
        return model, processor

    @property
    def has_fov_head(self) -> bool:
        """Whether the loaded model predicts the field of view (loads the model)."""
        self.load()
        return getattr(self.model, "fov_model", None) is not None

    def _predict(self, images: list[np.ndarray], focals: list[float | None]) -> list[DepthPrediction]:
        torch = self.torch
        has_fov = self.has_fov_head
        if not has_fov and any(f is None for f in focals):
            raise ConfigError(f"{self.name}: {self.model_id!r} has no FOV head (use_fov_model=False), so its depth is "
                              f"metric only given each image's focal length (focal_lengths_px); use a checkpoint with "
                              f"the FOV head such as apple/DepthPro-hf")
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        inputs = self.processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype))
            fov = outputs.field_of_view
            # post-process in float32 (the model may run in half precision)
            outputs = type(outputs)(predicted_depth=outputs.predicted_depth.float(),
                                    field_of_view=None if fov is None else fov.float())
            results = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes)
        lo, hi = _DEPTH_PRO_INVERSE_CLAMP
        out = []
        for (h, w), res, known in zip(sizes, results, focals, strict=True):
            depth = res["predicted_depth"].reshape(h, w).cpu().numpy().astype(np.float64)
            depth[(depth >= (1.0 / lo) * (1 - 1e-6)) | (depth <= (1.0 / hi) * (1 + 1e-6))] = 0.0  # clamped: invalid
            hfov_deg = focal_px = None
            if has_fov:
                hfov_deg = float(res["field_of_view"])
                if not (math.isfinite(hfov_deg) and 0.0 < hfov_deg < 180.0):
                    raise ValueError(f"{self.name}: the model predicted an invalid horizontal field of view "
                                     f"({hfov_deg} degrees) for a {w}x{h} image")
                focal_px = 0.5 * w / math.tan(math.radians(hfov_deg) / 2.0)
                f_used = float(res["focal_length"])  # the focal the post-processor scaled the depth with
            else:
                f_used = float(w)  # no FOV: the post-processor applies no W / f scaling
            if known is not None:
                depth *= known / f_used
            elif not math.isclose(f_used, focal_px, rel_tol=1e-4):  # pragma: no cover - transformers changed
                raise ValueError(f"{self.name}: post-processed focal {f_used} differs from 0.5 W / tan(hfov / 2) = "
                                 f"{focal_px}")
            far = beyond_range(depth, self.max_range, self.range_margin)
            depth[far] = 0.0
            out.append(DepthPrediction(depth=depth.astype(np.float32), model=self.model_id, hfov_deg=hfov_deg,
                                       focal_length_px=focal_px, max_range_m=self.max_range,
                                       info={"beyond_range_fraction": round(float(far.mean()), 6)}))
        return out


# ----------------------------------------------------------------------------- focal estimators
class DepthProFocal(HFStage):
    """Depth Pro's field-of-view head as a focal-length estimator (the encoder and the FOV head; no depth decoder).

    Options: ``batch_size`` (images per forward, default 4). A checkpoint without the FOV head is a
    :class:`ConfigError`; a checkpoint that cannot load is a :class:`ConfigError` saying what else a
    photo without a focal length can use.
    """

    name = "depth-pro"
    kind = "focal_estimator"
    default_model_id = "apple/DepthPro-hf"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, **options: Any) -> None:
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")

    def load(self) -> None:
        try:
            super().load()
        except OSError as exc:  # not on disk and not downloadable (offline): say what else works
            reason = " ".join(str(exc).split())
            raise ConfigError(f"focal estimator {self.name}: cannot load {self.model_id!r} ({reason}); photos without "
                              f"a focal length from --focal-length or EXIF need it: make the checkpoint available "
                              f"(--focal-estimator-model), or pass --assume-hfov DEGREES to assume a field of view, "
                              f"or --focal-estimator none to leave such photos out (reason no_intrinsics)") from exc

    def _load(self) -> tuple[Any, Any]:
        tf = self.transformers
        config = tf.AutoConfig.from_pretrained(self.model_id)
        if getattr(config, "model_type", None) != "depth_pro":
            raise ConfigError(f"focal estimator {self.name}: {self.model_id!r} is a "
                              f"{getattr(config, 'model_type', '?')!r} checkpoint, not a Depth Pro checkpoint "
                              f"('depth_pro')")
        if not getattr(config, "use_fov_model", False):
            raise ConfigError(f"focal estimator {self.name}: {self.model_id!r} has no field-of-view head "
                              f"(use_fov_model=False); use a checkpoint with it such as apple/DepthPro-hf")
        model = self._from_pretrained(tf.DepthProForDepthEstimation, config=config)
        processor = tf.DepthProImageProcessor.from_pretrained(self.model_id)
        return model, processor

    def __call__(self, images: Sequence[np.ndarray]) -> list[FocalEstimate]:
        """The horizontal FOV and focal length (pixels of each image) per image."""
        imgs = image_list(images)
        if not imgs:
            return []
        self.load()
        torch = self.torch
        out: list[FocalEstimate] = []
        with torch.inference_mode():
            for start in range(0, len(imgs), self.batch_size):
                chunk = imgs[start:start + self.batch_size]
                pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
                features = self.model.depth_pro(pixel_values=pixels, return_dict=True).features
                fov = self.model.fov_model(pixel_values=pixels, global_features=features[0]).float().reshape(-1)
                for img, value in zip(chunk, fov.cpu().numpy(), strict=True):
                    hfov = float(value)
                    w = int(img.shape[1])
                    if not (math.isfinite(hfov) and 0.0 < hfov < 180.0):
                        raise ValueError(f"focal estimator {self.name}: the model predicted an invalid horizontal "
                                         f"field of view ({hfov} degrees) for a {w}x{img.shape[0]} image")
                    out.append(FocalEstimate(hfov_deg=hfov, focal_length_px=0.5 * w / math.tan(math.radians(hfov) / 2),
                                             method=self.name, model=self.model_id))
        return out


class NoFocalEstimator:
    """No focal estimation: a photo without a focal length gets none (it needs an assumed FOV, else it fails)."""

    name = "none"
    kind = "focal_estimator"
    model_id = "none"

    def __init__(self, **options: Any) -> None:
        check_options(self.name, self.kind, options, ())

    def load(self) -> None:
        return None

    def unload(self) -> None:
        return None

    def __call__(self, images: Sequence[np.ndarray]) -> list[FocalEstimate | None]:
        return [None for _ in images]
