"""``spatialforge afford``: train, evaluate, score and predict with AffordanceCLIP.

Every subcommand claims its output folders with :func:`spatialforge.io.outdir.prepare_output_dir`
before loading a model or any data (docs/safety.md), passing every path it reads as an input:

* ``train --out``: kind ``afford-train`` (``checkpoints/``, ``final/``, ``log.jsonl``,
  ``train_summary.json``); rerunning resumes, ``--extend`` lengthens the schedule, ``--overwrite``
  starts again.
* ``evaluate --out`` / ``score --out``: kind ``afford-report`` (``agd20k-*.json``, ``agd20k-*.md``,
  and ``<name>.json`` / ``<name>.md`` of ``score --name``); by default a folder beside the
  checkpoint / predictions, never inside them. A report that exists is replaced only with ``--overwrite``.
* ``evaluate --save-predictions``: kind ``afford-predictions`` (one folder per affordance).
* ``predict --out``: kind ``afford-predict`` (``*.npy``, ``*.png``, ``*.3d.json`` with ``--depth``,
  ``predictions.json``).
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, device, int_at_least, number_at_least
from spatialforge.errors import ConfigError, RunFailedError, SpatialForgeError
from spatialforge.io.outdir import MARKER, OutputKind, PreparedOutput, check_output_location, prepare_output_dir
from spatialforge.perception.image_io import ImageLimits

# maps are made at each image's own size: no downscaling, any small size, only the decompression-bomb limit
_LIMITS = ImageLimits(min_side=1, max_side=1 << 30)

__all__ = ["PREDICT_OUTPUT", "TRAIN_OUTPUT", "add_afford", "predictions_kind", "report_kind", "run_afford"]

TRAIN_OUTPUT = OutputKind("afford-train", ("checkpoints", "final", "log.jsonl", "train_summary.json"))
"""``afford train --out``: what a training run writes."""
PREDICT_OUTPUT = OutputKind("afford-predict", ("*.npy", "*.png", "*.3d.json", "predictions.json"))
"""``afford predict --out``: heatmaps, overlays, 3D points (``--depth``) and the list of what was written."""


def report_kind(name: str | None = None) -> OutputKind:
    """``afford evaluate`` / ``afford score`` report folders: ``agd20k-*`` reports (and ``name``'s)."""
    extra = () if name is None else (f"{glob.escape(name)}.json", f"{glob.escape(name)}.md")
    return OutputKind("afford-report", ("agd20k-*.json", "agd20k-*.md", *extra))


def predictions_kind(affordances: list[str] | tuple[str, ...] = ()) -> OutputKind:
    """``afford evaluate --save-predictions``: one folder per affordance (the official classes of both
    splits and those of the test tree)."""
    from spatialforge.afford.agd20k import SEEN_AFFORDANCES, UNSEEN_AFFORDANCES

    names = sorted(set(SEEN_AFFORDANCES) | set(UNSEEN_AFFORDANCES) | set(affordances))
    return OutputKind("afford-predictions", tuple(glob.escape(n) for n in names))


# ----------------------------------------------------------------------------- argument types
def _split(text: str) -> str:
    from spatialforge.afford.agd20k import SPLITS

    for name in SPLITS:
        if text.lower() == name.lower():
            return name
    raise argparse.ArgumentTypeError(f"must be Seen or Unseen (any case), got {text!r}")


def _datasets(text: str) -> tuple[str, ...]:
    from spatialforge.afford.refcoco import parse_refer_name

    items = tuple(t.strip() for t in text.split(","))
    if any(not t for t in items):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list without empty items, got {text!r}")
    if "shapes" in items:
        if len(items) > 1:
            raise argparse.ArgumentTypeError(f"'shapes' (the synthetic task) cannot be combined with others: {text!r}")
        return items
    try:
        for item in items:
            parse_refer_name(item)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return items


def _templates(text: str) -> str:
    from spatialforge.afford.prompts import expand_prompts

    try:
        expand_prompts(["x"], text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _prompt(text: str) -> str:
    from spatialforge.afford.prompts import normalise_action

    try:
        return normalise_action(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _report_name(text: str) -> str:
    if not text or "/" in text or "\\" in text or text.startswith(".") or text != text.strip():
        raise argparse.ArgumentTypeError(f"must be a plain file name stem (no folder, no leading dot), got {text!r}")
    return text


_BATCH = int_at_least(1)
_DEVICE_HELP = f"device: {DEVICE_HELP}"
_OVERWRITE_HELP = ("replace what an earlier run of this command wrote in the output folder(s) (only those entries, "
                   "see docs/affordance.md)")


def add_afford(sub: Any) -> None:
    from spatialforge.afford.config import TrainConfig

    tc = TrainConfig()  # the defaults the help shows
    p = sub.add_parser("afford", help="AffordanceCLIP: affordance heatmaps from free-text actions",
                       description="Zero-shot affordance grounding: a frozen CLIP ResNet + light FPN trained on "
                                   "referring segmentation, scored on AGD20K. "
                                   "Needs `pip install 'spatialforge[afford]'`.")
    asub = p.add_subparsers(dest="afford_command", metavar="ACTION")
    asub.required = True

    t = asub.add_parser("train", help="train the FPN + head on RefCOCO-family referring segmentation",
                        description="Train on RefCOCO / RefCOCO+ / RefCOCOg (refer distribution) or the built-in "
                                    "synthetic shapes task. Rerunning the same command resumes from the latest "
                                    "checkpoint in --out; other settings are refused (a longer --steps needs "
                                    "--extend).")
    t.add_argument("--out", type=Path, required=True,
                   help="run folder (checkpoints/, final/, log.jsonl, train_summary.json)")
    t.add_argument("--config", type=Path, default=None,
                   help="a .toml/.json config with [model] and [train] (default: none, the built-in defaults)")
    t.add_argument("--data-root", default=None,
                   help="the refer data folder holding refcoco/, refcoco+/, refcocog/ (default: the config's "
                        "train.data_root; needed unless --datasets shapes)")
    t.add_argument("--datasets", type=_datasets, default=None,
                   help="comma-separated refer datasets, e.g. refcoco/unc,refcoco+/unc,refcocog/umd, or 'shapes' "
                        f"(synthetic) (default: the config's, {','.join(tc.datasets)})")
    t.add_argument("--image-dir", default=None,
                   help="COCO train2014 images (default: the config's, else the refer layout under --data-root)")
    t.add_argument("--steps", type=int_at_least(1), default=None,
                   help=f"optimiser steps (default: the config's, {tc.steps})")
    t.add_argument("--batch-size", type=_BATCH, default=None,
                   help=f"refs per step (default: the config's, {tc.batch_size})")
    t.add_argument("--lr", type=number_at_least(0.0, strict=True), default=None,
                   help=f"peak learning rate, > 0 (default: the config's, {tc.lr:g})")
    t.add_argument("--device", type=device, default=None, help=f"{_DEVICE_HELP} (default: the config's, {tc.device})")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set train.amp=bf16 --set model.fpn_dim=128 "
                        "(default: none)")
    t.add_argument("--shapes-images", type=int_at_least(1), default=400,
                   help="images of the synthetic shapes task (train)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true",
                       help="start again: delete what an earlier `afford train` wrote in --out (nothing else) "
                            "instead of resuming")
    again.add_argument("--extend", action="store_true",
                       help="resume the run in --out with a larger --steps (the learning-rate schedule is "
                            "stretched to the new length)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = asub.add_parser("evaluate", help="score a checkpoint on AGD20K (KLD, SIM, NSS)",
                        description="Predict a heatmap for every AGD20K test image (prompt: its affordance) and "
                                    "score it with the community protocol. Exit status 1 when no image was "
                                    "scored.")
    e.add_argument("--agd20k", type=Path, required=True, help="AGD20K root (holds Seen/ and Unseen/) or a split")
    e.add_argument("--split", type=_split, required=True, help="Seen or Unseen (any case)")
    e.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, e.g. runs/x/final")
    e.add_argument("--out", type=Path, default=None,
                   help="report folder (default: CHECKPOINT-agd20k-<split>, beside the checkpoint)")
    e.add_argument("--templates", type=_templates, default=None,
                   help="prompt templates: plain, something, ensemble or a template with {} (default: the "
                        "checkpoint's)")
    e.add_argument("--save-predictions", type=Path, default=None,
                   help="also write every map as <affordance>/<object>/<stem>.npy (float32) into this new folder, "
                        "for `afford score` (default: not saved)")
    e.add_argument("--device", type=device, default="auto", help=_DEVICE_HELP)
    e.add_argument("--batch-size", type=_BATCH, default=16, help="images per forward pass")
    e.add_argument("--clip-model", default=None,
                   help="another CLIP of the same architecture and weights, e.g. local-dir:PATH (default: the "
                        "checkpoint's)")
    e.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = asub.add_parser("score", help="score any method's saved AGD20K predictions",
                        description="Score prediction maps (PNG or NPY mirroring <affordance>/<object>/<stem>) with "
                                    "the AGD20K protocol. Exit status 1 when no image was scored.")
    s.add_argument("--agd20k", type=Path, required=True, help="AGD20K root (holds Seen/ and Unseen/) or a split")
    s.add_argument("--split", type=_split, required=True, help="Seen or Unseen (any case)")
    s.add_argument("--predictions", type=Path, required=True,
                   help="folder of maps laid out as <affordance>/<object>/<stem>.(npy|png)")
    s.add_argument("--out", type=Path, default=None,
                   help="report folder (default: PREDICTIONS-agd20k-<split>, beside the predictions)")
    s.add_argument("--name", type=_report_name, default=None,
                   help="report file name stem (default: agd20k-<split>)")
    s.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    q = asub.add_parser("predict", help="heatmaps of where images afford actions",
                        description="Write, per image and prompt, the heatmap (NPY, float32 probabilities in "
                                    "[0, 1]) and an overlay PNG; with --depth also <name>_<prompt>.3d.json, the "
                                    "heatmap lifted into 3D (interaction point, normal, approach direction, area, "
                                    "image point; gravity frame). Exit status 1 when no image could be read.")
    q.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    q.add_argument("--prompt", type=_prompt, action="append", required=True,
                   help="an action, e.g. --prompt pour --prompt 'cut with' (repeatable)")
    q.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, e.g. runs/x/final")
    q.add_argument("--out", type=Path, required=True, help="output folder (a new one, or an earlier predict's)")
    q.add_argument("--templates", type=_templates, default=None,
                   help="prompt templates: plain, something, ensemble or a template with {} (default: the "
                        "checkpoint's)")
    q.add_argument("--device", type=device, default="auto", help=_DEVICE_HELP)
    q.add_argument("--batch-size", type=_BATCH, default=8, help="images per forward pass")
    q.add_argument("--clip-model", default=None,
                   help="another CLIP of the same architecture and weights, e.g. local-dir:PATH (default: the "
                        "checkpoint's)")
    q.add_argument("--depth", type=Path, default=None,
                   help="folder of depth maps <name>.npy (metres) or <name>.png (millimetres), one per image "
                        "(<name>: the image's file stem), with camera.json (fx, fy, cx, cy) or --hfov: also write "
                        "the 3D points (default: heatmaps only)")
    q.add_argument("--hfov", type=number_at_least(5.0, high=170.0), default=None,
                   help="horizontal field of view in degrees for the depth maps when --depth has no camera.json "
                        "(principal point at the image centre; default: camera.json's intrinsics)")
    q.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)


# ----------------------------------------------------------------------------- shared helpers
def _beside(folder: Path, suffix: str) -> Path:
    """A default output folder next to an input (never inside it): ``runs/x/final`` -> ``runs/x/final-<suffix>``."""
    folder = folder.resolve()
    return folder.with_name(f"{folder.name}-{suffix}")


def _clip_paths(clip_model: str | None, clip_pretrained: str | None = None) -> list[Path]:
    """Local files a CLIP spec reads (``local-dir:PATH``, a weights file): inputs an output may not overlap."""
    out = []
    if clip_model and clip_model.startswith("local-dir:"):
        out.append(Path(clip_model.removeprefix("local-dir:")))
    if clip_pretrained and Path(clip_pretrained).exists():
        out.append(Path(clip_pretrained))
    return out


def _checkpoint_inputs(args: argparse.Namespace) -> list[Path]:
    """The checkpoint and the CLIP files it (or --clip-model) names; a bad checkpoint is one line naming it."""
    from spatialforge.afford.checkpoint import read_checkpoint_config

    try:
        meta = read_checkpoint_config(args.checkpoint)
    except ConfigError as exc:
        raise ConfigError(f"--checkpoint {exc}") from None
    model = meta["model"]
    return [args.checkpoint, *_clip_paths(args.clip_model or model.get("clip_model"), model.get("clip_pretrained"))]


def _refuse_earlier(what: str) -> Any:
    """A claim check: a folder holding an earlier run's output is replaced only with --overwrite."""

    def check(folder: Path, flag: str) -> None:
        raise ConfigError(f"{flag} {folder}: holds {what} of an earlier run; use --overwrite to replace them, "
                          "or a new folder")

    return check


def _refuse_report(name: str) -> Any:
    """A claim check: a report folder may gain reports, but one that exists is replaced only with --overwrite."""

    def check(folder: Path, flag: str) -> None:
        existing = [f"{name}{ext}" for ext in (".json", ".md") if (folder / f"{name}{ext}").exists()]
        if existing:
            raise ConfigError(f"{flag} {folder}: already holds the report {existing[0]}; use --overwrite to replace "
                              "it, or another folder")

    return check


def _claim(claims: list[tuple[Path, OutputKind, str, Any]], inputs: list, overwrite: bool) -> list[PreparedOutput]:
    """Claim every output folder of a command, or none: ``(folder, kind, flag, check)`` where ``check(folder,
    flag)`` refuses a folder that already holds this kind's output (unless ``overwrite``).

    All folders are checked before any is created or cleared: a refused second folder leaves the first as
    it was. (For a non-empty folder, ``prepare_output_dir`` without ``overwrite`` only checks.)
    """
    for folder, kind, flag, check in claims:
        check_output_location(folder, inputs, flag=flag)
        if folder.exists() and (not folder.is_dir() or any(e.name != MARKER for e in folder.iterdir())):
            prepare_output_dir(folder, kind, inputs=inputs, overwrite=False, flag=flag)  # refuses, or resumes
            if not overwrite:
                check(folder, flag)
    done = []
    for folder, kind, flag, _ in claims:
        prepared = prepare_output_dir(folder, kind, inputs=inputs, overwrite=overwrite, flag=flag)
        if prepared.kept:
            print(f"{flag}: --overwrite kept what spatialforge did not write in {folder}: {', '.join(prepared.kept)}")
        done.append(prepared)
    return done


# ----------------------------------------------------------------------------- train
def _train_config(args: argparse.Namespace) -> Any:
    """The config file, then the flags (an invalid value names its flag), then the --set overrides."""
    from dataclasses import replace

    from spatialforge.afford.config import FLAGS, AffordConfig, apply_overrides, load_afford_config

    config = load_afford_config(args.config)
    by_flag = {"data_root": args.data_root, "datasets": args.datasets, "image_dir": args.image_dir,
               "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "device": args.device}
    for key, value in by_flag.items():
        if value is None:
            continue
        try:
            config = AffordConfig(config.model, replace(config.train, **{key: value}))
        except ConfigError as exc:
            raise ConfigError(f"{FLAGS['train.' + key]}: {exc}") from None
    return apply_overrides(config, args.overrides)


def _train(args: argparse.Namespace) -> int:
    config = _train_config(args)
    tc = config.train
    shapes = tc.datasets == ("shapes",)
    if not shapes:
        if tc.data_root is None:
            raise ConfigError("give --data-root (the refer data folder) or --datasets shapes")
        if not Path(tc.data_root).is_dir():
            flag = "--data-root" if args.data_root is not None else "train.data_root"
            raise ConfigError(f"{flag} {tc.data_root}: no such folder (the refer data folder)")
    if args.extend and not any((args.out / "checkpoints").glob("step-*")):
        raise ConfigError(f"--extend: {args.out} holds no checkpoint of a run to extend")
    inputs = [args.config, *([] if shapes else [tc.data_root, tc.image_dir]),
              *_clip_paths(config.model.clip_model, config.model.clip_pretrained)]
    _claim([(args.out, TRAIN_OUTPUT, "--out", lambda folder, flag: None)], inputs, args.overwrite)  # resumes
    if shapes:
        from spatialforge.afford.shapes import ShapesRefDataset

        size = config.model.image_size
        train_src = ShapesRefDataset(args.shapes_images, size=size, seed=tc.seed, naming="colour")
        val_src = ShapesRefDataset(max(20, args.shapes_images // 10), size=size, seed=tc.seed + 1, split="val",
                                   naming="colour")
    else:
        from spatialforge.afford.refcoco import open_refer

        train_src = open_refer(tc.data_root, list(tc.datasets), split=tc.split, image_dir=tc.image_dir)
        val_src = open_refer(tc.data_root, list(tc.val_datasets), split=tc.val_split, image_dir=tc.image_dir)
        if tc.exclude_val_images:  # the RefCOCO family shares COCO images between datasets and splits
            from spatialforge.afford.refcoco import ExcludeImages

            train_src = ExcludeImages(train_src, frozenset(s.image_id for s in val_src.samples))
        for name, src in (("train", train_src), ("validation", val_src)):
            info = src.summary()
            print(f"{name} ({', '.join(tc.datasets if name == 'train' else tc.val_datasets)}): "
                  f"{info.get('refs', len(src))} refs, skipped {info.get('skipped', {})}")
    from spatialforge.afford.train import train

    summary = train(config, args.out, train_source=train_src, val_source=val_src, progress=not args.no_progress,
                    extend=args.extend)
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
        bad = [s for s in report["skipped"] if s["reason"] == "bad_prediction"]
        for s in bad[:3]:
            print(f"  bad prediction {s['message']}", file=sys.stderr)
        if len(bad) > 3:
            print(f"  ... and {len(bad) - 3} more bad predictions (see {paths[0]})", file=sys.stderr)
    print(f"wrote {paths[0]} and {paths[1]}")
    if report["n_scored"] == 0:
        raise RunFailedError(f"no AGD20K test image was scored ({report['n_images']} in the split; see {paths[0]})")


class _BatchedPredictions:
    """``item -> map`` for the scorer, predicting the next ``batch`` items at once (items come in order)."""

    def __init__(self, predictor: Any, items: list, batch: int, templates: str | None, save: Path | None) -> None:
        self.predictor, self.items, self.batch, self.templates, self.save = predictor, items, batch, templates, save
        self.position = {it.key: i for i, it in enumerate(items)}
        self.cache: dict[str, Any] = {}

    def __call__(self, item: Any) -> Any:
        import numpy as np

        from spatialforge.afford.agd20k import read_test_image
        from spatialforge.errors import DatasetError
        from spatialforge.io.outdir import atomic_path

        if item.key not in self.cache:
            start = self.position[item.key]
            chunk = self.items[start:start + self.batch]
            images, keep = [], []
            for it in chunk:
                try:  # stored-pixel order, like the GT: no EXIF rotation
                    images.append(read_test_image(it.image_path, _LIMITS.max_pixels))
                except DatasetError as exc:  # the scorer records it with this reason
                    self.cache[it.key] = exc
                    continue
                keep.append(it)
            maps = self.predictor.predict_each(images, [it.prompt for it in keep], self.templates) if keep else []
            for it, m in zip(keep, maps, strict=True):
                m = np.asarray(m, dtype=np.float32)
                self.cache[it.key] = m
                if self.save is not None:
                    dest = self.save / it.affordance / it.object / f"{it.stem}.npy"
                    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, m)
        out = self.cache.pop(item.key)
        if isinstance(out, Exception):
            raise out
        return out


def _overlaps(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def _evaluate(args: argparse.Namespace) -> int:
    from spatialforge.afford.agd20k import AGD20KTestSet, score, write_report

    name = f"agd20k-{args.split.lower()}"
    out = args.out or _beside(args.checkpoint, name)
    inputs = [args.agd20k, *_checkpoint_inputs(args)]
    save = args.save_predictions
    if save is not None and _overlaps(save, out):
        raise ConfigError(f"--save-predictions {save}: must be a folder separate from the report folder {out} "
                          "(neither inside the other)")
    check_output_location(out, inputs)
    if save is not None:
        check_output_location(save, inputs, flag="--save-predictions")
    testset = AGD20KTestSet(args.agd20k, args.split)  # a scan of the test tree: nothing decoded yet
    claims = [(out, report_kind(name), "--out", _refuse_report(name))]
    if save is not None:
        claims.append((save, predictions_kind(testset.affordances), "--save-predictions", _refuse_earlier("the maps")))
    _claim(claims, inputs, args.overwrite)

    from spatialforge.afford.predict import AffordancePredictor

    override = {"clip_model": args.clip_model} if args.clip_model else {}
    predictor = AffordancePredictor.from_checkpoint(str(args.checkpoint), device=args.device,
                                                    batch_size=args.batch_size, **override)
    fetch = _BatchedPredictions(predictor, list(testset.items), args.batch_size, args.templates, save)
    report = score(testset, fetch, progress=not args.no_progress)
    report["checkpoint"] = str(args.checkpoint)
    report["templates"] = args.templates or predictor.model.config.templates
    _print_report(report, write_report(report, out, name=name))
    return 0


def _score(args: argparse.Namespace) -> int:
    from spatialforge.afford.agd20k import AGD20KTestSet, score, write_report

    name = args.name or f"agd20k-{args.split.lower()}"
    out = args.out or _beside(args.predictions, f"agd20k-{args.split.lower()}")
    inputs = [args.agd20k, args.predictions]
    check_output_location(out, inputs)
    testset = AGD20KTestSet(args.agd20k, args.split)
    if not args.predictions.is_dir():
        raise ConfigError(f"--predictions {args.predictions}: no such folder")
    _claim([(out, report_kind(name), "--out", _refuse_report(name))], inputs, args.overwrite)
    report = score(testset, args.predictions, progress=not args.no_progress)
    _print_report(report, write_report(report, out, name=name))
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


def _check_depth_args(args: argparse.Namespace) -> None:
    if args.depth is None:
        if args.hfov is not None:
            raise ConfigError("--hfov: only used with --depth")
        return
    if not args.depth.is_dir():
        raise ConfigError(f"--depth {args.depth}: no such folder")
    if not (args.depth / "camera.json").is_file() and args.hfov is None:
        raise ConfigError(f"--depth {args.depth}: no camera.json there; give the intrinsics in it or --hfov")


def _depth_file(folder: Path, name: str, image: Path) -> Path | None:
    for stem in dict.fromkeys((name, image.stem)):
        for ext in (".npy", ".png"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


def _lift_all(args: argparse.Namespace, name: str, image: Path, heatmaps: dict[str, Any]) -> list[str] | None:
    """Write ``<name>_<prompt>.3d.json`` for each prompt's heatmap; ``None`` when the image has no depth map."""
    import math

    import numpy as np

    from spatialforge.afford.lift import lift_affordance
    from spatialforge.core.types import CameraIntrinsics, RGBDScene
    from spatialforge.geometry.config import GeometryConfig
    from spatialforge.geometry.noise import estimate_depth_noise
    from spatialforge.geometry.scene_graph import scene_gravity
    from spatialforge.io.dataset import atomic_write_json
    from spatialforge.io.scene_folder import load_camera, load_depth

    path = _depth_file(args.depth, name, image)
    if path is None:
        return None
    depth = load_depth(path)
    h, w = next(iter(heatmaps.values())).shape
    if depth.shape != (h, w):
        raise ConfigError(f"--depth {path}: size {depth.shape[1]}x{depth.shape[0]} differs from the image's {w}x{h}")
    if not (depth > 0).any():
        raise ConfigError(f"--depth {path}: no valid depth (all zero)")
    if (args.depth / "camera.json").is_file():
        intr = load_camera(args.depth / "camera.json", w, h)
    else:
        f = (w / 2.0) / math.tan(math.radians(args.hfov) / 2.0)
        intr = CameraIntrinsics(f, f, (w - 1) / 2.0, (h - 1) / 2.0, w, h)
    scene = RGBDScene(name, np.zeros((h, w, 3), np.uint8), depth, np.zeros((h, w), np.int32), intr, ())
    gravity = scene_gravity(scene, GeometryConfig(), estimate_depth_noise(scene.depth), np.random.default_rng(0))
    written = []
    for prompt, heat in heatmaps.items():
        regions = lift_affordance(heat, scene.depth, intr, gravity)
        stem = f"{name}_{_slug(prompt)}"
        atomic_write_json(args.out / f"{stem}.3d.json", {
            "image": str(image), "prompt": prompt, "depth": str(path), "camera": intr.to_dict(),
            "frame": "gravity: metres, z up, x camera right, y forward, origin on the support plane below the camera",
            "gravity": {"source": gravity.source, "reason": gravity.reason,
                        "R_canonical_from_camera": gravity.R.tolist(), "t": gravity.t.tolist()},
            "regions": [r.to_dict() for r in regions],
        })
        written.append(stem)
    return written


def _predict(args: argparse.Namespace) -> int:
    prompts: list[str] = []
    for action in args.prompt:  # one map per distinct action ("Pour" and "pour" are the same file)
        if _slug(action) not in {_slug(q) for q in prompts}:
            prompts.append(action)
    files = _image_files(args.images)
    _check_depth_args(args)
    inputs = [*args.images, *_checkpoint_inputs(args), *([args.depth] if args.depth is not None else [])]
    _claim([(args.out, PREDICT_OUTPUT, "--out", _refuse_earlier("the heatmaps"))], inputs, args.overwrite)

    import numpy as np

    from spatialforge.afford.predict import AffordancePredictor
    from spatialforge.io.dataset import atomic_write_json
    from spatialforge.perception.image_io import ItemFailure, load_image_file
    from spatialforge.viz import render_heatmap

    override = {"clip_model": args.clip_model} if args.clip_model else {}
    predictor = AffordancePredictor.from_checkpoint(str(args.checkpoint), device=args.device,
                                                    batch_size=args.batch_size, **override)
    failed, written, written_3d, no_depth = [], [], [], []
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
                np.save(args.out / f"{stem}.npy", np.asarray(heat, dtype=np.float32))
                render_heatmap(img, heat, title=f"{f.name}: {prompt}").save(args.out / f"{stem}.png")
                written.append(stem)
            if args.depth is not None:
                lifted = _lift_all(args, name, f, dict(zip(prompts, maps, strict=True)))
                if lifted is None:
                    no_depth.append(str(f))
                    print(f"no depth map for {f} in {args.depth}: no 3D points", file=sys.stderr)
                else:
                    written_3d += lifted
    info = {"checkpoint": str(args.checkpoint), "prompts": prompts, "written": written, "failed": failed}
    if args.depth is not None:
        info.update(written_3d=written_3d, no_depth=no_depth)
    atomic_write_json(args.out / "predictions.json", info)
    print(f"wrote {len(written)} heatmaps (NPY + overlay PNG) to {args.out}"
          + (f", {len(written_3d)} 3D point files" if args.depth is not None else "")
          + (f"; {len(failed)} images failed" if failed else ""))
    if not written:
        raise RunFailedError(f"no heatmap was written: none of the {len(files)} images could be read")
    return 0


def run_afford(args: argparse.Namespace) -> int:
    return {"train": _train, "evaluate": _evaluate, "score": _score, "predict": _predict}[args.afford_command](args)
