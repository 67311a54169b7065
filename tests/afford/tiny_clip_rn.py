"""A tiny random open_clip ResNet CLIP (ModifiedResNet image tower) saved as an open_clip ``local-dir``.

``build_tiny_rn_clip(folder)`` writes ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``)
and ``open_clip_model.safetensors``; the model then loads with
``open_clip.create_model("local-dir:<folder>")``, the same factory a user's
``create_model("RN101-quickgelu", pretrained="openai")`` goes through. The text tower uses
open_clip's own BPE tokenizer (it ships inside the wheel, so it works offline).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TINY_EMBED_DIM", "build_tiny_rn_clip", "tiny_model_cfg"]

TINY_EMBED_DIM = 32


def tiny_model_cfg(image_size: int = 64, width: int = 8, embed_dim: int = TINY_EMBED_DIM) -> dict:
    return {"embed_dim": embed_dim, "quick_gelu": True,
            "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": width, "patch_size": None},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def build_tiny_rn_clip(folder: str | Path, seed: int = 0, image_size: int = 64, width: int = 8,
                       embed_dim: int = TINY_EMBED_DIM) -> str:
    """Write the tiny CLIP to ``folder``; returns the open_clip model name ``local-dir:<folder>``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_model_cfg(image_size, width, embed_dim)
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                           quick_gelu=True)
    with torch.no_grad():
        # random init zeroes every residual branch's last BN: make the tower non-trivial
        for name, p in model.visual.named_parameters():
            if name.endswith("bn3.weight"):
                p.fill_(1.0)
        # a random 1-layer text tower maps every sentence to nearly the same direction (cosine ~0.9);
        # without position embeddings the words dominate and sentences differ (cosine ~0.7)
        model.positional_embedding.zero_()
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"
