"""A tiny random SAM 3 checkpoint (``Sam3Model`` + ``Sam3Processor``) written to a folder.

It loads with ``from_pretrained(folder)`` exactly as ``facebook/sam3`` would.

* Vision: a 2-layer ViT (hidden 32, patch 14) at ``SAM3_IMAGE_SIZE`` = 112 px (an 8 x 8 patch grid;
  the FPN levels are 32, 16, 8 and 4 cells), so the masks come out at 32 x 32;
  ``Sam3ImageProcessor`` resizes every image to 112 x 112, as the real one does to 1008 x 1008.
* Text: a 2-layer CLIP text tower (hidden 32, 32 positions, as the processor pads every phrase to
  32 tokens) with a real ``CLIPTokenizer`` (byte-level BPE with ``</w>`` word ends) over letters,
  digits and a few whole words (with the merges that build them), pad token ``"!"`` at id 0.
* DETR encoder 1 layer, decoder 2 layers with ``SAM3_QUERIES`` = 12 queries, mask decoder hidden 32.

With the default initializer the random heads give logits of about 1e-2, so every score would
be about 0.25 and every mask half-noise. As the SAM builders do, every weight matrix is redrawn
with a fan-in scaled normal (``1 / sqrt(fan_in)``), and the mask decoder's pixel projection is
then centred on a reference image (its mean output is subtracted through its bias), so masks
cover part of an image instead of all of it.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.perception.tiny_detectors import clip_vocab_and_merges

__all__ = ["SAM3_IMAGE_SIZE", "SAM3_QUERIES", "SAM3_WORDS", "build_tiny_sam3"]

SAM3_IMAGE_SIZE = 112
SAM3_QUERIES = 12
SAM3_WORDS = ("a", "cat", "dog", "chair", "table", "cup", "lamp", "sofa", "remote", "control", "red", "mug")


def _reference_image(size: int):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([255 * xx / (size - 1), 255 * ((xx // 9 + yy // 9) % 2), 255 * yy / (size - 1)], axis=-1)
    return img.astype(np.uint8)


def build_tiny_sam3(folder: str | Path, seed: int = 3) -> Path:
    """Write a tiny random ``Sam3Model`` and its ``Sam3Processor`` to ``folder``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size, grid = SAM3_IMAGE_SIZE, SAM3_IMAGE_SIZE // 14
    vocab, merges = clip_vocab_and_merges(SAM3_WORDS)
    tokenizer = tf.CLIPTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", pad_token="!",
                                 model_max_length=32)
    image_processor = tf.Sam3ImageProcessor(size={"height": size, "width": size},
                                            mask_size={"height": 4 * grid, "width": 4 * grid})
    processor = tf.Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
    backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, image_size=size, patch_size=14, window_size=4, global_attn_indexes=[1],
                    pretrain_image_size=size)
    config = tf.Sam3Config(
        vision_config=dict(backbone_config=backbone, fpn_hidden_size=32,
                           backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, projection_dim=32,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=0),
        geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=4, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=4, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=32, num_layers=2, num_queries=SAM3_QUERIES, num_attention_heads=4,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=4),
    )
    torch.manual_seed(seed)
    model = tf.Sam3Model(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "position" not in name:
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) / math.sqrt(param[0].numel()))
        # centre the per-pixel mask embedding on a reference image: masks then split images instead of filling them
        projection = model.mask_decoder.instance_projection
        seen = []
        hook = projection.register_forward_hook(lambda _m, _i, out: seen.append(out.mean(dim=(0, 2, 3))))
        enc = processor(images=[_reference_image(size)], text=["cat"], return_tensors="pt")
        model(**enc)
        hook.remove()
        projection.bias.sub_(seen[0])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
