"""A run folder's answers belong to one model: its weights, endpoint, generation settings and prompt (fingerprint)."""

from __future__ import annotations

import io
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from spatialforge.errors import ConfigError
from spatialforge.eval.models import PriorModel, build_model
from spatialforge.eval.models.base import SYSTEM_PROMPT
from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel
from spatialforge.eval.runner import run_eval
from spatialforge.eval.types import BenchmarkItem


def _png(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _bench() -> SimpleNamespace:
    items = [
        BenchmarkItem(id="q-dist", benchmark="tiny", question="How far is the chair from the table?",
                      kind="quantitative", type="distance", truth=1.5, unit="m", image_bytes=_png(24, 16, 1)),
        BenchmarkItem(id="q-left", benchmark="tiny", question="Is the red mug left of the lamp?", kind="yes_no",
                      type="left_of", truth=True, unit="bool", image_bytes=_png(16, 24, 2)),
    ]
    return SimpleNamespace(name="tiny", items=items)


def _run(out, model, **kw):
    run_eval(_bench(), model, out, progress=False, n_boot=10, **kw)
    return json.loads((out / "run.json").read_text())


# ----------------------------------------------------------------------------- the building blocks
def test_file_signature_hashes_small_files_and_samples_large_ones(tmp_path, monkeypatch):
    from spatialforge.eval.models import fingerprint
    from spatialforge.eval.models.fingerprint import file_signature

    small = tmp_path / "config.json"
    small.write_bytes(b'{"a": 1}')
    before = file_signature(small)
    stat = small.stat()
    small.write_bytes(b'{"a": 2}')
    os.utime(small, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_signature(small) != before  # hashed whole: the content decides, not the time
    small.write_bytes(b'{"a": 1}')
    assert file_signature(small) == before

    monkeypatch.setattr(fingerprint, "HASH_LIMIT", 1000)
    monkeypatch.setattr(fingerprint, "SAMPLE_BYTES", 100)
    big = tmp_path / "model.safetensors"
    data = bytes(range(256)) * 20  # 5120 bytes
    big.write_bytes(data)
    signature = file_signature(big)
    assert signature.startswith("size:5120 mtime_ns:")
    stat = big.stat()
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_signature(big) != signature  # rewritten (a new modification time)
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_signature(big) == signature
    big.write_bytes(b"\xff" + data[1:])  # same size, restored time: the first bytes still tell
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_signature(big) != signature


def test_folder_source_leaves_out_model_cards_and_trainer_state(tmp_path):
    from spatialforge.eval.models.fingerprint import folder_source

    for name in ("config.json", "adapter_model.safetensors", "README.md", ".gitattributes", "training_args.bin",
                 "optimizer.pt", "rng_state.pth", "trainer_state.json"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    source = folder_source(tmp_path)
    assert source["path"] == str(tmp_path.resolve())
    assert sorted(source["files"]) == ["adapter_model.safetensors", "config.json"]


def test_fingerprint_changes_say_what_changed():
    from spatialforge.eval.models.fingerprint import fingerprint_changes

    old = {"weights": {"adapter": {"path": "/r/adapter", "files": {"adapter_model.safetensors": "1", "a.json": "x"}},
                       "base model": {"hub_id": "org/m", "revision": None, "commit": "aaa"}},
           "generation": {"max_new_tokens": 32, "do_sample": False}, "prompt": {"system_prompt": SYSTEM_PROMPT}}
    new = json.loads(json.dumps(old))
    assert fingerprint_changes(old, new) == []
    new["weights"]["adapter"]["files"]["adapter_model.safetensors"] = "2"
    new["generation"]["max_new_tokens"] = 64
    assert fingerprint_changes(old, new) == ["adapter weights modified (adapter_model.safetensors)",
                                             "max_new_tokens 32 -> 64"]
    new["weights"]["adapter"]["files"]["a.json"] = "y"
    new["weights"]["adapter"]["files"]["b.json"] = "z"
    new["weights"]["base model"]["commit"] = "bbb"
    new["prompt"]["system_prompt"] = "Be brief and answer about the scene in front of you, please, in metres."
    new["generation"]["do_sample"] = True
    assert fingerprint_changes(old, new) == [
        "adapter files changed (a.json, adapter_model.safetensors modified; b.json added)",
        "base model commit aaa -> bbb", "max_new_tokens 32 -> 64", "do_sample false -> true", "system_prompt changed"]


def test_prompt_fingerprint_follows_the_prompt_text(monkeypatch):
    from spatialforge.eval.models import base
    from spatialforge.eval.models.base import prompt_fingerprint

    default = prompt_fingerprint("default", SYSTEM_PROMPT)
    assert default == prompt_fingerprint("default", SYSTEM_PROMPT)
    assert default["template"] != prompt_fingerprint("plain", SYSTEM_PROMPT)["template"]
    monkeypatch.setattr(base, "_YES_NO_INSTRUCTION", "Reply with yes or no.")  # another spatialforge's wording
    assert prompt_fingerprint("default", SYSTEM_PROMPT)["template"] != default["template"]


# ----------------------------------------------------------------------------- backends without weights
def test_prior_and_blind_parameters_are_part_of_the_run(tmp_path):
    out = tmp_path / "prior"
    assert _run(out, PriorModel())["asked"] == 2
    assert _run(out, PriorModel())["asked"] == 0  # the same parameters: resumed
    with pytest.raises(ConfigError, match=r"cannot resume: the model changed \(yes_no yes -> no\)"):
        _run(out, PriorModel(yes_no=False))
    with pytest.raises(ConfigError, match=r"cannot resume: the model changed \(height 0.8 -> 2.0\)"):
        _run(out, PriorModel({"height": 2.0}))
    blind = tmp_path / "blind"
    _run(blind, build_model("blind:prior"))
    with pytest.raises(ConfigError, match=r"the model changed \(yes_no yes -> no\)"):
        _run(blind, build_model("blind:prior", yes_no=False))


def test_a_folder_from_before_model_fingerprints_is_not_resumed(tmp_path):
    out = tmp_path / "old"
    _run(out, PriorModel())
    fp = json.loads((out / "fingerprint.json").read_text())
    del fp["model_fingerprint"]  # what an older spatialforge wrote
    (out / "fingerprint.json").write_text(json.dumps(fp))
    with pytest.raises(ConfigError, match=r"cannot resume: the model's weights and settings were not recorded"):
        _run(out, PriorModel())


# ----------------------------------------------------------------------------- hf models
def test_hub_model_is_fingerprinted_by_the_commit_its_revision_resolves_to(tmp_path, monkeypatch):
    """No download: a hub cache laid out as huggingface_hub writes it, read offline."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    from spatialforge.eval.models.fingerprint import fingerprint_changes

    repo = tmp_path / "models--org--tiny-vlm"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = HFVisionLanguageModel("org/tiny-vlm", dtype="float32")
    first = model.fingerprint()
    assert first["weights"] == {"model": {"hub_id": "org/tiny-vlm", "revision": None, "commit": "a" * 40}}
    (repo / "refs" / "main").write_text("b" * 40)  # a new commit on the hub, fetched into the cache
    assert fingerprint_changes(first, model.fingerprint()) == [f"model commit {'a' * 40} -> {'b' * 40}"]


def test_an_adapter_with_a_relative_base_path_that_is_not_here_is_one_clear_error(tmp_path, monkeypatch):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../models/tiny"}))
    monkeypatch.chdir(tmp_path)
    model = HFVisionLanguageModel(str(adapter), dtype="float32")
    for call in (model.fingerprint, model.load):
        with pytest.raises(ConfigError, match=r"trained on '../models/tiny', which is not a folder .*set "
                                              r"base_model_name_or_path in .*adapter_config.json"):
            call()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no base_model_name_or_path"):
        model.fingerprint()


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from .tiny_vlms import build_tiny_vlm

    return build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("fp") / "qwen")


def _hf(folder, **kw):
    return HFVisionLanguageModel(str(folder), device="cpu", max_new_tokens=kw.pop("max_new_tokens", 3), **kw)


def test_hf_weights_changed_in_place_or_other_generation_settings_refuse_the_old_answers(tiny_qwen, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"  # a copy this test may retrain in place
    shutil.copytree(tiny_qwen, folder)
    out = tmp_path / "run"
    assert _run(out, _hf(folder))["asked"] == 2
    assert _run(out, _hf(folder, batch_size=1))["asked"] == 0  # same weights and settings: resumed
    for kw, change in ((dict(max_new_tokens=4), "max_new_tokens 3 -> 4"),
                       (dict(do_sample=True, seed=1), "do_sample false -> true; seed none -> 1"),
                       (dict(max_image_side=8), "max_image_side none -> 8"),
                       (dict(dtype="bfloat16"), "dtype float32 -> bfloat16"),
                       (dict(system_prompt=""), "system_prompt changed"),
                       (dict(prompt_style="plain"), "style default -> plain; template")):
        with pytest.raises(ConfigError, match=rf"cannot resume: the model changed \({change}"):
            _run(out, _hf(folder, **kw))
    # "retrained" in place: the same file name and size, other values
    records = (out / "records.jsonl").read_bytes()
    weights = load_file(str(folder / "model.safetensors"))
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1.0
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"cannot resume: the model changed \(model weights modified "
                                          r"\(model\.safetensors\)\); use a new --out or --overwrite"):
        _run(out, _hf(folder))
    assert (out / "records.jsonl").read_bytes() == records  # refused before anything was asked or written
    # a generation config edited by hand is a change too
    fresh = tmp_path / "fresh"
    _run(fresh, _hf(folder))
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.3}))
    with pytest.raises(ConfigError, match=r"model files modified \(generation_config\.json\)"):
        _run(fresh, _hf(folder))


def test_hf_fingerprint_is_the_same_before_and_after_loading(tiny_qwen):
    model = _hf(tiny_qwen)
    before = model.fingerprint()
    model.load()
    assert model.fingerprint() == before
    assert before["dtype"] == "float32" and before["weights"]["model"]["path"] == str(tiny_qwen.resolve())
    assert "device" not in before and "batch_size" not in json.dumps(before)
    wrapped = HFVisionLanguageModel.from_loaded(model.model, model.processor, name="step-1")
    assert wrapped.fingerprint()["weights"] == {"model": {"in_memory": "step-1"}}
