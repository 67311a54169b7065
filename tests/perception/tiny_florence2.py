"""A tiny random Florence-2 (model + processor) written to a folder, loadable with ``from_pretrained(folder)``.

The layout mirrors the converted ``florence-community/Florence-2-*`` checkpoints that the native
transformers implementation loads:

* tokenizer: a ``BartTokenizer`` (byte-level BPE, the RoBERTa/BART special tokens ``<s>`` ``<pad>``
  ``</s>`` ``<unk>`` at ids 0..3) over the 256-symbol byte alphabet with no merges, so any text
  tokenizes offline (one token per byte). Registered on top, as special tokens like the real one:
  the image placeholder ``<image>`` (named ``image_token``), the 1000 location tokens
  ``<loc_0>`` .. ``<loc_999>`` and Florence's markup tokens (``<od>``, ``<poly>``, ``<sep>``, ...).
  The task tokens (``<CAPTION>``, ``<REGION_TO_DESCRIPTION>``, ...) are not vocabulary entries: the
  processor rewrites them into natural-language prompts before tokenizing, as for the real model.
* image processor: ``CLIPImageProcessor`` resizing to ``TINY_FLORENCE2_IMAGE_SIZE`` square (no crop),
  ImageNet mean/std, like the real one at 768 px; ``image_seq_length`` matches the tiny DaViT
  (a 2 x 2 feature map plus the pooled token = 5 image tokens).
* model: ``Florence2ForConditionalGeneration`` with a one-stage DaViT and a one-layer BART.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

__all__ = ["TINY_FLORENCE2_IMAGE_SIZE", "TINY_FLORENCE2_IMAGE_TOKENS", "build_tiny_florence2"]

TINY_FLORENCE2_IMAGE_SIZE = 8  # pixels (square) the processor resizes every image to
TINY_FLORENCE2_IMAGE_TOKENS = 5  # (8 px, stride 4 -> 2 x 2 patches) + 1 pooled token

_MARKUP_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>",
                  "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
                  "<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>",
                  "</poly>", "<and>"]

# the parse rules the converted checkpoints ship (post_process_generation needs the task's entry)
_POST_PROCESSOR_CONFIG = {
    "ocr": {"pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def _rescale_weights(model: Any, seed: int) -> None:
    """Redraw every 2-D weight as N(0, 1 / fan_in): O(1) activations, so outputs depend on the inputs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "pos_idx_to_embed" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param.shape[1]))


def build_tiny_florence2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``Florence2ForConditionalGeneration`` and its ``Florence2Processor`` to ``folder``."""
    import torch
    import transformers as tf
    from tokenizers import pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    vocab.setdefault("<mask>", len(vocab))
    extra = ["<image>"] + [f"<loc_{i}>" for i in range(1000)] + _MARKUP_TOKENS
    # ``image_token`` becomes a named model-specific special token (saved with the tokenizer)
    tokenizer = tf.BartTokenizer(vocab=vocab, merges=[], model_max_length=1024, image_token="<image>")
    tokenizer.add_special_tokens({"extra_special_tokens": extra})

    size = TINY_FLORENCE2_IMAGE_SIZE
    image_processor = tf.CLIPImageProcessor(
        size={"height": size, "width": size}, do_center_crop=False, crop_size={"height": size, "width": size},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], resample=3,
        image_seq_length=TINY_FLORENCE2_IMAGE_TOKENS)
    processor = tf.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                      post_processor_config=_POST_PROCESSOR_CONFIG)

    text_config = dict(model_type="bart", vocab_size=len(tokenizer), max_position_embeddings=128, encoder_layers=1,
                       encoder_ffn_dim=16, encoder_attention_heads=1, decoder_layers=1, decoder_ffn_dim=16,
                       decoder_attention_heads=1, d_model=16, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                       decoder_start_token_id=2, forced_bos_token_id=0)
    vision_config = dict(patch_size=[7], depths=[1], patch_stride=[4], patch_padding=[3], patch_prenorm=[False],
                         embed_dim=[16], num_heads=[1], num_groups=[1], window_size=12, projection_dim=16)
    config = tf.Florence2Config(text_config=text_config, vision_config=vision_config,
                                image_token_id=tokenizer.image_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.Florence2ForConditionalGeneration(config).eval()
    _rescale_weights(model, seed)
    # Random logits favour no token in particular: with 1000 location tokens and 256 byte symbols most
    # generated tokens would be locations or bytes that do not decode to text. The (untied) output head
    # keeps only ASCII letters, the space, a little punctuation (including '<' and '>'), the end token
    # and the markup tokens, so the random model writes letter garbage mixed with markup for the
    # cleaning to remove, and never a location token.
    keep = set(string.ascii_letters) | {"\u0120", ".", ",", "<", ">", "</s>", *_MARKUP_TOKENS}
    silent = [i for tok, i in tokenizer.get_vocab().items() if tok not in keep]
    with torch.no_grad():
        model.lm_head.weight[silent] = 0.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
