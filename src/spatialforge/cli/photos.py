"""``spatialforge generate`` on photos: the perception options and the perception config they make."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from spatialforge.errors import SpatialForgeError

__all__ = ["add_photo_options", "is_photo_folder", "perception_config"]


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_photo_options(p: argparse.ArgumentParser) -> None:
    """The photo-path options of ``generate`` (perception stages)."""
    g = p.add_argument_group("photos (perception stages; need `pip install 'spatialforge[models]'`)")
    g.add_argument("--hf-dataset", default=None, help="a Hugging Face dataset name or local path instead of a folder")
    g.add_argument("--split", default="train")
    g.add_argument("--image-column", default="image")
    g.add_argument("--limit", type=int, default=None, help="process at most N images")
    g.add_argument("--perception-config", type=Path, default=None,
                   help="a .toml or .json perception config (backends, model ids, options); flags override it")
    for stage, default, choices in (("filter", "clip", "clip, none"),
                                    ("detector", "grounding-dino", "grounding-dino, owlv2"),
                                    ("captioner", "florence2", "florence2, label"),
                                    ("segmenter", "sam2", "sam2, sam, box"),
                                    ("depth", "depth-anything-v2", "depth-anything-v2, depth-pro"),
                                    ("embedder", "clip", "clip, none")):
        g.add_argument(f"--{stage}", default=None, help=f"{stage} backend: {choices} (default {default})")
        g.add_argument(f"--{stage}-model", default=None, help=f"model id or local folder for the {stage}")
    g.add_argument("--keep-labels", default=None,
                   help="filter: comma-separated CLIP prompts of photos to keep (default: indoor/outdoor scenes)")
    g.add_argument("--drop-labels", default=None,
                   help="filter: comma-separated CLIP prompts of photos to drop (default: close-ups, drawings, ...)")
    g.add_argument("--filter-threshold", type=float, default=None,
                   help="filter: keep a photo when the keep labels' probability mass is at least this (default 0.5)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or mps (default auto)")
    g.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"), help="default float32")
    g.add_argument("--low-memory", action="store_true", help="load one model at a time and release it after use")
    g.add_argument("--batch-size", type=int, default=None, help="images per model call (default 8)")
    g.add_argument("--focal-length", type=float, default=None, help="focal length in pixels for every photo")
    g.add_argument("--assume-hfov", default=None,
                   help="horizontal FOV (deg) assumed when neither the user, EXIF nor the depth model gives "
                        "intrinsics; 'none' rejects such photos (default 60)")
    g.add_argument("--score-threshold", type=float, default=None,
                   help="detection score threshold (default: the detector's own, Grounding DINO 0.3, OWLv2 0.2)")
    g.add_argument("--caption-similarity", type=float, default=None,
                   help="CLIP text cosine above which two captions count as the same thing (default 0.92)")
    g.add_argument("--drop-ambiguous", action="store_true",
                   help="drop near-duplicate captions instead of disambiguating them spatially")
    g.add_argument("--vocabulary", type=Path, default=None, help="text file of detection tags, one per line")


def is_photo_folder(folder: Path) -> bool:
    from spatialforge.io.scene_folder import find_scene_dirs
    from spatialforge.perception.image_io import list_image_files

    if not folder.is_dir():
        return False
    has_scenes = any((d / "objects.json").exists() for d in find_scene_dirs(folder))
    return not has_scenes and bool(list_image_files(folder))


def perception_config(args):
    """The perception config: the file given (or the defaults), then every flag given on top."""
    from spatialforge.perception.config import STAGES, PerceptionConfig, StageSpec, load_perception_config

    base = load_perception_config(args.perception_config) if args.perception_config else PerceptionConfig()
    changes: dict = {}
    for s in STAGES:
        spec, backend, model = getattr(base, s), getattr(args, s), getattr(args, f"{s}_model")
        if backend is not None and backend != spec.backend:
            spec = StageSpec(backend)  # another backend: the old one's model id and options do not apply
        if model is not None:
            spec = StageSpec(spec.backend, model, spec.options)
        changes[s] = spec
    filter_opts = {"keep_labels": list(_split(args.keep_labels) or ()) or None,
                   "drop_labels": list(_split(args.drop_labels) or ()) or None,
                   "threshold": args.filter_threshold}
    filter_opts = {k: v for k, v in filter_opts.items() if v is not None}
    if filter_opts:
        if changes["filter"].backend != "clip":
            raise SpatialForgeError("--keep-labels, --drop-labels and --filter-threshold need --filter clip")
        f = changes["filter"]
        changes["filter"] = StageSpec(f.backend, f.model_id, {**f.options, **filter_opts})
    if args.vocabulary is not None:
        try:
            vocab = tuple(w.strip() for w in args.vocabulary.read_text().splitlines() if w.strip())
        except OSError as exc:
            raise SpatialForgeError(f"{args.vocabulary}: cannot read vocabulary ({exc})") from exc
        if not vocab:
            raise SpatialForgeError(f"{args.vocabulary}: the vocabulary file has no tags")
        changes["vocabulary"] = vocab
    if args.assume_hfov is not None:
        if str(args.assume_hfov).lower() == "none":
            changes["assumed_hfov_deg"] = None
        else:
            try:
                changes["assumed_hfov_deg"] = float(args.assume_hfov)
            except ValueError:
                raise SpatialForgeError(f"--assume-hfov must be degrees or 'none', got {args.assume_hfov!r}") from None
    if args.low_memory:
        changes["low_memory"] = True
    if args.drop_ambiguous:
        changes["ambiguity"] = "drop"
    for key in ("device", "dtype", "batch_size", "score_threshold", "caption_similarity"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.focal_length is not None:
        changes["focal_length_px"] = args.focal_length
    return replace(base, **changes)
