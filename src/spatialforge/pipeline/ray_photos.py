"""The photo model stages on Ray Data: each stage a pool of actors with its own resources.

:class:`RayDataExecutor` is a :data:`~spatialforge.perception.pipeline.ChunkExecutor` for
:meth:`PerceptionPipeline.run <spatialforge.perception.pipeline.PerceptionPipeline.run>`. The driver
reads the source (resume, duplicates, hashing), cuts the photos into chunks of the perception
``batch_size`` (the same chunks as in one process, so every model sees the same batches and the
outputs do not depend on the runner) and hands them to one Ray Data pipeline per window of chunks:

    decode (CPU tasks) -> filter -> detector -> captioner -> segmenter -> depth -> focal_estimator
    -> embedder (each: ``map_batches`` with a callable class, model loaded once per actor) -> assemble
    (CPU tasks) -> the driver, which writes the records and scene folders.

Stages that must share one process share one actor: a Florence-2 detector and captioner of one
checkpoint (one model, one vision pass per photo), and a segmenting detector (SAM 3) with the stages up
to its segmenter (its masks are not plain data). Each stage's ``num_gpus`` (a fraction lets light
models share a GPU), ``num_cpus``, ``memory`` and actor count (``concurrency``) come from the runner
config's ``[stages.<stage>]`` tables (:func:`photo_stage_resources`), with defaults sized to the cluster.

Memory stays bounded: Ray Data streams each window with backpressure, and the driver holds at most
one window of encoded photos (``window_chunks`` chunks). Actors start once per window, so a window
should hold minutes of work (the default, 256 chunks, is 2,048 photos at batch size 8).

A chunk whose actor dies (a crash, ``os._exit``, ``SystemExit``, out of memory) is retried
(``max_retries``); a chunk that still fails is split into its photos, each run alone, and a photo that
still kills its actor is recorded as failed with reason ``worker_died``. An error that must stop the run
(a model that cannot load) stops it with its one line.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.perception.image_io import ItemFailure
from spatialforge.perception.pipeline import STAGE_ORDER, ChunkState, PerceptionPipeline
from spatialforge.pipeline.runners import StageResources

__all__ = ["DEFAULT_GPU_SHARE", "PhotoStageResources", "RayDataExecutor", "photo_stage_groups",
           "photo_stage_resources"]

#: The GPU share of each model stage in one copy of the pipeline on a GPU cluster (they sum to 1): with
#: G GPUs the defaults run G actors per stage, so every GPU holds one copy of each model.
DEFAULT_GPU_SHARE = {"filter": 0.1, "detector": 0.25, "captioner": 0.2, "segmenter": 0.15, "depth": 0.15,
                     "focal_estimator": 0.05, "embedder": 0.1}
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "concurrency")


@dataclass(frozen=True)
class PhotoStageResources(StageResources):
    """What each actor of a photo model stage asks Ray for (as a shard task's :class:`StageResources`), and how
    many actors the stage runs."""

    concurrency: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ConfigError(f"num_gpus above 1 must be a whole number, got {self.num_gpus}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency (actors) must be an integer >= 1, got {self.concurrency!r}")

    def ray_args(self) -> dict[str, Any]:
        return {**self.ray_options(), "concurrency": self.concurrency}


def photo_stage_resources(given: dict[str, dict[str, Any]], *, cluster_cpus: float, cluster_gpus: float
                          ) -> dict[str, PhotoStageResources]:
    """The resources of every model stage: ``given`` (``[stages.<stage>]`` tables) over the defaults.

    Defaults: on a cluster with G >= 1 GPUs, :data:`DEFAULT_GPU_SHARE` of a GPU per actor and G actors
    per stage (one copy of every model per GPU), 1 CPU each; without GPUs, one actor per stage, each
    with an equal share of half the cluster's CPUs (the other half runs decoding and assembly).
    """
    unknown = sorted(set(given) - set(STAGE_ORDER))
    if unknown:
        raise ConfigError(f"[stages] unknown photo stage(s) {', '.join(unknown)} (known: cpu, decode, "
                          f"{', '.join(STAGE_ORDER)})")
    out = {}
    for stage in STAGE_ORDER:
        values = dict(given.get(stage, {}))
        bad = sorted(set(values) - set(RESOURCE_KEYS))
        if bad:
            raise ConfigError(f"[stages.{stage}] unknown key(s) {', '.join(bad)} (known: {', '.join(RESOURCE_KEYS)})")
        if cluster_gpus >= 1:
            base = PhotoStageResources(num_cpus=1.0, num_gpus=DEFAULT_GPU_SHARE[stage],
                                       concurrency=max(1, int(cluster_gpus)))
        else:
            base = PhotoStageResources(num_cpus=round(max(cluster_cpus, 1.0) / 2 / len(STAGE_ORDER), 3))
        try:
            out[stage] = replace(base, **values)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"[stages.{stage}] {exc}") from None
    return out


def _light(pipeline: PerceptionPipeline, stage: str) -> bool:
    """A stage without a model (``none``, ``label``, ``box``, ...), or a focal estimator never asked (the
    config assumes a field of view): it needs no actor of its own."""
    if stage == "focal_estimator" and pipeline.config.assumed_hfov_deg is not None:
        return True
    return getattr(pipeline.stages[stage], "model_id", None) == "none"


def photo_stage_groups(pipeline: PerceptionPipeline) -> list[tuple[str, ...]]:
    """The model stages in order, grouped into actors (see the module docstring): stages that must share a
    process share one, and a stage without a model rides in the actor before it (or after it, first)."""
    st = pipeline.stages
    together: set[frozenset[str]] = set()
    if getattr(st["captioner"], "_model_source", None) is st["detector"]:  # one Florence-2 for both
        together.add(frozenset({"detector", "captioner"}))
    if getattr(st["segmenter"], "from_detector", False):  # SAM 3: its instances carry the model's masks
        together.add(frozenset({"detector", "captioner", "segmenter"}))
    groups: list[list[str]] = []
    leading: list[str] = []  # light stages before the first model stage
    for stage in STAGE_ORDER:
        if _light(pipeline, stage):
            (groups[-1] if groups else leading).append(stage)
        elif groups and any({groups[-1][0], stage} <= g for g in together):
            groups[-1].append(stage)
        else:
            groups.append([*leading, stage])
            leading = []
    if leading:  # no stage has a model: one actor runs them all
        groups.append(leading)
    return [tuple(g) for g in groups]


def _model_stage(pipeline: PerceptionPipeline, group: Sequence[str]) -> str:
    """The stage whose ``[stages.<stage>]`` resources a group's actors get: its first stage with a model."""
    return next((s for s in group if not _light(pipeline, s)), group[0])


# ----------------------------------------------------------------------------- what runs on Ray
def _stats(pipeline: PerceptionPipeline, steps: Sequence[str]) -> dict[str, Any]:
    return {s: [pipeline.timings[s], pipeline.images_seen[s], pipeline.peak_memory_mb[s]] for s in steps}


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {s: [a[0] - before[s][0], a[1] - before[s][1], a[2]] for s, a in after.items()}


class _Steps:
    """Runs some steps of the pipeline on each chunk of a batch (Ray Data rows: ``key``, ``chunk``, ``stats``,
    ``error``); an error that must stop the run travels as data, so that Ray does not retry it."""

    def __init__(self, config: Any, stages: bytes, steps: tuple[str, ...], setup: tuple[str, ...] = (),
                 version: str | None = None):
        from spatialforge import __version__
        from spatialforge.pipeline.runners import _setup_once

        self.steps = steps
        self.pipeline: PerceptionPipeline | None = None
        # a node with another spatialforge installed would give other records: every chunk it gets stops the
        # run with this message (no model is loaded: the stages were pickled by another version)
        self.mismatch = ""
        if version is not None and version != __version__:
            self.mismatch = (f"a Ray node runs spatialforge {__version__}, the driver runs {version}: install the "
                             "same version on every node, then rerun")
            return
        for hook in setup:
            _setup_once(hook)
        # every model of this actor stays loaded between chunks (low memory is about one process, not an actor)
        self.pipeline = PerceptionPipeline(replace(config, low_memory=False), pickle.loads(stages))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"key": [], "chunk": [], "stats": [], "error": []}
        for key, blob, stats, error in zip(batch["key"], batch["chunk"], batch["stats"], batch["error"], strict=True):
            error = error or self.mismatch
            if not error:  # else an earlier step stopped the run: the error is passed on
                assert self.pipeline is not None  # set whenever there is no mismatch
                chunk: ChunkState = pickle.loads(blob)
                before = _stats(self.pipeline, self.steps)
                try:
                    for step in self.steps:
                        self.pipeline.run_step(step, chunk)
                except SpatialForgeError as exc:
                    error = str(exc)
                blob = pickle.dumps(chunk, protocol=5)
                stats = json.dumps(json.loads(stats) | _delta(_stats(self.pipeline, self.steps), before))
            out["key"].append(key)
            out["chunk"].append(blob)
            out["stats"].append(stats)
            out["error"].append(error)
        return out


def _cpu_steps(batch: dict[str, Any], *, config: Any, stages: bytes, steps: tuple[str, ...],
               setup: tuple[str, ...] = (), version: str | None = None) -> dict[str, Any]:
    """A CPU task (no model): ``steps`` (``decode``) on each chunk, or, with no steps, the chunk's assembly
    into scenes (the last task; its ``chunk`` column then holds ``(scenes, failed, filtered)``)."""
    runner = _Steps(config, stages, steps, setup, version)
    if steps:
        return runner(batch)
    out: dict[str, list[Any]] = {"key": [], "chunk": [], "stats": [], "error": []}
    for key, blob, stats, error in zip(batch["key"], batch["chunk"], batch["stats"], batch["error"], strict=True):
        result = None
        error = error or runner.mismatch
        if not error:
            assert runner.pipeline is not None
            try:
                result = runner.pipeline.assemble(pickle.loads(blob))
            except SpatialForgeError as exc:
                error = str(exc)
        out["key"].append(key)
        out["chunk"].append(pickle.dumps(result, protocol=5))
        out["stats"].append(stats)
        out["error"].append(error)
    return out


# ----------------------------------------------------------------------------- the driver side
class RayDataExecutor:
    """Runs chunks of photos through the pipeline's stages on Ray Data (see the module docstring).

    ``resources``: per model stage (:func:`photo_stage_resources`; default: sized to the cluster), and
    ``decode``: ``num_cpus`` (default 0.25) and ``memory`` of each decode / assemble task (CPU only).
    ``window_chunks``: chunks per Ray Data run.
    ``max_retries``: retries of a chunk whose actor died. ``address``: the cluster to join (None: the
    one ``ray.init`` finds, else a local cluster of ``num_cpus`` CPUs started for the run and stopped after).
    """

    def __init__(self, pipeline: PerceptionPipeline, *, resources: dict[str, dict[str, Any]] | None = None,
                 window_chunks: int = 256, max_retries: int = 2,
                 address: str | None = None, num_cpus: int | None = None, setup: tuple[str, ...] = (),
                 progress: bool = True, log: Any = None) -> None:
        if isinstance(window_chunks, bool) or not isinstance(window_chunks, int) or window_chunks < 1:
            raise ConfigError(f"window_chunks must be an integer >= 1, got {window_chunks!r}")
        self.pipeline = pipeline
        self.given = dict(resources or {})
        decode = self.given.pop("decode", {})
        if set(decode) - {"num_cpus", "memory"}:
            raise ConfigError(f"[stages.decode] may only set num_cpus and memory, got {', '.join(sorted(decode))}")
        photo_stage_resources(self.given, cluster_cpus=1, cluster_gpus=0)  # check the keys now, before any work
        self.cpu = {"num_cpus": 0.25} | dict(decode)
        self.window_chunks = window_chunks
        self.max_retries = max_retries
        self.address = address
        self.num_cpus = num_cpus
        self.setup = tuple(setup)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.resources: dict[str, PhotoStageResources] = {}
        self.stats = {"windows": 0, "chunks": 0, "chunks_retried_alone": 0, "photos_died": []}

    def describe(self) -> dict[str, Any]:
        return {"name": "ray-data", "window_chunks": self.window_chunks, "max_retries": self.max_retries,
                "groups": [list(g) for g in photo_stage_groups(self.pipeline)],
                "stages": {_model_stage(self.pipeline, g): self.resources[_model_stage(self.pipeline, g)].ray_args()
                           for g in photo_stage_groups(self.pipeline)} if self.resources else {},
                "decode": self.cpu, **self.stats}

    def __call__(self, chunks: Iterable[list[Any]]) -> Iterator[tuple[list[Any], Any]]:
        from spatialforge._optional import require

        ray = require("ray", extra="ray", feature="--runner ray")
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"address": self.address, "logging_level": logging.WARNING,
                                      "include_dashboard": False}
            if self.address is None and self.num_cpus:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
        try:
            total = ray.cluster_resources()
            self.resources = photo_stage_resources(self.given, cluster_cpus=float(total.get("CPU", 1)),
                                                   cluster_gpus=float(total.get("GPU", 0)))
            self._check_fits(float(total.get("CPU", 0)), float(total.get("GPU", 0)))
            for group in photo_stage_groups(self.pipeline):
                for stage in group:
                    self.pipeline.gpus_held[stage] = self.resources[_model_stage(self.pipeline, group)].num_gpus
            for stage in self.pipeline.stages.values():  # nothing loaded here: the actors load their own
                stage.unload()
            window: list[list[Any]] = []
            for chunk in chunks:
                window.append(chunk)
                if len(window) >= self.window_chunks:
                    yield from self._window(ray, window)
                    window = []
            if window:
                yield from self._window(ray, window)
        finally:
            if started:
                ray.shutdown()

    def _check_fits(self, cpus: float, gpus: float) -> None:
        """Every actor of every stage, plus one decode task, must fit the cluster at once (Ray Data starts
        each stage's actors before it streams; otherwise it would wait for them forever)."""
        groups = [self.resources[_model_stage(self.pipeline, g)] for g in photo_stage_groups(self.pipeline)]
        need_cpu = sum(r.num_cpus * r.concurrency for r in groups) + self.cpu["num_cpus"]
        need_gpu = sum(r.num_gpus * r.concurrency for r in groups)
        if need_cpu > cpus + 1e-9 or need_gpu > gpus + 1e-9:
            shown = ", ".join(f"{_model_stage(self.pipeline, g)} {r.concurrency} x ({r.num_cpus:g} CPU, "
                              f"{r.num_gpus:g} GPU)" for g, r in zip(photo_stage_groups(self.pipeline), groups,
                                                                      strict=True))
            raise ConfigError(
                f"the photo stages' actors need {need_cpu:g} CPUs and {need_gpu:g} GPUs at once ({shown}, plus "
                f"{self.cpu['num_cpus']:g} CPU for decoding) but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: "
                "lower num_cpus / num_gpus / concurrency in the runner config's [stages.<stage>] tables")

    def _window(self, ray: Any, window: list[list[Any]]) -> Iterator[tuple[list[Any], Any]]:
        self.stats["windows"] += 1
        self.stats["chunks"] += len(window)
        results = self._run(ray, {k: ChunkState(list(c)) for k, c in enumerate(window)})
        missing = [k for k in range(len(window)) if k not in results]
        for k in range(len(window)):
            if k in results:
                yield window[k], results[k]
        for k in missing:  # its actor died every time: each photo alone, so that one bad photo costs only itself
            chunk = window[k]
            self.stats["chunks_retried_alone"] += 1
            self.log(f"a chunk of {len(chunk)} photos killed its actor {self.max_retries + 1} times; "
                     "running its photos one at a time")
            alone = self._run(ray, {i: ChunkState([item]) for i, item in enumerate(chunk)})
            scenes, failed, filtered = [], {}, {}
            for i, item in enumerate(chunk):
                if i in alone:
                    s, f, fl = alone[i]
                    scenes += s
                    failed |= f
                    filtered |= fl
                else:
                    self.stats["photos_died"].append(item.image_id)
                    failed[item.image_id] = ItemFailure(
                        item.image_id, item.source, "ray", "worker_died",
                        f"{item.source}: the Ray actor processing it died {self.max_retries + 1} times "
                        "(a crash, os._exit, SystemExit or out of memory)")
            yield chunk, (scenes, failed, filtered)

    def _run(self, ray: Any, chunks: dict[int, ChunkState]) -> dict[int, Any]:
        """One Ray Data run over ``chunks``; returns the results of the chunks that came back."""
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        ctx.max_errored_blocks = -1  # a chunk whose actor keeps dying is dropped here and isolated by the caller
        ctx.execution_options.preserve_order = True
        ctx.raise_original_map_exception = True
        # one chunk per actor at a time: an actor that dies takes only its own chunk with it, so a retry is
        # counted against the chunk that caused it, never against one that was merely queued on the same actor
        ctx.max_tasks_in_flight_per_actor = 1
        stages_blob = pickle.dumps(self.pipeline.stages)
        config = self.pipeline.config
        # an actor that dies is always replaced (a dead pool would stall the stream); its task is retried
        # max_retries times, then its chunk is dropped from this run and isolated by the caller
        retry = {"max_restarts": -1, "max_task_retries": self.max_retries}
        rows = [{"key": k, "chunk": pickle.dumps(c, protocol=5), "stats": "{}", "error": ""}
                for k, c in chunks.items()]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        kwargs = {"batch_size": 1, "batch_format": "numpy", "zero_copy_batch": True}
        from spatialforge import __version__

        task = {"config": config, "stages": stages_blob, "setup": self.setup, "version": __version__}
        ds = ds.map_batches(_cpu_steps, fn_kwargs=task | {"steps": ("decode",)}, max_retries=self.max_retries,
                            **self.cpu, **kwargs)
        for group in photo_stage_groups(self.pipeline):
            ds = ds.map_batches(_Steps, fn_constructor_kwargs=task | {"steps": group},
                                **self.resources[_model_stage(self.pipeline, group)].ray_args(), **retry, **kwargs)
        ds = ds.map_batches(_cpu_steps, fn_kwargs=task | {"steps": ()}, max_retries=self.max_retries,
                            **self.cpu, **kwargs)
        out: dict[int, Any] = {}
        t0 = time.perf_counter()
        for row in ds.iter_rows():
            if row["error"]:
                raise SpatialForgeError(str(row["error"]))
            key = int(row["key"])
            for step, (seconds, images, peak) in json.loads(row["stats"]).items():
                self.pipeline.timings[step] += seconds
                self.pipeline.images_seen[step] += images
                if peak is not None:
                    self.pipeline.peak_memory_mb[step] = max(self.pipeline.peak_memory_mb[step] or 0.0, peak)
            out[key] = pickle.loads(row["chunk"])
        self.log(f"ray data: {len(out)} of {len(chunks)} chunks in {time.perf_counter() - t0:.1f} s")
        return out
