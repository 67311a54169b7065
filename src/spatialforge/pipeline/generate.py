"""``spatialforge generate``: scene folders -> scene graphs -> QA -> Parquet shards + manifest.

Scenes are processed in sorted order and cut into deterministic shards of ``shard_size``
(:mod:`spatialforge.pipeline.shards`). :func:`process_shard` - a pure function of the shard and the
config - loads, lifts, questions and encodes one shard; a runner (:mod:`spatialforge.pipeline.runners`:
this process, a pool of worker processes, or Ray) calls it for every shard that is not complete yet,
and :func:`run_generate`, the driver, writes each result atomically followed by its shard index.
An interrupted run (Ctrl-C, SIGTERM, ``kill -9``, a full disk) resumes by skipping complete shards,
with identical output: every scene's randomness depends only on the seed and its id, never on the
runner or the worker count. Bad scenes are rejected with a one-line reason, recorded and counted;
nothing is dropped silently.

With ``GenerateConfig(afford=True)`` (``--afford``) the scenes whose ``ground_truth.json`` lists part
labels (``spatialforge synth --parts``) also get the affordance questions of
:mod:`spatialforge.qa.afford_types`, and the rows get the ``afford`` column
(:data:`~spatialforge.io.dataset.AFFORD_ROW_SCHEMA`); the other scenes get none and are counted by
reason. Without it nothing changes: the rows, scene graphs and fingerprint are those of earlier versions.
``GenerateConfig.afford_types`` asks some of the affordance types only (:func:`select_types` splits
``--types`` / ``--exclude-types`` between the catalogue and them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from spatialforge import __version__
from spatialforge._text import count, shown
from spatialforge.core.types import RGBDScene, SceneGraph
from spatialforge.errors import ConfigError, SceneError, SpatialForgeError
from spatialforge.geometry.config import GeometryConfig
from spatialforge.geometry.scene_graph import build_scene_graph
from spatialforge.io.dataset import (
    atomic_write_bytes,
    atomic_write_json,
    encode_png,
    encode_shard,
    json_bytes,
    make_row,
    messages_from_qa,
    write_shard_bytes,
)
from spatialforge.io.outdir import OutputKind
from spatialforge.io.scene_folder import IMAGE_NAMES, find_scene_dirs, load_scene
from spatialforge.pipeline.runners import CaughtSignal, Interrupted, RunnerConfig, run_shards, stop_on_signals
from spatialforge.pipeline.shards import (
    SceneResult,
    ShardResult,
    ShardSpec,
    ShardWork,
    build_index,
    failures_by_reason,
    index_path,
    merge_state,
    plan_shards,
)
from spatialforge.qa.afford_types import (
    AFFORD_TYPES,
    NO_PARTS_REASONS,
    SceneAfford,
    check_afford_types,
    scene_afford,
)
from spatialforge.qa.composite import CompositeConfig, generate_composite, reasoning_trace
from spatialforge.qa.generator import QAConfig, QAResult, generate_qa

__all__ = ["DATASET_OUTPUT", "GenerateConfig", "SceneOutcome", "process_scene", "process_shard", "run_generate",
           "scene_digest", "select_types"]

#: The stages whose time the manifest reports (summed over scenes and workers; ``encode`` is the
#: scene graph JSON and Parquet encoding in the worker, ``write`` the files the driver writes).
STAGES = ("load", "geometry", "qa", "encode", "write")

#: The output folder of ``spatialforge generate`` (and what ``--overwrite`` may delete in it): the
#: dataset, its run state and, on photos, the scene folders and the perception records.
DATASET_OUTPUT = OutputKind("dataset", ("data", "_state", "scene_graphs", "manifest.json", "config.json",
                                        "scenes", "perception"))


@dataclass(frozen=True)
class GenerateConfig:
    qa: QAConfig = field(default_factory=QAConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    shard_size: int = 256
    write_scene_graphs: bool = True
    fail_fast: bool = False
    composite: CompositeConfig | None = None  # composite (multi-step) questions per scene; None: none
    with_reasoning: bool = False  # composite answers in the chat messages as <think>steps</think> + answer
    afford: bool = False  # affordance questions on scenes with synthetic part labels (+ the afford column)
    afford_types: tuple[str, ...] = AFFORD_TYPES  # with afford: which of the affordance types to ask

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise SpatialForgeError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.with_reasoning and self.composite is None:
            raise ConfigError("--with-reasoning writes reasoning for composite questions: add --composite N")
        if not isinstance(self.afford, bool):
            raise ConfigError(f"GenerateConfig.afford must be true or false, got {self.afford!r}")
        try:
            object.__setattr__(self, "afford_types", check_afford_types(self.afford_types))
        except ConfigError as exc:
            raise ConfigError(f"GenerateConfig.afford_types: {exc}") from None
        if self.afford_types != AFFORD_TYPES and not self.afford:
            raise ConfigError("GenerateConfig.afford_types selects affordance questions, which only afford=True "
                              "(--afford) asks")

    def to_dict(self) -> dict[str, Any]:
        d = {"qa": self.qa.to_dict(), "geometry": self.geometry.to_dict(), "shard_size": self.shard_size}
        if self.composite is not None:  # absent when off: earlier runs keep their fingerprint
            d.update(composite=self.composite.to_dict(), with_reasoning=self.with_reasoning)
        if self.afford:  # likewise
            d["afford"] = True
            if self.afford_types != AFFORD_TYPES:  # likewise: runs asking both keep their fingerprint
                d["afford_types"] = list(self.afford_types)
        return d

    def fingerprint(self) -> str:
        blob = json.dumps({"config": self.to_dict(), "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select_types(types: tuple[str, ...] | list[str] | None, exclude_types: tuple[str, ...] | list[str] = (), *,
                 afford: bool = False) -> tuple[tuple[str, ...] | None, tuple[str, ...], tuple[str, ...]]:
    """Split ``--types`` / ``--exclude-types`` between the catalogue and the affordance types: returns the
    catalogue's ``(types, exclude_types)`` (for :class:`QAConfig`) and the affordance types to ask (for
    ``GenerateConfig.afford_types``).

    The affordance types (:data:`AFFORD_TYPES`) need ``afford``. Named in ``types``, only those of them are
    asked (else all); named in ``exclude_types``, they are left out. ``types`` must name a catalogue type
    too when it names any type: the affordance questions come on top of the catalogue's. Raises
    :class:`ConfigError`, one line naming the flag.
    """
    types_given = tuple(types) if types else ()
    excluded = tuple(exclude_types)
    for flag, names in (("--types", types_given), ("--exclude-types", excluded)):
        named = [t for t in names if t in AFFORD_TYPES]
        if named and not afford:
            raise ConfigError(f"{flag} {','.join(named)}: the affordance question types are asked only with --afford")
    afford_named = [t for t in types_given if t in AFFORD_TYPES]
    catalogue = tuple(t for t in types_given if t not in AFFORD_TYPES)
    if types_given and not catalogue:
        raise ConfigError(f"--types {','.join(types_given)}: names only affordance types, which --afford asks on top "
                          "of the catalogue's questions: name catalogue types too (see `spatialforge catalog`), "
                          "or leave an affordance type out with --exclude-types")
    chosen = tuple(t for t in AFFORD_TYPES if (not afford_named or t in afford_named) and t not in excluded)
    if afford and not chosen:
        raise ConfigError(f"--exclude-types {','.join(t for t in excluded if t in AFFORD_TYPES)}: leaves no affordance "
                          "type to ask: leave out --afford instead")
    return (catalogue or None), tuple(t for t in excluded if t not in AFFORD_TYPES), chosen or AFFORD_TYPES


@dataclass
class SceneOutcome:
    """What happened to one scene."""

    scene_id: str
    path: str
    graph: SceneGraph | None = None
    qa: QAResult | None = None
    row: dict[str, Any] | None = None
    rejected: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    afford: SceneAfford | None = None  # with GenerateConfig.afford: the scene's affordance questions


def _image_bytes(scene: RGBDScene, folder: Path) -> tuple[bytes, str]:
    for name in IMAGE_NAMES:
        if (folder / name).is_file():
            return (folder / name).read_bytes(), name
    return encode_png(scene.image), "image.png"


def scene_id_problem(scene_id: str) -> str | None:
    """Why ``scene_id`` cannot name files in the output (``None`` when it can): ids are single, printable
    path components, so ``scene_graphs/<id>.json`` and ``images/<id>.png`` stay inside their folders."""
    if scene_id in ("", ".", ".."):
        return "is not a folder name"
    if any(c in scene_id for c in "/\\") or not scene_id.isprintable():
        return "contains a path separator or a control character"
    return None


def process_scene(folder: Path, config: GenerateConfig) -> SceneOutcome:
    """Load, lift and question one scene folder. Raises only on internal errors."""
    folder = Path(folder)
    out = SceneOutcome(scene_id=folder.name, path=str(folder))
    t0 = time.perf_counter()
    problem = scene_id_problem(folder.name)
    if problem is not None:
        out.rejected = {"scene_id": folder.name, "path": str(folder), "reason": "bad_scene_id",
                        "message": f"{folder}: the scene id {folder.name!r} {problem}; give the scene folder a "
                                   "plain name"}
        return out
    try:
        scene = load_scene(folder)
    except SceneError as exc:
        out.rejected = {"scene_id": folder.name, "path": str(folder), "reason": exc.reason, "message": str(exc)}
        out.timings["load"] = time.perf_counter() - t0
        return out
    except Image.DecompressionBombError as exc:  # PIL refuses to decode it: too many pixels for one image
        out.rejected = {"scene_id": folder.name, "path": str(folder), "reason": "image_too_large",
                        "message": f"{folder}: image too large to decode ({exc})"}
        out.timings["load"] = time.perf_counter() - t0
        return out
    t1 = time.perf_counter()
    graph = build_scene_graph(scene, config.geometry)
    t2 = time.perf_counter()
    qa = generate_qa(graph, config.qa)
    t3 = time.perf_counter()
    image_bytes, image_name = _image_bytes(scene, folder)
    pairs, messages = list(qa.qa), None
    if config.composite is not None:
        composite = generate_composite(graph, qa.references, config.composite)
        pairs += composite
        if config.with_reasoning:  # the composite answers as step-by-step chains of exact measurements
            messages = messages_from_qa(pairs)
            units = config.composite.units
            for k, pair in enumerate(pairs[len(qa.qa):], start=len(qa.qa)):
                messages[2 * k + 1] = reasoning_trace(pair, graph, units)[1]
    afford_rows, afford_s = None, 0.0
    if config.afford:  # after the composite questions and their reasoning turns, which keep their indices
        t = time.perf_counter()
        out.afford = scene_afford(folder, scene.scene_id, config.qa.seed, config.afford_types)
        afford_s = time.perf_counter() - t
        afford_rows = list(out.afford.records)
        if out.afford.qa:
            if messages is not None:
                messages = [*messages, *messages_from_qa([*pairs, *out.afford.qa])[len(messages):]]
            pairs += out.afford.qa
    out.graph, out.qa = graph, qa
    out.row = make_row(scene.scene_id, image_bytes, f"{scene.scene_id}/{image_name}",
                       scene.intrinsics.width, scene.intrinsics.height, pairs, graph.gravity.source,
                       messages=messages, afford=afford_rows)
    out.timings.update(load=t1 - t0, geometry=t2 - t1, qa=t3 - t2 + afford_s,
                       encode=time.perf_counter() - t3 - afford_s)
    return out


def process_one(folder: str | Path, config: GenerateConfig) -> SceneResult:
    """One scene as a runner's unit of work: :func:`process_scene` plus its bookkeeping and its encoded
    scene graph. A bad scene is a rejection and (without ``fail_fast``) an internal error a recorded
    failure; raises only for errors that must stop the run."""
    folder = Path(folder)
    st = _new_state()
    st["scenes"] = 1
    try:
        o = process_scene(folder, config)
    except SpatialForgeError:
        raise
    except Exception as exc:  # record, count and continue: a bug must not lose the run
        if config.fail_fast:
            raise
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        st["errors"].append({"scene_id": folder.name, "path": str(folder), "reason": "internal_error", "error": tb})
        return SceneResult(folder.name, str(folder), None, None, st, [f"error: {folder}: {tb}"])
    messages = [f"rejected: {o.rejected['message']}"] if o.rejected is not None else []
    if o.afford is not None and o.afford.message:
        messages.append(f"no affordance questions: {o.afford.message}")
    _scene_stats(o, st)
    graph_json = None
    if o.row is not None:
        st["qa_pairs"] = len(o.row["qa"])
        if config.write_scene_graphs:
            t = time.perf_counter()
            g = o.graph.to_dict()
            g["references"] = {str(k): v for k, v in o.qa.references.items()}
            g["unreferable"] = o.qa.unreferable
            graph_json = json_bytes(g)
            st["timings_s"]["encode"] = st["timings_s"].get("encode", 0.0) + time.perf_counter() - t
    return SceneResult(o.scene_id, str(folder), o.row, graph_json, st, messages)


def scene_died(folder: str | Path, detail: str) -> SceneResult:
    """The record of a scene that killed its worker process every time it was tried (reason ``worker_died``)."""
    folder = Path(folder)
    st = _new_state()
    st["scenes"] = 1
    st["errors"].append({"scene_id": folder.name, "path": str(folder), "reason": "worker_died", "error": detail})
    return SceneResult(folder.name, str(folder), None, None, st, [])


def assemble_shard(spec: ShardSpec, config: GenerateConfig, scenes: list[SceneResult]) -> ShardResult:
    """The shard made of its scenes' results (in the shard's order): bookkeeping summed, rows encoded."""
    st = _new_state()
    for r in scenes:
        merge_state(st, r.state)
    rows = [r.row for r in scenes if r.row is not None]
    t = time.perf_counter()
    parquet = encode_shard(rows, afford=config.afford)
    st["timings_s"]["encode"] = st["timings_s"].get("encode", 0.0) + time.perf_counter() - t
    return ShardResult(spec=spec, parquet=parquet,
                       graphs={r.scene_id: r.graph_json for r in scenes if r.graph_json is not None},
                       state=st, row_ids=[r.scene_id for r in scenes if r.row is not None],
                       messages=[m for r in scenes for m in r.messages])


def process_shard(spec: ShardSpec, config: GenerateConfig, *,
                  on_scene: Callable[[SceneResult], None] | None = None) -> ShardResult:
    """Process one shard: a pure function of ``spec`` and ``config`` (reads the scene folders, writes
    nothing), the same in this process, a worker process or a Ray task. ``on_scene`` (in-process
    progress) is called after each scene."""
    results = []
    for folder in spec.folders:
        results.append(process_one(folder, config))
        if on_scene is not None:
            on_scene(results[-1])
    return assemble_shard(spec, config, results)


def _scene_stats(o: SceneOutcome, st: dict[str, Any]) -> None:
    """Accumulate one scene's bookkeeping into a shard's state ``st``."""
    for k, v in o.timings.items():
        st["timings_s"][k] = st["timings_s"].get(k, 0.0) + v
    if o.rejected is not None:
        st["rejected"].append(o.rejected)
        return
    assert o.graph is not None and o.qa is not None  # invariant of process_scene
    st["scenes_ok"] += 1
    st["gravity"][o.graph.gravity.source] += 1
    st["objects_measured"] += len(o.graph.objects)
    for s in o.graph.skipped:
        st["objects_skipped"][s.reason] += 1
    st["objects_unreferable"] += len(o.qa.unreferable)
    st["question_skips"].update(o.qa.skips)
    st["shortfall"] += o.qa.shortfall
    for p in o.row["qa"] if o.row is not None else ():  # the engine's questions and any composite ones
        st["per_type"][p["type"]] += 1
        st["per_kind"][p["kind"]] += 1
    if not o.qa.qa:
        reason = "no_measurable_objects" if len(o.graph.objects) < 1 else "no_askable_question"
        st["without_qa"].append({"scene_id": o.scene_id, "reason": reason})
    if o.afford is not None:  # only with --afford: runs without it keep their bookkeeping as it was
        st["afford_scenes_with_parts"] = int(o.afford.reason is None)
        st["afford_without_parts"] = Counter([o.afford.reason] if o.afford.reason is not None else [])


def _new_state() -> dict[str, Any]:
    return {"scenes": 0, "scenes_ok": 0, "rejected": [], "without_qa": [], "errors": [],
            "gravity": Counter(plane=0, camera_prior=0), "objects_measured": 0,
            "objects_skipped": Counter(), "objects_unreferable": 0, "question_skips": Counter(),
            "shortfall": 0, "per_type": Counter(), "per_kind": Counter(), "timings_s": {}, "qa_pairs": 0}


def scene_digest(folder: Path) -> str:
    """A fingerprint of a scene folder's files (names, sizes, modification times): changes when a file is
    edited, added or removed, without reading the files."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpatialForgeError(f"{path}: unreadable run state ({exc}); use --overwrite to start again") from None
    if not isinstance(data, dict):
        raise SpatialForgeError(f"{path}: unreadable run state (not a JSON object); use --overwrite to start again")
    return data


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def _check_same_run(prev: dict[str, Any], now: dict[str, Any], out_dir: Path) -> None:
    """Refuse to resume a run folder made with another configuration or another scene list, saying what changed."""
    if prev.get("fingerprint") != now["fingerprint"]:
        old, new = _flat(prev.get("config") or {}), _flat(now["config"])
        changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k)] if old else []
        what = f"the configuration changed ({'; '.join(changed)})" if changed else \
            "it was written with another configuration or spatialforge version"
        raise SpatialForgeError(f"{out_dir}: cannot resume: {what}; use a new --out or --overwrite")
    before, after = prev.get("scene_ids") or [], now["scene_ids"]
    if before != after:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        parts = ([f"{count(len(added), 'scene')} added ({shown(added)})"] if added else []) + \
                ([f"{count(len(removed), 'scene')} removed ({shown(removed)})"] if removed else [])
        raise SpatialForgeError(f"{out_dir}: cannot resume: the input scenes changed since the run started: "
                                f"{', '.join(parts) or 'the shard layout changed'}; use a new --out or --overwrite")


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import scipy

    return {"spatialforge": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "pyarrow": pyarrow.__version__}


def stage_rates(items: int, seconds: dict[str, float], failed: int) -> str:
    """The progress bar's postfix: the failure count, then each stage's throughput in items per second of
    that stage's own time (per worker: a stage at 40/s on each of 8 workers shows 40/s)."""
    rates = [f"{k} {items / v:.0f}/s" for k, v in seconds.items() if v > 0 and k in STAGES]
    return f"{failed} failed" + (" | " + " ".join(rates) if rates else "")


def _write(path: Path, write: Callable[[], Any]) -> None:
    """Run one write of the driver; a full disk or an unwritable folder becomes one clear error."""
    try:
        write()
    except OSError as exc:
        raise SpatialForgeError(
            f"{path}: cannot write ({exc.strerror or exc}); the run stopped, its complete shards are kept: "
            "free some space or fix the folder, then rerun the same command to resume") from None


def _sweep_temporary(out_dir: Path) -> int:
    """Delete the temporary files a killed run left in the folders only ``generate`` writes."""
    stale = [p for sub in ("data", "_state", "scene_graphs") for p in (out_dir / sub).glob(".*.tmp")]
    stale += [p for name in ("manifest.json", "config.json") for p in out_dir.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _complete(out_dir: Path, spec: ShardSpec, fp: str, digests: dict[str, str], log,
              redone: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The index of ``spec`` if the shard is complete and still current, else None (it is to be done)."""
    state_path = index_path(out_dir / "_state", spec)
    shard_path = out_dir / "data" / spec.name
    if not (state_path.is_file() and shard_path.is_file()):
        return None
    prev = _read_state(state_path)
    if prev.get("fingerprint") != fp or prev.get("scene_ids") != spec.scene_ids:
        raise SpatialForgeError(f"{out_dir}: holds output of a different configuration or scene list; "
                                "use a new --out or --overwrite")
    edited = sorted(k for k, v in digests.items() if (prev.get("inputs") or {}).get(k) != v)
    if edited:
        redone.append({"shard": spec.name, "edited": edited})
        log(f"redoing {spec.name}: {count(len(edited), 'scene')} changed since it was written ({shown(edited)})")
        return None
    size = shard_path.stat().st_size
    if prev.get("bytes") is not None and prev["bytes"] != size:
        log(f"redoing {spec.name}: it holds {size} bytes, its index says {prev['bytes']} (replaced or cut)")
        return None
    return prev


def run_generate(scenes_dir: str | Path, out_dir: str | Path, config: GenerateConfig | None = None, *,
                 progress: bool = True, log=None, runner: RunnerConfig | None = None) -> dict[str, Any]:
    """Generate the dataset; returns the manifest (also written to ``out_dir/manifest.json``).

    ``runner`` says who processes the shards (default: this process; see
    :mod:`spatialforge.pipeline.runners`); the rows are the same, byte for byte, whichever it is.
    SIGINT / SIGTERM raise :class:`~spatialforge.pipeline.runners.Interrupted` after abandoning the
    shards in flight (complete shards stay; the same call resumes). A failed write (full disk,
    unwritable folder) raises :class:`SpatialForgeError` naming the file; no shard is left looking complete.
    """
    cfg = config or GenerateConfig()
    rcfg = runner or RunnerConfig()
    out_dir = Path(out_dir)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    folders = find_scene_dirs(scenes_dir)
    if not folders:
        raise SpatialForgeError(f"{scenes_dir}: no scene folders found (see docs/formats.md)")
    if rcfg.name == "ray":  # Ray workers read the scene folders by path, whatever their working directory
        folders = [f.absolute() for f in folders]
    specs = plan_shards(folders, cfg.shard_size)
    state_dir = out_dir / "_state"
    fp = cfg.fingerprint()
    scene_ids = [f.name for f in folders]
    run_info = {"fingerprint": fp, "n_shards": len(specs), "scene_ids": scene_ids, "config": cfg.to_dict()}
    run_path = state_dir / "run.json"
    if run_path.is_file():
        _check_same_run(_read_state(run_path), run_info, out_dir)
    elif any((out_dir / "data").glob("*.parquet")):
        raise SpatialForgeError(f"{out_dir}: data/ already holds Parquet shards from another run; "
                                "use a new --out or --overwrite")
    _write(out_dir, lambda: out_dir.mkdir(parents=True, exist_ok=True))
    _write(run_path, lambda: atomic_write_json(run_path, run_info))
    swept = _sweep_temporary(out_dir)
    if swept:
        log(f"removed {count(swept, 'temporary file')} an interrupted run left behind")
    start = time.perf_counter()
    states: dict[int, dict[str, Any]] = {}
    todo: list[ShardSpec] = []
    digests: dict[int, dict[str, str]] = {}
    redone: list[dict[str, Any]] = []
    for spec in specs:
        d = {Path(f).name: scene_digest(Path(f)) for f in spec.folders}
        prev = _complete(out_dir, spec, fp, d, log, redone)
        if prev is None:
            todo.append(spec)
            digests[spec.index] = d
        else:
            states[spec.index] = prev
    resumed = len(states)
    failed = [sum(len(s["rejected"]) + len(s["errors"]) for s in states.values())]
    bar = tqdm(total=len(folders), initial=sum(len(s["scene_ids"]) for s in states.values()), desc="generate",
               unit="scene", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    bar.set_postfix_str(f"{failed[0]} failed", refresh=False)
    stage_s: Counter = Counter()  # seconds per stage of the shards done in this run, summed over workers
    done = [0]

    caught: CaughtSignal | None = None

    def on_result(result: ShardResult) -> None:
        if result.version != __version__:  # rows depend on the code: never mix two versions in one dataset
            raise SpatialForgeError(f"{result.spec.name} was processed by spatialforge {result.version}, this driver "
                                    f"runs {__version__}: install the same version on every node, then rerun")
        for message in result.messages:
            log(message)
        with caught.deferred() if caught else contextlib.nullcontext():  # a signal waits until the index is written
            states[result.spec.index] = _write_shard(out_dir, result, cfg, fp, digests[result.spec.index])
        failed[0] += len(result.state["rejected"]) + len(result.state["errors"])
        stage_s.update(result.state["timings_s"])
        done[0] += len(result.spec.folders)
        bar.set_postfix_str(stage_rates(done[0], stage_s, failed[0]), refresh=False)

    work = ShardWork(shard=process_shard, scene=process_one, assemble=assemble_shard, died=scene_died, config=cfg,
                     setup=rcfg.setup)
    try:
        with stop_on_signals() as caught:
            faults = run_shards(rcfg, todo, work, on_result, on_progress=bar.update, log=log)
    except KeyboardInterrupt as exc:  # ours (Interrupted), or one a library made of it, or a plain Ctrl-C
        signum = getattr(exc, "signum", None) or (caught.signum if caught else None) or signal.SIGINT
        raise Interrupted(signum, f"stopped by {signal.Signals(signum).name}: {len(states)} of "
                                  f"{count(len(specs), 'shard')} complete, the shards in flight abandoned; "
                                  "rerun the same command to resume") from None
    finally:
        bar.close()
    wall = time.perf_counter() - start
    manifest = _manifest([states[i] for i in sorted(states)], cfg, scenes_dir, out_dir, len(folders), wall, resumed)
    manifest["shards_redone"] = redone
    manifest["runner"] = rcfg.describe()
    manifest["worker_faults"] = faults
    n_new = sum(len(s.folders) for s in todo)
    manifest["throughput"] = {"scenes_processed": n_new, "scenes_per_s": round(n_new / wall, 2) if wall > 0 else 0.0}
    manifest["gpu_seconds"] = {"total": 0.0, "by_stage": {}}  # geometry and QA run on CPUs; photos add perception's
    afford = manifest["counts"].get("afford")
    if afford is not None and afford["scenes_with_parts"] == 0 and manifest["counts"]["scenes_ok"]:
        log(f"--afford: none of the {count(manifest['counts']['scenes_ok'], 'accepted scene')} has part labels "
            f"({', '.join(f'{k} {v}' for k, v in afford['without_parts_by_reason'].items()) or 'no scene'}), so no "
            "affordance question was asked: make scenes with part labels with `spatialforge synth --parts`")
    _write(out_dir / "manifest.json", lambda: atomic_write_json(out_dir / "manifest.json", manifest))
    _write(out_dir / "config.json", lambda: atomic_write_json(out_dir / "config.json", cfg.to_dict()))
    return manifest


def _write_shard(out_dir: Path, result: ShardResult, cfg: GenerateConfig, fp: str,
                 digests: dict[str, str]) -> dict[str, Any]:
    """Write one finished shard: its scene graphs, its Parquet file, then (last) its index; returns the index."""
    t = time.perf_counter()
    spec = result.spec
    graphs = out_dir / "scene_graphs"
    if cfg.write_scene_graphs:
        for sid in spec.scene_ids:
            path = graphs / f"{sid}.json"
            if sid in result.graphs:
                _write(path, lambda p=path, b=result.graphs[sid]: atomic_write_bytes(p, b))
            elif scene_id_problem(sid) is None:  # no row any more (edited into a rejection): no stale graph
                _write(path, lambda p=path: p.unlink(missing_ok=True))
    shard_path = out_dir / "data" / spec.name
    _write(shard_path, lambda: write_shard_bytes(shard_path, result.parquet))
    result.state["timings_s"]["write"] = result.state["timings_s"].get("write", 0.0) + time.perf_counter() - t
    index = build_index(result, fingerprint=fp, inputs=digests)
    state_path = index_path(out_dir / "_state", spec)
    _write(state_path, lambda: atomic_write_json(state_path, index))
    return json.loads(json.dumps(index, default=str))


def _manifest(states: list[dict[str, Any]], cfg: GenerateConfig, scenes_dir, out_dir, n_found: int,
              wall: float, resumed: int) -> dict[str, Any]:
    def total(key: str) -> Counter:
        c: Counter = Counter()
        for s in states:
            c.update(s.get(key) or {})
        return c

    timings: dict[str, float] = {}
    for s in states:
        for k, v in s["timings_s"].items():
            timings[k] = timings.get(k, 0.0) + v
    rejected = [r for s in states for r in s["rejected"]]
    errors = [e for s in states for e in s["errors"]]
    without = [w for s in states for w in s["without_qa"]]
    n_ok = sum(s["scenes_ok"] for s in states)
    qa_total = sum(s["qa_pairs"] for s in states)
    manifest = {
        "format": "spatialforge-dataset/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "scenes_dir": str(scenes_dir),
        "out_dir": str(out_dir),
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "counts": {
            "scenes_found": n_found,
            "scenes_ok": n_ok,
            "scenes_rejected": len(rejected),
            "scenes_failed": len(errors),
            "scenes_without_qa": len(without),
            "rows": n_ok,
            "qa_pairs": qa_total,
            "qa_per_scene": round(qa_total / n_ok, 3) if n_ok else 0.0,
            "per_kind": dict(sorted(total("per_kind").items())),
            "per_type": dict(sorted(total("per_type").items())),
            "gravity": dict(total("gravity")),
            "objects_measured": sum(s["objects_measured"] for s in states),
            "objects_skipped": dict(sorted(total("objects_skipped").items())),
            "objects_unreferable": sum(s["objects_unreferable"] for s in states),
            "question_skips": dict(sorted(total("question_skips").items())),
            "qa_shortfall": sum(s["shortfall"] for s in states),
            "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
            "failed_by_reason": dict(Counter(e.get("reason", "internal_error") for e in errors)),
            "failures_by_reason": failures_by_reason({"rejected": rejected, "errors": errors}),
        },
        "rejected": rejected,
        "failed": errors,
        "without_qa": without,
        "shards": [s["shard"] for s in states],
        "shards_resumed": resumed,
        "timings_s": {k: round(timings[k], 4) for k in (*STAGES, *sorted(set(timings) - set(STAGES)))
                      if k in timings} | {"wall": round(wall, 3)},
    }
    if cfg.afford:
        no_parts = total("afford_without_parts")
        per_type = total("per_type")
        manifest["counts"]["afford"] = {
            "scenes_with_parts": sum(int(s.get("afford_scenes_with_parts", 0)) for s in states),
            "scenes_without_parts": sum(no_parts.values()),
            "without_parts_by_reason": {k: no_parts[k] for k in NO_PARTS_REASONS if no_parts.get(k)},
            "per_type": {t: per_type.get(t, 0) for t in cfg.afford_types},
        }
    return manifest
