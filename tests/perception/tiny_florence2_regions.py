"""A tiny random Florence-2 whose greedy and beam outputs are well-formed region lists: boxes a parser can read.

A random model almost never writes ``label<loc_a><loc_b><loc_c><loc_d>`` in order, so the detection
path (``<OD>``, ``<DENSE_REGION_CAPTION>``, ``<REGION_PROPOSAL>``) would find no box. This builder
starts from :func:`~tests.perception.tiny_florence2.build_tiny_florence2` and rewires the decoder so
that the *kind* of each output token is fixed by its position while *which* token of that kind
wins depends on the image and the prompt:

* the decoder's self-attention and feed-forward branches are zeroed, so its hidden state is the
  normalised position embedding plus the cross-attention read of the encoder (image tokens and
  prompt);
* the position embeddings carry a large one-hot "kind" (letter, location or end) in three
  dimensions, and the cross-attention writes only to the other dimensions;
* the output head scores letters on the letter dimension, the 1000 ``<loc_*>`` tokens on the
  location dimension and ``</s>`` on the end dimension, each plus a random projection of the
  content dimensions (so the letters and the coordinates follow the image); every other token
  scores 0.

Greedy decoding then writes :data:`REGION_PATTERN` ``REGIONS`` times and ends: three-letter
labels, each followed by four location tokens, e.g. ``abc<loc_3><loc_871><loc_460><loc_95>...</s>``.
The coordinates are in no particular order (the detector sorts each box's corners). Region
captions by this model are its letters (the location tokens are cleaned away).
"""

from __future__ import annotations

import math
import string
from pathlib import Path

from .tiny_florence2 import build_tiny_florence2

__all__ = ["LABEL_LETTERS", "REGIONS", "build_tiny_florence2_regions"]

REGIONS = 3  # boxes every output holds
LABEL_LETTERS = 3  # letters of each label
_KIND_LETTER, _KIND_LOC, _KIND_END = 0, 1, 2


def _kinds(n_positions: int) -> list[int]:
    period = LABEL_LETTERS + 4
    kinds = []
    for p in range(n_positions):
        if p >= REGIONS * period:
            kinds.append(_KIND_END)
        else:
            kinds.append(_KIND_LETTER if p % period < LABEL_LETTERS else _KIND_LOC)
    return kinds


def build_tiny_florence2_regions(folder: str | Path, seed: int = 0) -> Path:
    """Write the rewired tiny Florence-2 (model + processor) to ``folder``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(build_tiny_florence2(folder, seed=seed))
    model = tf.Florence2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = tf.Florence2Processor.from_pretrained(folder)
    vocab = processor.tokenizer.get_vocab()
    dec = model.model.language_model.decoder
    layer = dec.layers[0]
    d = model.config.text_config.d_model
    content = slice(3, d)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for lin in (layer.self_attn.out_proj, layer.fc2):  # no self-attention, no feed-forward: position + cross
            lin.weight.zero_()
            lin.bias.zero_()
        layer.encoder_attn.out_proj.weight[:3] = 0.0  # the image and prompt never touch the kind dimensions
        layer.encoder_attn.out_proj.bias[:3] = 0.0
        layer.encoder_attn.out_proj.weight.mul_(3.0)  # a strong content signal, so tokens follow the image
        pos = dec.embed_positions
        offset = getattr(pos, "offset", 2)
        pos.weight.zero_()
        pos.weight[:, content] = torch.randn(pos.weight.shape[0], d - 3, generator=gen) * 2.0  # each position reads
        for p, kind in enumerate(_kinds(pos.weight.shape[0] - offset)):                   # its own mix of the image
            pos.weight[p + offset, kind] = 8.0
        dec.embed_tokens.weight.mul_(0.01)  # the previous token hardly matters: the position decides the kind
        head = model.lm_head.weight
        head.zero_()
        rows = {_KIND_LETTER: [vocab[c] for c in string.ascii_lowercase],
                _KIND_LOC: [vocab[f"<loc_{i}>"] for i in range(1000)],
                _KIND_END: [vocab["</s>"]]}
        for kind, ids in rows.items():
            head[ids, kind] = 40.0
            if kind != _KIND_END:
                head[ids, content] = torch.randn(len(ids), d - 3, generator=gen) * (4.0 / math.sqrt(d - 3))
    model.save_pretrained(folder)
    return folder
