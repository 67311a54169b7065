"""The AffordanceCLIP network: a frozen open_clip ResNet CLIP, a light FPN and a text-dot-product head.

Image tower (frozen, eval mode, batch-norm statistics never updated, no gradient):
    stem -> layer1 (stride 4) -> layer2 (stride 8, C8) -> layer3 (stride 16, C16) -> layer4
    (stride 32, C32) -> attention pool (global embedding, D). For RN101: C8=512, C16=1024,
    C32=2048, D=512.
FPN (trainable): 1x1 projections of the three maps and a linear projection of the global
embedding to C' channels, each normalised (GroupNorm / LayerNorm); starting from the global
feature (broadcast over the stride-32 grid), each level concatenates the upsampled coarser result
with its projected map and fuses it (1x1 conv -> 3x3 conv -> GroupNorm -> ReLU); the stride-8
result is projected to D channels: F_O.
Head (trainable): logit(x, y) = exp(s) * <F_O(x, y), t / |t|> + b, with t the frozen CLIP text
embedding of the prompt, learnable log-scale s and bias b (``normalize_pixels=True`` uses the
cosine, F_O / |F_O|, instead of the raw pixel embedding); logits at stride 8, upsampled bilinearly
to the input size. Never a sigmoid of a raw cosine: the scale and bias set the logit range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spatialforge._optional import require
from spatialforge.afford.config import ModelConfig
from spatialforge.errors import ConfigError

torch = require("torch", extra="afford", feature="AffordanceCLIP")
nn = torch.nn
F = torch.nn.functional

__all__ = ["AffordanceCLIP", "FrozenResNetCLIP", "LightFPN", "build_clip", "count_parameters"]


def build_clip(name: str, pretrained: str | None, device: str = "cpu") -> tuple[Any, Any]:
    """The open_clip model and its tokenizer: ``create_model(name, pretrained=...)``, as a user loads it.

    ``name`` is an open_clip model name (``RN101-quickgelu``), ``local-dir:/folder`` (with an
    ``open_clip_config.json`` and weights) or ``hf-hub:org/repo``.
    """
    open_clip = require("open_clip", extra="afford", feature="AffordanceCLIP")
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"cannot build the CLIP model {name!r} (pretrained={pretrained!r}): {exc}") from None
    visual = getattr(model, "visual", None)
    if type(visual).__name__ != "ModifiedResNet":
        raise ConfigError(f"{name!r} has a {type(visual).__name__} image tower; AffordanceCLIP needs an open_clip "
                          f"ResNet CLIP (ModifiedResNet: RN50, RN101, RN50x4, ... or a config with vision 'layers')")
    return model, tokenizer


class FrozenResNetCLIP(nn.Module):
    """The frozen CLIP: multi-scale image features and prompt embeddings. Never trains."""

    def __init__(self, clip_model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.clip = clip_model
        self.tokenizer = tokenizer
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()
        v = self.clip.visual
        self.channels = (v.layer2[-1].conv3.out_channels, v.layer3[-1].conv3.out_channels,
                         v.layer4[-1].conv3.out_channels)
        self.embed_dim = int(v.attnpool.c_proj.out_features)
        self.native_grid = int(round(math.sqrt(v.attnpool.positional_embedding.shape[0] - 1)))

    def train(self, mode: bool = True) -> FrozenResNetCLIP:
        return super().train(False)

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match: the feature sizes the trainable part was built for."""
        return {"channels": list(self.channels), "embed_dim": self.embed_dim}

    def weights_fingerprint(self) -> str:
        """A digest of a few frozen tensors: another CLIP (or a random one) with the same sizes differs."""
        import hashlib

        v = self.clip.visual
        h = hashlib.sha256()
        tensors = (v.conv1.weight, v.layer4[-1].conv3.weight, v.attnpool.c_proj.weight,
                   self.clip.token_embedding.weight)
        for t in tensors:
            h.update(t.detach().float().cpu().flatten()[:4096].numpy().round(5).tobytes())
        # QuickGELU vs GELU in the text tower: the same weights, another model (RN101 vs RN101-quickgelu)
        acts = sorted({type(m).__name__ for m in self.clip.modules() if "GELU" in type(m).__name__})
        h.update(",".join(acts).encode())
        return h.hexdigest()[:16]

    def _attnpool(self, x: Any) -> Any:
        pool = self.clip.visual.attnpool
        n, c, h, w = x.shape
        pos = pool.positional_embedding
        if (h, w) != (self.native_grid, self.native_grid):  # interpolate the grid part of the position embedding
            g = self.native_grid
            grid = pos[1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, c)], dim=0)
        tokens = x.reshape(n, c, h * w).permute(2, 0, 1)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0) + pos[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=c, num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
        return out[0]

    @torch.no_grad()
    def image_features(self, images: Any) -> tuple[Any, Any, Any, Any]:
        """(N, 3, S, S) normalised images -> (stride-8, stride-16, stride-32 maps, global embedding)."""
        v = self.clip.visual
        x = images.to(dtype=v.conv1.weight.dtype)
        x = v.stem(x)
        x = v.layer1(x)
        c8 = v.layer2(x)
        c16 = v.layer3(c8)
        c32 = v.layer4(c16)
        return c8, c16, c32, self._attnpool(c32)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> Any:
        """L2-normalised text embeddings (T, D) of the given texts."""
        device = next(self.clip.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def prompt_features(self, prompts: Sequence[Sequence[str]]) -> Any:
        """One embedding per prompt: the renormalised mean of its texts' embeddings (a template ensemble)."""
        flat = [t for group in prompts for t in group]
        emb = self.text_features(flat)
        out, i = [], 0
        for group in prompts:
            out.append(F.normalize(emb[i:i + len(group)].mean(dim=0), dim=-1))
            i += len(group)
        return torch.stack(out)


def _project(in_ch: int, out_ch: int) -> Any:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.GroupNorm(math.gcd(32, out_ch), out_ch))


def _fuse(in_ch: int, out_ch: int) -> Any:
    groups = math.gcd(32, out_ch)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
                         nn.GroupNorm(groups, out_ch), nn.ReLU(inplace=True))


class LightFPN(nn.Module):
    """Top-down fusion from the global CLIP feature through the stride-32, 16 and 8 maps."""

    def __init__(self, channels: Sequence[int], embed_dim: int, dim: int = 256) -> None:
        super().__init__()
        c8, c16, c32 = channels
        # every projection is normalised, so the FPN is indifferent to the backbone's activation scale
        self.proj_global = nn.Sequential(nn.Linear(embed_dim, dim), nn.LayerNorm(dim))
        self.proj32 = _project(c32, dim)
        self.proj16 = _project(c16, dim)
        self.proj8 = _project(c8, dim)
        self.fuse32 = _fuse(2 * dim, dim)
        self.fuse16 = _fuse(2 * dim, dim)
        self.fuse8 = _fuse(2 * dim, dim)
        self.out = nn.Conv2d(dim, embed_dim, 1)

    def forward(self, c8: Any, c16: Any, c32: Any, g: Any) -> Any:
        dtype = self.out.weight.dtype
        c8, c16, c32, g = c8.to(dtype), c16.to(dtype), c32.to(dtype), g.to(dtype)
        start = self.proj_global(g)[:, :, None, None].expand(-1, -1, *c32.shape[-2:])
        x = self.fuse32(torch.cat([start, self.proj32(c32)], dim=1))
        x = F.interpolate(x, size=c16.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse16(torch.cat([x, self.proj16(c16)], dim=1))
        x = F.interpolate(x, size=c8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse8(torch.cat([x, self.proj8(c8)], dim=1))
        return self.out(x)


class AffordanceCLIP(nn.Module):
    """Frozen CLIP + trainable FPN and head. ``forward(images, text_emb)`` -> logits (N, 1, S, S)."""

    def __init__(self, clip: FrozenResNetCLIP, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = clip
        self.fpn = LightFPN(clip.channels, clip.embed_dim, config.fpn_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias_init)))

    @classmethod
    def from_config(cls, config: ModelConfig, device: str = "cpu") -> AffordanceCLIP:
        clip_model, tokenizer = build_clip(config.clip_model, config.clip_pretrained, device=device)
        return cls(FrozenResNetCLIP(clip_model, tokenizer), config).to(device)

    def trainable_state_dict(self) -> dict[str, Any]:
        """Only the trainable weights (FPN and head): what a checkpoint holds."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def trainable_parameters(self) -> list[Any]:
        return [p for n, p in self.named_parameters() if not n.startswith("clip.")]

    def pixel_embeddings(self, images: Any) -> Any:
        """F_O: (N, D, S/8, S/8) pixel embeddings."""
        c8, c16, c32, g = self.clip.image_features(images)
        return self.fpn(c8, c16, c32, g)

    def logits_from_embeddings(self, pix: Any, text_emb: Any, size: tuple[int, int] | None = None) -> Any:
        """Per-pixel logits for every (image, prompt) pair.

        ``text_emb``: (N, D) (one prompt per image) -> (N, 1, H, W); or (N, P, D) -> (N, P, H, W).
        """
        with torch.autocast(device_type=pix.device.type, enabled=False):  # the head in float32, also under AMP
            pix = F.normalize(pix.float(), dim=1) if self.config.normalize_pixels else pix.float()
            t = text_emb.float()
            if t.dim() == 2:
                t = t[:, None, :]
            logits = torch.einsum("ndhw,npd->nphw", pix, t) * self.logit_scale.exp() + self.logit_bias
            if size is not None:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, images: Any, text_emb: Any) -> Any:
        return self.logits_from_embeddings(self.pixel_embeddings(images), text_emb, size=images.shape[-2:])


def count_parameters(model: AffordanceCLIP) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.trainable_parameters())
    frozen = sum(p.numel() for p in model.clip.parameters())
    return {"trainable": trainable, "frozen": frozen,
            "requires_grad": sum(p.numel() for p in model.parameters() if p.requires_grad)}
