"""Speed of AffordanceCLIP with the full-size RN101 architecture (random init: no download needed).

Run: ``python benchmarks/bench_afford.py [--device auto] [--batch-sizes 1,8] [--images 16]
[--train-steps 5] [--train-batch 8] [--amp auto] [--json out.json]``.

Reports inference images per second at 224 px (letterbox + normalise + frozen CLIP + FPN + head +
map back to the image size, one prompt, template ensemble) for each batch size, and training
steps per second (the frozen CLIP forward, the FPN forward and backward, the optimizer step) on
the synthetic shapes task at 224 px. Model building and the first (warm-up) call are not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--clip-model", default="RN101-quickgelu")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from spatialforge import __version__
    from spatialforge.afford.config import AffordConfig, ModelConfig, TrainConfig
    from spatialforge.afford.model import AffordanceCLIP, count_parameters
    from spatialforge.afford.predict import AffordancePredictor, resolve_device
    from spatialforge.afford.shapes import ShapesRefDataset
    from spatialforge.afford.train import train

    device = resolve_device(args.device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    torch.manual_seed(0)
    model_cfg = ModelConfig(clip_model=args.clip_model, clip_pretrained=None)
    model = AffordanceCLIP.from_config(model_cfg, device=device).eval()
    params = count_parameters(model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(args.images)]
    rows = []
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        pred = AffordancePredictor(model, device=device, batch_size=b)
        pred.predict(images[:b], ["pour"])  # warm-up
        sync()
        t0 = time.perf_counter()
        pred.predict(images, ["pour"])
        sync()
        dt = time.perf_counter() - t0
        rows.append({"batch": b, "images": len(images), "seconds": round(dt, 3),
                     "images_per_s": round(len(images) / dt, 2)})
        print(f"inference batch {b:>2}: {rows[-1]['images_per_s']:.2f} img/s (640x480 photos, 224 px model input)")

    # training: warm up with one step, then time the rest
    src = ShapesRefDataset(64, size=224, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(steps=args.train_steps + 1, batch_size=args.train_batch, workers=0, device=device,
                         amp=args.amp, warmup_steps=1, log_every=1000, val_every=10_000, save_every=10_000)
        cfg = AffordConfig(model_cfg, tc)
        train_model = AffordanceCLIP.from_config(model_cfg, device=device)
        train(cfg, Path(tmp) / "w", train_source=src, progress=False, model=train_model, stop_at=1)
        sync()
        t0 = time.perf_counter()
        summary = train(cfg, Path(tmp) / "w", train_source=src, progress=False, model=train_model)
        sync()
        dt = time.perf_counter() - t0
    steps = args.train_steps
    train_row = {"batch": args.train_batch, "steps": steps, "seconds": round(dt, 3),
                 "steps_per_s": round(steps / dt, 3), "samples_per_s": round(steps * args.train_batch / dt, 2),
                 "amp": summary["amp"]}
    print(f"training batch {args.train_batch}: {train_row['steps_per_s']:.3f} steps/s "
          f"({train_row['samples_per_s']:.1f} samples/s, amp {summary['amp']}; includes checkpoint writing)")
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    result = {"spatialforge": __version__, "torch": torch.__version__, "python": platform.python_version(),
              "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(0),
              "cpu_threads": torch.get_num_threads(), "clip_model": args.clip_model, "parameters": params,
              "inference": rows, "training": train_row, "peak_gpu_memory_mb": None if peak is None else round(peak)}
    print(f"parameters: trainable {params['trainable']:,}, frozen {params['frozen']:,}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
