"""The perception runner: photos -> scene folders (the RGB-D input format) -> the shared engine.

Stages run stage by stage over chunks of ``batch_size`` images, each a batched model call. If a
batch call raises, the batch is retried one image at a time, so a model failure costs only the
image that caused it (recorded with reason ``model_error``). Every image ends with a record in
``OUT/perception/items/<image_id>.json`` (status ``ok``, ``filtered``, ``failed`` with the
stage and reason, or ``duplicate``), written atomically: a re-run skips recorded images (resume),
except those a model failed on or whose download failed (:data:`RETRIED_REASONS`), which are
tried again. A model that cannot load stops the run with one error.

Items not read yet (:class:`~spatialforge.perception.image_io.SourceItem`, what the photo sources
yield) are read only when they have no final record: their bytes are hashed (SHA-256, recorded as
``sha256``) before anything is decoded, and an item whose bytes equal an earlier item's is recorded
as ``duplicate`` (``duplicate_of`` the first id, in the source's order) and never decoded. On a
rerun the hashes of recorded items come from their records, so the same items are duplicates.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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
from spatialforge.perception.image_io import ItemFailure, SourceItem
from spatialforge.perception.intrinsics import resolve_intrinsics
from spatialforge.perception.masks import clean_instance_mask, resolve_overlaps
from spatialforge.perception.types import Detections, ImageItem

__all__ = [
    "CONFIG_RECORD",
    "DETECTOR_THRESHOLD",
    "RETRIED_REASONS",
    "STAGE_ORDER",
    "STEPS",
    "ChunkExecutor",
    "ChunkState",
    "PerceptionPipeline",
    "done_record",
]

STAGE_ORDER = ("filter", "detector", "captioner", "segmenter", "depth", "focal_estimator", "embedder")
STEPS = ("decode", *STAGE_ORDER)  # what a chunk goes through: decoding (CPU), then the model stages in order
CONFIG_RECORD = ("perception", "config.json")  # OUT/perception/config.json: the settings the records were made with


#: Runs chunks of photos through every step and yields ``(chunk, (scenes, failed, filtered))`` per chunk.
ChunkExecutor = Callable[[Iterable[list[Any]]], Iterator[tuple[list[Any], Any]]]

RETRIED_REASONS = ("model_error", "fetch_failed")  # failures a rerun tries again (a model, a download)


def done_record(record_path: Path) -> dict[str, Any] | None:
    """The record of an image a rerun skips, or None: no record, a torn one, or a failure of :data:`RETRIED_REASONS`."""
    try:
        rec = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # no record, or a torn one: process the image again
    if not isinstance(rec, dict) or (rec.get("status") == "failed" and rec.get("reason") in RETRIED_REASONS):
        return None
    return rec


@dataclass
class ChunkState:
    """One chunk of photos between stages: the photos still ``alive`` and what each stage found so far.

    Plain data (picklable): a runner may run each stage in another process (Ray Data actors) and
    pass the chunk on. ``failed`` and ``filtered`` collect the photos that left, keyed by image id.
    """

    items: list[ImageItem | SourceItem]  # as the chunk was cut; the ``decode`` step makes ``alive``
    alive: list[ImageItem] = field(default_factory=list)
    failed: dict[str, ItemFailure] = field(default_factory=dict)
    filtered: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)
    dets: dict[str, Detections] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)  # a segmenting detector's kept instances (SAM 3)
    instances: dict[str, np.ndarray] = field(default_factory=dict)
    preds: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[str]:
        return [it.image_id for it in self.items]


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
        self.timings: dict[str, float] = {s: 0.0 for s in STEPS}
        self.images_seen: dict[str, int] = {s: 0 for s in STEPS}
        self.peak_memory_mb: dict[str, float | None] = {s: None for s in STEPS}
        self.gpus_held: dict[str, float] = {}  # stage -> GPUs it held while it ran (for GPU-seconds); see report

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
        chunk = ChunkState(list(items))
        for step in STEPS:
            self.run_step(step, chunk)
        return self.assemble(chunk)

    def run_step(self, step: str, chunk: ChunkState) -> None:
        """Run one step of :data:`STEPS` on the photos of ``chunk`` still alive, then release its model
        (low-memory mode). The steps must run in that order; each may run in another process (Ray)."""
        getattr(self, f"_step_{step}")(chunk)
        if step in self.stages:
            self._release(step)

    def _step_decode(self, c: ChunkState) -> None:
        """Decode the photos not decoded yet (a :class:`SourceItem` read and hashed by :meth:`run`)."""
        t0 = time.perf_counter()
        c.alive = []
        for item in c.items:
            if isinstance(item, SourceItem):
                item = item.decode(self.config.limits, self.config.focal_length_px)
            if isinstance(item, ItemFailure):
                c.failed[item.image_id] = item
            else:
                c.alive.append(item)
        self.timings["decode"] += time.perf_counter() - t0
        self.images_seen["decode"] += len(c.items)

    def _step_filter(self, c: ChunkState) -> None:
        st, cfg = self.stages, self.config
        pairs = self._isolated("filter", c.alive, lambda b: st["filter"]([i.image for i in b]), c.failed)
        c.decisions = {it.image_id: d for it, d in pairs}
        c.alive = [it for it, d in pairs if d.keep]
        for it, d in pairs:
            if not d.keep:
                c.filtered[it.image_id] = {"source": it.source, "decision": d.to_dict()}
        if getattr(st["detector"], "takes_prompts", True):
            tag_pairs = self._isolated(
                "filter", c.alive,
                lambda b: st["filter"].tags([i.image for i in b], cfg.vocabulary, cfg.tags_per_image),
                c.failed, counted=False)
            c.tags = {it.image_id: t for it, t in tag_pairs}
            c.alive = [it for it in c.alive if it.image_id in c.tags]
        else:  # a class-agnostic detector (florence2-regions) takes no prompts: no tagging pass
            c.tags = {it.image_id: [] for it in c.alive}
        # released after this step also when it is the embedder's CLIP: it loads again for the captions

    def _step_detector(self, c: ChunkState) -> None:
        st = self.stages
        joint = getattr(st["segmenter"], "from_detector", False)  # SAM 3: the detector's own masks
        detect = st["detector"].detect_and_segment if joint else st["detector"]
        det_pairs = self._isolated(
            "detector", c.alive, lambda b: detect([i.image for i in b], [c.tags[i.image_id] for i in b]), c.failed)
        for it, raw in det_pairs:
            w, h = it.size
            d, kept = self._filtered(raw.detections if joint else raw, w, h)
            if joint:  # the kept detections with their masks, for the segmenter stage
                c.found[it.image_id] = raw.select(kept)
            if len(d) == 0:
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "detector", "no_detections",
                                                    f"{it.source}: no object passed the detection filters "
                                                    f"({count(len(raw), 'raw box', 'raw boxes')})")
            else:
                c.dets[it.image_id] = d
        c.alive = [it for it in c.alive if it.image_id in c.dets]

    def _step_captioner(self, c: ChunkState) -> None:
        st, dets = self.stages, c.dets
        cap_pairs = self._isolated("captioner", c.alive,
                                   lambda b: st["captioner"]([i.image for i in b], [dets[i.image_id] for i in b]),
                                   c.failed)
        c.alive = []
        for it, caps in cap_pairs:
            d = dets[it.image_id]
            if len(caps) != len(d):
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "captioner", "bad_model_output",
                                                    f"{it.source}: captioner returned {count(len(caps), 'caption')} "
                                                    f"for {count(len(d), 'box', 'boxes')}")
                continue
            cleaned = [" ".join(str(cap).split()) or lab for cap, lab in zip(caps, d.labels, strict=True)]
            dets[it.image_id] = d.with_captions(cleaned)
            c.alive.append(it)

    def _step_segmenter(self, c: ChunkState) -> None:
        st, cfg, dets = self.stages, self.config, c.dets
        joint = getattr(st["segmenter"], "from_detector", False)
        seg_pairs = self._isolated("segmenter", c.alive,
                                   lambda b: st["segmenter"]([i.image for i in b],
                                                             [c.found[i.image_id] if joint else dets[i.image_id].boxes
                                                              for i in b]),
                                   c.failed)
        c.found = {}  # used: not carried to the later stages
        for it, maskset in seg_pairs:
            d = dets[it.image_id]
            if len(maskset) != len(d) or maskset.masks.shape[1:] != it.image.shape[:2]:
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "segmenter", "model_error",
                                                    f"{it.source}: segmenter returned masks {maskset.masks.shape} "
                                                    f"for {count(len(d), 'box', 'boxes')} on a "
                                                    f"{it.size[0]}x{it.size[1]} image")
                continue
            inst = resolve_overlaps(maskset.masks, maskset.scores, d.boxes)
            inst, _dropped = clean_instance_mask(inst, cfg.min_mask_pixels)
            present = [i for i in range(1, len(d) + 1) if np.any(inst == i)]
            if not present:
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "segmenter", "no_masks",
                                                    f"{it.source}: no mask kept at least {cfg.min_mask_pixels} pixels")
                continue
            relabel = np.zeros(len(d) + 1, dtype=np.int32)
            relabel[present] = np.arange(1, len(present) + 1)
            c.instances[it.image_id] = relabel[inst]
            dets[it.image_id] = d.select([i - 1 for i in present])
        c.alive = [it for it in c.alive if it.image_id in c.instances]

    def _step_depth(self, c: ChunkState) -> None:
        st = self.stages

        # a focal length the user gave or EXIF holds makes the depth metric for that camera (Depth Pro rescales)
        def depth_call(b: list[ImageItem]) -> list[Any]:
            return st["depth"]([i.image for i in b],
                               focal_lengths_px=[i.focal_length_px if i.focal_source in ("user", "exif") else None
                                                 for i in b])

        # a depth stage that routes by scene type gets each type's photos together: each checkpoint loads once
        # per chunk, and in low-memory mode only one is resident (released between the groups)
        depth_pairs: list[tuple[ImageItem, Any]] = []
        for scene_type, group in self._scene_groups(c.alive, c.decisions).items():
            if scene_type is not None:
                st["depth"].select(scene_type)
            depth_pairs += self._isolated("depth", group, depth_call, c.failed)
            self._release("depth")
        order = {it.image_id: k for k, it in enumerate(c.alive)}
        depth_pairs.sort(key=lambda pair: order[pair[0].image_id])
        c.preds = {it.image_id: pred for it, pred in depth_pairs}
        c.alive = [it for it, _ in depth_pairs]

    def _step_focal_estimator(self, c: ChunkState) -> None:
        # no focal length from the user or EXIF and none from the depth model: the focal estimator, unless the
        # user asked to assume a field of view (then nothing is estimated)
        st = self.stages
        need = {it.image_id for it in c.alive if it.focal_source not in ("user", "exif")
                and c.preds[it.image_id].focal_length_px is None and c.preds[it.image_id].hfov_deg is None
                } if self.config.assumed_hfov_deg is None else set()
        est_pairs = self._isolated("focal_estimator", [it for it in c.alive if it.image_id in need],
                                   lambda b: st["focal_estimator"]([i.image for i in b]), c.failed)
        c.estimates = {it.image_id: e for it, e in est_pairs}
        c.alive = [it for it in c.alive if it.image_id not in need or it.image_id in c.estimates]

    def _step_embedder(self, c: ChunkState) -> None:
        st, dets = self.stages, c.dets
        emb_pairs = self._isolated("embedder", c.alive,
                                   lambda b: [st["embedder"].embed_text(list(dets[i.image_id].captions or ()))
                                              for i in b], c.failed)
        c.embeddings = {it.image_id: e for it, e in emb_pairs}
        c.alive = [it for it in c.alive if it.image_id in c.embeddings]

    def assemble(self, c: ChunkState) -> tuple[list[tuple[RGBDScene, dict[str, Any]]], dict[str, ItemFailure],
                                                 dict[str, dict[str, Any]]]:
        """The scenes of a chunk every stage has run on (CPU only, no model): (scenes, failures, filtered)."""
        scenes: list[tuple[RGBDScene, dict[str, Any]]] = []
        for it in c.alive:
            try:
                scenes.append(self._scene(it, c.preds[it.image_id], c.dets[it.image_id], c.instances[it.image_id],
                                          c.embeddings[it.image_id], c.decisions.get(it.image_id),
                                          c.tags.get(it.image_id), c.estimates.get(it.image_id)))
            except SceneError as exc:
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "assemble", exc.reason, str(exc))
            except ValueError as exc:
                c.failed[it.image_id] = ItemFailure(it.image_id, it.source, "assemble", "bad_model_output",
                                                    f"{it.source}: {exc}")
        return scenes, c.failed, c.filtered

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

    def run(self, items: Iterable[ImageItem | ItemFailure | SourceItem], out_dir: str | Path, *,
            progress: bool = True, total: int | None = None, log: Callable[[str], None] | None = None,
            executor: ChunkExecutor | None = None) -> dict[str, Any]:
        """Process every item (resuming: recorded images are skipped); returns the perception report.

        First :meth:`claim_output`: a folder whose records were made with another config is refused.
        A :class:`SourceItem` is read (hashed) here only when it has no final record, and decoded (in
        the chunk's ``decode`` step) only when its bytes are not a duplicate. The items left are cut
        into chunks of ``batch_size`` in order, whoever runs them, so the model batches (and so the
        outputs) do not depend on the runner.

        ``executor`` runs the chunks and yields ``(chunk, (scenes, failed, filtered))`` per chunk, in
        any order (default: :meth:`process_chunk` in this process, one chunk at a time;
        :class:`spatialforge.pipeline.ray_photos.RayDataExecutor` runs each stage as Ray Data actors).
        Only this process writes the records and scene folders.
        """
        out_dir = Path(out_dir)
        self.claim_output(out_dir)
        scenes_dir, items_dir = out_dir / "scenes", out_dir / "perception" / "items"
        scenes_dir.mkdir(parents=True, exist_ok=True)
        items_dir.mkdir(parents=True, exist_ok=True)
        log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        bar = tqdm(total=total, desc="perception", unit="img", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        counts = {"resumed": 0, "failed": 0}
        start = time.perf_counter()

        digests: dict[str, str] = {}  # image id -> SHA-256 of its bytes, for its record

        def record(image_id: str, rec: dict[str, Any]) -> None:
            if image_id in digests:
                rec = rec | {"sha256": digests.pop(image_id)}
            atomic_write_json(items_dir / f"{image_id}.json", rec)

        def postfix() -> None:  # the failures, then each stage's images per second of its own time
            rates = [f"{k} {self.images_seen[k] / t:.1f}/s" for k, t in self.timings.items()
                     if t > 0 and self.images_seen[k]]
            bar.set_postfix_str(f"{counts['failed']} failed" + (" | " + " ".join(rates) if rates else ""),
                                refresh=False)

        def fail(f: ItemFailure) -> None:
            log(f"failed: {f.message}")
            record(f.image_id, {"status": "failed"} | f.to_dict())
            counts["failed"] += 1
            postfix()

        seen: dict[str, str] = {}
        first: dict[str, str] = {}  # SHA-256 of the bytes -> the first image id with them

        def pending() -> Iterator[ImageItem | SourceItem]:
            for item in items:
                if item.image_id in seen:
                    raise SpatialForgeError(f"{item.source}: image id {item.image_id!r} is also the id of "
                                            f"{seen[item.image_id]} (ids must be unique: rename one)")
                seen[item.image_id] = item.source
                done = done_record(items_dir / f"{item.image_id}.json")
                if done is not None:
                    if isinstance(done.get("sha256"), str):
                        first.setdefault(done["sha256"], item.image_id)
                    counts["resumed"] += 1
                    bar.update(1)
                    continue
                if isinstance(item, SourceItem):  # read and hash it (no decoding); a duplicate is never decoded
                    problem = item.read()
                    if item.digest is not None:
                        digests[item.image_id] = item.digest
                        original = first.setdefault(item.digest, item.image_id)
                        if original != item.image_id:
                            record(item.image_id, {"status": "duplicate", "reason": "duplicate",
                                                   "image_id": item.image_id, "duplicate_of": original,
                                                   "source": item.source})
                            bar.update(1)
                            continue
                    if problem is not None:
                        item = problem
                if isinstance(item, ItemFailure):
                    fail(item)
                    bar.update(1)
                    continue
                yield item

        def chunks() -> Iterator[list[ImageItem | SourceItem]]:
            chunk: list[ImageItem | SourceItem] = []
            for item in pending():
                chunk.append(item)
                if len(chunk) >= self.config.batch_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        try:
            self._write_all(chunks(), executor, scenes_dir, record, fail, postfix, bar)
        except OSError as exc:  # a full disk, an unwritable folder: one line; every record written is complete
            where = Path(exc.filename) if exc.filename else out_dir
            what = "cannot write" if where.absolute().is_relative_to(out_dir.absolute()) else "input/output error"
            raise SpatialForgeError(f"{where}: {what} ({exc.strerror or exc}); the run stopped, the photos "
                                    "recorded so far are kept: free some space or fix the folder, then rerun the "
                                    "same command to resume") from None
        bar.close()
        for stage in self.stages.values():
            stage.unload()
        return self.report(out_dir, time.perf_counter() - start, counts["resumed"])

    def _write_all(self, chunks: Iterable[list[Any]], executor: ChunkExecutor | None, scenes_dir: Path,
                   record: Callable[[str, dict[str, Any]], None], fail: Callable[[ItemFailure], None],
                   postfix: Callable[[], None], bar: Any) -> None:
        """Run the chunks and write each one's scene folders and records (a record last: it marks the photo done)."""
        for chunk, (scenes, failed, filtered) in (executor or self._local_executor)(chunks):
            for scene, extras in scenes:
                folder = save_scene(scene, scenes_dir, depth_format="npy")
                for name, payload in extras.items():
                    atomic_write_json(folder / name, payload)
                record(scene.scene_id, {"status": "ok", "source": scene.provenance["image"],
                                        "objects": len(scene.objects),
                                        "intrinsics_source": scene.provenance["intrinsics_source"],
                                        "image_meta": scene.provenance["image_meta"]})
            for f in failed.values():
                fail(f)
            for image_id, info in filtered.items():
                record(image_id, {"status": "filtered", "reason": "filtered", "stage": "filter"} | info)
            postfix()
            bar.update(len(chunk))

    def _local_executor(self, chunks: Iterable[list[ImageItem | SourceItem]]) -> Iterator[tuple[list[Any], Any]]:
        for chunk in chunks:
            result = self.process_chunk(chunk)
            self._release()
            yield chunk, result

    def _uses_cuda(self) -> bool:
        """Whether this process's stages run on a CUDA GPU (``device`` cuda, or auto with one visible)."""
        if self.config.device.startswith("cuda"):
            return True
        torch = sys.modules.get("torch")
        return self.config.device == "auto" and torch is not None and torch.cuda.is_available()

    def report(self, out_dir: Path, wall: float, resumed: int) -> dict[str, Any]:
        """The perception report (also ``OUT/perception/report.json``). ``stages`` holds, per step, the
        images, seconds and images/s of the model calls (summed over actors on Ray), and ``gpu_seconds``:
        seconds x the GPUs the stage held (1 in a process on a GPU, the stage's ``num_gpus`` on Ray)."""
        records = [json.loads(p.read_text()) for p in sorted((out_dir / "perception" / "items").glob("*.json"))]
        status = Counter(r["status"] for r in records)
        reasons = Counter(r.get("reason", "?") for r in records if r["status"] == "failed")
        converted = Counter((r.get("image_meta") or {}).get("converted_from") for r in records if r["status"] == "ok")
        converted.pop(None, None)
        per_stage = {}
        local_gpus = 1.0 if self._uses_cuda() else 0.0
        for s in STEPS:
            n, t = self.images_seen[s], self.timings[s]
            stage = self.stages.get(s)
            gpus = 0.0 if stage is None else self.gpus_held.get(s, local_gpus)
            per_stage[s] = {"backend": "pillow" if stage is None else getattr(stage, "name", "?"),
                            "model_id": None if stage is None else getattr(stage, "model_id", "?"), "images": n,
                            "seconds": round(t, 4), "images_per_s": round(n / t, 3) if t > 0 else None,
                            "gpus": gpus, "gpu_seconds": round(t * gpus, 4),
                            "peak_gpu_memory_mb": None if self.peak_memory_mb[s] is None
                            else round(self.peak_memory_mb[s], 1)}
            if isinstance(getattr(stage, "checkpoints", None), dict):  # routed by scene type
                per_stage[s]["checkpoints"] = dict(stage.checkpoints)
        report = {
            "config": self.config.to_dict(),
            "images": len(records),
            "ok": status.get("ok", 0),
            "filtered": status.get("filtered", 0),
            "failed": status.get("failed", 0),
            "failed_by_reason": dict(sorted(reasons.items())),
            "duplicates": status.get("duplicate", 0),
            "converted_from": dict(sorted(converted.items())),
            "intrinsics_sources": dict(Counter(r.get("intrinsics_source") for r in records if r["status"] == "ok")),
            "resumed": resumed,
            "stages": per_stage,
            "wall_s": round(wall, 3),
            "failures": [r for r in records if r["status"] == "failed"],
            "duplicate_of": {r["image_id"]: r["duplicate_of"] for r in records if r["status"] == "duplicate"},
        }
        atomic_write_json(out_dir / "perception" / "report.json", report)
        return report

