"""Tiny random vision-language models (model + processor) written to a folder, loadable with ``from_pretrained``.

Each builder writes what a hub checkpoint holds (``config.json``, weights, tokenizer files, the image
processor's and processor's configs and, where the family has one, ``chat_template.jinja``), so
``AutoProcessor.from_pretrained(folder)`` and ``AutoModelForImageTextToText.from_pretrained(folder)``
take the same path as for a hub id. Nothing is downloaded.

* tokenizer: a ``tokenizers`` WordLevel model over :data:`WORDS` (plus the family's special tokens,
  registered as special tokens so they are never split or lower-cased), a lower-casing normalizer and
  a whitespace/punctuation pre-tokenizer, wrapped in ``PreTrainedTokenizerFast``. Words outside the
  vocabulary become the unknown token; decoding joins words with spaces. LLaVA's tokenizer prepends
  ``<s>`` like Llama's; PaliGemma's processor adds its 1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens.
* image processor: the family's own, resizing to a few pixels (a handful of image tokens per image).
* chat template: a short Jinja template written in the layout of the family's real one (not a copy),
  PaliGemma has none (like the real checkpoints).
* model: the family's ``...ForConditionalGeneration`` with 2-layer towers of width 32. Weights are
  redrawn as N(0, 1 / fan_in) so activations stay O(1) and the greedy output depends on the input;
  the output head gives special tokens (end of text included) a zero logit and is untied from the
  input embeddings, so the model writes ``max_new_tokens`` vocabulary words rather than stopping at
  once or emitting tokens that decode to nothing.

Families: ``qwen2_5_vl`` (Qwen2.5-VL), ``idefics3`` (SmolVLM-256M/500M and Idefics3), ``smolvlm2``
(SmolVLM2, model type ``smolvlm``; its processor needs ``num2words``), ``llava`` (LLaVA-1.5) and ``paligemma``
(PaliGemma / PaliGemma 2). ``build_tiny_vlm(family, folder)`` builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "WORDS", "build_tiny_vlm"]

_WORD_TEXT = (
    "the a an is are of to in on at and or it its this that what which how far many much tall wide long high "
    "left right above below behind front near closer farther between distance metres meters cm m "
    "chair table mug lamp sofa bed door window shelf box bottle plant red blue green wooden small large "
    "yes no answer number option only question image object room floor wall about roughly exactly "
    "you user assistant system helpful en with single value unit directly give your best guess available one "
    "from hour clock direction scene "
    "0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ( ) - / ' \""
)
WORDS = tuple(_WORD_TEXT.split())

_TXT = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512)


# ----------------------------------------------------------------------------- shared helpers
def _tokenizer(special: list[str], *, bos: str | None, eos: str, pad: str, unk: str, add_bos: bool = False,
               extra: dict[str, str] | None = None) -> Any:
    """A WordLevel tokenizer: ``special`` first (ids 0..), then :data:`WORDS`."""
    import tokenizers as tk
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in [*special, *WORDS]:
        vocab.setdefault(tok, len(vocab))
    backend = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token=unk))
    backend.normalizer = tk.normalizers.Lowercase()
    backend.pre_tokenizer = tk.pre_tokenizers.Sequence([tk.pre_tokenizers.WhitespaceSplit(),
                                                        tk.pre_tokenizers.Punctuation()])
    backend.add_special_tokens([tk.AddedToken(t, special=True, normalized=False) for t in special])
    if add_bos and bos is not None:
        backend.post_processor = tk.processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    kwargs: dict[str, Any] = dict(bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk, model_max_length=4096)
    if extra:
        kwargs["extra_special_tokens"] = extra
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def _randomize(model: Any, seed: int, tokenizer: Any) -> None:
    """Weights N(0, 1 / fan_in); the output head silent (zero rows) on every special / added token."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param.shape[1]))
        words = set(WORDS)
        silent = sorted(i for tok, i in tokenizer.get_vocab().items() if tok not in words)
        head = model.get_output_embeddings().weight
        head[silent] = 0.0


def _save(model: Any, processor: Any, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _text(vocab_size: int, bos: int | None, eos: int, pad: int, **extra: Any) -> dict[str, Any]:
    return dict(_TXT, vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **extra)


# ----------------------------------------------------------------------------- Qwen2.5-VL
# layout of the real template: a default system turn, then <|im_start|>role\n ... <|im_end|>\n turns; an image
# is <|vision_start|><|image_pad|><|vision_end|> where it stands in the content
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_5_vl(folder: str | Path, seed: int = 0) -> Path:
    """Qwen2.5-VL: patch 4, merge 2 (one image token per 8 x 8 pixels), images resized to 64..256 pixels."""
    import torch
    import transformers as tf

    folder = Path(folder)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>", "<unk>"]
    tok = _tokenizer(special, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>",
                     extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                            "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"})
    ids = tok.get_vocab()
    image_processor = tf.Qwen2VLImageProcessor(min_pixels=64, max_pixels=256, patch_size=4, merge_size=2,
                                               temporal_patch_size=2)
    video_processor = tf.Qwen2VLVideoProcessor(min_pixels=64, max_pixels=256, patch_size=4, merge_size=2,
                                               temporal_patch_size=2)
    processor = tf.Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                       video_processor=video_processor, chat_template=QWEN_CHAT_TEMPLATE)
    config = tf.Qwen2_5_VLConfig(
        text_config=_text(len(tok), None, ids["<|im_end|>"], ids["<|endoftext|>"],
                          rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=32,
                           patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.Qwen2_5_VLForConditionalGeneration(config).eval()
    _randomize(model, seed, tok)
    return _save(model, processor, folder)


# ----------------------------------------------------------------------------- Idefics3 / SmolVLM
# layout of SmolVLM's template: <|im_start|>User:<image>text<end_of_utterance>\nAssistant:
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'] is string %}: {{ m['content'] }}{% else %}"
    "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_idefics3(folder: str | Path, seed: int = 0) -> Path:
    """Idefics3 (the SmolVLM-256M/500M architecture): 16 px images, patch 4, pixel shuffle 2 -> 4 image tokens."""
    import torch
    import transformers as tf

    folder = Path(folder)
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
               "<image>", "<global-img>", "<unk>", *rows]
    tok = _tokenizer(special, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<unk>")
    ids = tok.get_vocab()
    image_processor = tf.Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 16},
                                                max_image_size={"longest_edge": 16})
    processor = tf.Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                     chat_template=SMOLVLM_CHAT_TEMPLATE)
    config = tf.Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=4),
        text_config=dict(_text(len(tok), ids["<|im_start|>"], ids["<end_of_utterance>"], ids["<|im_end|>"]),
                         model_type="llama"),
        scale_factor=2, image_token_id=ids["<image>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.Idefics3ForConditionalGeneration(config).eval()
    _randomize(model, seed, tok)
    return _save(model, processor, folder)


# ----------------------------------------------------------------------------- SmolVLM2
# the SmolVLM2 checkpoints ship the SmolVLM layout above (a "<video>" entry besides "<image>")
SMOLVLM2_CHAT_TEMPLATE = SMOLVLM_CHAT_TEMPLATE.replace(
    "{% elif c['type'] == 'text' %}", "{% elif c['type'] == 'video' %}<video>{% elif c['type'] == 'text' %}")


def build_tiny_smolvlm2(folder: str | Path, seed: int = 0) -> Path:
    """SmolVLM2 (``SmolVLMForConditionalGeneration`` + ``SmolVLMProcessor``, needs ``num2words``).

    Like the real checkpoints the images are split: scaled to a longest side of 32 px (sides rounded up to
    multiples of 16), cut into 16 px tiles (``<row_i_col_j>``) followed by the 16 px global image
    (``<global-img>``); patch 4, pixel shuffle 2 -> 4 image tokens per tile, e.g. 2 x 2 tiles + global = 20
    for a 40 x 28 px image, 1 x 2 tiles + global = 12 for a 64 x 8 px one.
    """
    import torch
    import transformers as tf

    folder = Path(folder)
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
               "<image>", "<global-img>", "<video>", "<unk>", *rows]
    tok = _tokenizer(special, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<unk>")
    ids = tok.get_vocab()
    sizes = dict(size={"longest_edge": 32}, max_image_size={"longest_edge": 16})
    image_processor = tf.SmolVLMImageProcessor(do_image_splitting=True, **sizes)
    video_processor = tf.SmolVLMVideoProcessor(**sizes)
    processor = tf.SmolVLMProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                    image_seq_len=4, chat_template=SMOLVLM2_CHAT_TEMPLATE)
    config = tf.SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=4),
        text_config=dict(_text(len(tok), ids["<|im_start|>"], ids["<end_of_utterance>"], ids["<|im_end|>"]),
                         model_type="llama"),
        scale_factor=2, image_token_id=ids["<image>"], pad_token_id=ids["<|im_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.SmolVLMForConditionalGeneration(config).eval()
    _randomize(model, seed, tok)
    return _save(model, processor, folder)


# ----------------------------------------------------------------------------- LLaVA-1.5
# layout of llava-1.5-hf's template: "USER: <image>\ntext ASSISTANT:" (the tokenizer adds <s>)
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'].upper() + ': ' }}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] + ' ' }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """LLaVA-1.5: a CLIP tower on 16 px crops, patch 4 -> 16 image tokens (CLS dropped), Llama text model."""
    import torch
    import transformers as tf

    folder = Path(folder)
    special = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok = _tokenizer(special, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True,
                     extra={"image_token": "<image>"})
    ids = tok.get_vocab()
    image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = tf.LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=4,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=LLAVA_CHAT_TEMPLATE)
    config = tf.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=4, projection_dim=32),
        text_config=dict(_text(len(tok), ids["<s>"], ids["</s>"], ids["<pad>"]), model_type="llama"),
        image_token_id=ids["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-2,
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.LlavaForConditionalGeneration(config).eval()
    _randomize(model, seed, tok)
    return _save(model, processor, folder)


# ----------------------------------------------------------------------------- PaliGemma
def build_tiny_paligemma(folder: str | Path, seed: int = 0) -> Path:
    """PaliGemma: a SigLIP tower on 16 px images, patch 4 -> 16 image tokens, Gemma text model, no chat template."""
    import torch
    import transformers as tf

    folder = Path(folder)
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    tok = _tokenizer(special, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", extra={"image_token": "<image>"})
    image_processor = tf.SiglipImageProcessor(size={"height": 16, "width": 16}, image_seq_length=16)
    processor = tf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds <locNNNN>, <segNNN>
    ids = tok.get_vocab()
    config = tf.PaliGemmaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=4, projection_dim=32),
        text_config=dict(_text(len(tok), ids["<bos>"], ids["<eos>"], ids["<pad>"], head_dim=8), model_type="gemma"),
        image_token_id=ids["<image>"], projection_dim=32, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.PaliGemmaForConditionalGeneration(config).eval()
    _randomize(model, seed, tok)
    return _save(model, processor, folder)


FAMILIES: dict[str, Callable[..., Path]] = {
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "idefics3": build_tiny_idefics3,
    "smolvlm2": build_tiny_smolvlm2,
    "llava": build_tiny_llava,
    "paligemma": build_tiny_paligemma,
}


def build_tiny_vlm(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny ``family`` model and its processor to ``folder`` (see :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](folder, seed=seed)
