"""Tiny random SAM and SAM 2 checkpoints (model + processor) written to a folder, loadable with ``from_pretrained``.

* SAM: a 2-layer ViT image encoder at 24 px (patch 2 -> 12 x 12 embedding, 48 x 48 mask logits);
  ``SamImageProcessor`` resizes the longest edge to 24 and pads to 24 x 24, as the real one does at 1024.
* SAM 2: a 4-stage Hiera encoder at 64 px (16 x 16 mask logits); ``Sam2ImageProcessor`` resizes to
  64 x 64 (no padding, as the real one at 1024).

The processors' sizes match the configs' ``image_size`` (prompt coordinates are normalised to it).
With the default initializer (std 0.02) the random decoders output logits of about 1e-5, so masks
would be empty or noise; the builders redraw every weight matrix with a fan-in scaled normal
(``1 / sqrt(fan_in)``), which gives O(1) logits and masks that cover part of the image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["SAM2_IMAGE_SIZE", "SAM_IMAGE_SIZE", "build_tiny_sam", "build_tiny_sam2"]

SAM_IMAGE_SIZE = 24
SAM2_IMAGE_SIZE = 64


def _rescale_weights(model: Any, seed: int) -> None:
    """Redraw every >= 2-D weight (not the random positional frequencies) as N(0, 1 / fan_in)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "positional" not in name:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype)
                            / math.sqrt(fan_in))


def build_tiny_sam(folder: str | Path, seed: int = 5) -> Path:
    """Write a tiny random ``SamModel`` and its ``SamProcessor`` to ``folder``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = SAM_IMAGE_SIZE
    config = tf.SamConfig(
        vision_config=dict(hidden_size=36, intermediate_size=72, projection_dim=62, output_channels=32,
                           num_hidden_layers=2, num_attention_heads=4, image_size=size, patch_size=2, mlp_dim=64,
                           global_attn_indexes=[1], window_size=14, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=size, patch_size=2, mask_input_channels=4,
                                   num_point_embeddings=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_dim=64,
                                 iou_head_hidden_dim=32, iou_head_depth=3),
    )
    torch.manual_seed(seed)
    model = tf.SamModel(config).eval()
    _rescale_weights(model, seed)
    image_processor = tf.SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size},
                                           mask_size={"longest_edge": size // 4},
                                           mask_pad_size={"height": size // 4, "width": size // 4})
    processor = tf.SamProcessor(image_processor=image_processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_sam2(folder: str | Path, seed: int = 2) -> Path:
    """Write a tiny random ``Sam2Model`` and its ``Sam2Processor`` to ``folder``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = SAM2_IMAGE_SIZE
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=16, blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                    global_attention_blocks=[3], window_size_per_stage=[4, 4, 4, 4], image_size=[size, size],
                    window_positional_embedding_background_size=[2, 2])
    config = tf.Sam2Config(
        vision_config=dict(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=32,
                           backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8],
                                                   [size // 16, size // 16]]),
        prompt_encoder_config=dict(hidden_size=32, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32),
    )
    torch.manual_seed(seed)
    model = tf.Sam2Model(config).eval()
    _rescale_weights(model, seed)
    image_processor = tf.Sam2ImageProcessor(size={"height": size, "width": size},
                                            mask_size={"height": size // 4, "width": size // 4})
    processor = tf.Sam2Processor(image_processor=image_processor, target_size=size)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
