"""``spatialforge generate``: scene folders -> scene graphs -> QA -> Parquet shards + manifest.

Scenes are processed in sorted order and grouped into shards of ``shard_size``. Each shard is
written atomically together with a small state file; an interrupted run resumes by skipping
complete shards (identical output, since every scene's randomness depends only on the seed and
its id). Bad scenes are rejected with a one-line reason, recorded and counted; nothing is dropped
silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialforge import __version__
from spatialforge._text import count, shown
from spatialforge.core.types import RGBDScene, SceneGraph
from spatialforge.errors import SceneError, SpatialForgeError
from spatialforge.geometry.config import GeometryConfig
from spatialforge.geometry.scene_graph import build_scene_graph
from spatialforge.io.dataset import atomic_write_json, encode_png, make_row, shard_name, write_shard
from spatialforge.io.outdir import OutputKind
from spatialforge.io.scene_folder import IMAGE_NAMES, find_scene_dirs, load_scene
from spatialforge.qa.generator import QAConfig, QAResult, generate_qa

__all__ = ["DATASET_OUTPUT", "GenerateConfig", "SceneOutcome", "process_scene", "run_generate", "scene_digest"]

STAGES = ("load", "geometry", "qa", "write")

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

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise SpatialForgeError(f"shard_size must be >= 1, got {self.shard_size}")

    def to_dict(self) -> dict[str, Any]:
        return {"qa": self.qa.to_dict(), "geometry": self.geometry.to_dict(), "shard_size": self.shard_size}

    def fingerprint(self) -> str:
        blob = json.dumps({"config": self.to_dict(), "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def _image_bytes(scene: RGBDScene, folder: Path) -> tuple[bytes, str]:
    for name in IMAGE_NAMES:
        if (folder / name).is_file():
            return (folder / name).read_bytes(), name
    return encode_png(scene.image), "image.png"


def process_scene(folder: Path, config: GenerateConfig) -> SceneOutcome:
    """Load, lift and question one scene folder. Raises only on internal errors."""
    out = SceneOutcome(scene_id=folder.name, path=str(folder))
    t0 = time.perf_counter()
    try:
        scene = load_scene(folder)
    except SceneError as exc:
        out.rejected = {"scene_id": folder.name, "path": str(folder), "reason": exc.reason, "message": str(exc)}
        out.timings["load"] = time.perf_counter() - t0
        return out
    t1 = time.perf_counter()
    graph = build_scene_graph(scene, config.geometry)
    t2 = time.perf_counter()
    qa = generate_qa(graph, config.qa)
    t3 = time.perf_counter()
    image_bytes, image_name = _image_bytes(scene, folder)
    out.graph, out.qa = graph, qa
    out.row = make_row(scene.scene_id, image_bytes, f"{scene.scene_id}/{image_name}",
                       scene.intrinsics.width, scene.intrinsics.height, qa.qa, graph.gravity.source)
    out.timings.update(load=t1 - t0, geometry=t2 - t1, qa=t3 - t2)
    return out


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
    for p in o.qa.qa:
        st["per_type"][p.type] += 1
        st["per_kind"][p.kind] += 1
    if not o.qa.qa:
        reason = "no_measurable_objects" if len(o.graph.objects) < 1 else "no_askable_question"
        st["without_qa"].append({"scene_id": o.scene_id, "reason": reason})


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


def run_generate(scenes_dir: str | Path, out_dir: str | Path, config: GenerateConfig | None = None, *,
                 progress: bool = True, log=None) -> dict[str, Any]:
    """Generate the dataset; returns the manifest (also written to ``out_dir/manifest.json``)."""
    cfg = config or GenerateConfig()
    out_dir = Path(out_dir)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    folders = find_scene_dirs(scenes_dir)
    if not folders:
        raise SpatialForgeError(f"{scenes_dir}: no scene folders found (see docs/formats.md)")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "_state"
    fp = cfg.fingerprint()
    n_shards = math.ceil(len(folders) / cfg.shard_size)
    scene_ids = [f.name for f in folders]
    run_info = {"fingerprint": fp, "n_shards": n_shards, "scene_ids": scene_ids, "config": cfg.to_dict()}
    run_path = state_dir / "run.json"
    if run_path.is_file():
        _check_same_run(_read_state(run_path), run_info, out_dir)
    elif any((out_dir / "data").glob("*.parquet")):
        raise SpatialForgeError(f"{out_dir}: data/ already holds Parquet shards from another run; "
                                "use a new --out or --overwrite")
    atomic_write_json(run_path, run_info)
    start = time.perf_counter()
    states: list[dict[str, Any]] = []
    resumed, redone = 0, []
    bar = tqdm(total=len(folders), desc="generate", unit="scene", disable=not progress, file=sys.stderr)
    for si in range(n_shards):
        chunk = folders[si * cfg.shard_size:(si + 1) * cfg.shard_size]
        shard_path = out_dir / "data" / shard_name(si, n_shards)
        state_path = state_dir / f"shard-{si:05d}.json"
        digests = {f.name: scene_digest(f) for f in chunk}
        if state_path.is_file() and shard_path.is_file():
            prev = _read_state(state_path)
            if prev.get("fingerprint") != fp or prev.get("scene_ids") != [f.name for f in chunk]:
                raise SpatialForgeError(
                    f"{out_dir}: holds output of a different configuration or scene list; "
                    "use a new --out or --overwrite")
            edited = sorted(k for k, v in digests.items() if (prev.get("inputs") or {}).get(k) != v)
            if not edited:
                states.append(prev)
                resumed += 1
                bar.update(len(chunk))
                continue
            redone.append({"shard": shard_path.name, "edited": edited})
            log(f"redoing {shard_path.name}: {count(len(edited), 'scene')} changed since it was written "
                f"({shown(edited)})")
        st = _new_state()
        rows = []
        for folder in chunk:
            try:
                outcome = process_scene(folder, cfg)
            except SpatialForgeError:
                raise
            except Exception as exc:  # record, count and continue: a bug must not lose the run
                if cfg.fail_fast:
                    raise
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                st["errors"].append({"scene_id": folder.name, "path": str(folder), "error": tb})
                log(f"error: {folder}: {tb}")
                bar.update(1)
                continue
            if outcome.rejected is not None:
                log(f"rejected: {outcome.rejected['message']}")
            _scene_stats(outcome, st)
            if outcome.row is not None:
                t = time.perf_counter()
                rows.append(outcome.row)
                if cfg.write_scene_graphs and outcome.graph is not None:
                    g = outcome.graph.to_dict()
                    g["references"] = {str(k): v for k, v in outcome.qa.references.items()}
                    g["unreferable"] = outcome.qa.unreferable
                    atomic_write_json(out_dir / "scene_graphs" / f"{outcome.scene_id}.json", g)
                st["timings_s"]["write"] = st["timings_s"].get("write", 0.0) + time.perf_counter() - t
            bar.update(1)
        st["scenes"] = len(chunk)
        st["qa_pairs"] = sum(len(r["qa"]) for r in rows)
        t = time.perf_counter()
        write_shard(shard_path, rows)
        st["timings_s"]["write"] = st["timings_s"].get("write", 0.0) + time.perf_counter() - t
        st.update(fingerprint=fp, shard=shard_path.name, rows=len(rows), scene_ids=[f.name for f in chunk],
                  inputs=digests)
        atomic_write_json(state_path, st)
        states.append(json.loads(json.dumps(st)))
    bar.close()
    manifest = _manifest(states, cfg, scenes_dir, out_dir, len(folders), time.perf_counter() - start, resumed)
    manifest["shards_redone"] = redone
    atomic_write_json(out_dir / "manifest.json", manifest)
    atomic_write_json(out_dir / "config.json", cfg.to_dict())
    return manifest


def _manifest(states: list[dict[str, Any]], cfg: GenerateConfig, scenes_dir, out_dir, n_found: int,
              wall: float, resumed: int) -> dict[str, Any]:
    def total(key: str) -> Counter:
        c: Counter = Counter()
        for s in states:
            c.update(s[key])
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
    return {
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
        },
        "rejected": rejected,
        "failed": errors,
        "without_qa": without,
        "shards": [s["shard"] for s in states],
        "shards_resumed": resumed,
        "timings_s": {k: round(v, 4) for k, v in timings.items()} | {"wall": round(wall, 3)},
    }
