"""A tiny random CLIP (model + processor) written to a folder, loadable with ``from_pretrained(folder)``.

The tokenizer is a real ``CLIPTokenizer`` (byte-level BPE, lower-casing, ``</w>`` word ends) over a
character vocabulary with no merges: every letter is one token, so any lower-case ASCII text
tokenizes offline. Characters outside the vocabulary map to ``<unk>``. The image processor is a
``CLIPImageProcessor`` at 32 px (shortest edge resized to 32, then a 32 x 32 centre crop).
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["TINY_CLIP_DIM", "build_tiny_clip"]

TINY_CLIP_DIM = 16  # projection_dim: the embedding size D of the tiny model


def _char_vocab() -> dict[str, int]:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<unk>": 2}
    for ch in string.ascii_lowercase + string.digits + "-'.,":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return vocab


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``CLIPModel`` and its ``CLIPProcessor`` to ``folder``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _char_vocab()
    max_len = 64
    tokenizer = tf.CLIPTokenizer(vocab=vocab, merges=[], unk_token="<unk>", model_max_length=max_len)
    image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = tf.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    eos = vocab["<|endoftext|>"]
    text_config = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=max_len,
                       bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos)
    vision_config = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4)
    # the default logit scale (exp(2.6592) = 14.3, not the trained 100): random weights then give
    # spread-out, not saturated, zero-shot probabilities
    config = tf.CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=TINY_CLIP_DIM)
    torch.manual_seed(seed)
    model = tf.CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
