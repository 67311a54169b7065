"""Speed of the perception stages: images per second per stage and end to end, with batching.

Run: ``python benchmarks/bench_perception.py [--n 24] [--size 320x240] [--batch-sizes 1,8]
[--device auto] [--models tiny|DIR] [--e2e default|tag-detect|sam3|all] [--json out.json]``.

``--models tiny`` (default) builds tiny random models from configs (the test builders) in a temp
folder: the figures then measure our plumbing (pre/post-processing, batching, mask and box work,
the scene writing and the engine), not the networks. ``--models DIR`` uses real checkpoints in
``DIR/{clip,gd,owl,florence,sam,sam2,da,dp,sam3,zoe}`` (or hub ids cached locally via ``--models hub``),
which is what gives the figures a user will see on a GPU.

Each stage is timed alone on the same synthetic photos after one warm-up batch (model loading is
not timed), for every batch size; then the whole photo -> dataset path (default backends, the
largest batch size) is timed end to end, including writing scenes and the geometry + QA engine;
``--e2e tag-detect`` times CLIP tags -> Grounding DINO, ``--e2e sam3`` SAM 3 as the detector and the
segmenter (``all``, the default: the three runs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny-model builders live with the tests

from spatialforge import __version__  # noqa: E402
from spatialforge.perception.backends import DEFAULT_MODELS, build_stage  # noqa: E402
from spatialforge.perception.types import Detections  # noqa: E402
from spatialforge.synth import SynthConfig, generate_scene  # noqa: E402

TAGS = ["chair", "table", "mug", "lamp", "sofa", "box", "bottle", "book", "plant", "bowl", "laptop", "shelf"]
BOXES_PER_IMAGE = 5

# stage name -> (registry kind, backend, model key)
STAGES = {
    "clip filter": ("filter", "clip", "clip"),
    "clip tags": ("filter", "clip", "clip"),
    "grounding-dino": ("detector", "grounding-dino", "gd"),
    "owlv2": ("detector", "owlv2", "owl"),
    "florence2 (5 regions)": ("captioner", "florence2", "florence"),
    "florence2-regions (detector)": ("detector", "florence2-regions", "florence_regions"),
    "sam (5 boxes)": ("segmenter", "sam", "sam"),
    "sam2 (5 boxes)": ("segmenter", "sam2", "sam2"),
    "sam3 (12 phrases + 5 masks)": ("detector", "sam3", "sam3"),
    "depth-anything-v2": ("depth", "depth-anything-v2", "da"),
    "depth-pro": ("depth", "depth-pro", "dp"),
    "zoedepth": ("depth", "zoedepth", "zoe"),
    "depth-pro fov head (focal estimator)": ("focal_estimator", "depth-pro", "dp"),
    "clip text (5 captions)": ("embedder", "clip", "clip"),
}
HUB = {"clip": DEFAULT_MODELS["clip"], "gd": DEFAULT_MODELS["grounding-dino"], "owl": DEFAULT_MODELS["owlv2"],
       "florence": DEFAULT_MODELS["florence2"], "sam": DEFAULT_MODELS["sam"], "sam2": DEFAULT_MODELS["sam2"],
       "da": DEFAULT_MODELS["depth-anything-v2"], "dp": DEFAULT_MODELS["depth-pro"], "sam3": DEFAULT_MODELS["sam3"],
       "zoe": DEFAULT_MODELS["zoedepth"], "florence_regions": DEFAULT_MODELS["florence2"]}
# options a stage is timed with: SAM 3 keeps every query (up to max_instances), the worst case of its post-processing
STAGE_OPTIONS = {"sam3 (12 phrases + 5 masks)": {"score_threshold": 0.0}}


def build_tiny_models(root: Path) -> dict[str, str]:
    from tests.perception.tiny_clip import build_tiny_clip
    from tests.perception.tiny_depth import build_tiny_depth_anything, build_tiny_depth_pro
    from tests.perception.tiny_detectors import build_tiny_grounding_dino, build_tiny_owlv2
    from tests.perception.tiny_florence2 import build_tiny_florence2
    from tests.perception.tiny_florence2_regions import build_tiny_florence2_regions
    from tests.perception.tiny_sam import build_tiny_sam, build_tiny_sam2
    from tests.perception.tiny_sam3 import build_tiny_sam3
    from tests.perception.tiny_zoedepth import build_tiny_zoedepth

    builders = {"clip": build_tiny_clip, "gd": build_tiny_grounding_dino, "owl": build_tiny_owlv2,
                "florence": build_tiny_florence2, "sam": build_tiny_sam, "sam2": build_tiny_sam2,
                "da": build_tiny_depth_anything, "dp": build_tiny_depth_pro, "sam3": build_tiny_sam3,
                "zoe": build_tiny_zoedepth, "florence_regions": build_tiny_florence2_regions}
    return {k: str(b(root / k)) for k, b in builders.items()}


def _boxes(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    x0 = rng.uniform(0, w * 0.7, BOXES_PER_IMAGE)
    y0 = rng.uniform(0, h * 0.7, BOXES_PER_IMAGE)
    bw = rng.uniform(0.1, 0.3, BOXES_PER_IMAGE) * w
    bh = rng.uniform(0.1, 0.3, BOXES_PER_IMAGE) * h
    return np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1).astype(np.float32)


def _call(name: str, stage: Any, images: list[np.ndarray], boxes: list[np.ndarray]) -> Any:
    if name == "clip filter":
        return stage(images)
    if name == "clip tags":
        return stage.tags(images, TAGS, 8)
    if name in ("grounding-dino", "owlv2"):
        return stage(images, [TAGS] * len(images))
    if name.startswith("florence2-regions"):  # class-agnostic: no prompts
        return stage(images, [()] * len(images))
    if name.startswith("florence2"):
        dets = [Detections(b, np.ones(len(b), np.float32), tuple(TAGS[:len(b)])) for b in boxes]
        return stage(images, dets)
    if name.startswith("sam3"):  # boxes and masks of every instance of every phrase; the 5 best masks at full size
        found = stage.detect_and_segment(images, [TAGS] * len(images))
        return [f.select(np.arange(min(len(f), BOXES_PER_IMAGE))).masks() for f in found]
    if name.startswith("sam"):
        return stage(images, boxes)
    if name.startswith("depth") or name == "zoedepth":  # depth maps, or the FOV head's focal estimates
        return stage(images)
    if name.startswith("clip text"):
        # a different caption set per image, as in a run (the text cache would hide repeated sets)
        return [stage.embed_text([f"{t} {i}" for t in TAGS[:BOXES_PER_IMAGE]]) for i in range(len(images))]
    raise KeyError(name)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_stage(name: str, models: dict[str, str], images: list[np.ndarray], boxes: list[np.ndarray],
               batch: int, device: str, dtype: str) -> dict[str, Any]:
    import torch

    kind, backend, key = STAGES[name]
    stage = build_stage(kind, backend, model_id=models[key], device=device, dtype=dtype, **STAGE_OPTIONS.get(name, {}))
    stage.load()
    _call(name, stage, images[:batch], boxes[:batch])  # warm-up (kernels)
    if hasattr(stage, "_image_cache"):
        stage._image_cache.clear()  # time the image tower on every photo, not the warm-up's cached embeddings
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        _call(name, stage, images[s:s + batch], boxes[s:s + batch])
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    stage.unload()
    return {"stage": name, "batch": batch, "images": len(images), "seconds": round(dt, 3),
            "images_per_s": round(len(images) / dt, 2), "peak_gpu_mb": None if peak is None else round(peak)}


def default_config(models: dict[str, str], *, device: str, dtype: str = "float32", batch: int = 8):
    """The default photo path's stages on the checkpoints of ``models`` (the CLIP filter keeps every photo)."""
    from spatialforge.perception.config import PerceptionConfig, StageSpec

    return PerceptionConfig(filter=StageSpec("clip", models["clip"], {"threshold": 0.0}),
                            embedder=StageSpec("clip", models["clip"]),
                            detector=StageSpec("florence2-regions", models["florence_regions"]),
                            captioner=StageSpec("florence2", models["florence"]),
                            segmenter=StageSpec("sam2", models["sam2"]),
                            depth=StageSpec("depth-anything-v2", models["da"]),
                            focal_estimator=StageSpec("depth-pro", models["dp"]),
                            device=device, dtype=dtype, batch_size=batch)


def end_to_end(models: dict[str, str], photos: Path, out: Path, batch: int, device: str, dtype: str,
               run: str = "default") -> dict:
    """The photo -> dataset path: ``default`` (Florence-2 regions, the default detector), ``tag-detect``
    (CLIP tags -> Grounding DINO, on the benchmark's 12 tags: the tiny Grounding DINO holds 16 tokens) or
    ``sam3`` (SAM 3 as detector and segmenter, on the same tags)."""
    from spatialforge.perception.config import StageSpec
    from spatialforge.perception.pipeline import PerceptionPipeline
    from spatialforge.pipeline.photos import PhotoSource, run_photos

    cfg = default_config(models, device=device, dtype=dtype, batch=batch)
    if run == "tag-detect":
        cfg = cfg.with_overrides(detector=StageSpec("grounding-dino", models["gd"]), vocabulary=tuple(TAGS),
                                 score_threshold=0.0)
    elif run == "sam3":  # SAM 3 finds the boxes and masks in one model: it replaces the detector and the segmenter
        cfg = cfg.with_overrides(detector=StageSpec("sam3", models["sam3"]), segmenter=StageSpec("sam3"),
                                 vocabulary=tuple(TAGS), score_threshold=0.0)
    pipe = PerceptionPipeline.from_config(cfg)
    for stage in pipe.stages.values():  # loading is not timed
        stage.load()
    t0 = time.perf_counter()
    manifest = run_photos(PhotoSource(folder=photos), out, pipe, progress=False)
    dt = time.perf_counter() - t0
    p = manifest["perception"]
    return {"batch": batch, "images": p["images"], "scenes": p["ok"], "failed_by_reason": p["failed_by_reason"],
            "qa_pairs": manifest["counts"]["qa_pairs"], "seconds": round(dt, 3),
            "images_per_s": round(p["images"] / dt, 2),
            "per_stage": {k: {"images_per_s": v["images_per_s"], "seconds": v["seconds"],
                              "peak_gpu_memory_mb": v["peak_gpu_memory_mb"]} for k, v in p["stages"].items()},
            "engine_s": manifest["timings_s"]["wall"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="photos (default 24)")
    ap.add_argument("--size", default="320x240", help="photo size WxH (default 320x240)")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--models", default="tiny", help="tiny | hub | a folder of checkpoints")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of the stages")
    ap.add_argument("--e2e", default="all", choices=("default", "tag-detect", "sam3", "all"),
                    help="end to end with the default (Florence-2 regions), with CLIP tags + Grounding DINO, with "
                         "SAM 3 as detector and segmenter, or all three")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from spatialforge.perception.backends.base import resolve_device

    device = resolve_device(args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    images = [generate_scene(i, seed=99, config=SynthConfig(width=w, height=h)).image for i in range(args.n)]
    boxes = [_boxes(rng, w, h) for _ in images]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.models == "tiny":
            models = build_tiny_models(tmp / "models")
        elif args.models == "hub":
            models = dict(HUB)
        else:
            models = {k: str(Path(args.models) / k) for k in HUB}
        rows = []
        for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
            for b in batches:
                row = time_stage(name, models, images, boxes, b, device, args.dtype)
                rows.append(row)
                print(f"{name:<24} batch {b:>2}: {row['images_per_s']:>8.2f} img/s", flush=True)
        photos = tmp / "photos"
        photos.mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(photos / f"p{i:03d}.png")
        e2e = {}
        for run in (("default", "tag-detect", "sam3") if args.e2e == "all" else (args.e2e,)):
            e2e[run] = end_to_end(models, photos, tmp / f"out-{run}", max(batches), device, args.dtype, run=run)
            print(f"end to end, {run} (batch {e2e[run]['batch']}): {e2e[run]['images_per_s']:.2f} img/s, "
                  f"{e2e[run]['scenes']} scenes, {e2e[run]['qa_pairs']} QA pairs")
    result = {
        "spatialforge": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": device if device == "cpu" else torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "cpu_threads": torch.get_num_threads(), "models": args.models, "dtype": args.dtype,
        "photos": args.n, "size": [w, h], "stages": rows, "end_to_end": e2e.get("default"),
        "end_to_end_tag_detect": e2e.get("tag-detect"), "end_to_end_sam3": e2e.get("sam3"),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
