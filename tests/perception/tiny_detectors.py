"""Tiny random Grounding DINO and OWLv2 checkpoints (model + processor) written to a folder.

Both load with ``from_pretrained(folder)`` exactly as a hub id would.

* Grounding DINO: a 4-stage Swin (embed 8) and a 2-layer BERT (hidden 8), ``d_model`` 32,
  ``num_queries`` queries (default 10), captions of at most ``max_text_len`` tokens (default 16).
  The tokenizer is a real ``BertTokenizer`` (WordPiece, lower-casing) whose small vocabulary keeps
  BERT's ids for the tokens the model treats specially - ``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101,
  ``[SEP]`` 102, ``.`` 1012, ``?`` 1029 (``GroundingDinoModel`` hard-codes 101, 102, 1012 and 1029 as
  phrase delimiters) - and holds a few whole words plus every letter and digit (``x`` and ``##x``),
  so any lower-case ASCII phrase tokenizes (unknown words as letter pieces). Unused ids are
  ``[unusedN]`` fillers. The image processor resizes the shortest edge to 64 (longest at most 96)
  and pads the batch, as the real one does at 800 / 1333.
* OWLv2: a CLIP-style text tower (max 16 tokens, as the real one) and a ViT at 32 px with patch 8
  (16 patch boxes per image); ``projection_dim`` equals the hidden size (an OWL requirement).
  The tokenizer is a real ``CLIPTokenizer`` (byte-level BPE, ``</w>`` word ends) over letters,
  digits and a few whole words (with the merges that build them); like CLIP's, its pad token is
  ``"!"`` at id 0 and ``<|startoftext|>`` has a non-zero id (OWL's query mask tests
  ``input_ids[..., 0] > 0``). ``Owlv2ImageProcessor`` pads to a square and resizes to 32 x 32.
  The box and class heads' last layers are damped (x 0.05) so boxes stay near the patch-grid prior
  and scores are not all 0 or 1.
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["GDINO_WORDS", "OWL_IMAGE_SIZE", "OWL_WORDS", "build_tiny_grounding_dino", "build_tiny_owlv2"]

GDINO_WORDS = ("a", "the", "cat", "dog", "remote", "control", "chair", "table", "cup", "lamp", "sofa", "red")
OWL_WORDS = ("a", "photo", "of", "cat", "dog", "remote", "control", "chair", "table", "cup", "lamp", "sofa")
OWL_IMAGE_SIZE = 32
OWL_PATCH = 8


def _bert_vocab() -> dict[str, int]:
    fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
    pieces = list(GDINO_WORDS)
    pieces += [c for c in string.ascii_lowercase + string.digits if c not in pieces]
    pieces += ["##" + c for c in string.ascii_lowercase + string.digits] + ["-", ",", "'"]
    tokens: list[str] = []
    it = iter(pieces)
    for i in range(max(fixed) + 1):
        if i in fixed:
            tokens.append(fixed[i])
        elif i > 103:
            tokens.append(next(it, f"[unused{i}]"))
        else:
            tokens.append(f"[unused{i}]")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise RuntimeError("tiny BERT vocabulary has duplicate tokens")
    return vocab


def build_tiny_grounding_dino(folder: str | Path, seed: int = 0, *, num_queries: int = 10,
                              max_text_len: int = 16) -> Path:
    """Write a tiny random ``GroundingDinoForObjectDetection`` and its ``GroundingDinoProcessor``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    tokenizer = tf.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)
    image_processor = tf.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    processor = tf.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = tf.GroundingDinoConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=4, decoder_ffn_dim=4, num_queries=num_queries, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=6, use_timm_backbone=False, max_text_len=max_text_len,
        backbone_config=tf.SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                      image_size=98, out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", vocab_size=len(vocab), hidden_size=8, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=8, max_position_embeddings=max_text_len,
                         pad_token_id=0))
    torch.manual_seed(seed)
    model = tf.GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def clip_vocab_and_merges(words=None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiny CLIP BPE vocabulary: every letter and digit, plus whole-word merges for ``words`` (default: OWL_WORDS)."""
    tokens = ["!"]  # CLIP's pad token "!" has id 0
    for ch in string.ascii_lowercase + string.digits + "-'.,":
        tokens += [ch, ch + "</w>"]
    merges: list[tuple[str, str]] = []
    for word in OWL_WORDS if words is None else words:
        if len(word) < 2:
            continue
        prefix = word[0]
        for k, ch in enumerate(word[1:], start=1):
            piece = ch + "</w>" if k == len(word) - 1 else ch
            merges.append((prefix, piece))
            prefix = prefix + piece
            tokens.append(prefix)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    unique = list(dict.fromkeys(tokens))
    merges = list(dict.fromkeys(merges))
    return {t: i for i, t in enumerate(unique)}, merges


def build_tiny_owlv2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``Owlv2ForObjectDetection`` and its ``Owlv2Processor``; return the folder."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    max_len = 16
    tokenizer = tf.CLIPTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", pad_token="!",
                                 model_max_length=max_len)
    image_processor = tf.Owlv2ImageProcessor(size={"height": OWL_IMAGE_SIZE, "width": OWL_IMAGE_SIZE})
    processor = tf.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    text_config = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=max_len, bos_token_id=bos, eos_token_id=eos,
                       pad_token_id=vocab["!"])
    vision_config = dict(image_size=OWL_IMAGE_SIZE, patch_size=OWL_PATCH, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4)
    config = tf.Owlv2Config(text_config=text_config, vision_config=vision_config, projection_dim=32)
    torch.manual_seed(seed)
    model = tf.Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # random heads saturate: logits of +-100 and boxes squeezed to 0 or 1. Damped, the boxes sit
        # near the patch-grid prior (``box_bias``) and the scores spread over (0, 1)
        model.box_head.dense2.weight.mul_(0.05)
        model.class_head.logit_scale.weight.mul_(0.05)
        model.class_head.logit_shift.weight.mul_(0.05)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
