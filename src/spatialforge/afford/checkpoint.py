"""AffordanceCLIP checkpoints: only the trainable weights (safetensors) plus the config.

A checkpoint is a folder: ``model.safetensors`` (FPN and head), ``config.json`` (format, the model
config, the frozen CLIP's feature signature, step and metrics) and, for resuming training,
``trainer_state.pt`` (optimizer, schedule, scaler, data position). Loading checks that the CLIP
the model is built on gives the same feature sizes the checkpoint was trained with.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from spatialforge._optional import require
from spatialforge.afford.config import ModelConfig
from spatialforge.errors import ConfigError
from spatialforge.io.outdir import apply_umask, make_temp_dir

__all__ = ["FORMAT", "load_checkpoint", "read_checkpoint_config", "save_checkpoint"]

FORMAT = "spatialforge-affordanceclip"
VERSION = 1


def save_checkpoint(folder: str | Path, model: Any, *, step: int = 0, metrics: dict | None = None,
                    trainer_state: dict | None = None, train_config: dict | None = None) -> Path:
    """Write a checkpoint folder atomically: a hidden temporary folder (``.<name>.XXXX.tmp``; folder and
    files get the umask's permissions) renamed into place; an existing checkpoint is replaced only once the new one
    is complete. ``trainer_state`` must hold only what ``torch.load(..., weights_only=True)`` reads back
    (tensors, numbers, strings, lists, tuples, dicts)."""
    torch = require("torch", extra="afford")
    save_file = require("safetensors.torch", extra="afford").save_file
    folder = Path(folder)
    tmp = make_temp_dir(folder.parent, prefix=f".{folder.name}.")
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        backbone = dict(model.clip.signature(), weights=model.clip.weights_fingerprint())
        meta = {"format": FORMAT, "version": VERSION, "model": asdict(model.config), "backbone": backbone,
                "step": step, "metrics": metrics or {}, "train": train_config}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        for f in tmp.iterdir():  # safetensors writes 0600 whatever the umask
            apply_umask(f, directory=False)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")  # our own leftover of an interrupted replacement
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)
        raise
    return folder


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, validated (one clear error naming the file otherwise)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a checkpoint folder (expected model.safetensors and config.json)")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (not an AffordanceCLIP checkpoint folder)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable checkpoint config ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an AffordanceCLIP checkpoint (format {meta.get('format')!r})"
                          if isinstance(meta, dict) else f"{path}: not an AffordanceCLIP checkpoint")
    for key in ("model", "backbone"):
        if not isinstance(meta.get(key), dict):
            raise ConfigError(f"{path}: field {key!r} missing or not an object")
    known = {f.name for f in fields(ModelConfig)}
    bad = sorted(set(meta["model"]) - known)
    if bad:
        raise ConfigError(f"{path}: unknown model field(s) {', '.join(bad)}")
    return meta


def load_checkpoint(folder: str | Path, device: str = "cpu", *, clip_model: str | None = None,
                    clip_pretrained: str | None = "keep") -> Any:
    """Build the model a checkpoint was trained with and load its trainable weights.

    ``clip_model`` / ``clip_pretrained`` replace the CLIP named in the checkpoint (e.g. a local
    copy of the same weights); the CLIP must give the same feature sizes, else a ``ConfigError``
    names the checkpoint and both signatures.
    """
    from dataclasses import replace

    from spatialforge.afford.model import AffordanceCLIP

    safetensors = require("safetensors", extra="afford")
    load_file = require("safetensors.torch", extra="afford").load_file
    folder = Path(folder)
    meta = read_checkpoint_config(folder)
    model_cfg = ModelConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["model"].items()})
    if clip_model is not None:
        model_cfg = replace(model_cfg, clip_model=clip_model)
    if clip_pretrained != "keep":
        model_cfg = replace(model_cfg, clip_pretrained=clip_pretrained)
    model = AffordanceCLIP.from_config(model_cfg, device=device)
    want = dict(meta["backbone"])
    want_weights = want.pop("weights", None)
    have = model.clip.signature()
    if have != want:
        raise ConfigError(f"{folder}: checkpoint trained on a CLIP with features {want}, but {model_cfg.clip_model!r} "
                          f"gives {have} (a different backbone)")
    if want_weights is not None and model.clip.weights_fingerprint() != want_weights:
        hint = (" (the checkpoint was trained on a randomly initialised CLIP, which cannot be rebuilt)"
                if model_cfg.clip_pretrained is None and not model_cfg.clip_model.startswith(("local-dir:", "hf-hub:"))
                else "")
        raise ConfigError(f"{folder}: the CLIP {model_cfg.clip_model!r} (pretrained={model_cfg.clip_pretrained!r}) "
                          f"has other weights than the one the checkpoint was trained with{hint}")
    weights = folder / "model.safetensors"
    try:
        state = load_file(str(weights), device="cpu")
    except FileNotFoundError:
        raise ConfigError(f"{weights}: missing") from None
    except (OSError, ValueError, safetensors.SafetensorError) as exc:
        raise ConfigError(f"{weights}: unreadable weights ({exc})") from None
    expected = model.trainable_state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"{weights}: weights do not match the model (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    shapes = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise ConfigError(f"{weights}: {k} has shape {tuple(state[k].shape)}, the model expects "
                          f"{tuple(expected[k].shape)} (different fpn_dim or backbone)")
    model.load_state_dict(state, strict=False)
    model.eval()
    return model
