"""A tiny random Qwen2.5-VL with an offline tokenizer and image processor, saved to a folder.

``build_tiny_qwen(folder)`` writes a ``Qwen2_5_VLForConditionalGeneration`` (a few thousand
parameters per layer), a byte-level BPE tokenizer trained here on a few sentences (it still encodes
any text, byte by byte when no merge applies) with Qwen's special tokens and a Qwen-style chat
template, and a ``Qwen2VLImageProcessor`` that resizes every image to at most 32x32 pixels (4
image tokens). The folder loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` exactly
like a hub model id.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# Written for these tests in the Qwen2-VL conversation layout: a default system turn, then
# "<|im_start|>role\n...<|im_end|>\n" per message, images as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

INIT_RANGE = 0.2  # larger than the default 0.02, so a few LoRA steps can visibly lower the loss

_CORPUS = (
    "How far is the red mug from the camera? The red mug is about 1.5 metres away.",
    "Is the chair to the left of the table? Yes, the chair is to the left of the table.",
    "Which is taller, the lamp or the cabinet? The lamp is taller than the cabinet.",
    "What is the width of the green box? It measures approximately 40 centimetres.",
    "At what clock position is the bin? The bin is roughly at 3 o'clock.",
    "What colour is the ball? The ball is blue. Describe the picture. A room with furniture.",
)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Qwen2.5-VL + processor under ``folder``; returns the folder."""
    import torch
    import transformers as T

    folder = Path(folder)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    image_processor = T.Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=8,
                                              temporal_patch_size=2, merge_size=2)
    video_processor = T.Qwen2VLVideoProcessor(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=8,
                                              temporal_patch_size=2, merge_size=2)
    processor = T.Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      video_processor=video_processor, chat_template=CHAT_TEMPLATE)
    config = T.Qwen2_5_VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False,
                         initializer_range=INIT_RANGE),
        vision_config=dict(depth=2, in_chans=3, hidden_act="silu", intermediate_size=32, out_hidden_size=32,
                           hidden_size=32, num_heads=4, patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=32, fullatt_block_indexes=[1]),
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    )
    torch.manual_seed(seed)
    model = T.Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
