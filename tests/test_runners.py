"""Runners of `spatialforge generate` (issue 10): deterministic shards, a pure process_shard, shard indexes,
the local process pool (--workers) and its options, the manifest. Ray: tests/test_runners_ray.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spatialforge.cli.main import main
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.io.dataset import ROW_SCHEMA
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.pipeline.generate import STAGES, process_shard, scene_digest
from spatialforge.pipeline.runners import RunnerConfig, StageResources, available_cpus, load_runner_config
from spatialforge.pipeline.shards import ShardSpec, plan_shards
from spatialforge.qa import QAConfig


def _cfg(shard_size: int = 2) -> GenerateConfig:
    return GenerateConfig(qa=QAConfig(seed=0), shard_size=shard_size)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _quiet(*args: str) -> list[str]:
    return [*args, "--no-progress"]


@pytest.fixture(scope="module")
def runs(synth_dir, tmp_path_factory):
    """The same 6 scenes (3 shards of 2) in this process and with a pool of 2 workers."""
    root = tmp_path_factory.mktemp("runners")
    one = run_generate(synth_dir, root / "one", _cfg(), progress=False, log=lambda m: None)
    two = run_generate(synth_dir, root / "two", _cfg(), progress=False, log=lambda m: None,
                       runner=RunnerConfig(workers=2))
    return (root / "one", one), (root / "two", two)


# ----------------------------------------------------------------------------- shards
def test_plan_shards_is_deterministic_and_covers_every_folder_once():
    folders = [f"/s/scene_{i:02d}" for i in range(7)]
    specs = plan_shards(folders, 3)
    assert [s.name for s in specs] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [list(s.folders) for s in specs] == [folders[0:3], folders[3:6], folders[6:7]]
    assert [sid for s in specs for sid in s.scene_ids] == [Path(f).name for f in folders]
    assert plan_shards(folders, 3) == specs
    assert pickle.loads(pickle.dumps(specs)) == specs
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(folders, 0)


def test_process_shard_is_pure_and_picklable(synth_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to a relative path would land here
    [spec] = plan_shards(sorted(p for p in synth_dir.iterdir() if p.is_dir())[:2], 2)
    before = {p: p.stat().st_mtime_ns for p in synth_dir.rglob("*")}
    cfg = pickle.loads(pickle.dumps(_cfg()))
    a = process_shard(spec, cfg)
    b = pickle.loads(pickle.dumps(process_shard(spec, cfg)))
    assert a.parquet == b.parquet and a.graphs == b.graphs and a.row_ids == b.row_ids == spec.scene_ids
    assert list(tmp_path.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in synth_dir.rglob("*")} == before
    rows = pq.read_table(pa.BufferReader(a.parquet)).to_pylist()
    assert [r["scene_id"] for r in rows] == spec.scene_ids
    # the same bytes as the writer used before shards were encoded in workers (pq.write_table to a file)
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), tmp_path / "x.parquet", compression="zstd")
    assert (tmp_path / "x.parquet").read_bytes() == a.parquet


# ----------------------------------------------------------------------------- the local pool
def test_workers_1_and_2_write_byte_identical_shards_and_scene_graphs(runs):
    (one, m1), (two, m2) = runs
    assert m1["shards"] == m2["shards"] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert _files(one / "data") == _files(two / "data")
    assert _files(one / "scene_graphs") == _files(two / "scene_graphs")
    for key in ("counts", "rejected", "failed", "without_qa", "shards", "fingerprint"):
        assert m1[key] == m2[key], key
    assert m1["runner"]["workers"] == 1 and m2["runner"]["workers"] == 2
    for name in ("shard-00000.json", "shard-00001.json", "shard-00002.json"):
        a, b = (json.loads((d / "_state" / name).read_text()) for d in (one, two))
        a.pop("timings_s"), b.pop("timings_s")
        assert a == b


def test_shard_index_names_ids_rows_failures_inputs_and_the_file(runs, synth_dir):
    (one, m), _ = runs
    total_rows = 0
    for i, name in enumerate(m["shards"]):
        index = json.loads((one / "_state" / f"shard-{i:05d}.json").read_text())
        data = (one / "data" / name).read_bytes()
        assert index["format"] == "spatialforge-shard-index/1"
        assert index["shard"] == name and index["index"] == i
        assert index["fingerprint"] == _cfg().fingerprint()
        assert index["bytes"] == len(data) and index["sha256"] == hashlib.sha256(data).hexdigest()
        rows = pq.read_table(one / "data" / name, columns=["scene_id"]).to_pylist()
        assert index["row_ids"] == [r["scene_id"] for r in rows] and index["rows"] == len(rows)
        assert index["inputs"] == {s: scene_digest(synth_dir / s) for s in index["scene_ids"]}
        assert index["failures_by_reason"] == {}
        total_rows += index["rows"]
    assert total_rows == m["counts"]["rows"] == 6


def test_manifest_records_runner_stage_times_failures_and_wall(runs):
    _, (_, m) = runs
    assert m["runner"] == {"name": "local", "workers": 2, "max_retries": 2}
    assert set(STAGES) <= set(m["timings_s"]) and m["timings_s"]["wall"] > 0
    assert all(m["timings_s"][s] > 0 for s in STAGES)
    assert m["counts"]["failures_by_reason"] == {} and m["counts"]["failed_by_reason"] == {}
    assert m["worker_faults"] == {"worker_deaths": 0, "shards_retried": [], "shards_split": [], "scenes_died": []}
    assert m["throughput"]["scenes_processed"] == 6 and m["throughput"]["scenes_per_s"] > 0


def test_cli_workers_2_equals_workers_1_and_resumes_with_either(synth_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_quiet("generate", str(synth_dir), "--out", str(a), "--shard-size", "2")) == 0
    assert main(_quiet("generate", str(synth_dir), "--out", str(b), "--shard-size", "2", "--workers", "2")) == 0
    assert "runner: local, 2 workers" in capsys.readouterr().out
    assert _files(a / "data") == _files(b / "data")
    (b / "data" / "train-00001-of-00003.parquet").unlink()
    assert main(_quiet("generate", str(synth_dir), "--out", str(b), "--shard-size", "2", "--workers", "auto")) == 0
    assert "resumed 2 of 3 shards" in capsys.readouterr().out
    assert _files(a / "data") == _files(b / "data")


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "5000"])
def test_bad_workers_value_fails_naming_the_flag(synth_dir, tmp_path, capsys, value):
    assert main(_quiet("generate", str(synth_dir), "--out", str(tmp_path / "o"), "--workers", value)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"error: argument --workers: must be an integer >= 1 (at most 4096) or 'auto', got '{value}'" in line
    assert not (tmp_path / "o").exists()


def test_workers_auto_is_every_cpu_this_process_may_use():
    from spatialforge.pipeline.runners import parse_workers

    assert parse_workers("auto") == available_cpus() >= 1
    assert parse_workers(" 3 ") == 3


def test_a_shard_file_that_differs_from_its_index_is_redone(runs, synth_dir, tmp_path):
    import shutil

    (one, _), _ = runs
    out = tmp_path / "o"
    shutil.copytree(one, out)
    victim = out / "data" / "train-00001-of-00003.parquet"
    victim.write_bytes(victim.read_bytes()[:-100])  # cut: a copy that went wrong
    logged: list[str] = []
    m = run_generate(synth_dir, out, _cfg(), progress=False, log=logged.append)
    assert m["shards_resumed"] == 2
    assert any(line.startswith("redoing train-00001-of-00003.parquet: it holds") for line in logged), logged
    assert _files(out / "data") == _files(one / "data")


def test_resume_sweeps_temporary_files_of_a_killed_run(runs, synth_dir, tmp_path):
    import shutil

    (one, _), _ = runs
    out = tmp_path / "o"
    shutil.copytree(one, out)
    (out / "data" / ".train-00002-of-00003.parquet.k9x1.tmp").write_bytes(b"PAR1 torn")
    (out / "_state" / ".shard-00002.json.abcd.tmp").write_text("{")
    logged: list[str] = []
    run_generate(synth_dir, out, _cfg(), progress=False, log=logged.append)
    assert not list(out.rglob("*.tmp"))
    assert "removed 2 temporary files an interrupted run left behind" in logged


def test_progress_bar_shows_scenes_per_second_and_the_failure_count(synth_dir, tmp_path, capsys):
    run_generate(synth_dir, tmp_path / "o", _cfg(), progress=True, log=lambda m: None)
    err = capsys.readouterr().err
    assert "scene/s" in err and "0 failed" in err and "6/6" in err


# ----------------------------------------------------------------------------- runner config
def test_runner_config_file_and_flags(tmp_path):
    f = tmp_path / "runner.toml"
    f.write_text('runner = "ray"\nmax_retries = 4\nworker_setup = "json:dumps"\n'
                 '[stages.cpu]\nnum_cpus = 2\nmemory = 1000000000\n')
    cfg = load_runner_config(f)
    assert (cfg.name, cfg.max_retries, cfg.setup) == ("ray", 4, ("json:dumps",))
    assert cfg.cpu == StageResources(num_cpus=2, memory=1_000_000_000)
    assert cfg.cpu.ray_options() == {"num_cpus": 2, "memory": 1_000_000_000}
    over = load_runner_config(f, runner="local", workers=3, setup=["os:getpid"])
    assert (over.name, over.workers, over.setup) == ("local", 3, ("json:dumps", "os:getpid"))
    f.write_text("[stages.cpu]\nnum_gpu = 1\n")
    with pytest.raises(ConfigError, match=r"runner\.toml: \[stages\.cpu\] may only set memory, num_cpus, num_gpus"):
        load_runner_config(f)
    f.write_text("workers = 0\n")
    with pytest.raises(ConfigError, match=r"runner\.toml: workers must be an integer from 1"):
        load_runner_config(f)
    f.write_text("wrokers = 2\n")
    with pytest.raises(ConfigError, match=r"runner\.toml: unknown key\(s\) wrokers"):
        load_runner_config(f)
    with pytest.raises(ConfigError, match="needs the ray runner"):
        RunnerConfig(address="auto")
    with pytest.raises(ConfigError, match="expected 'module:function'"):
        RunnerConfig(setup=("no_colon",))


def test_cli_config_errors_are_one_line_before_anything_is_written(synth_dir, tmp_path, capsys):
    out = tmp_path / "o"
    for extra, text in ((["--address", "auto"], "needs the ray runner"),
                        (["--worker-setup", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
                        (["--worker-setup", "json:no_such_function"], "json has no function no_such_function"),
                        (["--runner", "ray", "--workers", "2", "--address", "auto"], "has its own size")):
        assert main(_quiet("generate", str(synth_dir), "--out", str(out), *extra)) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("spatialforge: error: ") and text in line, line
        assert not out.exists()


def test_ray_runner_without_ray_names_the_extra(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `ray` were not installed
    assert main(_quiet("generate", str(synth_dir), "--out", str(tmp_path / "o"), "--runner", "ray")) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == ("spatialforge: error: 'ray' is required for --runner ray but is not installed: "
                    "pip install 'spatialforge[ray]'")
    assert not (tmp_path / "o").exists()
    with pytest.raises(SpatialForgeError, match=r"pip install 'spatialforge\[ray\]'"):
        run_generate(synth_dir, tmp_path / "p", _cfg(), progress=False, runner=RunnerConfig(name="ray"))


def test_shard_spec_checks_itself():
    with pytest.raises(ValueError):
        ShardSpec(3, 3, ("a",))
    with pytest.raises(ValueError):
        ShardSpec(0, 1, ())


def test_the_progress_bar_shows_the_failures_and_each_stages_throughput(synth_dir, tmp_path, capsys):
    import re

    bad = tmp_path / "scenes"
    import shutil

    shutil.copytree(synth_dir, bad)
    (next(p for p in sorted(bad.iterdir()) if p.is_dir()) / "camera.json").write_text("{ not json")
    run_generate(bad, tmp_path / "out", _cfg(), progress=True, log=lambda m: None)
    err = capsys.readouterr().err
    assert re.search(r"1 failed \| load \d+/s geometry \d+/s qa \d+/s encode \d+/s write \d+/s", err), err[-400:]


def test_runner_config_photo_stages_are_checked_and_kept(tmp_path):
    path = tmp_path / "runner.toml"
    path.write_text("runner = 'ray'\nwindow_chunks = 4\n[stages.depth]\nnum_gpus = 0.5\nconcurrency = 2\n"
                    "[stages.decode]\nnum_cpus = 0.5\n")
    rc = load_runner_config(path)
    assert rc.window_chunks == 4
    assert rc.photo_resources() == {"depth": {"num_gpus": 0.5, "concurrency": 2}, "decode": {"num_cpus": 0.5}}
    for text, says in (("[stages.dpeth]\nnum_gpus = 1\n", "unknown photo stage"),
                       ("[stages.depth]\nnum_gpu = 1\n", "unknown key"),
                       ("[stages.depth]\nnum_gpus = 1.5\n", "whole number"),
                       ("[stages.depth]\nconcurrency = 0\n", "concurrency"),
                       ("[stages.decode]\nnum_gpus = 1\n", "decode"),
                       ("window_chunks = 0\n", "window_chunks"),
                       ("max_in_flight = true\n", "max_in_flight")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=says):
            load_runner_config(path)
    path.write_text("address = 'auto'\nrunner = 'ray'\n")
    with pytest.raises(ConfigError, match=r"runner\.toml: .*--workers"):  # the file and the flag are named
        load_runner_config(path, workers=4)


class _Model:
    """A stage with a model (for grouping only: never called)."""

    def __init__(self, name: str) -> None:
        self.name, self.model_id = name, f"org/{name}"

    def load(self) -> None: ...

    def unload(self) -> None: ...


def _pipe(with_models: tuple[str, ...], **config):
    from spatialforge.perception.backends.depth import NoFocalEstimator
    from spatialforge.perception.backends.stub import (
        BoxSegmenter,
        KeepAllFilter,
        LabelCaptioner,
        NoTextEmbedder,
    )
    from spatialforge.perception.config import PerceptionConfig
    from spatialforge.perception.pipeline import PerceptionPipeline

    stages = {"filter": KeepAllFilter(), "detector": _Model("det"), "captioner": LabelCaptioner(),
              "segmenter": BoxSegmenter(), "depth": _Model("depth"), "focal_estimator": NoFocalEstimator(),
              "embedder": NoTextEmbedder()}
    stages |= {k: _Model(k) for k in with_models}
    return PerceptionPipeline(PerceptionConfig(**config), stages)


def test_photo_stages_are_grouped_into_actors_by_model():
    from spatialforge.pipeline.ray_photos import photo_stage_groups

    # stages without a model ride with the stage before them (the first ones with the next)
    assert photo_stage_groups(_pipe(())) == [("filter", "detector", "captioner", "segmenter"),
                                             ("depth", "focal_estimator", "embedder")]
    every = ("filter", "detector", "captioner", "segmenter", "depth", "focal_estimator", "embedder")
    assert photo_stage_groups(_pipe(every)) == [(s,) for s in every]
    # a focal estimator that a fixed field of view never asks needs no actor
    assert photo_stage_groups(_pipe(every, assumed_hfov_deg=60.0))[-3:] == [("segmenter",),
                                                                            ("depth", "focal_estimator"),
                                                                            ("embedder",)]
    shared = _pipe(every)
    shared.stages["captioner"]._model_source = shared.stages["detector"]  # one Florence-2 for both
    assert ("detector", "captioner") in photo_stage_groups(shared)
    joint = _pipe(every)
    joint.stages["segmenter"].from_detector = True  # SAM 3: the detector's masks
    assert ("detector", "captioner", "segmenter") in photo_stage_groups(joint)


def test_photo_stage_resources_default_to_the_cluster_and_must_fit_it():
    from spatialforge.pipeline.ray_photos import DEFAULT_GPU_SHARE, RayDataExecutor, photo_stage_resources

    assert sum(DEFAULT_GPU_SHARE.values()) == pytest.approx(1.0)  # one copy of every model per GPU
    gpu = photo_stage_resources({}, cluster_cpus=64, cluster_gpus=8)
    assert gpu["depth"].concurrency == 8 and gpu["depth"].num_gpus == DEFAULT_GPU_SHARE["depth"]
    cpu = photo_stage_resources({"depth": {"concurrency": 3}}, cluster_cpus=14, cluster_gpus=0)
    assert cpu["filter"].num_gpus == 0 and cpu["filter"].num_cpus == 1.0 and cpu["depth"].concurrency == 3
    ex = RayDataExecutor(_pipe(("filter", "depth")), resources={"depth": {"num_cpus": 2, "concurrency": 2}})
    ex.resources = photo_stage_resources(ex.given, cluster_cpus=4, cluster_gpus=0)
    with pytest.raises(ConfigError, match=r"need 4\.822 CPUs .*depth 2 x \(2 CPU, 0 GPU\).* has 4 CPUs"):
        ex._check_fits(4.0, 0.0)
    ex._check_fits(8.0, 0.0)  # fits
    with pytest.raises(ConfigError, match="decode"):
        RayDataExecutor(_pipe(()), resources={"decode": {"num_gpus": 1}})


def test_a_ray_data_actor_or_task_with_another_spatialforge_version_stops_the_run_with_one_line():
    from spatialforge import __version__
    from spatialforge.pipeline.ray_photos import _cpu_steps, _Steps

    pipe = _pipe(())
    batch = {"key": [0, 1], "chunk": [b"x", b"y"], "stats": ["{}", "{}"], "error": ["", ""]}
    # the stages are not unpickled on a mismatched node (they came from another version): garbage is fine
    actor = _Steps(pipe.config, b"not a pickle", ("depth",), version="0.0.1")
    out = actor(batch)
    assert actor.pipeline is None
    assert out["error"] == [f"a Ray node runs spatialforge {__version__}, the driver runs 0.0.1: install the same "
                            "version on every node, then rerun"] * 2
    for steps in (("decode",), ()):
        out = _cpu_steps(dict(batch), config=pipe.config, stages=b"not a pickle", steps=steps, version="0.0.1")
        assert all("the driver runs 0.0.1" in e for e in out["error"]) and len(out["error"]) == 2
    # the same version loads the stages and runs (here: assembles nothing, as the chunks are not chunk states)
    same = _Steps(pipe.config, pickle.dumps(pipe.stages), ("depth",), version=__version__)
    assert same.pipeline is not None and same.mismatch == ""


def test_a_shard_processed_by_another_spatialforge_version_is_refused(synth_dir, tmp_path, monkeypatch):
    import spatialforge.pipeline.generate as gen

    real = gen.process_shard

    def other_version(spec, config, **kw):
        result = real(spec, config, **kw)
        result.version = "0.0.1"  # as a Ray node with an older install would return it
        return result

    monkeypatch.setattr(gen, "process_shard", other_version)
    with pytest.raises(SpatialForgeError, match=r"train-00000-of-00003\.parquet was processed by spatialforge 0\.0\.1"):
        run_generate(synth_dir, tmp_path / "out", _cfg(), progress=False, log=lambda m: None)
    assert not list((tmp_path / "out" / "_state").glob("shard-*.json"))  # nothing of it was written
