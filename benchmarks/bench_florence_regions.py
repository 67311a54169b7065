"""Speed of the open-vocabulary stages: Florence-2 region captions (one vision pass per photo vs one per
region), the florence2-regions detector, and CLIP tags on the whole photo.

Run: ``python benchmarks/bench_florence_regions.py [--models tiny,base] [--photos 4] [--regions 5]
[--size 640x480] [--device auto] [--json out.json]``.

``tiny`` uses the test builders' tiny random Florence-2 (8 px images, 5 image tokens) and CLIP: it
measures our plumbing. ``base`` builds a random Florence-2 with the architecture of
``Florence-2-base`` (DaViT 128-256-512-1024 with depths 1-1-9-1 at 768 px, 577 image tokens, a
6 + 6 layer BART of width 768 with its 51,289-token output layer) but the tiny byte-level tokenizer:
the networks cost what the real base model costs, the outputs are noise (random captions run to
``max_new_tokens``, so every region generates the same number of tokens in both paths).

Captions, same photos, same boxes, same run:

* ``per region`` - what the captioner did before: each region's row carries its photo's pixels and
  ``generate(pixel_values=...)`` runs the vision tower once per region;
* ``per photo`` - the captioner now: the vision tower runs once per photo and the regions share its
  features (``mm_encoder_outputs``); the decoded texts are checked equal to the per-region ones.

The detector is timed per photo (its output length is the model's: tiny writes 3 regions; the
random base model is capped at ``--detector-tokens`` new tokens). CLIP tags are timed as the
pipeline runs them (the filter's decision, then the tags) for each ``tag_views``.
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

from spatialforge.perception.backends.clip import ClipFilter  # noqa: E402
from spatialforge.perception.backends.florence2 import Florence2Captioner, Florence2RegionDetector  # noqa: E402
from spatialforge.perception.types import Detections  # noqa: E402
from spatialforge.synth import SynthConfig, generate_scene  # noqa: E402

BASE_IMAGE = 768
BASE_TOKENS = 577  # (768 / 32) ** 2 + 1


def build_base_random(folder: Path) -> Path:
    """A random Florence-2 with Florence-2-base's architecture, saved with a processor at 768 px."""
    import torch
    import transformers as tf
    from tests.perception.tiny_florence2 import _POST_PROCESSOR_CONFIG, build_tiny_florence2

    build_tiny_florence2(folder)  # the byte-level tokenizer with Florence's special tokens
    tokenizer = tf.AutoTokenizer.from_pretrained(folder)
    image_processor = tf.CLIPImageProcessor(
        size={"height": BASE_IMAGE, "width": BASE_IMAGE}, do_center_crop=False,
        crop_size={"height": BASE_IMAGE, "width": BASE_IMAGE}, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225], resample=3, image_seq_length=BASE_TOKENS)
    processor = tf.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                      post_processor_config=_POST_PROCESSOR_CONFIG)
    text = dict(model_type="bart", vocab_size=51289, d_model=768, encoder_layers=6, decoder_layers=6,
                encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                max_position_embeddings=1024, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                decoder_start_token_id=2)
    vision = dict(embed_dim=[128, 256, 512, 1024], depths=[1, 1, 9, 1], num_heads=[4, 8, 16, 32],
                  num_groups=[4, 8, 16, 32], patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2],
                  patch_padding=[3, 1, 1, 1], patch_prenorm=[False, True, True, True], window_size=12,
                  projection_dim=768)
    config = tf.Florence2Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id)
    torch.manual_seed(0)
    model = tf.Florence2ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _photos(n: int, w: int, h: int) -> list[np.ndarray]:
    return [generate_scene(i, seed=99, config=SynthConfig(width=w, height=h)).image for i in range(n)]


def _boxes(rng: np.random.Generator, k: int, w: int, h: int) -> Detections:
    x0, y0 = rng.uniform(0, w * 0.7, k), rng.uniform(0, h * 0.7, k)
    bw, bh = rng.uniform(0.1, 0.3, k) * w, rng.uniform(0.1, 0.3, k) * h
    boxes = np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1).astype(np.float32)
    return Detections(boxes, np.ones(k, np.float32), tuple(f"thing {i}" for i in range(k)))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _per_region(stage: Florence2Captioner, images: list[np.ndarray], dets: list[Detections]) -> list[str]:
    """The captioner's former path: one pixel row per region, the vision tower on every row."""
    regions = [(i, k) for i, d in enumerate(dets) for k in range(len(d))]
    raw: list[str] = []
    for start in range(0, len(regions), stage.batch_size):
        inputs = stage._region_inputs(images, dets, regions[start:start + stage.batch_size])
        pixels = stage._pixels([images[i] for i in inputs["images"]]).index_select(0, inputs["rows"].cpu())
        raw.extend(stage._generate(inputs, pixel_values=pixels, max_new_tokens=stage.max_new_tokens))
    return raw


def _per_photo(stage: Florence2Captioner, images: list[np.ndarray], dets: list[Detections]) -> list[str]:
    """The captioner's path now (its raw texts: the same loop as ``__call__`` without the cleaning)."""
    regions = [(i, k) for i, d in enumerate(dets) for k in range(len(d))]
    raw: list[str] = []
    for start in range(0, len(regions), stage.batch_size):
        inputs = stage._region_inputs(images, dets, regions[start:start + stage.batch_size])
        order = inputs.pop("images")
        feats = stage._image_features([images[i] for i in order]).index_select(0, inputs.pop("rows"))
        raw.extend(stage._generate(inputs, features=feats, max_new_tokens=stage.max_new_tokens))
    return raw


def bench_captions(model_dir: str, images: list[np.ndarray], dets: list[Detections], device: str,
                   repeats: int) -> dict[str, Any]:
    stage = Florence2Captioner(model_id=model_dir, device=device, batch_size=16)
    stage.load()
    _per_region(stage, images[:1], dets[:1])  # warm-up
    _per_photo(stage, images[:1], dets[:1])
    n = sum(len(d) for d in dets)
    times: dict[str, list[float]] = {"per_region": [], "per_photo": []}
    texts: dict[str, list[str]] = {}
    for _ in range(repeats):  # interleaved, so both paths see the same machine load
        for name, fn in (("per_region", _per_region), ("per_photo", _per_photo)):
            stage._features.clear()  # every photo is encoded in the timed call
            _sync(device)
            t0 = time.perf_counter()
            texts[name] = fn(stage, images, dets)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    stage.unload()
    best = {k: min(v) for k, v in times.items()}
    return {"regions": n, "photos": len(images),
            "per_region_regions_per_s": round(n / best["per_region"], 3),
            "per_photo_regions_per_s": round(n / best["per_photo"], 3),
            "speedup": round(best["per_region"] / best["per_photo"], 2),
            "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
            "identical_outputs": texts["per_region"] == texts["per_photo"]}


def bench_detector(model_dir: str, images: list[np.ndarray], device: str, max_new_tokens: int,
                   repeats: int) -> dict[str, Any]:
    stage = Florence2RegionDetector(model_id=model_dir, device=device, max_new_tokens=max_new_tokens)
    stage.load()
    stage(images[:1])  # warm-up
    times, boxes = [], 0
    for _ in range(repeats):
        stage._features.clear()
        _sync(device)
        t0 = time.perf_counter()
        out = stage(images)
        _sync(device)
        times.append(time.perf_counter() - t0)
        boxes = sum(len(d) for d in out)
    stage.unload()
    return {"photos": len(images), "images_per_s": round(len(images) / min(times), 3), "raw_boxes": boxes,
            "max_new_tokens": max_new_tokens, "num_beams": stage.num_beams,
            "seconds": [round(t, 3) for t in times]}


def bench_tags(clip_dir: str, images: list[np.ndarray], device: str, repeats: int) -> dict[str, Any]:
    from spatialforge.perception.vocabulary import DEFAULT_VOCABULARY

    out = {}
    for views in ("center", "pad", "tiles"):
        stage = ClipFilter(model_id=clip_dir, device=device, tag_views=views, threshold=0.0)
        stage.load()
        stage(images[:1])  # warm-up, and the label sets' and the vocabulary's text embeddings
        stage.tags(images[:1], DEFAULT_VOCABULARY, 24)
        times = []
        for _ in range(repeats):
            stage._image_cache.clear()
            _sync(device)
            t0 = time.perf_counter()
            stage(images)
            stage.tags(images, DEFAULT_VOCABULARY, 24)
            _sync(device)
            times.append(time.perf_counter() - t0)
        stage.unload()
        out[views] = {"images_per_s": round(len(images) / min(times), 2), "seconds": [round(t, 4) for t in times]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,base", help="comma-separated: tiny, base (default tiny,base)")
    ap.add_argument("--photos", type=int, default=4, help="photos (default 4)")
    ap.add_argument("--regions", type=int, default=5, help="regions per photo (default 5)")
    ap.add_argument("--size", default="640x480", help="photo size WxH (default 640x480)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the best counts (default 3)")
    ap.add_argument("--detector-tokens", type=int, default=32,
                    help="the random base detector's max_new_tokens (default 32)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from tests.perception.tiny_clip import build_tiny_clip
    from tests.perception.tiny_florence2 import build_tiny_florence2
    from tests.perception.tiny_florence2_regions import build_tiny_florence2_regions

    from spatialforge.perception.backends.base import resolve_device

    device = resolve_device(args.device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    images = _photos(args.photos, w, h)
    rng = np.random.default_rng(0)
    dets = [_boxes(rng, args.regions, w, h) for _ in images]
    result: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                              "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(0),
                              "cpu_threads": torch.get_num_threads(), "photos": args.photos,
                              "regions_per_photo": args.regions, "size": [w, h]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
            if kind == "tiny":
                captions_dir = str(build_tiny_florence2(tmp_path / "f2"))
                regions_dir = str(build_tiny_florence2_regions(tmp_path / "f2r"))
                tokens = 1024
            elif kind == "base":
                captions_dir = regions_dir = str(build_base_random(tmp_path / "f2base"))
                tokens = args.detector_tokens
            else:
                raise SystemExit(f"--models: unknown kind {kind!r} (tiny, base)")
            cap = bench_captions(captions_dir, images, dets, device, args.repeats)
            print(f"{kind}: captions per region {cap['per_region_regions_per_s']} regions/s, per photo "
                  f"{cap['per_photo_regions_per_s']} regions/s (x{cap['speedup']}, identical: "
                  f"{cap['identical_outputs']})", flush=True)
            det = bench_detector(regions_dir, images, device, tokens, args.repeats)
            print(f"{kind}: florence2-regions {det['images_per_s']} img/s ({det['raw_boxes']} raw boxes)", flush=True)
            result[kind] = {"captions": cap, "detector": det}
        clip_dir = str(build_tiny_clip(tmp_path / "clip"))
        result["tiny_clip_filter_and_tags"] = bench_tags(clip_dir, images, device, args.repeats)
        print("tiny CLIP filter + tags (img/s): " + ", ".join(
            f"{k} {v['images_per_s']}" for k, v in result["tiny_clip_filter_and_tags"].items()), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
