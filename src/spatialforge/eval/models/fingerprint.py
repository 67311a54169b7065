"""Fingerprints of what decides a model's answers, and a one-line account of how two fingerprints differ.

An evaluation run folder keeps its model's fingerprint (``fingerprint.json``, see
:mod:`spatialforge.eval.runner`) and refuses to resume with another one, so answers of an earlier
model are never republished as this model's. The building blocks here are cheap enough to run at
every ``eval run``:

* :func:`file_signature`: a file up to :data:`HASH_LIMIT` bytes (configs, tokenizers, chat templates,
  the adapters of small models) is hashed whole (SHA-256). A larger file (weights) is identified by
  its size, its modification time (nanoseconds) and a SHA-256 of its first and last
  :data:`SAMPLE_BYTES` bytes: rewriting it (retraining in place, a new download) changes the
  modification time, and reading 2 MiB costs milliseconds where hashing a multi-GB file would cost
  minutes. Touching a large file without changing it counts as a change; an edit that keeps the
  size and the modification time and only touches the middle of the file goes unnoticed.
* :func:`folder_source`: the signatures of a model folder's files (top level; left out, as they do
  not change the answers: hidden files, ``*.md`` model cards and the trainer's state in a
  checkpoint folder: ``training_args.bin``, ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``,
  ``rng_state*.pth``, ``trainer_state.json``).
* :func:`hub_source`: a hub model by its id and the commit its revision resolves to (through the
  local Hugging Face cache when offline).
* :func:`fingerprint_changes`: what differs between two fingerprints, in short phrases
  ("adapter weights modified (adapter_model.safetensors)", "max_new_tokens 32 -> 64").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spatialforge._optional import require

__all__ = [
    "HASH_LIMIT",
    "SAMPLE_BYTES",
    "TRAINER_FILES",
    "WEIGHT_SUFFIXES",
    "file_signature",
    "fingerprint_changes",
    "folder_source",
    "hub_commit",
    "hub_source",
]

#: files up to this size are hashed whole
HASH_LIMIT = 4 * 2**20
#: larger files: size, modification time and a hash of this many bytes at the start and at the end
SAMPLE_BYTES = 2**20
#: file suffixes that hold weights (a change there is reported as "weights modified")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".npz", ".onnx")
#: files of a training checkpoint that do not decide a model's answers
TRAINER_FILES = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json"})
_MAX_SHOWN = 6  # changes listed in one message
_SHORT = 48  # longer strings are reported as "changed"


def file_signature(path: str | Path) -> str:
    """A short identity of a file's content (see the module doc for the cost rule)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        if st.st_size <= HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return f"sha256:{h.hexdigest()[:16]}"
        h.update(f.read(SAMPLE_BYTES))
        f.seek(max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES))
        h.update(f.read(SAMPLE_BYTES))
    return f"size:{st.st_size} mtime_ns:{st.st_mtime_ns} ends_sha256:{h.hexdigest()[:16]}"


def folder_source(folder: str | Path) -> dict[str, Any]:
    """A local model folder: its absolute path and the signature of each file at its top level."""
    folder = Path(folder).expanduser().resolve()
    files = {p.name: file_signature(p) for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".md"
             and p.name not in TRAINER_FILES and not p.name.startswith("rng_state")}
    return {"path": str(folder), "files": files}


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit ``revision`` (default: the main branch) of hub model ``repo_id`` resolves to, or ``None``.

    Found by fetching the repository's small ``config.json`` (or ``adapter_config.json``) the way
    ``from_pretrained`` does: from the local cache when offline, whose snapshot folder is named
    by the commit. ``None`` when neither file can be found (not cached offline, no such repository):
    loading the model then fails with its own message.
    """
    hub = require("huggingface_hub", extra="models", feature="hub model fingerprints")
    errors = require("huggingface_hub.errors", extra="models", feature="hub model fingerprints")
    for name in ("config.json", "adapter_config.json"):
        try:
            path = hub.hf_hub_download(repo_id, name, revision=revision)
        except (errors.EntryNotFoundError, OSError, ValueError):
            continue
        return Path(path).parent.name
    return None


def hub_source(repo_id: str, revision: str | None = None) -> dict[str, Any]:
    """A hub model: its id, the revision asked for and the commit it resolves to."""
    return {"hub_id": repo_id, "revision": revision, "commit": hub_commit(repo_id, revision)}


# ----------------------------------------------------------------------------- describing differences
def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested mappings flattened to ``{key path: value}``; a ``files`` mapping stays one leaf."""
    if isinstance(value, Mapping) and value and (not path or path[-1] != "files"):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, (*path, str(k))))
        return out
    return {path: value}


def _files_change(part: str, old: Any, new: Any) -> str:
    old = old if isinstance(old, Mapping) else {}
    new = new if isinstance(new, Mapping) else {}
    modified = sorted(n for n in set(old) & set(new) if old[n] != new[n])
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    if modified and not added and not removed:
        noun = "weights" if all(n.lower().endswith(WEIGHT_SUFFIXES) for n in modified) else "files"
        return f"{part} {noun} modified ({', '.join(modified)})"
    parts = [f"{', '.join(names)} {verb}" for names, verb in ((modified, "modified"), (added, "added"),
                                                              (removed, "removed")) if names]
    return f"{part} files changed ({'; '.join(parts)})"


def fingerprint_changes(old: Any, new: Any) -> list[str]:
    """Short phrases for what differs between two fingerprints (``[]`` when they are equal).

    Values are named by their last key (``max_new_tokens 32 -> 64``, ``base_url A -> B``); under
    ``weights`` by the part too (``adapter weights modified (adapter_model.safetensors)``,
    ``base model commit a1b2 -> c3d4``); long texts such as a system prompt are reported as changed.
    """
    if old == new:
        return []
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return [f"{_text(old)} -> {_text(new)}" if len(_text(old)) + len(_text(new)) <= 2 * _SHORT
                else "its settings changed"]
    a, b = _leaves(old), _leaves(new)
    out = []
    for key in [*a, *(k for k in b if k not in a)]:  # in the order of the fingerprint
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        part = key[1] if len(key) > 2 and key[0] == "weights" else None
        if key[-1] == "files" and part is not None:
            out.append(_files_change(part, x, y))
            continue
        label = f"{part} {key[-1]}" if part is not None else key[-1]
        tx, ty = _text(x), _text(y)
        out.append(f"{label} changed" if max(len(tx), len(ty)) > _SHORT else f"{label} {tx} -> {ty}")
    if len(out) > _MAX_SHOWN:
        out = [*out[:_MAX_SHOWN], f"{len(out) - _MAX_SHOWN} more"]
    return out
