"""The photo pipeline through Ray Data on CPU with tiny models: where the time goes, per stage.

Run: ``python benchmarks/bench_ray_photos.py [--n 48] [--size 320x240] [--batch 8] [--ray-cpus 2]
[--window-chunks 256] [--json out.json]``.

The default photo path (CLIP filter, Florence-2 regions + captions, SAM 2 boxes, Depth Anything V2,
Depth Pro FOV, CLIP caption embeddings) on tiny random models built from configs (the test builders),
run twice on the same photos: in this process (``--runner local``) and on a local Ray cluster of
``--ray-cpus`` CPUs (``--runner ray``: each model stage an actor pool, decoding and assembly as tasks).
Per stage: images, seconds of its own calls (summed over actors) and images/s; end to end: wall time
and photos/s. Tiny models make the model time small, so the Ray figures show the plumbing's cost
(actor start-up per window, serialising chunks between stages), which real models on GPUs amortise.
Ray start-up is reported apart and not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny-model builders live with the tests
sys.path.insert(0, str(ROOT / "benchmarks"))

from PIL import Image  # noqa: E402

from spatialforge import __version__  # noqa: E402
from spatialforge.synth import SynthConfig, generate_scene  # noqa: E402


def _run(models: dict[str, str], photos: Path, out: Path, batch: int, runner) -> dict:
    from bench_perception import default_config

    from spatialforge.perception.pipeline import PerceptionPipeline
    from spatialforge.pipeline.photos import PhotoSource, run_photos

    pipe = PerceptionPipeline.from_config(default_config(models, device="cpu", batch=batch))
    t0 = time.perf_counter()
    manifest = run_photos(PhotoSource(folder=photos), out, pipe, progress=False, runner=runner)
    wall = time.perf_counter() - t0
    p = manifest["perception"]
    stages = {k: {"images": v["images"], "seconds": v["seconds"], "images_per_s": v["images_per_s"],
                  "gpu_seconds": v["gpu_seconds"]} for k, v in p["stages"].items()}
    stage_total = sum(v["seconds"] for v in p["stages"].values())
    return {"wall_s": round(wall, 2), "photos_per_s": round(p["images"] / wall, 2), "scenes": p["ok"],
            "perception_wall_s": p["wall_s"], "stage_seconds_total": round(stage_total, 2),
            "engine_wall_s": manifest["timings_s"]["wall"], "stages": stages,
            "runner": p.get("runner", {"name": "local"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="photos")
    ap.add_argument("--size", default="320x240", help="photo size WxH")
    ap.add_argument("--batch", type=int, default=8, help="the perception batch size (photos per chunk)")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--window-chunks", type=int, default=256, help="chunks per Ray Data run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    import ray
    from bench_perception import build_tiny_models

    from spatialforge.pipeline.runners import RunnerConfig

    result: dict = {"spatialforge": __version__, "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(), "photos": args.n, "size": args.size,
                    "batch": args.batch, "models": "tiny random (test builders)", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = build_tiny_models(tmp / "models")
        photos = tmp / "photos"
        photos.mkdir()
        for k in range(args.n):
            Image.fromarray(generate_scene(k, seed=5, config=SynthConfig(width=w, height=h)).image).save(
                photos / f"p{k:04d}.jpg", quality=92)
        _run(models, photos, tmp / "warm", args.batch, None)  # imports and first loads, not counted
        result["runs"]["local"] = _run(models, photos, tmp / "local", args.batch, None)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        result["ray_start_s"] = round(time.perf_counter() - t0, 2)
        try:
            runner = RunnerConfig(name="ray", window_chunks=args.window_chunks)
            result["runs"][f"ray_{args.ray_cpus}cpu"] = _run(models, photos, tmp / "ray", args.batch, runner)
        finally:
            ray.shutdown()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
