"""A tiny random ZoeDepth checkpoint (model + ``ZoeDepthImageProcessor``), loadable with ``from_pretrained(folder)``.

A 2-layer BEiT backbone (patch 16) at a 32 px network input (the real ``Intel/zoedepth-*``: 384 x 512),
with one metric head (``nyu``, max 10 m) or, with ``heads=2``, ZoeDepth's NK routing: two heads
(``nyu`` 10 m, ``kitti`` 80 m) and the domain classifier that picks one per forward. The processor
keeps the aspect ratio, pads by reflection and uses sides a multiple of 16, as the real one does
(multiple of 32).

With the default initializer the random model outputs a constant (``softplus(0)`` everywhere), so
every weight matrix is redrawn as N(0, 1 / fan_in) (outputs that vary over the image).
``split_images``: for a two-head model, images whose domain votes are made to differ: the
classifier's output bias is set so that the first image of the list with the lowest
``kitti - nyu`` logit margin goes to ``nyu`` and the one with the highest to ``kitti``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ZOEDEPTH_SIZE", "build_tiny_zoedepth"]

ZOEDEPTH_SIZE = 32  # the processor's target size (sides a multiple of 16)


def _rescale_weights(model: Any, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))


def build_tiny_zoedepth(folder: str | Path, seed: int = 0, heads: int = 1,
                        split_images: list[np.ndarray] | None = None) -> Path:
    """Write a tiny random ``ZoeDepthForDepthEstimation`` (1 or 2 heads) and its processor to ``folder``."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bins = [dict(n_bins=8, min_depth=1e-3, max_depth=10.0, name="nyu")]
    if heads == 2:
        bins.append(dict(n_bins=8, min_depth=1e-3, max_depth=80.0, name="kitti"))
    config = tf.ZoeDepthConfig(
        backbone_config=dict(model_type="beit", image_size=ZOEDEPTH_SIZE, patch_size=16, hidden_size=4,
                             num_hidden_layers=2, num_attention_heads=1, intermediate_size=8, out_indices=[1, 2],
                             reshape_hidden_states=False, add_fpn=False),
        neck_hidden_sizes=[2, 2], fusion_hidden_size=6, bottleneck_features=6, num_relative_features=8,
        reassemble_factors=[1, 1], num_attractors=[4, 4, 4, 1], bin_embedding_dim=8, backbone_hidden_size=4,
        hidden_size=4, readout_type="project", bin_configurations=bins,
        # the NK router's transformer has 4 layers and a 128-wide classifier input (fixed in transformers)
        num_patch_transformer_layers=4 if heads == 2 else 1, patch_transformer_hidden_size=128 if heads == 2 else 8,
        patch_transformer_intermediate_size=8, patch_transformer_num_attention_heads=1)
    torch.manual_seed(seed)
    model = tf.ZoeDepthForDepthEstimation(config).eval()
    _rescale_weights(model, seed)
    processor = tf.ZoeDepthImageProcessor(size={"height": ZOEDEPTH_SIZE, "width": ZOEDEPTH_SIZE},
                                          ensure_multiple_of=16, keep_aspect_ratio=True, do_pad=True)
    if heads == 2 and split_images:
        margins = []
        with torch.no_grad():
            for img in split_images:
                logits = model(**processor(images=[img], return_tensors="pt")).domain_logits[0]
                margins.append(float(logits[1] - logits[0]))
        lo, hi = min(margins), max(margins)
        if not hi > lo:
            raise ValueError("split_images: every image gets the same domain vote; give other images")
        bias = model.metric_head.mlp_classifier.linear2.bias
        with torch.no_grad():
            bias[1] -= (lo + hi) / 2  # the midpoint margin becomes 0: below -> nyu, above -> kitti
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
