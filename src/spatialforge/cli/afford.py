"""``spatialforge afford``: train, evaluate, score and predict with AffordanceCLIP."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.perception.image_io import ImageLimits

# maps are made at each image's own size: no downscaling, any small size, only the decompression-bomb limit
_LIMITS = ImageLimits(min_side=1, max_side=1 << 30)

__all__ = ["add_afford", "run_afford"]


def add_afford(sub: Any) -> None:
    p = sub.add_parser("afford", help="AffordanceCLIP: affordance heatmaps from free-text actions",
                       description="Zero-shot affordance grounding: a frozen CLIP ResNet + light FPN trained on "
                                   "referring segmentation, scored on AGD20K. "
                                   "Needs `pip install 'spatialforge[afford]'`.")
    asub = p.add_subparsers(dest="afford_command", metavar="ACTION")
    asub.required = True

    t = asub.add_parser("train", help="train the FPN + head on RefCOCO-family referring segmentation",
                        description="Train on RefCOCO / RefCOCO+ / RefCOCOg (refer distribution) or the built-in "
                                    "synthetic shapes task. Resumes from the latest checkpoint in --out.")
    t.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl, final/)")
    t.add_argument("--config", type=Path, default=None, help="a .toml/.json config with [model] and [train]")
    t.add_argument("--data-root", default=None, help="the refer data folder (holds refcoco/, refcoco+/, refcocog/)")
    t.add_argument("--datasets", default=None,
                   help="comma-separated, e.g. refcoco/unc,refcoco+/unc,refcocog/umd, or 'shapes' (synthetic)")
    t.add_argument("--image-dir", default=None, help="COCO train2014 images (default: the refer layout)")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or mps")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set train.amp=bf16 --set model.fpn_dim=128")
    t.add_argument("--shapes-images", type=int, default=400, help="images of the synthetic shapes task (train)")
    t.add_argument("--overwrite", action="store_true", help="delete --out first instead of resuming")
    t.add_argument("--no-progress", action="store_true")

    e = asub.add_parser("evaluate", help="score a checkpoint on AGD20K (KLD, SIM, NSS)",
                        description="Predict a heatmap for every AGD20K test image (prompt: its affordance) and "
                                    "score it with the community protocol.")
    e.add_argument("--agd20k", type=Path, required=True, help="AGD20K root (holds Seen/ and Unseen/) or a split")
    e.add_argument("--split", required=True, help="Seen or Unseen")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--out", type=Path, default=None, help="report folder (default: CHECKPOINT/agd20k-<split>)")
    e.add_argument("--templates", default=None, help="prompt templates: plain, something, ensemble (default: "
                                                     "the checkpoint's) or a template with {}")
    e.add_argument("--save-predictions", type=Path, default=None,
                   help="also write every map as <affordance>/<object>/<stem>.npy (for `afford score`)")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--clip-model", default=None, help="override the CLIP the checkpoint names (same architecture)")
    e.add_argument("--no-progress", action="store_true")

    s = asub.add_parser("score", help="score any method's saved AGD20K predictions",
                        description="Score prediction maps (PNG or NPY mirroring <affordance>/<object>/<stem>) with "
                                    "the AGD20K protocol.")
    s.add_argument("--agd20k", type=Path, required=True)
    s.add_argument("--split", required=True, help="Seen or Unseen")
    s.add_argument("--predictions", type=Path, required=True)
    s.add_argument("--out", type=Path, default=None, help="report folder (default: PREDICTIONS)")
    s.add_argument("--name", default=None, help="report file name stem (default agd20k-<split>)")
    s.add_argument("--no-progress", action="store_true")

    q = asub.add_parser("predict", help="heatmaps of where images afford actions",
                        description="Write, per image and prompt, the heatmap (NPY, probabilities in [0, 1]) and "
                                    "an overlay PNG.")
    q.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    q.add_argument("--prompt", action="append", required=True, help="an action, e.g. --prompt pour --prompt 'cut with'")
    q.add_argument("--checkpoint", type=Path, required=True)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--templates", default=None)
    q.add_argument("--device", default="auto")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--clip-model", default=None)


# ----------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from spatialforge.afford.config import load_afford_config

    overrides = list(args.overrides)
    for flag, key in (("data_root", "train.data_root"), ("datasets", "train.datasets"),
                      ("image_dir", "train.image_dir"), ("steps", "train.steps"),
                      ("batch_size", "train.batch_size"), ("lr", "train.lr"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides.insert(0, f"{key}={getattr(args, flag)}")
    config = load_afford_config(args.config, overrides)
    tc = config.train
    if args.overwrite and args.out.exists():
        shutil.rmtree(args.out)
    if tc.datasets == ("shapes",):
        from spatialforge.afford.shapes import ShapesRefDataset

        size = config.model.image_size
        train_src = ShapesRefDataset(args.shapes_images, size=size, seed=tc.seed, naming="colour")
        val_src = ShapesRefDataset(max(20, args.shapes_images // 10), size=size, seed=tc.seed + 1, split="val",
                                   naming="colour")
    else:
        if tc.data_root is None:
            raise ConfigError("give --data-root (the refer data folder) or --datasets shapes")
        from spatialforge.afford.refcoco import open_refer

        train_src = open_refer(tc.data_root, list(tc.datasets), split=tc.split, image_dir=tc.image_dir)
        val_src = open_refer(tc.data_root, list(tc.val_datasets), split=tc.val_split, image_dir=tc.image_dir)
        if tc.exclude_val_images:  # the RefCOCO family shares COCO images between datasets and splits
            from spatialforge.afford.refcoco import ExcludeImages

            train_src = ExcludeImages(train_src, frozenset(s.image_id for s in val_src.samples))
        for name, src in (("train", train_src), ("validation", val_src)):
            info = src.summary()
            print(f"{name}: {info.get('refs', len(src))} refs, skipped {info.get('skipped', {})}")
    from spatialforge.afford.train import train

    summary = train(config, args.out, train_source=train_src, val_source=val_src, progress=not args.no_progress)
    p = summary["parameters"]
    print(f"trainable parameters: {p['trainable']:,} (frozen CLIP: {p['frozen']:,})")
    val = summary["validation"] or {}
    if val:
        print(f"validation: mIoU {val['mIoU']:.4f}, overall IoU {val['oIoU']:.4f} on {val['sentences']} sentences")
    if summary["skipped"]:
        print(f"skipped refs: {summary['skipped']} (see {args.out / 'log.jsonl'})")
    print(f"checkpoint: {summary['final_checkpoint']}")
    return 0


# ----------------------------------------------------------------------------- evaluate / score
def _print_report(report: dict[str, Any], paths: tuple[Path, Path]) -> None:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(f"AGD20K {report['split']}: KLD {f(report['KLD'])}  SIM {f(report['SIM'])}  NSS {f(report['NSS'])}  "
          f"({report['n_scored']}/{report['n_images']} images scored)")
    if report["skipped_by_reason"]:
        print(f"skipped: {report['skipped_by_reason']}")
    print(f"wrote {paths[0]} and {paths[1]}")


class _BatchedPredictions:
    """``item -> map`` for the scorer, predicting the next ``batch`` items at once (items come in order)."""

    def __init__(self, predictor: Any, items: list, batch: int, templates: str | None, save: Path | None) -> None:
        self.predictor, self.items, self.batch, self.templates, self.save = predictor, items, batch, templates, save
        self.position = {it.key: i for i, it in enumerate(items)}
        self.cache: dict[str, Any] = {}

    def __call__(self, item: Any) -> Any:
        import numpy as np

        from spatialforge.errors import DatasetError
        from spatialforge.perception.image_io import ItemFailure, load_image_file

        if item.key not in self.cache:
            start = self.position[item.key]
            chunk = self.items[start:start + self.batch]
            images, keep = [], []
            for it in chunk:
                loaded = load_image_file(Path(it.image_path), it.stem, _LIMITS)
                if isinstance(loaded, ItemFailure):  # the scorer records it with this reason
                    self.cache[it.key] = DatasetError(f"test image unreadable: {loaded.message}",
                                                      path=str(it.image_path))
                    continue
                images.append(loaded.image)
                keep.append(it)
            maps = self.predictor.predict_each(images, [it.prompt for it in keep], self.templates) if keep else []
            for it, m in zip(keep, maps, strict=True):
                self.cache[it.key] = m
                if self.save is not None:
                    dest = self.save / it.affordance / it.object / f"{it.stem}.npy"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    np.save(dest, m.astype(np.float16))
        out = self.cache.pop(item.key)
        if isinstance(out, Exception):
            raise out
        return out


def _evaluate(args: argparse.Namespace) -> int:
    from spatialforge.afford.agd20k import AGD20KTestSet, score, write_report
    from spatialforge.afford.predict import AffordancePredictor

    testset = AGD20KTestSet(args.agd20k, args.split)
    override = {"clip_model": args.clip_model} if args.clip_model else {}
    predictor = AffordancePredictor.from_checkpoint(str(args.checkpoint), device=args.device,
                                                    batch_size=args.batch_size, **override)
    fetch = _BatchedPredictions(predictor, list(testset.items), args.batch_size, args.templates, args.save_predictions)
    report = score(testset, fetch, progress=not args.no_progress)
    report["checkpoint"] = str(args.checkpoint)
    report["templates"] = args.templates or predictor.model.config.templates
    out = args.out or args.checkpoint / f"agd20k-{testset.split.lower()}"
    _print_report(report, write_report(report, out, name=f"agd20k-{testset.split.lower()}"))
    return 0


def _score(args: argparse.Namespace) -> int:
    from spatialforge.afford.agd20k import AGD20KTestSet, score, write_report

    testset = AGD20KTestSet(args.agd20k, args.split)
    report = score(testset, args.predictions, progress=not args.no_progress)
    out = args.out or args.predictions
    _print_report(report, write_report(report, out, name=args.name or f"agd20k-{testset.split.lower()}"))
    return 0


# ----------------------------------------------------------------------------- predict
def _image_files(paths: list[Path]) -> list[tuple[str, Path]]:
    """(output name, path) for the images given (files, or folders of images); names are unique."""
    from spatialforge.perception.image_io import list_image_files

    files: list[tuple[str, Path]] = []
    for p in paths:
        if p.is_dir():
            files += list_image_files(p)
        elif p.is_file():
            files.append((re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem).strip("._") or "image", p))
        else:
            raise SpatialForgeError(f"{p}: no such image file or folder")
    if not files:
        raise SpatialForgeError("no image files given")
    counts: dict[str, int] = {}
    out = []
    for name, path in files:  # the same name from two folders: number the later ones
        counts[name] = counts.get(name, 0) + 1
        out.append((name if counts[name] == 1 else f"{name}_{counts[name]}", path))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "prompt"


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from spatialforge.afford.predict import AffordancePredictor
    from spatialforge.afford.prompts import normalise_action
    from spatialforge.perception.image_io import ItemFailure, load_image_file
    from spatialforge.viz import render_heatmap

    prompts: list[str] = []
    for p in args.prompt:  # one map per distinct action ("Pour" and "pour" are the same file)
        action = normalise_action(p)
        if _slug(action) not in {_slug(q) for q in prompts}:
            prompts.append(action)
    files = _image_files(args.images)
    override = {"clip_model": args.clip_model} if args.clip_model else {}
    predictor = AffordancePredictor.from_checkpoint(str(args.checkpoint), device=args.device,
                                                    batch_size=args.batch_size, **override)
    args.out.mkdir(parents=True, exist_ok=True)
    failed, written = [], []
    for start in range(0, len(files), args.batch_size):
        images, names = [], []
        for name, f in files[start:start + args.batch_size]:
            item = load_image_file(f, name, _LIMITS)  # EXIF rotation, alpha on white, 16-bit, pixel limit
            if isinstance(item, ItemFailure):
                failed.append(item.message)
                print(f"skipped {item.message}", file=sys.stderr)
                continue
            images.append(item.image)
            names.append((name, f))
        if not images:
            continue
        for (name, f), img, maps in zip(names, images, predictor.predict(images, prompts, args.templates),
                                        strict=True):
            for prompt, heat in zip(prompts, maps, strict=True):
                stem = f"{name}_{_slug(prompt)}"
                np.save(args.out / f"{stem}.npy", heat)
                render_heatmap(img, heat, title=f"{f.name}: {prompt}").save(args.out / f"{stem}.png")
                written.append(stem)
    (args.out / "predictions.json").write_text(json.dumps(
        {"checkpoint": str(args.checkpoint), "prompts": prompts, "written": written, "failed": failed}, indent=2))
    print(f"wrote {len(written)} heatmaps (NPY + overlay PNG) to {args.out}" + (f"; {len(failed)} images failed"
                                                                              if failed else ""))
    return 0 if written else 2


def run_afford(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "score": _score, "predict": _predict}[args.afford_command](args)
