"""Metric monocular depth: Depth Anything V2 metric (``DepthAnythingV2Depth``) and Depth Pro (``DepthProDepth``).

Both stages take RGB images and return one :class:`~spatialforge.perception.types.DepthPrediction`
per image: z-depth in metres, float32, at the image's original ``(H, W)``; 0 marks invalid pixels.

Depth Anything V2 (metric)
--------------------------
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
* Depth at the clamp limit (``1e4`` m, an inverse depth below ``1e-4``: sky) is marked invalid (0).
* Known focal lengths: depth scales linearly with the focal length used, so when the caller passes
  ``focal_lengths_px`` (e.g. the user's or EXIF's, in pixels of the image), the depth is rescaled by
  ``f_known / f_model``, as the reference does when ``f_px`` is given; the returned ``hfov_deg`` and
  ``focal_length_px`` remain the model's own prediction. A checkpoint without the FOV head gives
  metric depth only with a known focal length (``ConfigError`` otherwise).

Both stages load lazily (first call or ``load()``); ``dtype`` applies to the weights and pixel
values, outputs are post-processed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from spatialforge.errors import ConfigError
from spatialforge.perception.backends.base import HFStage, image_list
from spatialforge.perception.checks import check_number, count, positive_int
from spatialforge.perception.types import DepthPrediction

__all__ = ["DepthAnythingV2Depth", "DepthProDepth"]

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


# ----------------------------------------------------------------------------- shared plumbing
class _DepthStage(HFStage):
    """Settings and call plumbing shared by the depth stages (subclasses implement ``_predict``)."""

    kind = "depth"

    def __init__(self, model_id: str | None = None, device: str = "cpu", dtype: str = "float32", *,
                 batch_size: int = 4, **options: Any) -> None:
        """Store settings only (nothing is loaded here).

        Args:
            model_id: hub id or local folder (default: the class's ``default_model_id``).
            device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
            dtype: ``float32``, ``float16`` or ``bfloat16`` (weights and pixel values).
            batch_size: images per forward.
        """
        super().__init__(model_id=model_id, device=device, dtype=dtype, **options)
        self.batch_size = positive_int(batch_size, "batch_size")

    def __call__(self, images: Sequence[np.ndarray],
                 focal_lengths_px: Sequence[float | None] | None = None) -> list[DepthPrediction]:
        """Metric z-depth per image at the image's size.

        Args:
            images: RGB images, (H, W, 3) uint8 (gray and RGBA are converted), any sizes.
            focal_lengths_px: optionally, a known focal length in pixels (or None) per image; Depth
                Pro scales its depth with it, Depth Anything's metric head does not use it.
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
class DepthAnythingV2Depth(_DepthStage):
    """Depth Anything V2 metric depth (metres straight from the model; no FOV)."""

    name = "depth-anything-v2"
    default_model_id = "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"

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
        model = self._from_pretrained(tf.DepthAnythingForDepthEstimation, config=config)
        processor = tf.AutoImageProcessor.from_pretrained(self.model_id)
        return model, processor

    def _predict(self, images: list[np.ndarray], focals: list[float | None]) -> list[DepthPrediction]:
        torch = self.torch
        # do_pad=False: the prediction must cover exactly the (resized) image; the DA processors never pad
        processed = self.processor(images=images, do_pad=False)["pixel_values"]
        pixels = [torch.as_tensor(np.asarray(p) if not torch.is_tensor(p) else p) for p in processed]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        raw: list[Any] = [None] * len(images)
        with torch.inference_mode():
            for idx in groups.values():
                batch = torch.stack([pixels[i] for i in idx]).to(self.device, self.dtype)
                pred = self.model(pixel_values=batch).predicted_depth.float()  # (B, h, w) metres
                for k, i in enumerate(idx):
                    raw[i] = pred[k]
            out = []
            for img, pred in zip(images, raw, strict=True):
                h, w = img.shape[:2]
                depth = torch.nn.functional.interpolate(pred[None, None], size=(h, w), mode="bilinear",
                                                        align_corners=False)[0, 0]
                out.append(DepthPrediction(depth=depth.cpu().numpy().astype(np.float32), model=self.model_id))
        return out


# ----------------------------------------------------------------------------- Depth Pro
class DepthProDepth(_DepthStage):
    """Apple Depth Pro: metric depth, the horizontal FOV and the focal length (pixels) per image."""

    name = "depth-pro"
    default_model_id = "apple/DepthPro-hf"

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
            out.append(DepthPrediction(depth=depth.astype(np.float32), model=self.model_id, hfov_deg=hfov_deg,
                                       focal_length_px=focal_px))
        return out
