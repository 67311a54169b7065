"""Deterministic input shards, what processing one returns, and the shard index that marks it complete.

A run is cut into shards of ``shard_size`` scene folders in sorted order (:func:`plan_shards`), so the
same inputs give the same shards whoever processes them. A runner (spatialforge.pipeline.runners)
hands every :class:`ShardSpec` to ``process_shard`` - in this process, in a worker process or as a Ray
task - and receives a :class:`ShardResult`: the encoded Parquet bytes, the scene graphs as JSON bytes
and the shard's bookkeeping. Workers never write: only the driver does, in this order

1. the scene graphs ``scene_graphs/<scene id>.json``,
2. the Parquet file ``data/train-NNNNN-of-MMMMM.parquet`` (a temporary name, flushed, renamed),
3. the shard index ``_state/shard-NNNNN.json`` (:func:`build_index`): ids in, ids out, rows, failures
   by reason, the input digests, the config fingerprint and the Parquet file's size and hash.

The index is written last: a shard is complete exactly when its index exists and its Parquet file
has the size the index names. Anything else (a file without an index, a temporary file of a killed
run) is redone by the next run of the same command.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialforge import __version__
from spatialforge.io.dataset import shard_name

__all__ = [
    "INDEX_FORMAT",
    "SceneResult",
    "ShardResult",
    "ShardSpec",
    "ShardWork",
    "build_index",
    "failures_by_reason",
    "index_path",
    "merge_state",
    "plan_shards",
]

INDEX_FORMAT = "spatialforge-shard-index/1"


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: the ``index``-th of ``count`` shards, holding these scene folders (in order)."""

    index: int
    count: int
    folders: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} outside 0..{self.count - 1}")
        if not self.folders:
            raise ValueError("a shard needs at least one scene folder")

    @property
    def name(self) -> str:
        """The Parquet file name of this shard (``train-00003-of-00010.parquet``)."""
        return shard_name(self.index, self.count)

    @property
    def scene_ids(self) -> list[str]:
        return [Path(f).name for f in self.folders]


def plan_shards(folders: Sequence[str | Path], shard_size: int) -> list[ShardSpec]:
    """Cut ``folders`` (already in their sorted order) into consecutive shards of ``shard_size``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    n = math.ceil(len(folders) / shard_size)
    return [ShardSpec(i, n, tuple(str(f) for f in folders[i * shard_size:(i + 1) * shard_size])) for i in range(n)]


@dataclass
class SceneResult:
    """What processing one scene returns to the driver (small and picklable).

    ``state`` is this scene's share of the shard's bookkeeping (the same keys as the shard's), so
    shard states are sums of scene states (:func:`merge_state`).
    """

    scene_id: str
    folder: str
    row: dict[str, Any] | None
    graph_json: bytes | None
    state: dict[str, Any]
    messages: list[str] = field(default_factory=list)


@dataclass
class ShardResult:
    """What processing one shard returns: its Parquet bytes, scene graphs and bookkeeping."""

    spec: ShardSpec
    parquet: bytes
    graphs: dict[str, bytes]  # scene id -> scene graph JSON, for the scenes with a row
    state: dict[str, Any]
    row_ids: list[str]
    messages: list[str] = field(default_factory=list)
    version: str = __version__  # the spatialforge that processed it (a Ray node may have another installed)


@dataclass(frozen=True)
class ShardWork:
    """Everything a runner needs, as module-level functions (picklable by reference) and the config.

    ``shard(spec, config)`` processes a whole shard (the normal path); ``scene(folder, config)`` one
    scene, ``assemble(spec, config, scene_results)`` builds the shard from per-scene results and
    ``died(folder, detail)`` records a scene that killed its worker every time it was tried: a runner
    uses these three to isolate the scene that kills a worker and still deliver the rest of its shard.
    """

    shard: Callable[[ShardSpec, Any], ShardResult]
    scene: Callable[[str, Any], SceneResult]
    assemble: Callable[[ShardSpec, Any, list[SceneResult]], ShardResult]
    died: Callable[[str, str], SceneResult]
    config: Any
    setup: tuple[str, ...] = ()


def merge_state(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add ``part`` into ``total`` (numbers add, lists extend, mappings add per key); returns ``total``."""
    for key, value in part.items():
        if isinstance(value, bool) or key not in total:
            total[key] = (Counter(value) if isinstance(value, Counter) else
                          dict(value) if isinstance(value, dict) else
                          list(value) if isinstance(value, list) else value)
        elif isinstance(value, dict):
            merge_state(total[key], value)
        elif isinstance(value, list):
            total[key].extend(value)
        else:
            total[key] += value
    return total


def failures_by_reason(state: dict[str, Any]) -> dict[str, int]:
    """Rejected and failed scenes of a shard (or a run) counted by reason."""
    c = Counter(r["reason"] for r in state.get("rejected", []))
    c.update(e.get("reason", "internal_error") for e in state.get("errors", []))
    return dict(sorted(c.items()))


def index_path(state_dir: Path, spec: ShardSpec) -> Path:
    return state_dir / f"shard-{spec.index:05d}.json"


def build_index(result: ShardResult, *, fingerprint: str, inputs: dict[str, str]) -> dict[str, Any]:
    """The shard index written after the shard's Parquet file: bookkeeping plus what identifies it."""
    spec = result.spec
    return dict(result.state, format=INDEX_FORMAT, fingerprint=fingerprint, shard=spec.name, index=spec.index,
                scene_ids=spec.scene_ids, inputs=inputs, rows=len(result.row_ids), row_ids=result.row_ids,
                failures_by_reason=failures_by_reason(result.state), bytes=len(result.parquet),
                sha256=hashlib.sha256(result.parquet).hexdigest())
