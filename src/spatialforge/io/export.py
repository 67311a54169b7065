"""Export a generated dataset to other training formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spatialforge.io.dataset import atomic_write_bytes, atomic_write_json, iter_rows

__all__ = ["EXPORT_FORMATS", "export_llava"]

EXPORT_FORMATS = ("llava",)


def export_llava(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict[str, Any]:
    """LLaVA-style JSON: ``dest/llava.json`` plus ``dest/images/<scene_id>.<ext>``.

    Each record: ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
    {"from": "gpt", "value": ...}, ...]}``; the image token is in the first human turn only.
    """
    dest = Path(dest)
    records = []
    n_turns = skipped = 0
    for row in iter_rows(out_dir):
        if not row["qa"]:
            skipped += 1  # an image without questions has no conversation: counted, not exported
            continue
        ext = Path(row["image"]["path"] or "image.png").suffix or ".png"
        rel = f"images/{row['scene_id']}{ext}"
        atomic_write_bytes(dest / rel, row["image"]["bytes"])
        conv = []
        for i, qa in enumerate(row["qa"]):
            conv.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + qa["question"]})
            conv.append({"from": "gpt", "value": qa["answer"]})
        n_turns += len(row["qa"])
        records.append({"id": row["scene_id"], "image": rel, "conversations": conv})
    atomic_write_json(dest / "llava.json", records)
    return {"records": len(records), "qa_pairs": n_turns, "skipped": skipped, "path": str(dest / "llava.json")}
