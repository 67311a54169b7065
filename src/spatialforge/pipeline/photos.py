"""``spatialforge generate`` on plain photos: perception -> scene folders -> the shared RGB-D engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialforge.errors import ConfigError, RunFailedError
from spatialforge.io.dataset import atomic_write_json
from spatialforge.perception.checks import count
from spatialforge.pipeline.generate import GenerateConfig, run_generate
from spatialforge.pipeline.sources import PhotoSource, Source, SourceReader

__all__ = ["PhotoSource", "run_photos"]


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


def run_photos(source: PhotoSource | Source, out_dir: str | Path, pipeline: Any, generate: GenerateConfig | None = None,
               *, progress: bool = True, runner: Any = None) -> dict[str, Any]:
    """Run perception (resumable) then the shared engine; returns the manifest with a ``perception`` section.

    ``runner`` (a :class:`~spatialforge.pipeline.runners.RunnerConfig`) runs the engine's shards after
    perception (default: in this process).

    ``source``: a :class:`PhotoSource` (what the user names) or any
    :class:`~spatialforge.pipeline.sources.Source`. The source is checked first (a missing column
    or shard is one error before anything is written); its items are read lazily, shard by shard
    (:class:`~spatialforge.pipeline.sources.SourceReader`: complete input shards of an earlier run
    are skipped unopened), and its summary is the manifest's ``perception.source``.

    A folder whose perception records were made with another perception config is refused before
    any photo is read (:meth:`PerceptionPipeline.claim_output`); ``--overwrite`` (the CLI's
    ``prepare_output_dir``) clears it first. :class:`RunFailedError` (exit status 1) when no photo
    became a scene: the run itself worked, its records say why each photo was left out.
    """
    if generate is not None and getattr(generate, "afford", False):
        raise ConfigError("afford: photos have no part labels, so no affordance question can be asked of them; "
                          "affordance questions need synthetic scenes made with `spatialforge synth --parts`")
    out_dir = Path(out_dir)
    src = source.build() if isinstance(source, PhotoSource) else source
    src.open()
    pipeline.claim_output(out_dir)
    reader = SourceReader(src, out_dir, limit=source.limit if isinstance(source, PhotoSource) else None,
                          log=lambda msg: tqdm.write(msg, file=sys.stderr))
    executor = None
    if runner is not None and runner.name == "ray":  # the model stages on Ray Data; geometry + QA as Ray tasks below
        from spatialforge.pipeline.ray_photos import RayDataExecutor

        executor = RayDataExecutor(pipeline, resources=runner.photo_resources(),
                                   window_chunks=runner.window_chunks, max_retries=runner.max_retries,
                                   address=runner.address, num_cpus=runner.workers if runner.workers > 1 else None,
                                   setup=runner.setup, progress=progress,
                                   log=lambda msg: tqdm.write(msg, file=sys.stderr))
    report = pipeline.run(reader.items(), out_dir, progress=progress, total=reader.total, executor=executor)
    if executor is not None:
        report["runner"] = executor.describe()
    source_summary = reader.finish()
    if report["ok"] == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in report["failed_by_reason"].items())
        dups = f", {report['duplicates']} duplicates" if report.get("duplicates") else ""
        shards = (f"; {source_summary['shards_failed']} of {count(source_summary['shards'], 'input shard')} could "
                  f"not be read" if source_summary["shards_failed"] else "")
        raise RunFailedError(
            f"no image became a scene: {count(report['images'], 'image')}, {report['filtered']} filtered out, "
            f"{report['failed']} failed{f' ({reasons})' if reasons else ''}{dups}{shards} "
            f"(see {out_dir}/perception/report.json)")
    cfg = generate or GenerateConfig()
    _refresh_if_scenes_changed(out_dir, cfg)
    manifest = run_generate(out_dir / "scenes", out_dir, cfg, progress=progress, runner=runner)
    manifest["perception"] = {k: v for k, v in report.items() if k != "config"}
    manifest["perception"]["config"] = report["config"]
    manifest["perception"]["source"] = source_summary
    stages = report["stages"]
    manifest["gpu_seconds"] = {"total": round(sum(v["gpu_seconds"] for v in stages.values()), 4),
                               "by_stage": {k: v["gpu_seconds"] for k, v in stages.items()}}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest
