"""The local Hugging Face VLM backend on tiny random Qwen2.5-VL, Idefics3 (SmolVLM), SmolVLM2, LLaVA and PaliGemma
models."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.eval.models.base import BLIND_NOTE, SYSTEM_PROMPT, VQAModel
from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel
from spatialforge.eval.types import BenchmarkItem

# PaliGemma's processor builds its (unused) training labels with np.array on tensors
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NEW_TOKENS = 5


def _png(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _items() -> list[BenchmarkItem]:
    """Three questions of different lengths and kinds, on images of different sizes and shapes."""
    return [
        BenchmarkItem(id="q-dist", benchmark="tiny", question="How far is the chair from the table?",
                      kind="quantitative", type="distance", truth=1.5, unit="m", image_bytes=_png(40, 28, 1)),
        BenchmarkItem(id="q-left", benchmark="tiny", question="Is the red mug left of the lamp?", kind="yes_no",
                      type="left_of", truth=True, unit="bool", image_bytes=_png(24, 32, 2)),
        BenchmarkItem(id="q-choice", benchmark="tiny", question="Which is closer to the door?", kind="choice",
                      type="closer", truth=1, unit="option", options=("the blue box", "the wooden shelf"),
                      image_bytes=_png(16, 16, 3)),
    ]


def _corrupt() -> BenchmarkItem:
    return BenchmarkItem(id="q-bad", benchmark="tiny", question="Is the bed wide?", kind="yes_no", type="size",
                         truth=False, unit="bool", image_bytes=b"\x89PNG not really")


# ----------------------------------------------------------------------------- no torch needed
@pytest.mark.parametrize("kwargs", [
    dict(model_id=""), dict(model_id="m", device="tpu"), dict(model_id="m", dtype="float64"),
    dict(model_id="m", batch_size=0), dict(model_id="m", batch_size=True), dict(model_id="m", max_new_tokens=0),
    dict(model_id="m", max_image_side=0), dict(model_id="m", do_sample="yes"),
    dict(model_id="m", chat_template_kwargs=["x"]), dict(model_id="m", prompt_style="fancy"),
    dict(model_id="m", plain_template="no placeholder"), dict(model_id="m", system_prompt=None),
])
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        HFVisionLanguageModel(**kwargs)


def test_construction_loads_nothing_and_describe_names_the_settings():
    model = HFVisionLanguageModel("org/some-vlm", batch_size=2, max_new_tokens=16, max_image_side=512,
                                  chat_template_kwargs={"enable_thinking": False})
    assert isinstance(model, VQAModel)
    assert model.name == "hf:org/some-vlm"
    assert model.answer([]) == [] and model.model is None  # nothing to do: nothing loaded
    info = model.describe()
    assert info["backend"] == "hf" and info["model_id"] == "org/some-vlm" and info["loaded"] is False
    assert (info["device"], info["dtype"]) == ("auto", "auto")
    assert (info["batch_size"], info["max_new_tokens"], info["do_sample"]) == (2, 16, False)
    assert info["max_image_side"] == 512 and info["chat_template_kwargs"] == {"enable_thinking": False}


# ----------------------------------------------------------------------------- tiny models
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from .tiny_vlms import FAMILIES, build_tiny_vlm  # noqa: E402

# per family: a run of tokens the image prompt must contain, and how the prompt must end
PROMPT_SHAPE = {
    "qwen2_5_vl": (["<|vision_end|>", "how", "far"], ["<|im_start|>", "assistant"]),
    "idefics3": (["<fake_token_around_image>", "<global-img>", "<image>"], ["assistant", ":"]),
    # "...<end_of_utterance>\nUser:<image>How far ...<end_of_utterance>\nAssistant:", the image split into tiles
    "smolvlm2": (["<end_of_utterance>", "user", ":", "<fake_token_around_image>", "<row_1_col_1>", "<image>"],
                 ["<end_of_utterance>", "assistant", ":"]),
    "llava": (["user", ":", "<image>"], ["assistant", ":"]),  # "USER: <image>\nHow far ... ASSISTANT:"
    "paligemma": (["<image>", "<bos>", "answer", "en", "how", "far"], ["."]),
}
IMAGE_TOKEN = {"qwen2_5_vl": "<|image_pad|>", "idefics3": "<image>", "smolvlm2": "<image>", "llava": "<image>",
               "paligemma": "<image>"}
MODEL_TYPE = {"smolvlm2": "smolvlm"}  # config.model_type where it is not the family name


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {family: str(build_tiny_vlm(family, root / family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def models(tiny_dirs):
    """One loaded backend per family, batch size 3 (shared: the tests only read it or patch it temporarily)."""
    out = {}
    for family, folder in tiny_dirs.items():
        model = HFVisionLanguageModel(folder, device="cpu", batch_size=3, max_new_tokens=NEW_TOKENS)
        model.load()
        out[family] = model
    return out


@pytest.fixture(scope="module")
def reference(models):
    """Answers of every family to the three items, with and without the image."""
    return {family: {use_image: [a.text for a in model.answer(_items(), use_image=use_image)]
                     for use_image in (True, False)} for family, model in models.items()}


class _Spy:
    """Records the keyword arguments of every ``generate`` call of a model, then calls it."""

    def __init__(self, model):
        self.generate = model.generate
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.generate(**kwargs)


def _tokens(model: HFVisionLanguageModel, ids) -> list[str]:
    return model.processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def _contains_run(tokens: list[str], run: list[str]) -> bool:
    return any(tokens[k:k + len(run)] == run for k in range(len(tokens) - len(run) + 1))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_answers_a_batch_in_order_with_the_family_prompt(family, models, monkeypatch):
    model = models[family]
    spy = _Spy(model.model)
    monkeypatch.setattr(model.model, "generate", spy)
    answers = model.answer(_items())
    assert [a.id for a in answers] == ["q-dist", "q-left", "q-choice"]
    for a in answers:
        assert a.ok and isinstance(a.text, str) and a.text.strip() == a.text and a.text
        assert a.latency_s is not None and a.latency_s >= 0
        # the tiny models never write the end token: every answer uses the full budget
        assert a.meta == {"new_tokens": NEW_TOKENS, "truncated": True, "batch_size": 3}
    assert len(spy.calls) == 1  # one generate() for the batch
    call = spy.calls[0]
    assert "pixel_values" in call and "labels" not in call
    assert call["max_new_tokens"] == NEW_TOKENS and call["do_sample"] is False
    mask = call["attention_mask"]
    assert bool((mask == 0).any()), "prompts of different lengths must be padded"
    assert bool((mask[:, 1:] >= mask[:, :-1]).all()), "padding must be on the left"
    run, end = PROMPT_SHAPE[family]
    for row, row_mask in zip(call["input_ids"], mask, strict=True):
        tokens = _tokens(model, row[row_mask.bool()])
        assert IMAGE_TOKEN[family] in tokens
        assert tokens[-len(end):] == end
    first = _tokens(model, call["input_ids"][0][mask[0].bool()])
    assert _contains_run(first, run), first


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_and_one_by_one_generation_agree(family, tiny_dirs, reference):
    single = HFVisionLanguageModel(tiny_dirs[family], device="cpu", batch_size=1, max_new_tokens=NEW_TOKENS)
    assert [a.text for a in single.answer(_items())] == reference[family][True]
    assert [a.text for a in single.answer(_items(), use_image=False)] == reference[family][False]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_blind_mode_sends_no_image(family, models, reference, monkeypatch):
    model = models[family]
    spy = _Spy(model.model)
    monkeypatch.setattr(model.model, "generate", spy)
    answers = model.answer(_items(), use_image=False)
    assert [a.text for a in answers] == reference[family][False]
    assert all(a.ok for a in answers)
    assert reference[family][False] != reference[family][True]  # the image changes what the model says
    call = spy.calls[0]
    assert not any(k.startswith("pixel") or k.startswith("image") for k in call)
    for row, row_mask in zip(call["input_ids"], call["attention_mask"], strict=True):
        tokens = _tokens(model, row[row_mask.bool()])
        assert IMAGE_TOKEN[family] not in tokens
        assert "guess" in tokens  # the blind note of build_prompt
    assert "guess" in BLIND_NOTE


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_unreadable_image_fails_only_its_item(family, models, reference):
    a, _, c = _items()
    answers = models[family].answer([a, _corrupt(), c])
    assert [x.id for x in answers] == ["q-dist", "q-bad", "q-choice"]
    assert answers[1].text is None and answers[1].error.startswith("DatasetError:")
    assert [answers[0].text, answers[2].text] == [reference[family][True][0], reference[family][True][2]]
    assert answers[0].error is None and answers[2].error is None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_describe_after_loading(family, models, tiny_dirs):
    info = models[family].describe()
    assert info["loaded"] is True and info["model_id"] == tiny_dirs[family]
    assert info["model_type"] == MODEL_TYPE.get(family, family)
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    assert info["prompt_format"] == ("plain" if family == "paligemma" else "chat")
    assert info["plain_template"] == ("answer en {prompt}" if family == "paligemma" else None)
    assert (info["batch_size"], info["max_new_tokens"], info["do_sample"], info["seed"]) == (3, NEW_TOKENS, False, None)
    assert "pad_token_id" in info["checkpoint_generation_config"]
    import json

    json.dumps(info)


def test_a_failing_item_in_a_batch_is_retried_alone(models, reference):
    """Qwen2.5-VL's processor rejects an aspect ratio over 200: only that item fails."""
    a, b, _ = _items()
    sliver = BenchmarkItem(id="q-sliver", benchmark="tiny", question="Is the lamp tall?", kind="yes_no",
                           type="size", truth=True, unit="bool", image_bytes=_png(1, 300, 4))
    answers = models["qwen2_5_vl"].answer([a, sliver, b])
    assert answers[1].text is None and answers[1].error.startswith("ValueError:") and "aspect ratio" in answers[1].error
    assert [answers[0].text, answers[2].text] == reference["qwen2_5_vl"][True][:2]
    assert answers[0].meta["batch_size"] == 1  # answered on the item-by-item retry


def test_the_same_failure_on_every_item_raises(models, monkeypatch):
    model = models["llava"]

    def broken(**kwargs):
        raise RuntimeError("the model is broken")

    monkeypatch.setattr(model.model, "generate", broken)
    with pytest.raises(SpatialForgeError, match="every item failed the same way: RuntimeError: the model is broken"):
        model.answer(_items())
    one = model.answer(_items()[:1])  # a single item: a per-item failure, not a systematic one
    assert one[0].text is None and one[0].error == "RuntimeError: the model is broken"


def test_smolvlm2_prompts_tile_the_images_and_batches_mixed_tile_counts(models, tiny_dirs, reference, monkeypatch):
    """SmolVLM2: SmolVLMProcessor gets one image list per prompt; images with different tile counts share a batch."""
    model = models["smolvlm2"]
    assert type(model.processor).__name__ == "SmolVLMProcessor"
    assert type(model.model).__name__ == "SmolVLMForConditionalGeneration"
    a, _, c = _items()
    wide = BenchmarkItem(id="q-wide", benchmark="tiny", question="Is the shelf long?", kind="yes_no", type="size",
                         truth=True, unit="bool", image_bytes=_png(64, 8, 5))  # 1 x 2 tiles instead of 2 x 2
    spy = _Spy(model.model)
    monkeypatch.setattr(model.model, "generate", spy)
    answers = model.answer([a, wide, c])
    assert all(x.ok and x.meta["batch_size"] == 3 for x in answers)  # one batch, no item-by-item retry
    call = spy.calls[0]
    assert tuple(call["pixel_values"].shape) == (3, 5, 3, 16, 16)  # per prompt: up to 4 tiles + the global image
    assert not call["pixel_values"][1, 3:].any()  # the wide image: 2 tiles + global, then empty padding
    assert bool(call["pixel_attention_mask"][1, :3].all()) and not call["pixel_attention_mask"][1, 3:].any()
    two_by_two = ["<row_1_col_1>", "<row_1_col_2>", "<row_2_col_1>", "<row_2_col_2>"]
    for r, row_tiles in enumerate([two_by_two, two_by_two[:2], two_by_two]):
        tokens = _tokens(model, call["input_ids"][r][call["attention_mask"][r].bool()])
        assert tokens[:3] == ["<|im_start|>", "system", ":"]
        assert tokens[-3:] == ["<end_of_utterance>", "assistant", ":"]
        assert [t for t in tokens if t.startswith("<row_")] == row_tiles
        assert tokens.count("<global-img>") == 1 and tokens.count("<image>") == 4 * (len(row_tiles) + 1)
        assert tokens.count("<fake_token_around_image>") == len(row_tiles) + 2
        start = tokens.index("<global-img>") - 1
        assert tokens[start:start + 7] == ["<fake_token_around_image>", "<global-img>", *["<image>"] * 4,
                                           "<fake_token_around_image>"]
        assert tokens.count("<end_of_utterance>") == 2  # closing the system and the user turns
    # the same answers as one by one
    assert [answers[0].text, answers[2].text] == [reference["smolvlm2"][True][0], reference["smolvlm2"][True][2]]
    single = HFVisionLanguageModel(tiny_dirs["smolvlm2"], device="cpu", batch_size=1, max_new_tokens=NEW_TOKENS)
    assert single.answer([wide])[0].text == answers[1].text


def test_system_prompt_turn_and_fallback_for_templates_without_a_system_role(tiny_dirs, monkeypatch):
    model = HFVisionLanguageModel(tiny_dirs["idefics3"], device="cpu", max_new_tokens=2)
    model.load()
    spy = _Spy(model.model)
    monkeypatch.setattr(model.model, "generate", spy)
    model.answer(_items()[:1])
    tokens = _tokens(model, spy.calls[-1]["input_ids"][0])
    assert tokens[:2] == ["<|im_start|>", "system"]  # "System: <system prompt><end_of_utterance>"
    assert "scene" in tokens and "scene" in SYSTEM_PROMPT
    # a template that refuses the system role: the system text opens the user turn instead
    monkeypatch.setattr(model.processor, "chat_template",
                        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                        + model.processor.chat_template)
    answers = model.answer(_items()[:1])
    assert answers[0].ok
    tokens = _tokens(model, spy.calls[-1]["input_ids"][0])
    assert tokens[:3] == ["<|im_start|>", "user", ":"] and "scene" in tokens
    # no system prompt at all
    bare = HFVisionLanguageModel(tiny_dirs["idefics3"], device="cpu", max_new_tokens=2, system_prompt="")
    bare.load()
    spy = _Spy(bare.model)
    monkeypatch.setattr(bare.model, "generate", spy)
    bare.answer(_items()[:1])
    tokens = _tokens(bare, spy.calls[-1]["input_ids"][0])
    assert tokens[:3] == ["<|im_start|>", "user", ":"] and "scene" not in tokens


def test_max_image_side_shrinks_images_before_the_processor(tiny_dirs, monkeypatch):
    counts = {}
    for side in (None, 8):
        model = HFVisionLanguageModel(tiny_dirs["qwen2_5_vl"], device="cpu", max_new_tokens=1, max_image_side=side)
        model.load()
        spy = _Spy(model.model)
        monkeypatch.setattr(model.model, "generate", spy)
        assert model.answer(_items()[:1])[0].ok
        counts[side] = int((spy.calls[0]["input_ids"] == model.model.config.image_token_id).sum())
    assert counts[8] < counts[None]  # 40 x 28 px: 4 image tokens; shrunk to 8 x 6 px: 1
    # a point question is answered in pixels of the image its prompt names: it is never shrunk
    point = BenchmarkItem(id="p", benchmark="tiny", question="Where would you hold the mug to pour?", kind="point",
                          type="afford_hold_point", truth={"pixel": (3, 4), "point_3d": (0.1, 1.0, 0.8)},
                          unit="point", image_bytes=_png(40, 28, 1), meta={"image_size": (40, 28)})
    model = HFVisionLanguageModel(tiny_dirs["qwen2_5_vl"], device="cpu", max_new_tokens=1, max_image_side=8)
    model.load()
    spy = _Spy(model.model)
    monkeypatch.setattr(model.model, "generate", spy)
    assert model.answer([point])[0].ok
    assert int((spy.calls[0]["input_ids"] == model.model.config.image_token_id).sum()) == counts[None]


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_dirs):
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        model = HFVisionLanguageModel(tiny_dirs["llava"], device="cpu", max_new_tokens=NEW_TOKENS, do_sample=True,
                                      seed=3)
        runs.append([a.text for a in model.answer(_items())])
    assert runs[0] == runs[1] and all(runs[0])
    assert torch.equal(torch.get_rng_state(), state)
    assert model.describe()["seed"] == 3


def test_bfloat16_weights(tiny_dirs):
    model = HFVisionLanguageModel(tiny_dirs["llava"], device="cpu", dtype="bfloat16", max_new_tokens=2)
    answers = model.answer(_items())
    assert all(a.ok for a in answers)
    assert model.describe()["dtype"] == "bfloat16" and model.model.dtype == torch.bfloat16


def test_a_missing_model_is_a_config_error(tmp_path):
    model = HFVisionLanguageModel(str(tmp_path / "nothing-here"), device="cpu")
    with pytest.raises(ConfigError, match="cannot load"):
        model.answer(_items())


def test_runs_under_the_eval_runner(models, tmp_path):
    runner = pytest.importorskip("spatialforge.eval.runner", reason="the eval runner's modules are not all there")
    bench = SimpleNamespace(name="tiny", items=[*_items(), _corrupt()])
    summary = runner.run_eval(bench, models["paligemma"], tmp_path, chunk_size=2, progress=False, n_boot=10)
    assert summary["model"] == "hf:" + models["paligemma"].model_id
    records = [line for line in (tmp_path / "records.jsonl").read_text().splitlines() if line]
    assert len(records) == 4


def test_built_from_a_model_spec_and_wrapped_blind(tiny_dirs, reference):
    from spatialforge.eval.models import build_model

    folder = tiny_dirs["qwen2_5_vl"]
    model = build_model(f"hf:{folder}", device="cpu", batch_size=3, max_new_tokens=NEW_TOKENS)
    assert isinstance(model, HFVisionLanguageModel) and model.name == f"hf:{folder}"
    assert [a.text for a in model.answer(_items())] == reference["qwen2_5_vl"][True]
    blind = build_model(f"blind:hf:{folder}", device="cpu", batch_size=2, max_new_tokens=NEW_TOKENS)
    assert [a.text for a in blind.answer(_items())] == reference["qwen2_5_vl"][False]
    with pytest.raises(ConfigError, match="unknown option 'image_size'"):
        build_model(f"hf:{folder}", image_size=3)


def test_a_peft_adapter_folder_loads_on_its_base_model(tiny_dirs, reference, tmp_path, monkeypatch):
    """hf:ADAPTER applies the adapter to the base its config names (absolute, or relative to the working directory);
    without processor files of its own, the base model's processor is used."""
    peft = pytest.importorskip("peft")
    base = tiny_dirs["qwen2_5_vl"]
    model = transformers.AutoModelForImageTextToText.from_pretrained(base)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(str(adapter))
    assert not (adapter / "tokenizer_config.json").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    loaded = HFVisionLanguageModel(str(adapter), device="cpu", batch_size=3, max_new_tokens=NEW_TOKENS)
    texts = [a.text for a in loaded.answer(_items())]
    assert type(loaded.model).__name__ == "PeftModelForCausalLM" and loaded.describe()["adapter_base"] == base
    assert texts != reference["qwen2_5_vl"][True]  # the adapter changes the answers
    processor = transformers.AutoProcessor.from_pretrained(base)
    in_memory = HFVisionLanguageModel.from_loaded(lora, processor, name="lora", batch_size=3,
                                                  max_new_tokens=NEW_TOKENS)
    assert [a.text for a in in_memory.answer(_items())] == texts
    # a relative base path, read from the working directory as PEFT does
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "qwen2_5_vl"}))
    monkeypatch.chdir(Path(base).parent)
    relative = HFVisionLanguageModel(str(adapter), device="cpu", batch_size=3, max_new_tokens=NEW_TOKENS)
    assert [a.text for a in relative.answer(_items())] == texts
    monkeypatch.chdir(tmp_path)  # from elsewhere: taken for a hub id, which is not there
    with pytest.raises(ConfigError, match=r"cannot load the base model 'qwen2_5_vl' of the adapter .*set "
                                          r"base_model_name_or_path in .*adapter_config.json to its absolute path"):
        HFVisionLanguageModel(str(adapter), device="cpu").load()
