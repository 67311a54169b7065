"""Tiny random Depth Anything (V2-style, metric) and Depth Pro checkpoints, loadable with ``from_pretrained(folder)``.

* Depth Anything: a 4-layer DINOv2 backbone (patch 4) with the metric head (``sigmoid * max_depth``);
  ``DPTImageProcessor`` configured as the real V2 checkpoints are (``keep_aspect_ratio=True``,
  ``ensure_multiple_of`` = the patch size, no padding), at 32 px instead of 518 px, so non-square
  images keep their aspect ratio and give non-square predictions.
* Depth Pro: the multi-scale DINOv2 / ViT encoders at a 64 px network input with the FOV head
  (``use_fov_model=True``); ``DepthProImageProcessor`` resizes every image to 64 x 64 (the real one:
  1536 x 1536).

With the default initializer (std 0.02) the random heads output constants (Depth Anything:
``sigmoid(0) * max_depth`` everywhere; Depth Pro: a FOV near 0 degrees, an inverse depth near 0), so
the builders redraw every weight matrix as N(0, 1 / fan_in) (O(1) activations, outputs that vary
over the image) and set the Depth Pro output biases to plausible values: a FOV of about
``fov_bias_deg`` degrees and a canonical inverse depth of about 0.5.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["DEPTH_ANYTHING_SIZE", "DEPTH_PRO_SIZE", "build_tiny_depth_anything", "build_tiny_depth_pro"]

DEPTH_ANYTHING_SIZE = 32  # the processor's target size (multiple of the patch size 4)
DEPTH_PRO_SIZE = 64  # the network input of the tiny Depth Pro config


def _rescale_weights(model: Any, seed: int, gain: float = 1.0) -> None:
    """Redraw every >= 2-D weight as N(0, gain^2 / fan_in) (1-D parameters: biases, norms, are kept)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype)
                            * (gain / math.sqrt(fan_in)))


def build_tiny_depth_anything(folder: str | Path, seed: int = 0, depth_estimation_type: str = "metric",
                              max_depth: int = 20) -> Path:
    """Write a tiny random ``DepthAnythingForDepthEstimation`` and its ``DPTImageProcessor`` to ``folder``.

    ``depth_estimation_type="relative"`` builds a relative-depth (disparity) checkpoint, which the
    metric backend must refuse. ``max_depth`` must be an int (the config is a strict dataclass).
    """
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    patch = 4
    config = tf.DepthAnythingConfig(
        backbone_config=dict(model_type="dinov2", image_size=DEPTH_ANYTHING_SIZE, patch_size=patch, hidden_size=32,
                             num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, out_indices=[1, 2, 3, 4],
                             reshape_hidden_states=False, apply_layernorm=True),
        reassemble_hidden_size=32, patch_size=patch, neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5], head_hidden_size=16, depth_estimation_type=depth_estimation_type,
        max_depth=int(max_depth),
    )
    torch.manual_seed(seed)
    model = tf.DepthAnythingForDepthEstimation(config).eval()
    _rescale_weights(model, seed)
    processor = tf.DPTImageProcessor(size={"height": DEPTH_ANYTHING_SIZE, "width": DEPTH_ANYTHING_SIZE},
                                     keep_aspect_ratio=True, ensure_multiple_of=patch, do_pad=False,
                                     resample=3)  # bicubic, as the real V2 checkpoints
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_depth_pro(folder: str | Path, seed: int = 0, use_fov_model: bool = True,
                         fov_bias_deg: float = 60.0) -> Path:
    """Write a tiny random ``DepthProForDepthEstimation`` (with its FOV head) and ``DepthProImageProcessor``."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tf.DepthProConfig(
        patch_size=16, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[10, 8],
        scaled_images_ratios=[0.5, 1.0], scaled_images_overlap_ratios=[0.0, 0.2], scaled_images_feature_dims=[12, 12],
        use_fov_model=use_fov_model,
        image_model_config=dict(model_type="dinov2", num_hidden_layers=2, hidden_size=16, num_attention_heads=1,
                                patch_size=4),
        patch_model_config=dict(model_type="vit", num_hidden_layers=2, hidden_size=24, num_attention_heads=2,
                                patch_size=6),
        fov_model_config=dict(model_type="vit", num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                              patch_size=8),
    )
    torch.manual_seed(seed)
    model = tf.DepthProForDepthEstimation(config).eval()
    _rescale_weights(model, seed)
    with torch.no_grad():
        # the last 1-channel conv of the depth head (then a ReLU): canonical inverse depth about 0.5 +- noise
        depth_out = model.head.layers[-2]
        depth_out.weight.mul_(0.1)
        depth_out.bias.fill_(0.5)
        if model.fov_model is not None:
            # the FOV head's last conv outputs the FOV in degrees: about fov_bias_deg +- a few degrees
            fov_out = model.fov_model.head.layers[-1]
            fov_out.weight.mul_(0.5)
            fov_out.bias.fill_(float(fov_bias_deg))
    processor = tf.DepthProImageProcessor(size={"height": DEPTH_PRO_SIZE, "width": DEPTH_PRO_SIZE})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
