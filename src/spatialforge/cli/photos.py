"""``spatialforge generate`` on photos: the perception options and the perception config they make.

Every value is checked when the command line is parsed (``argument --batch-size: must be an
integer >= 1, got '0'``); :func:`perception_config` then merges the flags over the
``--perception-config`` file (or the defaults) and checks the result as a whole, naming the flag a
problem comes from, before anything is written or loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from spatialforge.cli.options import DEVICE_HELP, DTYPES, comma_list, device, fraction, int_at_least, number_at_least
from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = ["add_photo_options", "is_photo_folder", "perception_config", "photo_source"]

_FROM_FILE = "or the --perception-config file's"
# flags that set a stage's backend options: stage -> {option: flag}
_OPTION_FLAGS = {"filter": {"keep_labels": "--keep-labels", "drop_labels": "--drop-labels",
                            "threshold": "--filter-threshold"},
                 "detector": {"text_threshold": "--text-threshold"}}


def _hfov(text: str) -> float | str:
    """An argparse type: degrees from 10 to 150, or ``none``."""
    if text.strip().lower() == "none":
        return "none"
    return number_at_least(10.0, high=150.0)(text)


_hfov.__name__ = "degrees"


def add_photo_options(p: argparse.ArgumentParser) -> None:
    """The photo-path options of ``generate`` (perception stages)."""
    from spatialforge.perception.backends import BACKENDS, DEFAULT_MODELS
    from spatialforge.perception.config import PerceptionConfig

    defaults = PerceptionConfig()
    g = p.add_argument_group("photos (perception stages; need `pip install 'spatialforge[models]'`)")
    g.add_argument("--hf-dataset", default=None,
                   help="a Hugging Face dataset name or local path to read photos from (default: none, the photos "
                        "of the folder argument)")
    g.add_argument("--split", default="train", help="the dataset split to read (with --hf-dataset)")
    g.add_argument("--streaming", action="store_true",
                   help="with --hf-dataset: read the dataset row by row instead of downloading and converting it "
                        "first (ids and results are the same; see docs/photos.md, Sources at scale)")
    g.add_argument("--webdataset", action="append", default=None, metavar="SHARDS",
                   help="WebDataset tar shards to read photos from: a path, a folder of shards, a brace pattern "
                        "such as 'shards-{000..099}.tar', or a file:// or http(s):// URL; repeat to add more "
                        "(default: none)")
    g.add_argument("--parquet", type=Path, default=None, metavar="TABLE",
                   help="a Parquet table (or a folder of them) whose --image-column holds image bytes or paths/URLs "
                        "(default: none)")
    g.add_argument("--image-column", default="image",
                   help="the column (Parquet, Hugging Face dataset) or WebDataset field (e.g. jpg) that holds the "
                        "photos; for WebDataset 'image' takes a sample's first image field (jpg, jpeg, png, ...)")
    g.add_argument("--id-column", default=None,
                   help="Parquet / Hugging Face: the column with each photo's id (default: none, the row's position: "
                        "<table>-<row> or <split>-<index>; an empty id: the content hash)")
    g.add_argument("--focal-column", default=None,
                   help="Parquet / Hugging Face: a column with each photo's focal length in pixels (default: none; "
                        "--focal-length wins over it, it wins over EXIF)")
    g.add_argument("--path-root", type=Path, default=None,
                   help="Parquet / Hugging Face: the folder that paths in the image column may point into (default: "
                        "the table's folder; relative paths are always resolved against the table's folder)")
    g.add_argument("--limit", type=int_at_least(1), default=None, help="process at most N photos (default: all)")
    g.add_argument("--perception-config", type=Path, default=None,
                   help="a .toml or .json perception config (backends, model ids, options; see docs/photos.md); "
                        "flags override it (default: the built-in settings)")
    for stage in ("filter", "detector", "captioner", "segmenter", "depth", "embedder"):
        backend = getattr(defaults, stage).backend
        model = {"embedder": "the CLIP filter's model, else ",
                 "detector": "the Florence-2 captioner's model, else "}.get(stage, "the backend's own, ") + \
            f"{DEFAULT_MODELS[backend]} for {backend}"
        g.add_argument(f"--{stage}", default=None, choices=tuple(BACKENDS[stage]),
                       help=f"{stage} backend (default: {backend}, {_FROM_FILE})")
        if stage == "depth":
            model = (f"the backend's own: {backend} routes each photo to --depth-indoor-model or "
                     f"--depth-outdoor-model by the filter's scene type, and a model given here is one checkpoint "
                     f"for every photo; {DEFAULT_MODELS['zoedepth']} for zoedepth, {DEFAULT_MODELS['depth-pro']} "
                     f"for depth-pro")
        g.add_argument(f"--{stage}-model", default=None,
                       help=f"model id or local folder for the {stage} (default: {model}; {_FROM_FILE})")
    g.add_argument("--depth-scene", default=None, choices=("auto", "indoor", "outdoor"),
                   help="depth-anything-v2: 'auto' routes each photo to the indoor (max 20 m) or outdoor (max 80 m) "
                        "checkpoint by the CLIP filter's indoor/outdoor decision; 'indoor' / 'outdoor' use that "
                        "checkpoint for every photo, as --filter none needs (default: auto, "
                        f"{_FROM_FILE})")
    g.add_argument("--depth-indoor-model", default=None,
                   help="depth-anything-v2: the checkpoint for indoor photos (default: "
                        f"depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf, {_FROM_FILE})")
    g.add_argument("--depth-outdoor-model", default=None,
                   help="depth-anything-v2: the checkpoint for outdoor photos (default: "
                        f"depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf, {_FROM_FILE})")
    g.add_argument("--depth-range-margin", type=number_at_least(0.0, strict=True, high=1.0), default=None,
                   help="depth at or beyond this fraction (above 0, at most 1) of the depth model's maximum range "
                        "(depth-anything-v2: its max_depth; zoedepth: its head's; depth-pro: 100 m) is no "
                        f"measurement and is made invalid, e.g. sky (default: 0.97, {_FROM_FILE})")
    g.add_argument("--focal-estimator", default=None, choices=tuple(BACKENDS["focal_estimator"]),
                   help="how a photo with no focal length (none from --focal-length, EXIF or the depth model) gets "
                        "one: depth-pro estimates it with Depth Pro's field-of-view head (recorded as "
                        "estimated:depth-pro); none leaves such a photo out (reason no_intrinsics) unless "
                        f"--assume-hfov is given, which replaces the estimator (default: depth-pro, {_FROM_FILE})")
    g.add_argument("--focal-estimator-model", default=None,
                   help="model id or local folder for the focal estimator (default: "
                        f"{DEFAULT_MODELS['depth-pro']} for depth-pro; {_FROM_FILE})")
    g.add_argument("--keep-labels", type=comma_list, default=None,
                   help="filter: comma-separated CLIP prompts of photos to keep (default: indoor/outdoor scenes)")
    g.add_argument("--drop-labels", type=comma_list, default=None,
                   help="filter: comma-separated CLIP prompts of photos to drop (default: close-ups, drawings, ...)")
    g.add_argument("--filter-threshold", type=fraction, default=None,
                   help="filter: keep a photo when the keep labels' probability mass is at least this, from 0 to 1; "
                        f"0 keeps every photo and still picks its detection prompts (default: 0.5, {_FROM_FILE})")
    g.add_argument("--device", type=device, default=None, help=f"{DEVICE_HELP} (default: auto, {_FROM_FILE})")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help=f"model precision (default: float32, {_FROM_FILE})")
    g.add_argument("--low-memory", action="store_true",
                   help="keep one model in memory at a time: each is released after its stage")
    g.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help=f"photos per model call (default: 8, {_FROM_FILE})")
    g.add_argument("--focal-length", type=number_at_least(0.0, strict=True), default=None,
                   help="focal length in pixels for every photo (default: EXIF, else the depth model's estimate, "
                        "else --assume-hfov if given, else the focal estimator's)")
    g.add_argument("--assume-hfov", type=_hfov, default=None,
                   help="assume this horizontal FOV in degrees (10 to 150) for photos with no focal length from the "
                        "user, EXIF or the depth model, instead of estimating it (recorded as assumed:hfov_DEG); "
                        f"'none' assumes nothing (default: none: never assume, {_FROM_FILE})")
    g.add_argument("--score-threshold", type=fraction, default=None,
                   help="detection score threshold from 0 to 1; for Grounding DINO both its box and text "
                        "threshold (default: the detector's own, Grounding DINO 0.3 / text 0.25, OWLv2 0.2, "
                        "SAM 3 0.5); florence2-regions gives no scores and takes no threshold")
    g.add_argument("--text-threshold", type=fraction, default=None,
                   help="Grounding DINO: the matched prompt's token probability a box needs, from 0 to 1 "
                        "(default: --score-threshold when given, else 0.25)")
    g.add_argument("--caption-similarity", type=fraction, default=None,
                   help="CLIP text cosine from 0 to 1 at or above which two captions name the same thing "
                        f"(default: 0.92, {_FROM_FILE})")
    g.add_argument("--drop-ambiguous", action="store_true",
                   help="drop objects whose captions collide (CLIP-similar, or the same name for the QA engine) "
                        "instead of telling them apart by position")
    g.add_argument("--vocabulary", type=Path, default=None,
                   help="text file of detection tags, one per line, from which CLIP picks each photo's prompts "
                        "for a prompted detector (grounding-dino, owlv2, sam3); florence2-regions takes no prompts "
                        "(default: the built-in 1203 LVIS category names)")


def is_photo_folder(folder: Path) -> bool:
    """Whether ``folder`` is a photo input (image files, WebDataset shards or Parquet tables in it, and no RGB-D
    scene folders)."""
    from spatialforge.io.scene_folder import find_scene_dirs
    from spatialforge.pipeline.sources import FolderSource

    if not folder.is_dir():
        return False
    has_scenes = any((d / "objects.json").exists() for d in find_scene_dirs(folder))
    return not has_scenes and any(FolderSource.kinds(folder).values())


def photo_source(args: argparse.Namespace) -> Any:
    """The :class:`~spatialforge.pipeline.sources.PhotoSource` the command line names, or None for a folder of
    RGB-D scenes.

    Exactly one of the folder argument, ``--hf-dataset``, ``--webdataset`` and ``--parquet``; a
    bad combination is one :class:`SpatialForgeError` line. Its local inputs for the output-folder
    checks are ``photo_source(args).inputs()``.
    """
    from spatialforge.pipeline.sources import PhotoSource

    named = {"a folder": args.scenes_dir, "--hf-dataset": args.hf_dataset, "--webdataset": args.webdataset,
             "--parquet": args.parquet}
    given = [k for k, v in named.items() if v is not None]
    if not given:
        raise SpatialForgeError("give a folder (RGB-D scenes, or photos / WebDataset shards / Parquet tables), "
                                "--hf-dataset NAME, --webdataset SHARDS or --parquet TABLE")
    if len(given) > 1:
        raise SpatialForgeError(f"give one source of inputs, not {' and '.join(given)}")
    if args.scenes_dir is not None:
        if not args.scenes_dir.is_dir():
            raise SpatialForgeError(f"{args.scenes_dir}: no such folder")
        if not is_photo_folder(args.scenes_dir):
            return None
    return PhotoSource(folder=args.scenes_dir, hf_dataset=args.hf_dataset, split=args.split,
                       image_column=args.image_column, limit=args.limit,
                       webdataset=None if args.webdataset is None else tuple(args.webdataset), parquet=args.parquet,
                       streaming=args.streaming, id_column=args.id_column, focal_column=args.focal_column,
                       path_root=args.path_root)


def _read_vocabulary(path: Path) -> tuple[str, ...]:
    try:
        vocab = tuple(w.strip() for w in path.read_text().splitlines() if w.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--vocabulary {path}: cannot read the vocabulary ({exc})") from None
    if not vocab:
        raise ConfigError(f"--vocabulary {path}: the vocabulary file has no tags")
    return vocab


def _depth_options(args: argparse.Namespace, spec: Any, flagged: list[str]) -> Any:
    """The depth stage with the --depth-* option flags on top (``flagged`` gets the flags given)."""
    from spatialforge.perception.config import StageSpec

    given = {"scene": ("--depth-scene", args.depth_scene),
             "indoor_model": ("--depth-indoor-model", args.depth_indoor_model),
             "outdoor_model": ("--depth-outdoor-model", args.depth_outdoor_model),
             "range_margin": ("--depth-range-margin", args.depth_range_margin)}
    given = {k: v for k, v in given.items() if v[1] is not None}
    routing = [flag for k, (flag, _) in given.items() if k != "range_margin"]
    if routing and spec.backend != "depth-anything-v2":
        raise ConfigError(f"{', '.join(routing)} {'needs' if len(routing) == 1 else 'need'} --depth "
                          f"depth-anything-v2 (the depth is {spec.backend!r}, which does not route by scene type)")
    if not given:
        return spec
    flagged += [flag for flag, _ in given.values()]
    return StageSpec(spec.backend, spec.model_id, {**spec.options, **{k: v for k, (_, v) in given.items()}})


def perception_config(args: argparse.Namespace) -> Any:
    """The perception config: the file given (or the defaults), then every flag given on top.

    The result is checked as a whole, and every stage is built (which loads nothing), so every
    option value is checked before the command writes anything; an error names the flag it comes
    from (or the config file).
    """
    from spatialforge.perception.backends import NO_MODEL_BACKENDS, backend_flag
    from spatialforge.perception.config import STAGES, PerceptionConfig, StageSpec, load_perception_config

    source = f"--perception-config {args.perception_config}" if args.perception_config else "the built-in settings"
    base = load_perception_config(args.perception_config) if args.perception_config else PerceptionConfig()
    changes: dict[str, Any] = {}
    flagged: dict[str, list[str]] = {s: [] for s in STAGES}  # the flags that changed each stage
    for s in STAGES:
        spec, backend, model = getattr(base, s), getattr(args, s), getattr(args, f"{s}_model")
        flag = "--" + s.replace("_", "-")  # --focal-estimator
        if backend is not None:
            flagged[s].append(f"{flag} {backend}")
            if backend != spec.backend:
                spec = StageSpec(backend)  # another backend: the old one's model id and options do not apply
        if model is not None:
            if spec.backend in NO_MODEL_BACKENDS:
                raise ConfigError(f"{flag}-model: the {s.replace('_', ' ')} backend {spec.backend!r} loads no model "
                                  f"(give another {flag}, or no {flag}-model)")
            flagged[s].append(f"{flag}-model")
            spec = StageSpec(spec.backend, model, spec.options)
        changes[s] = spec
    # SAM 3 detects and segments in one model: the segmenter follows a --detector into or out of sam3
    if (args.detector is not None and args.segmenter is None and args.segmenter_model is None
            and (changes["detector"].backend == "sam3") != (changes["segmenter"].backend == "sam3")):
        changes["segmenter"] = StageSpec("sam3") if changes["detector"].backend == "sam3" \
            else PerceptionConfig().segmenter
        flagged["segmenter"].append(f"--detector {args.detector}")
    options = {"filter": {"keep_labels": None if args.keep_labels is None else list(args.keep_labels),
                          "drop_labels": None if args.drop_labels is None else list(args.drop_labels),
                          "threshold": args.filter_threshold},
               "detector": {"text_threshold": args.text_threshold}}
    for s, needs in (("filter", "clip"), ("detector", "grounding-dino")):
        given = {k: v for k, v in options[s].items() if v is not None}
        if not given:
            continue
        flags = [_OPTION_FLAGS[s][k] for k in given]
        if changes[s].backend != needs:
            raise ConfigError(f"{', '.join(flags)} {'needs' if len(flags) == 1 else 'need'} --{s} {needs} "
                              f"(the {s} is {changes[s].backend!r})")
        flagged[s] += flags
        changes[s] = StageSpec(changes[s].backend, changes[s].model_id, {**changes[s].options, **given})
    changes["depth"] = _depth_options(args, changes["depth"], flagged["depth"])
    if args.vocabulary is not None:
        changes["vocabulary"] = _read_vocabulary(args.vocabulary)
    vocab = changes.get("vocabulary", base.vocabulary)
    if (changes["filter"].backend == "none" and len(set(vocab)) > base.tags_per_image
            and backend_flag("detector", changes["detector"].backend, "takes_prompts")):
        where = "--filter none" if args.filter == "none" else f"filter 'none' ({source})"
        raise ConfigError(
            f"{where} has no tagger, so every photo would get the whole vocabulary of {len(set(vocab))} tags as "
            f"detection prompts (at most {base.tags_per_image} per photo): give a --vocabulary file of at most "
            f"{base.tags_per_image} tags, or keep every photo with --filter clip --filter-threshold 0 (CLIP then "
            f"still picks each photo's tags)")
    if args.score_threshold is not None and not backend_flag("detector", changes["detector"].backend, "gives_scores"):
        name = changes["detector"].backend
        raise ConfigError(f"--score-threshold: the {name} detector gives no scores (every box scores 1.0), so a "
                          f"threshold would keep every box or none: leave it out, or choose --detector "
                          f"grounding-dino, owlv2 or sam3")
    if args.assume_hfov is not None:
        changes["assumed_hfov_deg"] = None if args.assume_hfov == "none" else args.assume_hfov
    if args.low_memory:
        changes["low_memory"] = True
    if args.drop_ambiguous:
        changes["ambiguity"] = "drop"
    for key in ("device", "dtype", "batch_size", "score_threshold", "caption_similarity"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.focal_length is not None:
        changes["focal_length_px"] = args.focal_length
    try:
        config = replace(base, **changes)
        config.check()  # builds every stage (which checks its options), loads nothing
    except ConfigError as exc:
        text = str(exc)
        stage = next((s for s in STAGES if text.startswith(f"[{s}]")), None)
        culprits = flagged[stage] if stage is not None and flagged[stage] else [source]
        raise ConfigError(f"{', '.join(culprits)}: {text}") from None
    return config
