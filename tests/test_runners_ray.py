"""`generate --runner ray` (issue 10) on one local Ray cluster shared by this module (2 CPUs, no dashboard,
a small object store): the same bytes as the local runner, resources per task from the runner config,
workers that die retried and a scene that always kills its worker recorded as ``worker_died``."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from spatialforge.cli.main import main
from spatialforge.pipeline import GenerateConfig, run_generate
from spatialforge.pipeline.runners import RunnerConfig, StageResources
from spatialforge.qa import QAConfig
from tests.test_faults import FAULTS_ENV, HOOK, ROOT

ray = pytest.importorskip("ray")


def _cfg() -> GenerateConfig:
    return GenerateConfig(qa=QAConfig(seed=0), shard_size=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def faults_file(tmp_path_factory) -> Path:
    """The fault spec every Ray worker of this module reads (the cluster's workers outlive a test)."""
    path = tmp_path_factory.mktemp("ray_faults") / "faults.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def cluster(faults_file):
    # one logical GPU (none exists here): photo stages then get their default GPU shares, counted as GPU-seconds
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
             logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), FAULTS_ENV: str(faults_file)}})
    yield
    ray.shutdown()


@pytest.fixture
def faults(cluster, faults_file, tmp_path):
    def set_faults(**spec):
        (tmp_path / "counters").mkdir(exist_ok=True)
        faults_file.write_text(json.dumps(dict(spec, counter_dir=str(tmp_path / "counters"))))

    yield set_faults
    faults_file.write_text("{}")


@pytest.fixture(scope="module")
def local_run(synth_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_local") / "out"
    run_generate(synth_dir, out, _cfg(), progress=False, log=lambda m: None)
    return out


def test_ray_runner_writes_the_same_bytes_as_the_local_runner(cluster, synth_dir, local_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", str(synth_dir), "--out", str(out), "--shard-size", "2", "--runner", "ray",
                 "--no-progress"]) == 0
    assert "runner: ray (a local cluster)" in capsys.readouterr().out
    assert _files(out / "data") == _files(local_run / "data")
    assert _files(out / "scene_graphs") == _files(local_run / "scene_graphs")
    m = json.loads((out / "manifest.json").read_text())
    assert m["runner"]["name"] == "ray" and m["runner"]["cpu"] == {"num_cpus": 1.0}
    assert ray.is_initialized()  # a cluster it did not start is left running


def test_ray_tasks_get_the_resources_of_the_runner_config(faults, synth_dir, local_run, tmp_path):
    seen = tmp_path / "resources"
    seen.mkdir()
    faults(record_resources=str(seen))
    out = tmp_path / "out"
    run_generate(synth_dir, out, _cfg(), progress=False, log=lambda m: None,
                 runner=RunnerConfig(name="ray", cpu=StageResources(num_cpus=2), setup=(HOOK,)))
    records = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert len(records) == 6 and all(r.get("CPU") == 2.0 for r in records), records
    assert _files(out / "data") == _files(local_run / "data")


def test_ray_retries_a_dying_worker_and_records_a_scene_that_always_kills_it(faults, synth_dir, local_run,
                                                                              tmp_path):
    # synth_000001 kills its worker once (retried by Ray), synth_000004 every time (recorded, the run goes on)
    faults(scenes=["synth_000001"], how="os_exit", times=1)
    out = tmp_path / "once"
    m = run_generate(synth_dir, out, _cfg(), progress=False, log=lambda m: None,
                     runner=RunnerConfig(name="ray", max_retries=1, setup=(HOOK,)))
    assert len(list((tmp_path / "counters").iterdir())) == 1
    assert m["counts"]["scenes_ok"] == 6 and m["failed"] == []
    assert _files(out / "data") == _files(local_run / "data")

    faults(scenes=["synth_000004"], how="system_exit", times=None)
    out = tmp_path / "always"
    logged: list[str] = []
    m = run_generate(synth_dir, out, _cfg(), progress=False, log=logged.append,
                     runner=RunnerConfig(name="ray", max_retries=1, setup=(HOOK,)))
    assert m["counts"]["failed_by_reason"] == {"worker_died": 1}
    assert [(f["scene_id"], f["reason"]) for f in m["failed"]] == [("synth_000004", "worker_died")]
    assert m["worker_faults"]["shards_split"] == ["train-00002-of-00003.parquet"]
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    want = [r for f in sorted((local_run / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert rows == [r for r in want if r["scene_id"] != "synth_000004"]
    assert any("synth_000004" in line and "worker_died" in line for line in logged), logged


def test_ray_task_error_is_recorded_or_raised_as_in_process(faults, synth_dir, tmp_path):
    faults(scenes=["synth_000003"], how="raise", times=None)
    m = run_generate(synth_dir, tmp_path / "o", _cfg(), progress=False, log=lambda m: None,
                     runner=RunnerConfig(name="ray", setup=(HOOK,)))
    assert [(f["scene_id"], f["reason"], f["error"]) for f in m["failed"]] == [
        ("synth_000003", "internal_error", "RuntimeError: injected fault in synth_000003")]
    assert m["counts"]["scenes_ok"] == 5
    fail_fast = GenerateConfig(qa=QAConfig(seed=0), shard_size=2, fail_fast=True)
    with pytest.raises(RuntimeError, match=r"^injected fault in synth_000003$"):  # the task's own error, not Ray's
        run_generate(synth_dir, tmp_path / "p", fail_fast, progress=False, log=lambda m: None,
                     runner=RunnerConfig(name="ray", setup=(HOOK,)))


# ----------------------------------------------------------------------------- photos: the model stages on Ray Data
PHOTO_HOOK = "tests.test_runners_ray:photo_fault_hook"


def photo_fault_hook() -> None:
    """Worker setup hook: the depth step of this process dies on the photos ``$SF_TEST_FAULTS`` names."""
    import os

    from spatialforge.perception.pipeline import PerceptionPipeline
    from tests.test_faults import _take_turn

    real = PerceptionPipeline._step_depth
    if getattr(real, "patched", False):
        return

    def patched(self, chunk):
        path = os.environ.get(FAULTS_ENV)
        spec = json.loads(Path(path).read_text()) if path else {}
        for image_id in spec.get("photos", []):
            times = (spec.get("times") or {}).get(image_id)
            if image_id in [it.image_id for it in chunk.alive] and _take_turn(dict(spec, scene=image_id, times=times)):
                if spec["how"] == "os_exit":
                    os._exit(3)
                raise SystemExit(3)
        return real(self, chunk)

    patched.patched = True
    PerceptionPipeline._step_depth = patched


@pytest.fixture(scope="module")
def photo_models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from tests.perception.tiny_depth import build_tiny_depth_anything
    from tests.perception.tiny_detectors import build_tiny_owlv2

    root = tmp_path_factory.mktemp("ray_photo_models")
    return {"owl": build_tiny_owlv2(root / "owl"), "da": build_tiny_depth_anything(root / "da")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from PIL import Image

    from spatialforge.synth import SynthConfig, generate_scene

    d = tmp_path_factory.mktemp("ray_photos") / "photos"
    d.mkdir()
    for k in range(7):
        Image.fromarray(generate_scene(k, seed=23, config=SynthConfig(width=160, height=120)).image).save(
            d / f"p{k}.png")
    (d / "p7_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # fails to decode (in a Ray task)
    return d


def _photo_argv(photos: Path, out: Path, models: dict[str, Path], *extra: str) -> list[str]:
    tags = out.parent / "tags.txt"
    tags.write_text("chair\ntable\ncup\n")
    return ["generate", str(photos), "--out", str(out), "--no-progress", "--device", "cpu", "--qa-per-image", "6",
            "--filter", "none", "--vocabulary", str(tags), "--embedder", "none", "--captioner", "label",
            "--segmenter", "box", "--detector", "owlv2", "--detector-model", str(models["owl"]),
            "--score-threshold", "0", "--depth-model", str(models["da"]), "--assume-hfov", "60",
            "--batch-size", "3", "--shard-size", "2", *extra]


def _tree_bytes(root: Path, *subs: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for sub in subs for p in sorted((root / sub).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def photo_local_run(photos, photo_models, tmp_path_factory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("ray_photo_local") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray actor of one CPU or less: float sums in the same order, the same bits
    try:
        assert main(_photo_argv(photos, out, photo_models)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_photo_model_stages_on_ray_data_write_the_same_bytes_as_one_process(cluster, photos, photo_models,
                                                                             photo_local_run, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "runner.toml"
    config.write_text("runner = 'ray'\nwindow_chunks = 2\n[stages.detector]\nnum_cpus = 0.5\nconcurrency = 2\n"
                      "[stages.depth]\nnum_cpus = 0.25\n")
    assert main(_photo_argv(photos, out, photo_models, "--runner-config", str(config))) == 0
    same = ("scenes", "perception/items", "data", "scene_graphs")
    assert _tree_bytes(out, *same) == _tree_bytes(photo_local_run, *same)
    assert len(list((out / "scenes").iterdir())) == 7
    m = json.loads((out / "manifest.json").read_text())
    p = m["perception"]
    assert p["failed_by_reason"] == {"unreadable": 1} and p["ok"] == 7
    r = p["runner"]
    assert r["name"] == "ray-data" and r["windows"] == 2 and r["chunks"] == 3  # 8 photos, chunks of 3, 2 per window
    assert r["stages"]["detector"] == {"num_cpus": 0.5, "concurrency": 2, "num_gpus": 0.25}
    assert r["stages"]["depth"]["num_cpus"] == 0.25
    stages = p["stages"]
    assert stages["decode"]["images"] == 8 and stages["detector"]["images"] == 7 and stages["depth"]["images"] == 7
    # the cluster's one (logical) GPU: each stage holds its default share, and its seconds count that much
    assert r["stages"]["detector"]["num_gpus"] == 0.25 and r["stages"]["depth"]["num_gpus"] == 0.15
    for stage, share in (("detector", 0.25), ("captioner", 0.25), ("depth", 0.15), ("focal_estimator", 0.15)):
        assert stages[stage]["gpus"] == share
        assert stages[stage]["gpu_seconds"] == pytest.approx(stages[stage]["seconds"] * share, abs=1e-3)
    assert stages["detector"]["seconds"] > 0 and stages["decode"]["gpu_seconds"] == 0
    assert m["gpu_seconds"]["total"] == pytest.approx(sum(v["gpu_seconds"] for v in stages.values()))
    assert m["runner"]["name"] == "ray"  # geometry + QA as Ray tasks


def test_a_photo_that_kills_its_actor_is_retried_then_recorded_and_the_rest_are_kept(
        faults, photos, photo_models, photo_local_run, tmp_path):
    # p2 kills its depth actor once (retried), p5 every time: recorded as worker_died, every other photo kept
    faults(photos=["p2", "p5"], how="os_exit", times={"p2": 1})
    out = tmp_path / "out"
    config = tmp_path / "runner.toml"
    config.write_text(f"runner = 'ray'\nmax_retries = 1\nworker_setup = ['{PHOTO_HOOK}']\n"
                      "[stages.detector]\nnum_cpus = 0.5\n[stages.depth]\nnum_cpus = 0.5\n")
    assert main(_photo_argv(photos, out, photo_models, "--runner-config", str(config))) == 0
    records = {p.stem: json.loads(p.read_text()) for p in (out / "perception" / "items").glob("*.json")}
    assert records["p5"]["status"] == "failed" and records["p5"]["reason"] == "worker_died"
    assert sorted(k for k, r in records.items() if r["status"] == "ok") == ["p0", "p1", "p2", "p3", "p4", "p6"]
    # the chunk p2 was in came back whole on its retry: the same bytes; p3 and p4 shared p5's chunk, so they ran
    # alone (a batch of one), which may change a model's float sums in the last bits, not the objects found
    got, want = _tree_bytes(out, "scenes"), _tree_bytes(photo_local_run, "scenes")
    assert sorted(got) == sorted(k for k in want if not k.startswith("scenes/p5/"))
    for key, data in got.items():
        if key.startswith(("scenes/p3/", "scenes/p4/")) and key.endswith("depth.npy"):
            a, b = np.load(io.BytesIO(data)), np.load(io.BytesIO(want[key]))
            np.testing.assert_allclose(a, b, rtol=1e-4)
        elif not key.startswith(("scenes/p3/", "scenes/p4/")) or key.endswith(("image.png", "instances.png")):
            assert data == want[key], key
    r = json.loads((out / "manifest.json").read_text())["perception"]["runner"]
    assert r["photos_died"] == ["p5"] and r["chunks_retried_alone"] == 1
