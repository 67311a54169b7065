"""Writing synthetic scenes as scene folders (the input format of spatialforge).

``OUT/<scene_id>/`` holds ``image.png``, ``depth.png`` (uint16 mm) or ``depth.npy`` (float32 m),
``instances.png`` (uint16), ``camera.json``, ``objects.json`` and ``ground_truth.json`` (and
``parts.png``, uint16 part ids, for scenes made with ``SynthConfig(parts=True)``). Each folder
is written into a hidden temporary folder next to it and then renamed into place, so a reader
never sees a half-written scene.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spatialforge.io.outdir import make_temp_dir
from spatialforge.synth.layout import SynthConfig
from spatialforge.synth.render import SyntheticScene, generate_scene, scene_folder_name

__all__ = ["synth_settings", "write_scene", "write_synthetic_dataset"]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _check_scene(scene: SyntheticScene) -> tuple[int, int]:
    if not isinstance(scene, SyntheticScene):
        raise ValueError(f"scene must be a SyntheticScene, got {type(scene).__name__}")
    if scene.image.ndim != 3 or scene.image.shape[2] != 3 or scene.image.dtype != np.uint8:
        raise ValueError(f"scene.image must be an (H, W, 3) uint8 array, got shape {scene.image.shape} "
                         f"dtype {scene.image.dtype}")
    h, w = scene.image.shape[:2]
    if scene.depth.shape != (h, w) or scene.instances.shape != (h, w):
        raise ValueError(f"scene.depth {scene.depth.shape} and scene.instances {scene.instances.shape} "
                         f"must match the image size {(h, w)}")
    if scene.instances.dtype != np.uint16:
        raise ValueError(f"scene.instances must be uint16, got {scene.instances.dtype}")
    if scene.parts is not None and (scene.parts.shape != (h, w) or scene.parts.dtype != np.uint16):
        raise ValueError(f"scene.parts must be a uint16 array of the image size {(h, w)}, got shape "
                         f"{scene.parts.shape} dtype {scene.parts.dtype}")
    if not scene.scene_id or "/" in scene.scene_id or scene.scene_id.startswith("."):
        raise ValueError(f"scene.scene_id must be a plain folder name, got {scene.scene_id!r}")
    return h, w


def write_scene(scene: SyntheticScene, out_dir: str | os.PathLike[str], depth_format: str = "png") -> Path:
    """Write ``scene`` to ``out_dir/<scene_id>/`` and return that folder.

    ``depth_format="png"``: ``depth.png`` with uint16 millimetres (rounded, 0 = invalid);
    ``"npy"``: ``depth.npy`` float32 metres (0 = invalid). An existing folder of the same name is
    replaced. The folder is assembled in a hidden temporary folder inside ``out_dir`` and renamed.
    """
    if depth_format not in ("png", "npy"):
        raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    _check_scene(scene)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / scene.scene_id
    tmp = make_temp_dir(out_dir, prefix=f".{scene.scene_id}.")
    try:
        Image.fromarray(np.ascontiguousarray(scene.image)).save(tmp / "image.png")
        depth = np.where(np.isfinite(scene.depth) & (scene.depth > 0), scene.depth, 0.0)
        if depth_format == "png":
            mm = np.clip(np.rint(depth.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(tmp / "depth.png")
        else:
            np.save(tmp / "depth.npy", depth.astype(np.float32))
        Image.fromarray(np.ascontiguousarray(scene.instances, dtype=np.uint16)).save(tmp / "instances.png")
        if scene.parts is not None:
            Image.fromarray(np.ascontiguousarray(scene.parts, dtype=np.uint16)).save(tmp / "parts.png")
        _write_json(tmp / "camera.json", scene.camera)
        _write_json(tmp / "objects.json", scene.objects)
        _write_json(tmp / "ground_truth.json", scene.ground_truth)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{scene.scene_id}.", suffix=".old", dir=out_dir))
            os.replace(final, trash / "scene")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_synthetic_dataset(out_dir: str | os.PathLike[str], n: int, seed: int = 0,
                            config: SynthConfig = SynthConfig(),  # noqa: B008
                            progress: bool = True, *, skip_existing: bool = False) -> list[Path]:
    """Generate scenes ``0 .. n-1`` with ``seed`` and write them under ``out_dir``.

    Uses ``config.depth_format``. Returns the scene folders in index order. Any failure raises
    (nothing is skipped silently); scenes written before the failure stay on disk. With
    ``skip_existing``, a scene folder already present (scenes are renamed into place only when
    complete) is kept: resuming an interrupted run of the same settings; the caller checks that
    the settings are the same (:func:`synth_settings`).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(config, SynthConfig):
        raise ValueError(f"config must be a SynthConfig, got {type(config).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices: Any = range(int(n))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="scene")
    paths = []
    for i in indices:
        existing = out / scene_folder_name(i)
        if skip_existing and (existing / "ground_truth.json").is_file():
            paths.append(existing)
            continue
        scene = generate_scene(i, int(seed), config)
        paths.append(write_scene(scene, out, depth_format=config.depth_format))
    return paths


def synth_settings(seed: int, config: SynthConfig) -> dict[str, Any]:
    """Everything that decides the content of scene ``i``: two runs with equal settings write equal scenes."""
    from dataclasses import asdict

    from spatialforge import __version__

    settings = json.loads(json.dumps(asdict(config)))
    if not config.parts:  # the settings of datasets made before parts existed stay the same
        settings.pop("parts")
    return {"seed": int(seed), "config": settings, "spatialforge": __version__}
