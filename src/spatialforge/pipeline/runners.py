"""Runners: who processes the shards of ``spatialforge generate`` (the output never depends on it).

* ``local`` with ``workers=1`` (the default): every shard in this process, one after another.
* ``local`` with ``workers=N``: a pool of N worker processes (``spawn``), one shard per task.
* ``ray``: one Ray task per shard on a local Ray cluster (started and stopped here) or on the
  cluster at ``address``; Ray retries a task whose worker died.

Every runner calls the same functions of a :class:`~spatialforge.pipeline.shards.ShardWork` and hands
each :class:`~spatialforge.pipeline.shards.ShardResult` to the driver's ``on_result`` as it arrives
(in any order); only the driver writes files. A shard whose worker dies (killed, ``os._exit``,
``SystemExit``) is retried; one that keeps killing its worker is split into its scenes, each retried
alone, and a scene that still kills its worker is recorded with the reason ``worker_died`` while
the rest of the shard is delivered. In the pool, when a worker dies every task that was in flight
fails with it: those shards are rerun one at a time, so the culprit is known before a retry is
counted against it. With ``workers=1`` there is no separate worker to lose: a stage that exits
ends the run (rerun the same command to resume).

Stages never import Ray; this module imports it only when the ``ray`` runner is chosen.
See docs/scale.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.pipeline.shards import SceneResult, ShardResult, ShardSpec, ShardWork

__all__ = [
    "RUNNERS",
    "CaughtSignal",
    "Interrupted",
    "RunnerConfig",
    "StageResources",
    "available_cpus",
    "load_runner_config",
    "parse_workers",
    "run_shards",
    "stop_on_signals",
]

RUNNERS = ("local", "ray")
MAX_WORKERS = 4096


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_workers(text: str) -> int:
    """An argparse type for ``--workers``: an integer >= 1, or ``auto`` (:func:`available_cpus`)."""
    value = str(text).strip().lower()
    if value == "auto":
        return available_cpus()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (at most {MAX_WORKERS}) or 'auto', got {text!r}")
    return n


parse_workers.__name__ = "workers"


@dataclass(frozen=True)
class StageResources:
    """What one task of a stage asks the scheduler for (Ray's ``num_cpus`` / ``num_gpus`` / ``memory``)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes; None: no reservation

    def __post_init__(self) -> None:
        for key in ("num_cpus", "num_gpus"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{key} must be a number >= 0, got {v!r}")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ConfigError("a stage needs num_cpus > 0 or num_gpus > 0")
        if self.memory is not None and (isinstance(self.memory, bool) or not isinstance(self.memory, int)
                                        or self.memory < 1):
            raise ConfigError(f"memory must be a number of bytes >= 1, got {self.memory!r}")

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.memory is not None:
            opts["memory"] = self.memory
        return opts


@dataclass(frozen=True)
class RunnerConfig:
    """How to run the shards. None of it changes the output, so none of it is in the run's fingerprint.

    ``workers``: local runner: processes (1 = this process); ray runner: CPUs of the local cluster it
    starts (1 = the cluster's default, all CPUs). ``cpu``: the resources of one task of the CPU stages
    (load, geometry, QA, encoding: one task per shard) on Ray. ``max_retries``: how often a shard (then
    a scene) is retried after its worker died. ``max_in_flight``: shards submitted ahead of the results
    (default: twice the parallelism; it bounds the memory the driver and the object store hold).
    ``setup``: ``"module:function"`` hooks called once in every worker process before its first task
    (and in this process with ``workers=1``): plugins, logging, debugging.
    """

    name: str = "local"
    workers: int = 1
    address: str | None = None
    cpu: StageResources = field(default_factory=StageResources)
    max_retries: int = 2
    max_in_flight: int | None = None
    setup: tuple[str, ...] = ()
    photo_stages: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # [stages.<model stage>] of the file
    window_chunks: int = 256

    def __post_init__(self) -> None:
        if self.name not in RUNNERS:
            raise ConfigError(f"runner must be one of {', '.join(RUNNERS)}, got {self.name!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be an integer from 1 to {MAX_WORKERS}, got {self.workers!r}")
        if self.address is not None and self.name != "ray":
            raise ConfigError(f"an address ({self.address}) needs the ray runner")
        if self.address is not None and self.workers > 1:
            raise ConfigError("workers sizes a local Ray cluster; a cluster at an address has its own size")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        for key in ("max_in_flight", "window_chunks"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{key} must be an integer >= 1, got {v!r}")
        if self.photo_stages:
            from spatialforge.pipeline.ray_photos import photo_stage_resources

            photo = self.photo_resources()
            decode = photo.pop("decode", {})
            if set(decode) - {"num_cpus", "memory"}:
                raise ConfigError("[stages.decode] may only set num_cpus and memory")
            photo_stage_resources(photo, cluster_cpus=1, cluster_gpus=0)  # checks names and keys
        for hook in self.setup:
            _split_hook(hook)

    def photo_resources(self) -> dict[str, dict[str, Any]]:
        """The ``[stages.<model stage>]`` tables: what the photo model stages ask Ray for (docs/scale.md)."""
        return {stage: dict(values) for stage, values in self.photo_stages}

    def describe(self) -> dict[str, Any]:
        """The runner as the manifest records it."""
        d: dict[str, Any] = {"name": self.name, "workers": self.workers, "max_retries": self.max_retries}
        if self.name == "ray":
            d.update(address=self.address, cpu=self.cpu.ray_options())
        if self.setup:
            d["setup"] = list(self.setup)
        return d


_FILE_KEYS = {"runner", "workers", "address", "max_retries", "max_in_flight", "worker_setup", "stages",
              "window_chunks"}
_STAGE_KEYS = {"num_cpus", "num_gpus", "memory"}


def load_runner_config(path: str | Path | None = None, **flags: Any) -> RunnerConfig:
    """A :class:`RunnerConfig` from a ``.toml``/``.json`` file (keys: ``runner``, ``workers``, ``address``,
    ``max_retries``, ``max_in_flight``, ``worker_setup``, ``[stages.cpu]`` with ``num_cpus``, ``num_gpus``,
    ``memory``), overridden by the ``flags`` that are not None (``runner``, ``workers``, ``address``,
    ``setup``). Any problem is a :class:`ConfigError` naming the file and key."""
    from spatialforge.io.config_file import read_config_file

    data = read_config_file(path, "runner config") if path is not None else {}
    where = f"{path}: " if path is not None else ""
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_FILE_KEYS))})")
    stages = data.get("stages", {})
    if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
        raise ConfigError(f"{where}[stages] holds tables: [stages.cpu] (the CPU stages: load, geometry, QA, encode) "
                          f"and [stages.<model stage>] (filter, detector, ...)")
    cpu = stages.get("cpu", {})
    photo = tuple((k, tuple(sorted(v.items()))) for k, v in sorted(stages.items()) if k != "cpu")
    if not isinstance(cpu, dict) or set(cpu) - _STAGE_KEYS:
        raise ConfigError(f"{where}[stages.cpu] may only set {', '.join(sorted(_STAGE_KEYS))}")
    setup = data.get("worker_setup", [])
    if isinstance(setup, str):
        setup = [setup]
    if not isinstance(setup, list) or not all(isinstance(s, str) for s in setup):
        raise ConfigError(f"{where}worker_setup must be a 'module:function' string or a list of them")
    values = {"name": data.get("runner", "local"), "workers": data.get("workers", 1),
              "address": data.get("address"), "max_retries": data.get("max_retries", 2),
              "max_in_flight": data.get("max_in_flight"), "setup": tuple(setup), "photo_stages": photo,
              "window_chunks": data.get("window_chunks", 256)}
    if values["workers"] == "auto":
        values["workers"] = available_cpus()
    try:
        values["cpu"] = StageResources(**cpu)
        base = RunnerConfig(**values)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}{exc}") from None
    names = {"runner": "name", "workers": "workers", "address": "address", "setup": "setup"}
    given = {names[k]: (tuple(v) if k == "setup" else v) for k, v in flags.items() if v is not None}
    if "setup" in given:
        given["setup"] = base.setup + given["setup"]
    if given.get("name") == "local" and "address" not in given and base.address is not None:
        given["address"] = None  # --runner local over a file that names a Ray cluster
    try:
        return replace(base, **given)
    except ConfigError as exc:
        flags = {"name": "--runner", "workers": "--workers", "address": "--address", "setup": "--worker-setup"}
        raise ConfigError(f"{where}{exc} (with the command line's {', '.join(flags[k] for k in given)})") from None


# ----------------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal. ``exit_code`` is 128 + its number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class CaughtSignal:
    """The signal :func:`stop_on_signals` caught (None: none), also when a library turned the
    :class:`Interrupted` its handler raised into a plain ``KeyboardInterrupt`` (Ray's ``wait`` does).

    ``with caught.deferred():`` holds a signal back until the block is done (the driver writing one
    shard's files: a shard is finished, or not started, never half-written)."""

    signum: int | None = None
    deferring: bool = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def stop_on_signals(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[CaughtSignal]:
    """Turn SIGINT / SIGTERM into :class:`Interrupted` while the block runs (main thread only; a signal
    that is ignored, e.g. under ``nohup``, stays ignored). The previous handlers come back afterwards."""
    caught = CaughtSignal()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        caught.signum = signum
        if not caught.deferring:
            raise Interrupted(signum)

    previous = {}
    for s in signums:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, handler)
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- worker setup hooks
def _split_hook(hook: str) -> tuple[str, str]:
    module, sep, func = hook.partition(":")
    if not sep or not module or not func.isidentifier():
        raise ConfigError(f"worker setup hook {hook!r}: expected 'module:function'")
    return module, func


def check_setup(hooks: Sequence[str]) -> None:
    """Import every hook here first, so a typo is one clear error before any work starts."""
    for hook in hooks:
        module, func = _split_hook(hook)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"worker setup hook {hook!r}: cannot import {module} ({exc})") from None
        if not callable(getattr(mod, func, None)):
            raise ConfigError(f"worker setup hook {hook!r}: {module} has no function {func}")


@functools.cache
def _setup_once(hook: str) -> None:
    """Call a setup hook once per process (the cache is the per-process record that it ran)."""
    module, func = _split_hook(hook)
    getattr(importlib.import_module(module), func)()


def _task(fn: Callable[..., Any], setup: tuple[str, ...], *args: Any) -> Any:
    """What a worker runs: its setup hooks (once per process), then ``fn(*args)``."""
    for hook in setup:
        _setup_once(hook)
    return fn(*args)


def _ignore_sigint() -> None:
    # Ctrl-C in a terminal reaches the whole process group: only the driver reacts, and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------- the runners
@dataclass(frozen=True)
class _Job:
    spec: ShardSpec
    pos: int | None = None  # None: the whole shard; else one scene of it (isolation)

    @property
    def key(self) -> tuple[int, int | None]:
        return self.spec.index, self.pos

    def what(self) -> str:
        return self.spec.name if self.pos is None else f"{self.spec.scene_ids[self.pos]} ({self.spec.name})"


@dataclass
class _Deliver:
    """Hands results to the driver; assembles shards that were split into scenes."""

    work: ShardWork
    on_result: Callable[[ShardResult], None]
    on_progress: Callable[[int], None]
    log: Callable[[str], None]
    stats: dict[str, Any] = field(default_factory=lambda: {"worker_deaths": 0, "shards_retried": [],
                                                            "shards_split": [], "scenes_died": []})
    parts: dict[int, list[SceneResult | None]] = field(default_factory=dict)

    def shard(self, result: ShardResult) -> None:
        self.on_result(result)
        self.on_progress(len(result.spec.folders))

    def split(self, spec: ShardSpec) -> list[_Job]:
        """Process ``spec`` scene by scene from now on."""
        self.stats["shards_split"].append(spec.name)
        self.log(f"{spec.name} killed its worker every time it ran: processing its scenes one by one")
        self.parts[spec.index] = [None] * len(spec.folders)
        return [_Job(spec, i) for i in range(len(spec.folders))]

    def scene(self, job: _Job, result: SceneResult) -> None:
        parts = self.parts[job.spec.index]
        parts[job.pos] = result
        if all(p is not None for p in parts):
            del self.parts[job.spec.index]
            self.shard(self.work.assemble(job.spec, self.work.config, parts))

    def died(self, job: _Job, detail: str) -> None:
        folder = job.spec.folders[job.pos]
        self.stats["scenes_died"].append(Path(folder).name)
        self.scene(job, self.work.died(folder, detail))


def run_shards(config: RunnerConfig, specs: Sequence[ShardSpec], work: ShardWork,
               on_result: Callable[[ShardResult], None], *, on_progress: Callable[[int], None] = lambda n: None,
               log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Process ``specs`` with the runner ``config`` names; ``on_result`` gets every shard's result in
    this process as it arrives. Returns what happened to workers (deaths, retries, split shards)."""
    if work.setup:
        check_setup(work.setup)
    deliver = _Deliver(work, on_result, on_progress, log)
    if not specs:
        return deliver.stats
    if config.name == "ray":
        _run_ray(config, specs, work, deliver)
    elif config.workers == 1:
        _run_inline(specs, work, deliver)
    else:
        _run_pool(config, specs, work, deliver, min(config.workers, len(specs)))
    return deliver.stats


def _run_inline(specs: Sequence[ShardSpec], work: ShardWork, deliver: _Deliver) -> None:
    for hook in work.setup:
        _setup_once(hook)
    for spec in specs:
        deliver.on_result(work.shard(spec, work.config, on_scene=lambda r: deliver.on_progress(1)))


def _ping() -> int:
    return os.getpid()


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, started with ``spawn`` everywhere (no locks or threads inherited
    from the driver, the same behaviour on every OS), checked to start before any work is given to it."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        pool.submit(_ping).result()
    except BrokenProcessPool:
        pool.shutdown(wait=True)
        raise SpatialForgeError(
            "the worker processes could not start (see the error above); a Python script that calls "
            "run_generate with workers > 1 must guard its entry point with `if __name__ == \"__main__\":`") from None
    return pool


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Abandon what is in flight: cancel queued tasks and end the workers now (they write nothing)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public way before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


def _submit(pool: ProcessPoolExecutor, work: ShardWork, job: _Job) -> Future:
    if job.pos is None:
        return pool.submit(_task, work.shard, work.setup, job.spec, work.config)
    return pool.submit(_task, work.scene, work.setup, job.spec.folders[job.pos], work.config)


def _run_pool(config: RunnerConfig, specs: Sequence[ShardSpec], work: ShardWork, deliver: _Deliver,
              workers: int) -> None:
    todo: deque[_Job] = deque(_Job(s) for s in specs)
    alone: deque[_Job] = deque()  # jobs to run one at a time: suspects of a worker death, and retries
    deaths: Counter = Counter()  # deaths of a job while it ran alone (or was the one that exited)
    window = config.max_in_flight or 2 * workers
    pool = _new_pool(workers)
    in_flight: dict[Future, _Job] = {}
    try:
        while todo or alone or in_flight:
            if alone:
                if not in_flight:
                    job = alone.popleft()
                    in_flight[_submit(pool, work, job)] = job
            else:
                while todo and len(in_flight) < window:
                    job = todo.popleft()
                    in_flight[_submit(pool, work, job)] = job
            running = len(in_flight)
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            died: list[tuple[_Job, bool]] = []  # (job, known to be the one that died)
            broken = False
            for fut in done:
                job = in_flight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    died.append((job, running == 1))
                except SystemExit as exc:  # a stage called sys.exit(): that worker's task is the culprit
                    died.append((job, True))
                    deliver.log(f"a worker exited (SystemExit {exc.code}) while processing {job.what()}")
                else:
                    _deliver(deliver, job, result)
            if broken:  # every task of a broken pool fails: collect them, and start a new pool
                for fut in list(in_flight):
                    job = in_flight.pop(fut)
                    try:
                        result = fut.result()
                    except (BrokenProcessPool, SystemExit):
                        died.append((job, False))
                    else:
                        _deliver(deliver, job, result)
                pool.shutdown(wait=True)
                pool = _new_pool(workers)
                deliver.stats["worker_deaths"] += 1
                names = [j.what() for j, _ in died]
                deliver.log(f"a worker process died while {', '.join(names)} "
                            + ("was in flight" if len(names) == 1 else "were in flight; rerunning them one at a time"))
            elif died:
                deliver.stats["worker_deaths"] += len(died)
            for job, known in died:
                if not known:
                    alone.append(job)
                    continue
                deaths[job.key] += 1
                if deaths[job.key] <= config.max_retries:
                    if job.pos is None:
                        deliver.stats["shards_retried"].append(job.spec.name)
                    deliver.log(f"retrying {job.what()} alone (retry {deaths[job.key]} of {config.max_retries})")
                    alone.append(job)
                elif job.pos is None:
                    alone.extend(deliver.split(job.spec))
                else:
                    deliver.log(f"{job.what()}: killed its worker {deaths[job.key]} times; recorded as worker_died")
                    deliver.died(job, f"the worker process died {deaths[job.key]} times while processing it")
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _deliver(deliver: _Deliver, job: _Job, result: Any) -> None:
    if job.pos is None:
        deliver.shard(result)
    else:
        deliver.scene(job, result)


def _run_ray(config: RunnerConfig, specs: Sequence[ShardSpec], work: ShardWork, deliver: _Deliver) -> None:
    from spatialforge._optional import require

    ray = require("ray", extra="ray", feature="--runner ray")
    died_errors = tuple(e for e in (getattr(ray.exceptions, n, None) for n in
                                    ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError")) if e is not None)
    started = not ray.is_initialized()
    if started and config.address is None and config.workers > 1 and os.environ.get("RAY_ADDRESS"):
        raise ConfigError(f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} names a cluster to join, whose size is its own: "
                          "drop --workers, or unset RAY_ADDRESS to start a local cluster of that size")
    if started:  # no address: a local cluster for this run (RAY_ADDRESS, if set, names one to join instead)
        kwargs: dict[str, Any] = {"address": config.address, "logging_level": logging.WARNING,
                                  "include_dashboard": False}
        if config.address is None and config.workers > 1:
            kwargs["num_cpus"] = config.workers
        main = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGTERM) if main else None
        ray.init(**kwargs)
        if before is not None:  # ray.init installs its own SIGTERM handler (sys.exit); the caller's stays in charge
            signal.signal(signal.SIGTERM, before)
    refs: dict[Any, _Job] = {}
    try:
        _ray_loop(ray, config, specs, work, deliver, refs, died_errors)
    finally:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _ray_loop(ray: Any, config: RunnerConfig, specs: Sequence[ShardSpec], work: ShardWork, deliver: _Deliver,
              refs: dict[Any, _Job], died_errors: tuple[type[BaseException], ...]) -> None:
    task = ray.remote(_task).options(max_retries=config.max_retries, retry_exceptions=False,
                                     **config.cpu.ray_options())
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    window = config.max_in_flight or max(2, 2 * int(cpus // max(config.cpu.num_cpus, 1e-9)))
    config_ref = ray.put(work.config)
    todo: deque[_Job] = deque(_Job(s) for s in specs)
    ready_jobs: deque[_Job] = deque()  # scenes of split shards: Ray tells which task died, so they run side by side

    def submit(job: _Job) -> None:
        if job.pos is None:
            refs[task.remote(work.shard, work.setup, job.spec, config_ref)] = job
        else:
            refs[task.remote(work.scene, work.setup, job.spec.folders[job.pos], config_ref)] = job

    while todo or ready_jobs or refs:
        while (ready_jobs or todo) and len(refs) < window:
            submit(ready_jobs.popleft() if ready_jobs else todo.popleft())
        [ref], _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(ref)
        try:
            result = ray.get(ref)
        except died_errors:
            deliver.stats["worker_deaths"] += 1
            if job.pos is None:
                ready_jobs.extend(deliver.split(job.spec))
            else:
                tries = config.max_retries + 1
                deliver.log(f"{job.what()}: killed its worker {tries} times; recorded as worker_died")
                deliver.died(job, f"the worker process died {tries} times while processing it")
            continue
        except ray.exceptions.RayTaskError as exc:  # the task raised: the same error as in this process
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else exc) from None
        _deliver(deliver, job, result)
