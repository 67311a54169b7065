"""The perception runner: photos -> scene folders (the RGB-D input format) -> the shared engine.

Stages run stage by stage over chunks of ``batch_size`` images, each a batched model call. If a
batch call raises, the batch is retried one image at a time, so a model failure costs only the
image that caused it (recorded with reason ``model_error``). Every image ends with a record in
``OUT/perception/items/<image_id>.json`` (status ``ok``, ``filtered`` or ``failed``, with the
stage and reason), written atomically: a re-run skips recorded images (resume), except those a
model failed on, which are tried again. A model that cannot load stops the run with one error.

The settings that change the outputs (:meth:`PerceptionConfig.output_settings`) are stored in
``OUT/perception/config.json`` before the first image; a rerun whose settings differ is refused
with one line naming what changed (a new ``--out``, or ``--overwrite``, starts again), so one
folder never mixes the outputs of two configurations. In low-memory mode every model is released
after its stage, so at most one model is resident at any time (the CLIP shared by the filter and
the caption embedder, and the Florence-2 shared by the ``florence2-regions`` detector and the
captioner, are loaded twice per chunk). A detector with ``takes_prompts = False``
(``florence2-regions``) gets no tags: the tagging pass is skipped and ``filter.json`` records no tags.

Depth fits the photo: a depth stage that routes by scene type (``routes_by_scene``, Depth Anything
V2's indoor and outdoor checkpoints) gets each chunk's photos grouped by the filter's scene
decision, one call per type after ``select(type)`` (each checkpoint loads once per chunk; low
memory releases it before the other loads). Photos with no focal length from the user or EXIF and
none from the depth model then go to the ``focal_estimator`` stage (Depth Pro's FOV head by
default), unless the config assumes a field of view; a photo left with no intrinsics fails with
reason ``no_intrinsics``. A pipeline built without a ``focal_estimator`` stage gets the config's
(built only; it loads when a photo needs it).

A segmenter stage with ``from_detector = True`` (``sam3``) takes its masks from the detector
(``detect_and_segment``, SAM 3): the detector finds boxes and masks in one model, the detection
filters keep some, and the segmenter stage resizes the kept ones' masks (no second model loads).

Output per kept image: ``OUT/scenes/<image_id>/`` with ``image.png``, ``depth.npy``,
``instances.png``, ``camera.json``, ``objects.json`` (the RGB-D scene format, so geometry and QA
run unchanged) plus the intermediates ``filter.json``, ``detections.json`` and
``provenance.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from spatialforge.core.types import ObjectAnnotation, RGBDScene
from spatialforge.errors import ConfigError, SceneError, SpatialForgeError
from spatialforge.io.dataset import atomic_write_json
from spatialforge.io.scene_folder import save_scene
from spatialforge.perception.ambiguity import caption_groups, near_duplicate_groups
from spatialforge.perception.boxes import filter_detections
from spatialforge.perception.checks import count
from spatialforge.perception.config import DETECTOR_THRESHOLD, PerceptionConfig, describe_changes
from spatialforge.perception.image_io import ItemFailure
from spatialforge.perception.intrinsics import resolve_intrinsics
from spatialforge.perception.masks import clean_instance_mask, resolve_overlaps
from spatialforge.perception.types import Detections, ImageItem

__all__ = ["CONFIG_RECORD", "DETECTOR_THRESHOLD", "STAGE_ORDER", "PerceptionPipeline"]

STAGE_ORDER = ("filter", "detector", "captioner", "segmenter", "depth", "focal_estimator", "embedder")
CONFIG_RECORD = ("perception", "config.json")  # OUT/perception/config.json: the settings the records were made with


def _final(record_path: Path) -> bool:
    """A recorded image is done unless a model failed on it (those are tried again on a rerun)."""
    try:
        rec = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # a torn record: process the image again
    return not (rec.get("status") == "failed" and rec.get("reason") == "model_error")


class PerceptionPipeline:
    """Runs the perception stages over images and writes scene folders. Stages are injected."""

    def __init__(self, config: PerceptionConfig, stages: dict[str, Any]) -> None:
        if "focal_estimator" not in stages:  # not injected: the config's (it loads only when a photo needs it)
            from spatialforge.perception.backends import build_stage

            stages = {**stages, "focal_estimator": build_stage("focal_estimator", config.focal_estimator.backend,
                                                               **config.stage_kwargs("focal_estimator"))}
        missing = [s for s in STAGE_ORDER if s not in stages]
        if missing:
            raise SpatialForgeError(f"perception pipeline: missing stage(s) {', '.join(missing)}")
        detector, segmenter = stages["detector"], stages["segmenter"]
        if getattr(segmenter, "from_detector", False) and not callable(getattr(detector, "detect_and_segment", None)):
            raise SpatialForgeError(f"perception pipeline: the {getattr(segmenter, 'name', '?')} segmenter uses the "
                                    f"detector's masks, but the {getattr(detector, 'name', '?')} detector finds none "
                                    f"(it has no detect_and_segment)")
        self.config = config
        self.stages = stages
        self.timings: dict[str, float] = {s: 0.0 for s in STAGE_ORDER}
        self.images_seen: dict[str, int] = {s: 0 for s in STAGE_ORDER}
        self.peak_memory_mb: dict[str, float | None] = {s: None for s in STAGE_ORDER}

    @classmethod
    def from_config(cls, config: PerceptionConfig) -> PerceptionPipeline:
        """Build every stage from the registry (nothing is loaded until first use).

        Each stage gets :meth:`PerceptionConfig.stage_spec`; a CLIP embedder with the filter's model
        id (its own or inherited) and no other text batch size is the filter's CLIP stage itself; a
        ``florence2`` captioner of the ``florence2-regions`` detector's checkpoint uses the detector's
        model and image features (:func:`~spatialforge.perception.backends.florence2.share_model`).
        """
        from spatialforge.perception.backends import build_stage

        config.check_backends()
        stages: dict[str, Any] = {}
        for kind in STAGE_ORDER:
            spec = config.stage_spec(kind)
            shared = stages.get("filter")
            if (kind == "embedder" and spec.backend == "clip" and config.filter.backend == "clip"
                    and spec.model_id == config.filter.model_id and hasattr(shared, "embed_text")
                    and all(getattr(shared, k, None) == v for k, v in spec.options.items())):
                stages[kind] = shared  # one CLIP model serves both the filter and the caption embedder
                continue
            try:
                stages[kind] = build_stage(kind, spec.backend, **config.stage_kwargs(kind))
            except ConfigError as exc:
                raise ConfigError(f"[{kind}]: {exc}") from None
        from spatialforge.perception.backends.florence2 import share_model

        share_model(stages["detector"], stages["captioner"])  # one Florence-2 for the regions and their captions
        return cls(config, stages)

    # ------------------------------------------------------------------ stage execution
    def _timed(self, name: str, fn: Callable[[], Any], n: int) -> Any:
        """Run ``fn`` for ``n`` images of stage ``name``: time, images (``n`` may be 0) and peak memory."""
        torch = sys.modules.get("torch")
        cuda = torch is not None and torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        ok = False
        try:
            out = fn()
            ok = True
            return out
        finally:  # time spent counts either way; images count once, when their call succeeded
            self.timings[name] += time.perf_counter() - t0
            if ok:
                self.images_seen[name] += n
            if cuda:
                peak = torch.cuda.max_memory_allocated() / 2**20
                self.peak_memory_mb[name] = max(self.peak_memory_mb[name] or 0.0, peak)

    def _isolated(self, name: str, items: list[ImageItem], call: Callable[[list[ImageItem]], list[Any]],
                  failed: dict[str, ItemFailure], *, counted: bool = True) -> list[tuple[ImageItem, Any]]:
        """Run ``call`` on the batch; if it raises, retry each item alone and record the failures.

        ``counted=False``: a second pass of the same stage over the same images (the tagging pass of
        the filter): its time counts for the stage, its images do not count again.
        """
        if not items:
            return []
        self._load(name)  # a model that cannot load fails the run (not every image): fix it and rerun
        first_error: Exception | None = None
        per_image = 1 if counted else 0
        try:
            results = self._timed(name, lambda: call(items), per_image * len(items))
            if len(results) != len(items):
                raise SpatialForgeError(f"{name} returned {count(len(results), 'result')} for "
                                        f"{count(len(items), 'image')}")
            return list(zip(items, results, strict=True))
        except (SpatialForgeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a model failure: isolate the image(s) that cause it, record, continue
            first_error = exc
        if len(items) == 1:  # nothing to isolate: record it
            item = items[0]
            failed[item.image_id] = ItemFailure(item.image_id, item.source, name, "model_error",
                                                f"{item.source}: {name} failed: {type(first_error).__name__}: "
                                                f"{first_error}")
            return []
        out = []
        for item in items:
            try:
                out.append((item, self._timed(name, lambda it=item: call([it]), per_image)[0]))
            except (SpatialForgeError, KeyboardInterrupt):
                raise
            except Exception as exc:  # recorded per image with its reason; the run continues
                failed[item.image_id] = ItemFailure(item.image_id, item.source, name, "model_error",
                                                    f"{item.source}: {name} failed: {type(exc).__name__}: {exc}")
        return out

    def _load(self, name: str) -> None:
        try:
            self.stages[name].load()
        except (SpatialForgeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # turned into one clear line for the user; nothing is recorded per image
            stage = self.stages[name]
            raise SpatialForgeError(f"{name}: cannot load {getattr(stage, 'name', '?')} model "
                                    f"{getattr(stage, 'model_id', '?')!r}: {type(exc).__name__}: {exc}") from exc

    def _release(self, name: str | None = None) -> None:
        """Low-memory mode: release stage ``name``'s model (every stage's when None); otherwise nothing."""
        if self.config.low_memory:
            for stage in (self.stages.values() if name is None else (self.stages[name],)):
                stage.unload()

    # ------------------------------------------------------------------ one chunk
    def process_chunk(self, items: list[ImageItem]) -> tuple[list[tuple[RGBDScene, dict[str, Any]]],
                                                               dict[str, ItemFailure], dict[str, dict[str, Any]]]:
        """Run all stages on ``items``. Returns (scenes with their intermediates, failures, filtered)."""
        cfg = self.config
        failed: dict[str, ItemFailure] = {}
        filtered: dict[str, dict[str, Any]] = {}
        st = self.stages

        pairs = self._isolated("filter", items, lambda b: st["filter"]([i.image for i in b]), failed)
        decisions = {it.image_id: d for it, d in pairs}
        alive = [it for it, d in pairs if d.keep]
        for it, d in pairs:
            if not d.keep:
                filtered[it.image_id] = {"source": it.source, "decision": d.to_dict()}

        if getattr(st["detector"], "takes_prompts", True):
            tag_pairs = self._isolated(
                "filter", alive, lambda b: st["filter"].tags([i.image for i in b], cfg.vocabulary, cfg.tags_per_image),
                failed, counted=False)
            tags = {it.image_id: t for it, t in tag_pairs}
            alive = [it for it in alive if it.image_id in tags]
        else:  # a class-agnostic detector (florence2-regions) takes no prompts: no tagging pass
            tags = {it.image_id: [] for it in alive}
        self._release("filter")  # also when it is the embedder's CLIP: it loads again for the captions

        joint = getattr(st["segmenter"], "from_detector", False)  # SAM 3: the detector's own masks
        detect = st["detector"].detect_and_segment if joint else st["detector"]
        det_pairs = self._isolated(
            "detector", alive, lambda b: detect([i.image for i in b], [tags[i.image_id] for i in b]), failed)
        dets: dict[str, Detections] = {}
        found: dict[str, Any] = {}  # joint: the kept detections with their masks, for the segmenter stage
        for it, raw in det_pairs:
            w, h = it.size
            d, kept = self._filtered(raw.detections if joint else raw, w, h)
            if joint:
                found[it.image_id] = raw.select(kept)
            if len(d) == 0:
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "detector", "no_detections",
                                                  f"{it.source}: no object passed the detection filters "
                                                  f"({count(len(raw), 'raw box', 'raw boxes')})")
            else:
                dets[it.image_id] = d
        alive = [it for it in alive if it.image_id in dets]
        self._release("detector")

        cap_pairs = self._isolated("captioner", alive,
                                   lambda b: st["captioner"]([i.image for i in b], [dets[i.image_id] for i in b]),
                                   failed)
        alive = []
        for it, caps in cap_pairs:
            d = dets[it.image_id]
            if len(caps) != len(d):
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "captioner", "bad_model_output",
                                                  f"{it.source}: captioner returned {count(len(caps), 'caption')} "
                                                  f"for {count(len(d), 'box', 'boxes')}")
                continue
            cleaned = [" ".join(str(c).split()) or lab for c, lab in zip(caps, d.labels, strict=True)]
            dets[it.image_id] = d.with_captions(cleaned)
            alive.append(it)
        self._release("captioner")

        seg_pairs = self._isolated("segmenter", alive,
                                   lambda b: st["segmenter"]([i.image for i in b],
                                                             [found[i.image_id] if joint else dets[i.image_id].boxes
                                                              for i in b]),
                                   failed)
        instances: dict[str, np.ndarray] = {}
        for it, maskset in seg_pairs:
            d = dets[it.image_id]
            if len(maskset) != len(d) or maskset.masks.shape[1:] != it.image.shape[:2]:
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "segmenter", "model_error",
                                                  f"{it.source}: segmenter returned masks {maskset.masks.shape} for "
                                                  f"{count(len(d), 'box', 'boxes')} on a {it.size[0]}x{it.size[1]} "
                                                  f"image")
                continue
            inst = resolve_overlaps(maskset.masks, maskset.scores, d.boxes)
            inst, _dropped = clean_instance_mask(inst, cfg.min_mask_pixels)
            present = [i for i in range(1, len(d) + 1) if np.any(inst == i)]
            if not present:
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "segmenter", "no_masks",
                                                  f"{it.source}: no mask kept at least {cfg.min_mask_pixels} pixels")
                continue
            relabel = np.zeros(len(d) + 1, dtype=np.int32)
            relabel[present] = np.arange(1, len(present) + 1)
            instances[it.image_id] = relabel[inst]
            dets[it.image_id] = d.select([i - 1 for i in present])
        alive = [it for it in alive if it.image_id in instances]
        self._release("segmenter")

        # a focal length the user gave or EXIF holds makes the depth metric for that camera (Depth Pro rescales)
        def depth_call(b: list[ImageItem]) -> list[Any]:
            return st["depth"]([i.image for i in b],
                               focal_lengths_px=[i.focal_length_px if i.focal_source in ("user", "exif") else None
                                                 for i in b])

        # a depth stage that routes by scene type gets each type's photos together: each checkpoint loads once
        # per chunk, and in low-memory mode only one is resident (released between the groups)
        depth_pairs: list[tuple[ImageItem, Any]] = []
        for scene_type, group in self._scene_groups(alive, decisions).items():
            if scene_type is not None:
                st["depth"].select(scene_type)
            depth_pairs += self._isolated("depth", group, depth_call, failed)
            self._release("depth")
        order = {it.image_id: k for k, it in enumerate(alive)}
        depth_pairs.sort(key=lambda pair: order[pair[0].image_id])

        # no focal length from the user or EXIF and none from the depth model: the focal estimator, unless the
        # user asked to assume a field of view (then nothing is estimated)
        need = {it.image_id for it, pred in depth_pairs if it.focal_source not in ("user", "exif")
                and pred.focal_length_px is None and pred.hfov_deg is None} if cfg.assumed_hfov_deg is None else set()
        est_pairs = self._isolated("focal_estimator", [it for it, _ in depth_pairs if it.image_id in need],
                                   lambda b: st["focal_estimator"]([i.image for i in b]), failed)
        estimates = {it.image_id: e for it, e in est_pairs}
        self._release("focal_estimator")
        depth_pairs = [(it, pred) for it, pred in depth_pairs if it.image_id not in need or it.image_id in estimates]

        scenes: list[tuple[RGBDScene, dict[str, Any]]] = []
        emb_pairs = self._isolated("embedder", [it for it, _ in depth_pairs],
                                   lambda b: [st["embedder"].embed_text(list(dets[i.image_id].captions or ()))
                                              for i in b], failed)
        embeddings = {it.image_id: e for it, e in emb_pairs}
        self._release("embedder")
        for it, pred in depth_pairs:
            if it.image_id not in embeddings:
                continue
            try:
                scenes.append(self._scene(it, pred, dets[it.image_id], instances[it.image_id],
                                          embeddings[it.image_id], decisions.get(it.image_id), tags.get(it.image_id),
                                          estimates.get(it.image_id)))
            except SceneError as exc:
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "assemble", exc.reason, str(exc))
            except ValueError as exc:
                failed[it.image_id] = ItemFailure(it.image_id, it.source, "assemble", "bad_model_output",
                                                  f"{it.source}: {exc}")
        return scenes, failed, filtered

    def _filtered(self, raw: Detections, width: int, height: int) -> tuple[Detections, np.ndarray]:
        """``raw`` after the detection filters (:func:`filter_detections`), and where each kept one is in ``raw``."""
        cfg = self.config
        tagged = Detections(raw.boxes, raw.scores, tuple(str(i) for i in range(len(raw))))  # labels carry the index
        kept = filter_detections(tagged, width, height, score_threshold=cfg.score_threshold or 0.0,
                                 iou_threshold=cfg.iou_threshold, min_area_frac=cfg.min_area_frac,
                                 max_area_frac=cfg.max_area_frac, max_detections=cfg.max_objects)
        index = np.array([int(t) for t in kept.labels], dtype=np.int64)
        captions = None if raw.captions is None else tuple(raw.captions[i] for i in index)
        return Detections(kept.boxes, kept.scores, tuple(raw.labels[i] for i in index), captions), index

    def _scene_groups(self, items: list[ImageItem], decisions: dict[str, Any]) -> dict[str | None, list[ImageItem]]:
        """The photos per scene type for a depth stage that routes by it (``routes_by_scene``), else one group.

        A routing depth stage needs every photo's scene type from the filter; a filter that decides
        none stops the run (:class:`SpatialForgeError`, one line): it is a configuration problem.
        """
        depth = self.stages["depth"]
        if not getattr(depth, "routes_by_scene", False):
            return {None: items}
        groups: dict[str | None, list[ImageItem]] = {s: [] for s in depth.scene_types}
        for it in items:
            scene_type = getattr(decisions.get(it.image_id), "scene", None)
            if scene_type not in groups:
                raise SpatialForgeError(
                    f"{it.source}: the {getattr(depth, 'name', '?')} depth routes each photo by the filter's scene "
                    f"type ({', '.join(str(s) for s in groups)}), but the "
                    f"{getattr(self.stages['filter'], 'name', '?')} filter decided {scene_type!r}: set the depth "
                    f"option scene to one type for every photo, or use the CLIP filter")
            groups[scene_type].append(it)
        return {s: g for s, g in groups.items() if g}

    def _scene(self, it: ImageItem, pred: Any, det: Detections, inst: np.ndarray, emb: np.ndarray,
               decision: Any, tags: list[str] | None, estimate: Any = None) -> tuple[RGBDScene, dict[str, Any]]:
        cfg = self.config
        w, h = it.size
        if pred.depth.shape != (h, w):
            raise ValueError(f"depth model returned {pred.depth.shape[1]}x{pred.depth.shape[0]} for a {w}x{h} image")
        if pred.focal_length_px is not None or pred.hfov_deg is not None:  # the depth model's own (Depth Pro)
            est, est_by, est_model = pred, getattr(self.stages["depth"], "name", "depth"), pred.model
        else:  # the focal estimator's, if it ran
            est = estimate
            est_by, est_model = (None, None) if estimate is None else (estimate.method, estimate.model)
        try:
            intr, source = resolve_intrinsics(
                w, h,
                user_focal_px=it.focal_length_px if it.focal_source == "user" else None,
                exif_focal_px=it.focal_length_px if it.focal_source == "exif" else None,
                estimated_focal_px=None if est is None else est.focal_length_px,
                estimated_hfov_deg=None if est is None else est.hfov_deg, estimated_by=est_by,
                assumed_hfov_deg=cfg.assumed_hfov_deg)
        except SceneError as exc:
            raise SceneError(f"{it.source}: {exc}", reason=exc.reason) from None
        captions = list(det.captions or det.labels)
        # handed to the QA engine: the CLIP groups (it applies its own caption rules on top)
        similar = near_duplicate_groups(emb, cfg.caption_similarity)
        similar_sizes = Counter(similar)
        # every collision: CLIP groups and the QA engine's caption rules ("cup" / "cup", "cup" / "red cup")
        groups = caption_groups(captions, emb, cfg.caption_similarity)
        sizes = Counter(groups)
        objects, drop_ids = [], []
        for k, (cap, g, s) in enumerate(zip(captions, groups, similar, strict=True), start=1):
            if sizes[g] > 1 and cfg.ambiguity == "drop":
                drop_ids.append(k)
                continue
            objects.append(ObjectAnnotation(id=k, caption=cap, group=s if similar_sizes[s] > 1 else None))
        if drop_ids:
            inst = np.where(np.isin(inst, drop_ids), 0, inst)
        if not objects:
            raise SceneError(f"{it.source}: every object was dropped as an ambiguous caption", reason="ambiguous")
        provenance = {
            "source": "perception", "image": it.source, "image_meta": it.meta,
            "depth_model": pred.model, "depth_backend": getattr(self.stages["depth"], "name", "?"),
            "depth_max_range_m": getattr(pred, "max_range_m", None), "depth_info": dict(getattr(pred, "info", {})),
            "scene_type": getattr(decision, "scene", None), "scene_scores": getattr(decision, "scene_scores", None),
            "intrinsics_source": source, "intrinsics_model": est_model if source.startswith("estimated:") else None,
            "hfov_deg": round(intr.hfov_deg, 3), "focal_length_px": round(intr.fx, 3),
            "models": {k: {"backend": getattr(s, "name", "?"), "model_id": getattr(s, "model_id", "?")}
                       for k, s in self.stages.items()},
        }
        provenance["models"]["depth"]["model_id"] = pred.model  # the checkpoint that made this photo's depth
        scene = RGBDScene(scene_id=it.image_id, image=it.image, depth=pred.depth, instances=inst, intrinsics=intr,
                          objects=tuple(objects), provenance=provenance)
        extras = {
            "filter.json": {"decision": None if decision is None else decision.to_dict(), "tags": tags},
            "detections.json": [dict(d, id=i, ambiguity_group=groups[i - 1] if sizes[groups[i - 1]] > 1 else None,
                                     dropped_as_ambiguous=i in drop_ids)
                                for i, d in enumerate(det.to_list(), start=1)],
            "provenance.json": provenance,
        }
        return scene, extras

    # ------------------------------------------------------------------ the run
    def claim_output(self, out_dir: str | Path) -> None:
        """Record this config's output settings in ``OUT/perception/config.json``, or refuse to resume.

        Raises :class:`SpatialForgeError` (one line, naming what changed) when ``out_dir`` holds
        perception records made with other settings, or records without the settings they were
        made with; nothing is written or loaded then.
        """
        out_dir = Path(out_dir)
        path = out_dir.joinpath(*CONFIG_RECORD)
        now = {"format": "spatialforge-perception/1", "fingerprint": self.config.fingerprint(),
               "settings": self.config.output_settings()}
        restart = "use a new --out, or --overwrite to start again"
        if path.is_file():
            try:
                prev = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise SpatialForgeError(f"{path}: unreadable perception config record ({exc}); {restart}") from None
            if not isinstance(prev, dict) or prev.get("fingerprint") != now["fingerprint"]:
                old = prev.get("settings") if isinstance(prev, dict) else None
                changes = describe_changes(old, now["settings"]) if isinstance(old, dict) else []
                shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
                raise SpatialForgeError(
                    f"{out_dir}: cannot resume: its photos were processed with another perception config "
                    f"({shown or 'written by another spatialforge version'}); {restart}")
            return
        items_dir = out_dir / "perception" / "items"
        if items_dir.is_dir() and any(items_dir.glob("*.json")):
            raise SpatialForgeError(f"{out_dir}: cannot resume: it holds perception records but not the perception "
                                    f"config they were made with ({path} is missing); {restart}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, now)

    def run(self, items: Iterable[ImageItem | ItemFailure], out_dir: str | Path, *, progress: bool = True,
            total: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Process every item (resuming: recorded images are skipped); returns the perception report.

        First :meth:`claim_output`: a folder whose records were made with another config is refused.
        """
        out_dir = Path(out_dir)
        self.claim_output(out_dir)
        scenes_dir, items_dir = out_dir / "scenes", out_dir / "perception" / "items"
        scenes_dir.mkdir(parents=True, exist_ok=True)
        items_dir.mkdir(parents=True, exist_ok=True)
        log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        bar = tqdm(total=total, desc="perception", unit="img", disable=not progress, file=sys.stderr)
        resumed = 0
        chunk: list[ImageItem] = []
        start = time.perf_counter()

        def record(image_id: str, rec: dict[str, Any]) -> None:
            atomic_write_json(items_dir / f"{image_id}.json", rec)

        def flush() -> None:
            if not chunk:
                return
            scenes, failed, filtered = self.process_chunk(chunk)
            for scene, extras in scenes:
                folder = save_scene(scene, scenes_dir, depth_format="npy")
                for name, payload in extras.items():
                    atomic_write_json(folder / name, payload)
                record(scene.scene_id, {"status": "ok", "source": scene.provenance["image"],
                                        "objects": len(scene.objects),
                                        "intrinsics_source": scene.provenance["intrinsics_source"]})
            for image_id, f in failed.items():
                log(f"failed: {f.message}")
                record(image_id, {"status": "failed"} | f.to_dict())
            for image_id, info in filtered.items():
                record(image_id, {"status": "filtered", "reason": "filtered", "stage": "filter"} | info)
            bar.update(len(chunk))
            chunk.clear()
            self._release()

        seen: dict[str, str] = {}
        for item in items:
            if item.image_id in seen:
                raise SpatialForgeError(f"{item.source}: image id {item.image_id!r} is also the id of "
                                        f"{seen[item.image_id]} (ids must be unique: rename one)")
            seen[item.image_id] = item.source
            done = items_dir / f"{item.image_id}.json"
            if done.is_file() and _final(done):
                resumed += 1
                bar.update(1)
                continue
            if isinstance(item, ItemFailure):
                log(f"failed: {item.message}")
                record(item.image_id, {"status": "failed"} | item.to_dict())
                bar.update(1)
                continue
            chunk.append(item)
            if len(chunk) >= self.config.batch_size:
                flush()
        flush()
        bar.close()
        for stage in self.stages.values():
            stage.unload()
        return self.report(out_dir, time.perf_counter() - start, resumed)

    def report(self, out_dir: Path, wall: float, resumed: int) -> dict[str, Any]:
        records = [json.loads(p.read_text()) for p in sorted((out_dir / "perception" / "items").glob("*.json"))]
        status = Counter(r["status"] for r in records)
        reasons = Counter(r.get("reason", "?") for r in records if r["status"] == "failed")
        per_stage = {}
        for s in STAGE_ORDER:
            n, t = self.images_seen[s], self.timings[s]
            per_stage[s] = {"backend": getattr(self.stages[s], "name", "?"),
                            "model_id": getattr(self.stages[s], "model_id", "?"), "images": n,
                            "seconds": round(t, 4), "images_per_s": round(n / t, 3) if t > 0 else None,
                            "peak_gpu_memory_mb": None if self.peak_memory_mb[s] is None
                            else round(self.peak_memory_mb[s], 1)}
            if isinstance(getattr(self.stages[s], "checkpoints", None), dict):  # routed by scene type
                per_stage[s]["checkpoints"] = dict(self.stages[s].checkpoints)
        report = {
            "config": self.config.to_dict(),
            "images": len(records),
            "ok": status.get("ok", 0),
            "filtered": status.get("filtered", 0),
            "failed": status.get("failed", 0),
            "failed_by_reason": dict(sorted(reasons.items())),
            "intrinsics_sources": dict(Counter(r.get("intrinsics_source") for r in records if r["status"] == "ok")),
            "resumed": resumed,
            "stages": per_stage,
            "wall_s": round(wall, 3),
            "failures": [r for r in records if r["status"] == "failed"],
        }
        atomic_write_json(out_dir / "perception" / "report.json", report)
        return report

