"""``spatialforge generate`` on plain photos: perception -> scene folders -> the shared RGB-D engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialforge.errors import RunFailedError, SpatialForgeError
from spatialforge.io.dataset import atomic_write_json
from spatialforge.perception.checks import count
from spatialforge.pipeline.generate import GenerateConfig, run_generate

__all__ = ["PhotoSource", "run_photos"]


@dataclass(frozen=True)
class PhotoSource:
    """Where photos come from: a folder of image files, or a Hugging Face dataset (name or local path)."""

    folder: Path | None = None
    hf_dataset: str | None = None
    split: str = "train"
    image_column: str = "image"
    limit: int | None = None

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.hf_dataset is None):
            raise SpatialForgeError("give either a folder of images or a Hugging Face dataset")


def _items(source: PhotoSource, limits, focal: float | None) -> tuple[Iterator[Any], int | None]:
    from spatialforge.perception.image_io import iter_hf_images, list_image_files, load_image_file

    if source.folder is not None:
        files = list_image_files(source.folder)
        if source.limit is not None:
            files = files[:source.limit]
        if not files:
            raise SpatialForgeError(f"{source.folder}: no image files (jpg, png, webp, ...)")
        return (load_image_file(p, image_id, limits, focal) for image_id, p in files), len(files)
    return iter_hf_images(source.hf_dataset, split=source.split, image_column=source.image_column,
                          limit=source.limit, limits=limits, focal_length_px=focal), source.limit


def _refresh_if_scenes_changed(out_dir: Path, cfg: GenerateConfig) -> None:
    """A resumed photo run that added scenes (e.g. photos a model failed on before) rebuilds the
    dataset part of OUT, which is derived from the scene folders; a changed QA config still refuses."""
    import json
    import shutil

    from spatialforge.io.scene_folder import find_scene_dirs

    run_path = out_dir / "_state" / "run.json"
    if not run_path.is_file():
        return
    try:
        previous = json.loads(run_path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    scene_ids = [f.name for f in find_scene_dirs(out_dir / "scenes")]
    if previous.get("fingerprint") == cfg.fingerprint() and previous.get("scene_ids") != scene_ids:
        for derived in ("_state", "data", "scene_graphs"):
            shutil.rmtree(out_dir / derived, ignore_errors=True)


def run_photos(source: PhotoSource, out_dir: str | Path, pipeline: Any, generate: GenerateConfig | None = None,
               *, progress: bool = True) -> dict[str, Any]:
    """Run perception (resumable) then the shared engine; returns the manifest with a ``perception`` section.

    A folder whose perception records were made with another perception config is refused before
    any photo is read (:meth:`PerceptionPipeline.claim_output`); ``--overwrite`` (the CLI's
    ``prepare_output_dir``) clears it first. :class:`RunFailedError` (exit status 1) when no photo
    became a scene: the run itself worked, its records say why each photo was left out.
    """
    out_dir = Path(out_dir)
    pipeline.claim_output(out_dir)
    items, total = _items(source, pipeline.config.limits, pipeline.config.focal_length_px)
    report = pipeline.run(items, out_dir, progress=progress, total=total)
    if report["ok"] == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in report["failed_by_reason"].items())
        raise RunFailedError(
            f"no image became a scene: {count(report['images'], 'image')}, {report['filtered']} filtered out, "
            f"{report['failed']} failed{f' ({reasons})' if reasons else ''} (see {out_dir}/perception/report.json)")
    cfg = generate or GenerateConfig()
    _refresh_if_scenes_changed(out_dir, cfg)
    manifest = run_generate(out_dir / "scenes", out_dir, cfg, progress=progress)
    manifest["perception"] = {k: v for k, v in report.items() if k != "config"}
    manifest["perception"]["config"] = report["config"]
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest
