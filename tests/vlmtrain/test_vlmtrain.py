"""VLM LoRA fine-tuning on a tiny random Qwen2.5-VL (CPU, offline): masking, mix, resume, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
pytest.importorskip("peft")
pytest.importorskip("trl")

from PIL import Image  # noqa: E402

from spatialforge.errors import ConfigError, DatasetError  # noqa: E402
from spatialforge.eval.benchmarks import load_benchmark  # noqa: E402
from spatialforge.eval.models.base import SYSTEM_PROMPT, build_prompt  # noqa: E402
from spatialforge.io.dataset import iter_rows  # noqa: E402
from spatialforge.vlmtrain import (  # noqa: E402
    CLI_FIELDS,
    VLMTrainConfig,
    apply_overrides,
    cli_overrides,
    load_vlm_train_config,
    train_vlm,
)
from spatialforge.vlmtrain.data import (  # noqa: E402
    IGNORE_INDEX,
    SOURCE_KEY,
    AssistantOnlyCollator,
    GeneralExamples,
    SpatialExamples,
    chunk_conversation,
    mix_schedule,
    open_general_dataset,
    plan_length,
)

from .tiny_qwen import build_tiny_qwen  # noqa: E402

GENERAL_ANSWER = "The ball is blue."


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen")))


@pytest.fixture(scope="module")
def processor(tiny_model):
    return transformers.AutoProcessor.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def spatial_out(tmp_path_factory):
    from spatialforge.pipeline import GenerateConfig, run_generate
    from spatialforge.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("spatial")
    write_synthetic_dataset(root / "scenes", n=4, seed=1, config=SynthConfig(width=160, height=120), progress=False)
    run_generate(root / "scenes", root / "out", GenerateConfig(), progress=False)
    return str(root / "out")


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (40 * i % 256, 120, 200)) for i in range(n)]


@pytest.fixture(scope="module")
def general_dir(tmp_path_factory):
    """A general VQA fixture in the question + answer schema, as a save_to_disk folder."""
    ds = datasets.Dataset.from_dict({"image": _images(6), "question": [f"What colour is ball {i}?" for i in range(6)],
                                     "answer": [GENERAL_ANSWER] * 6})
    ds = ds.cast_column("image", datasets.Image())
    folder = tmp_path_factory.mktemp("general") / "vqa"
    ds.save_to_disk(str(folder))
    return str(folder)


def _config(tiny_model, spatial_out, out_dir, *overrides: str) -> VLMTrainConfig:
    base = [f"model.base_model={tiny_model}", f"data.dataset={spatial_out}", f"train.output_dir={out_dir}",
            "data.max_qa_per_example=3", "train.batch_size=2", "train.grad_accum=1", "train.lr=1e-2",
            "train.warmup_ratio=0", "train.schedule=constant", "train.log_every=1", "train.workers=0",
            "train.device=cpu", "train.gradient_checkpointing=false", "lora.r=8", "lora.dropout=0"]
    return apply_overrides(VLMTrainConfig(), base + list(overrides))


def _quiet(_message: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------
# Config


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[model]\nbase_model = "some/model"\ndtype = "bfloat16"\n'
                    '[lora]\nr = 8\ntarget_modules = ["q_proj", "v_proj"]\ntrain_vision = true\n'
                    '[data]\ndataset = "OUT"\nspatial_share = 0.05\ngeneral_data = "gen"\n'
                    '[train]\nmax_steps = 100\nlr = 1e-4\n')
    cfg = load_vlm_train_config(path, ["train.lr=3e-4", "lora.train_vision=full", "data.general_limit=none",
                                       "lora.target_modules=q_proj,k_proj"])
    assert cfg.model.base_model == "some/model" and cfg.model.dtype == "bfloat16"
    assert cfg.lora.r == 8 and cfg.lora.target_modules == ("q_proj", "k_proj") and cfg.lora.train_vision == "full"
    assert cfg.data.spatial_share == 0.05 and cfg.train.max_steps == 100 and cfg.train.lr == 3e-4
    assert load_vlm_train_config(path).lora.train_vision == "lora"  # true -> lora
    assert load_vlm_train_config(None, ["lora.train_vision=false"]).lora.train_vision == "off"
    assert VLMTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    defaults = VLMTrainConfig()
    assert defaults.model.base_model == "Qwen/Qwen2.5-VL-3B-Instruct" and defaults.lora.train_vision == "off"
    for bad in (["train.lrr=1"], ["nope.x=1"], ["data.spatial_share=1.5"], ["lora.train_vision=maybe"],
                ["train.schedule=cyclic"], ["train.batch_size=0"], ["model.dtype=int8"], ["train.lr"]):
        with pytest.raises(ConfigError):
            load_vlm_train_config(None, bad)
    (tmp_path / "bad.toml").write_text("[lora]\nrank = 4\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*rank"):
        load_vlm_train_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="general_data"):
        load_vlm_train_config(None, ["data.dataset=OUT", "data.spatial_share=0.5"]).data.check_sources()
    with pytest.raises(ConfigError, match=r"data\.dataset"):
        VLMTrainConfig().data.check_sources()


def test_cli_options_map_onto_config_fields():
    options = {"dataset": "OUT", "out": "runs/x", "spatial_share": 0.05, "general_data": "gen", "max_steps": 7,
               "train_vision": "full", "export_merged": True, "resume": False, "lr": None}
    overrides = cli_overrides(options)
    assert "train.lr" not in " ".join(overrides)
    cfg = load_vlm_train_config(None, [*overrides, "train.max_steps=9"])  # --set after the options wins
    assert (cfg.data.dataset, cfg.train.output_dir, cfg.data.spatial_share) == ("OUT", "runs/x", 0.05)
    assert cfg.lora.train_vision == "full" and cfg.train.export_merged and not cfg.train.resume
    assert cfg.train.max_steps == 9
    for key in CLI_FIELDS.values():  # every mapped field exists
        section, name = key.split(".")
        assert hasattr(getattr(cfg, section), name)


# ---------------------------------------------------------------------------------------------------------------
# Data


def _qa_messages(n: int) -> list[dict]:
    messages = []
    for i in range(n):
        content = [{"type": "image", "text": None}] if i == 0 else []
        messages.append({"role": "user", "content": [*content, {"type": "text", "text": f"Question {i}?"}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"Answer {i}."}]})
    return messages


def test_chunk_conversation_repeats_the_image_per_chunk():
    chunks = chunk_conversation(_qa_messages(7), 3)
    assert [len(c) // 2 for c in chunks] == [3, 3, 1]
    for chunk in chunks:
        assert [m["role"] for m in chunk] == ["user", "assistant"] * (len(chunk) // 2)
        assert chunk[0]["content"][0] == {"type": "image"}
        assert sum(p["type"] == "image" for m in chunk for p in m["content"]) == 1
    assert chunks[1][0]["content"][1]["text"] == "Question 3?" and chunks[2][1]["content"][0]["text"] == "Answer 6."
    with pytest.raises(DatasetError, match="alternate"):
        chunk_conversation(_qa_messages(2)[:3], 2)
    with pytest.raises(DatasetError, match="one image"):
        chunk_conversation(_qa_messages(2)[2:], 2)


def test_spatial_examples_read_a_generated_dataset(spatial_out):
    rows = list(iter_rows(spatial_out, columns=["messages", "qa"]))
    examples = SpatialExamples(spatial_out, max_qa_per_example=3)
    assert len(examples) == sum(-(-len(r["messages"]) // 6) for r in rows)
    ex = examples[0]
    assert ex["spatial"] and len(ex["images"]) == 1 and ex["images"][0].size == (160, 120)
    messages = ex["messages"]
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * 3]
    assert messages[0]["content"] == [{"type": "text", "text": SYSTEM_PROMPT}]
    assert messages[1]["content"][0] == {"type": "image"} and len(messages[1]["content"]) == 2
    # the user turns: the question and the evaluation's answer-format instruction; the answers: the dataset's
    bench = load_benchmark(spatial_out)
    for k in range(3):
        question = rows[0]["messages"][2 * k]["content"][-1]["text"]
        assert messages[1 + 2 * k]["content"][-1]["text"] == build_prompt(bench.by_id(rows[0]["qa"][k]["id"]))
        assert messages[1 + 2 * k]["content"][-1]["text"].startswith(question + "\nAnswer directly")
        assert messages[2 + 2 * k]["content"] == rows[0]["messages"][2 * k + 1]["content"][:1]
    bare = SpatialExamples(spatial_out, max_qa_per_example=3, system_prompt="", prompt_style="plain")[0]["messages"]
    assert bare[0]["role"] == "user" and bare[0]["content"][-1]["text"] == rows[0]["qa"][0]["question"]
    merged = SpatialExamples(spatial_out, max_qa_per_example=3, system_in_user=True)[0]["messages"]
    assert merged[0]["role"] == "user" and merged[0]["content"][-1]["text"] == (
        SYSTEM_PROMPT + "\n\n" + messages[1]["content"][-1]["text"])
    with pytest.raises(DatasetError, match="no Parquet"):
        SpatialExamples(spatial_out + "/nope", 3)


def test_mix_schedule_is_seeded_prefix_stable_and_hits_the_share():
    order = mix_schedule(40, 100, 0.3, 5000, seed=3)
    assert np.array_equal(order, mix_schedule(40, 100, 0.3, 5000, seed=3))
    assert np.array_equal(order[:777], mix_schedule(40, 100, 0.3, 777, seed=3))  # a longer run extends a shorter
    assert not np.array_equal(order, mix_schedule(40, 100, 0.3, 5000, seed=4))
    assert abs(order[:, 0].mean() - 0.3) < 0.02
    spatial = order[order[:, 0] == 1, 1]
    assert sorted(spatial[:40]) == list(range(40))  # one shuffled pass without replacement, then the next
    assert order[order[:, 0] == 0, 1].max() < 100
    assert mix_schedule(5, 0, 1.0, 50, 0)[:, 0].all() and not mix_schedule(0, 5, 0.0, 50, 0)[:, 0].any()
    assert plan_length(40, 100, 0.05, 1.0) == 800 and plan_length(40, 100, 0.0, 2.0) == 200
    assert plan_length(40, 0, 1.0, 0.5) == 20


def test_general_adapter_schemas(tmp_path):
    images = _images(3)
    qa = GeneralExamples(datasets.Dataset.from_dict({"image": images, "question": ["Q?"] * 3,
                                                     "answer": [["A.", "B."]] * 3}))
    ex = qa[1]
    assert not ex["spatial"] and len(ex["images"]) == 1
    assert ex["messages"] == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": "A."}]}]
    conv = GeneralExamples(datasets.Dataset.from_dict({"images": [images[:2]], "conversations": [[
        {"from": "human", "value": "Compare <image> and <image> please"}, {"from": "gpt", "value": "Same."},
        {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]]}))
    ex = conv[0]
    assert len(ex["images"]) == 2 and [p["type"] for p in ex["messages"][0]["content"]] == [
        "text", "image", "text", "image", "text"]
    assert [m["role"] for m in ex["messages"]] == ["user", "assistant", "user", "assistant"]
    chat = GeneralExamples(datasets.Dataset.from_dict({"image": images[:1], "messages": [[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe."},
        {"role": "assistant", "content": "A ball."}]]}))
    ex = chat[0]
    assert ex["messages"][1]["content"][0] == {"type": "image"}
    assert ex["messages"][0]["content"][0]["text"] == "Be brief."
    text_only = GeneralExamples(datasets.Dataset.from_dict({"question": ["Q?"], "answer": ["A."]}))
    assert text_only[0]["images"] == []
    bad = GeneralExamples(datasets.Dataset.from_dict({"image": images[:1], "messages": [[
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "y"}]}]]}))
    with pytest.raises(DatasetError, match="placeholder"):
        bad[0]
    with pytest.raises(DatasetError, match="messages, conversations or question"):
        GeneralExamples(datasets.Dataset.from_dict({"image": images[:1], "caption": ["c"]}))
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"question": ["Q?"], "answer": ["A."]})}) \
        .save_to_disk(str(tmp_path / "dd"))
    assert len(open_general_dataset(str(tmp_path / "dd"), "validation")) == 1
    with pytest.raises(DatasetError, match="no split"):
        open_general_dataset(str(tmp_path / "dd"), "train")
    with pytest.raises(DatasetError):
        open_general_dataset(str(tmp_path / "missing_dir"), "train")


def test_collator_unmasks_exactly_the_assistant_answers(processor, spatial_out, general_dir):
    spatial = SpatialExamples(spatial_out, max_qa_per_example=3)
    general = GeneralExamples(open_general_dataset(general_dir))
    examples = [spatial[0], general[2], spatial[1]]
    batch = AssistantOnlyCollator(processor)(examples)
    assert batch[SOURCE_KEY].tolist() == [1, 0, 1]
    assert {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"} <= set(batch)
    labels, ids = batch["labels"], batch["input_ids"]
    tok = processor.tokenizer
    for row, ex in enumerate(examples):
        answers = [m["content"][0]["text"] + "<|im_end|>" for m in ex["messages"] if m["role"] == "assistant"]
        supervised = (labels[row] != IGNORE_INDEX).numpy()
        assert np.array_equal(labels[row][supervised].numpy(), ids[row][supervised].numpy())
        edges = np.flatnonzero(np.diff(np.concatenate([[0], supervised.astype(int), [0]])))
        runs = [tok.decode(ids[row, a:b].tolist()) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        assert runs == answers
        assert not supervised[batch["attention_mask"][row].numpy() == 0].any()  # padding
        assert not supervised[batch["mm_token_type_ids"][row].numpy() != 0].any()  # image tokens
        assert (batch["mm_token_type_ids"][row] != 0).any()  # every example here has its image tokens
    assert tok.decode(ids[1][labels[1] != IGNORE_INDEX].tolist()) == GENERAL_ANSWER + "<|im_end|>"

    first = AssistantOnlyCollator(processor)([spatial[0]])
    last_image = int(np.flatnonzero(first["mm_token_type_ids"][0].numpy())[-1])
    with pytest.raises(DatasetError, match="image tokens"):
        AssistantOnlyCollator(processor, max_length=last_image)([spatial[0]])
    cut = AssistantOnlyCollator(processor, max_length=last_image + 5)([spatial[0]])
    assert cut["input_ids"].shape[1] == cut["labels"].shape[1] == cut["mm_token_type_ids"].shape[1] == last_image + 5
    assert torch.equal(cut["input_ids"][0], first["input_ids"][0, : last_image + 5])


def test_training_examples_are_the_conversations_eval_sends(tiny_model, processor, spatial_out, monkeypatch):
    """What `spatialforge train` shows the model before an answer is exactly what `eval run` (hf) sends for the same
    question: the same rendered chat text (system prompt included) and the same tokens, image tokens included."""
    from spatialforge.eval.models.hf_vlm import HFVisionLanguageModel

    examples = SpatialExamples(spatial_out, max_qa_per_example=3)
    ex = examples[0]
    first_qa = next(iter_rows(spatial_out, columns=["qa"]))["qa"]
    bench = load_benchmark(spatial_out)
    model = HFVisionLanguageModel(tiny_model, device="cpu", max_new_tokens=1)
    model.load()
    rendered, sent = [], []
    render = model.processor.apply_chat_template
    monkeypatch.setattr(model.processor, "apply_chat_template",
                        lambda *a, **k: rendered.append(render(*a, **k)) or rendered[-1])
    generate = model.model.generate
    monkeypatch.setattr(model.model, "generate", lambda **k: sent.append(k) or generate(**k))
    assert model.answer([bench.by_id(first_qa[0]["id"])])[0].ok
    eval_text = rendered[-1]
    train_text = processor.apply_chat_template(ex["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert train_text == eval_text
    assert SYSTEM_PROMPT in eval_text and "Answer directly" in eval_text
    assert "You are a helpful assistant" not in eval_text  # not the template's default system prompt
    # later turns of the example (no image, no second system turn): the user text eval sends for those questions
    for k in (1, 2):
        model.answer([bench.by_id(first_qa[k]["id"])])
        user = ex["messages"][2 * k + 1]
        assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["text"]
        assert rendered[-1].endswith(f"<|vision_end|>{user['content'][0]['text']}<|im_end|>\n<|im_start|>assistant\n")
    # token by token: the training sequence starts with eval's prompt, and the supervised answer starts right after it
    eval_ids = sent[0]["input_ids"][0][sent[0]["attention_mask"][0].bool()].tolist()
    batch = AssistantOnlyCollator(processor)([ex])
    train_ids = batch["input_ids"][0].tolist()
    assert train_ids[:len(eval_ids)] == eval_ids
    labels = batch["labels"][0]
    assert labels[len(eval_ids)] != IGNORE_INDEX and (labels[:len(eval_ids)] == IGNORE_INDEX).all()


# ---------------------------------------------------------------------------------------------------------------
# Training


def _state(folder: str, prefix: str) -> dict[str, torch.Tensor]:
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def _adapter_keys(folder) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        return list(f.keys())


def _generate_eval(model, processor, step):
    """A stand-in for the benchmark: generate a few tokens for one image."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How far is it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=_images(1), return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return {"new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]), "step_seen": step, "note": "ok"}


def test_train_mix_eval_resume_and_merged_export(tiny_model, spatial_out, general_dir, tmp_path):
    out = tmp_path / "run"
    mix = ("data.spatial_share=0.5", f"data.general_data={general_dir}", "train.save_steps=15", "train.eval_every=5")
    first = train_vlm(_config(tiny_model, spatial_out, out, *mix, "train.max_steps=15"), eval_fn=_generate_eval,
                      progress=False, log=_quiet)
    assert first["steps"] == 15 and first["resumed_from"] is None
    assert (out / "checkpoint-15" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "train_summary.json").is_file()
    assert [e["step"] for e in first["evals"]] == [5, 10, 15]
    assert first["evals"][0]["metrics"] == {"new_tokens": 3, "step_seen": 5, "note": "ok"}
    keys = _adapter_keys(out / "adapter")
    assert any("language_model" in k and "lora_A" in k for k in keys) and not any("visual" in k for k in keys)
    assert 0 < first["trainable_parameters"] < first["total_parameters"] / 5

    # the same output dir with other data settings is refused; with more steps it resumes
    with pytest.raises(ConfigError, match="spatial_share"):
        train_vlm(_config(tiny_model, spatial_out, out, *mix[1:], "data.spatial_share=0.4", "train.max_steps=30"),
                  progress=False, log=_quiet)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train_vlm(_config(tiny_model, spatial_out, out, *mix, "train.max_steps=30", "train.resume=false"),
                  progress=False, log=_quiet)
    second = train_vlm(_config(tiny_model, spatial_out, out, *mix, "train.max_steps=30", "train.export_merged=true",
                               "train.eval_every=10"), eval_fn=_generate_eval, progress=False, log=_quiet)
    assert second["steps"] == 30 and second["resumed_from"].endswith("checkpoint-15")
    # the evaluations before the resume are kept in the summary
    assert [e["step"] for e in second["evals"]] == [5, 10, 15, 20, 30]
    losses = [e["loss"] for e in second["loss_history"]]
    assert [e["step"] for e in second["loss_history"]] == list(range(1, 31))
    assert losses[:15] == [e["loss"] for e in first["loss_history"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 30

    # the mix: measured on the batches the resumed run consumed (positions 30..59 of the schedule)
    n_spatial, n_general = second["examples"]["spatial"], second["examples"]["general"]
    order = mix_schedule(n_spatial, n_general, 0.5, 60, seed=0)
    measured = second["mix"]["measured"]
    assert measured["from_step"] == 15
    assert measured["examples"] == {"spatial": int(order[30:, 0].sum()), "general": int(30 - order[30:, 0].sum())}
    assert second["mix"]["scheduled_spatial_share_examples"] == pytest.approx(order[:, 0].mean())
    assert abs(second["mix"]["scheduled_spatial_share_examples"] - 0.5) < 0.2
    assert 0 < measured["spatial_share_tokens"] < 1 and 0 < measured["spatial_share_supervised_tokens"] < 1

    # merged export: a plain model folder that loads and generates; the frozen vision tower is unchanged
    merged = out / "merged"
    model = transformers.AutoModelForImageTextToText.from_pretrained(merged)
    processor = transformers.AutoProcessor.from_pretrained(merged)
    assert _generate_eval(model, processor, 0)["new_tokens"] == 3
    base_vision, merged_vision = _state(tiny_model, "model.visual"), _state(str(merged), "model.visual")
    assert base_vision and all(torch.equal(base_vision[k], merged_vision[k]) for k in base_vision)
    base_lm, merged_lm = _state(tiny_model, "model.language_model"), _state(str(merged), "model.language_model")
    assert any(not torch.equal(base_lm[k], merged_lm[k]) for k in base_lm if "q_proj.weight" in k)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_train_vision_modes_change_the_vision_tower(tiny_model, spatial_out, tmp_path, mode):
    def run(name):
        # with gradient checkpointing and (for full) a dataloader worker process, the GPU-recipe settings
        cfg = _config(tiny_model, spatial_out, tmp_path / name, f"lora.train_vision={mode}", "train.max_steps=3",
                      "train.export_merged=true", "train.save_steps=100", "train.gradient_checkpointing=true",
                      f"train.workers={int(mode == 'full')}")
        return train_vlm(cfg, progress=False, log=_quiet)

    summary = run("a")
    keys = _adapter_keys(tmp_path / "a" / "adapter")
    if mode == "lora":  # adapters on every linear layer of the vision tower, its patch merger included
        assert any("visual.blocks.0.attn.qkv.lora_A" in k for k in keys) and any("visual.merger" in k for k in keys)
        assert run("b")["loss_history"] == summary["loss_history"]  # deterministic given the seed
    else:  # a full trainable copy of the vision tower, saved next to the adapters
        assert json.loads((tmp_path / "a" / "adapter" / "adapter_config.json").read_text())["modules_to_save"] == [
            "model.visual"]
        assert any("visual.blocks.0.attn.qkv.weight" in k for k in keys)
        assert not any("visual" in k and "lora_" in k for k in keys)
    base_vision = _state(tiny_model, "model.visual")
    merged_vision = _state(str(tmp_path / "a" / "merged"), "model.visual")
    assert set(merged_vision) == set(base_vision)
    assert any(not torch.equal(base_vision[k], merged_vision[k]) for k in base_vision if k.endswith(".weight"))


def test_cli_trains_and_scores_the_benchmark_during_training(tiny_model, spatial_out, tmp_path, capsys):
    """`spatialforge train` end to end, with the periodic benchmark evaluation wired to the trained model."""
    from spatialforge.cli.main import main

    bench = tmp_path / "bench"
    assert main(["eval", "build", "--out", str(bench), "--n", "2", "--qa-per-image", "4", "--no-progress"]) == 0
    out = tmp_path / "run"
    rc = main(["train", str(spatial_out), "--out", str(out), "--base-model", tiny_model, "--device", "cpu",
               "--max-steps", "4", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2", "--max-qa-per-example",
               "3", "--save-steps", "2", "--eval-benchmark", str(bench), "--eval-limit", "3", "--eval-every", "2",
               "--set", "train.workers=0", "--set", "train.log_every=1", "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4
    evals = summary["evals"]
    assert [e["step"] for e in evals] == [2, 4] and all(e["metrics"]["questions"] == 3 for e in evals)
    assert (out / "eval" / "step-000002" / "summary.json").is_file()
    assert (out / "adapter").is_dir()
    printed = capsys.readouterr().out
    assert "last evaluation" in printed and f"final loss {summary['final_loss']:.4g} (logged at step 4)" in printed


def test_adapter_evaluates_from_anywhere_and_a_retrained_adapter_is_never_resumed(tiny_model, spatial_out, tmp_path,
                                                                                  monkeypatch, capsys):
    """The adapter stores its base model's absolute path (trained here with a relative one), so `eval run
    --model hf:RUN/adapter` works from another directory; retraining it in place refuses the old answers."""
    from spatialforge.cli.main import main

    base = Path(tiny_model)
    monkeypatch.chdir(base.parent)
    run = tmp_path / "run"
    train_vlm(_config(base.name, spatial_out, run, "train.max_steps=2", "train.save_steps=1"), progress=False,
              log=_quiet)
    for folder in (run / "adapter", run / "checkpoint-2"):
        stored = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert stored == str(base.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["eval", "run", "--benchmark", spatial_out, "--model", f"hf:{run / 'adapter'}", "--out", "ev", "--limit",
            "3", "--device", "cpu", "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    info = json.loads((elsewhere / "ev" / "run.json").read_text())
    assert info["asked"] == 3 and info["model"]["adapter_base"] == str(base.resolve())
    assert info["model_errors"] == {} and "PeftModel" in info["model"]["model_class"]  # the adapter is applied
    capsys.readouterr()
    assert main(args) == 0  # the same adapter and settings: resumed, nothing asked again
    assert "3 questions already answered, 0 asked now" in capsys.readouterr().out
    assert main([*args[:-2], "8", "--no-progress"]) == 2
    assert "cannot resume: the model changed (max_new_tokens 4 -> 8); use a new --out or --overwrite" in \
        _one_line_error(capsys)
    # retrained in place (two more steps from its checkpoint): the adapter's weights changed
    monkeypatch.chdir(base.parent)
    train_vlm(_config(base.name, spatial_out, run, "train.max_steps=4", "train.save_steps=1"), progress=False,
              log=_quiet)
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(args) == 2
    assert "cannot resume: the model changed (adapter weights modified (adapter_model.safetensors))" in \
        _one_line_error(capsys)
    assert main([*args, "--overwrite"]) == 0


def test_cli_eval_every_needs_a_benchmark(tmp_path, capsys):
    from spatialforge.cli.main import main

    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--eval-every", "5", "--no-progress"]) == 2
    assert "--eval-benchmark" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The command: output folder, resume, values, messages


def _train_args(tiny_model, data, out, *extra):
    return ["train", str(data), "--out", str(out), "--base-model", tiny_model, "--device", "cpu", "--batch-size", "2",
            "--grad-accum", "1", "--max-qa-per-example", "3", "--set", "train.workers=0", "--set",
            "train.gradient_checkpointing=false", "--no-progress", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err, err
    return err


def test_cli_train_refuses_unsafe_output_folders(tiny_model, spatial_out, tmp_path, capsys, monkeypatch):
    from spatialforge.cli.main import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        assert main(_train_args(tiny_model, spatial_out, mine, *extra)) == 2
        assert "not written by spatialforge" in _one_line_error(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]
    for out, what in ((spatial_out, "is the input"), (f"{spatial_out}/run", "inside the input"),
                      (str(Path(spatial_out).parent), "contains the input"), (f"{tiny_model}/run", "inside the input")):
        assert main(_train_args(tiny_model, spatial_out, out)) == 2
        err = _one_line_error(capsys)
        assert what in err and "--out" in err
    assert not Path(spatial_out, "run").exists() and not Path(tiny_model, "run").exists()
    # a run folder from the config file is named by its config key
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'[train]\noutput_dir = "{spatial_out}/run"\n')
    args = _train_args(tiny_model, spatial_out, "x")
    del args[2:4]  # no --out
    assert main([*args, "--config", str(cfg)]) == 2
    err = _one_line_error(capsys)
    assert "train.output_dir" in err and "inside the input" in err
    monkeypatch.chdir(tmp_path)
    assert main(_train_args(tiny_model, spatial_out, ".")) == 2
    assert "working directory" in _one_line_error(capsys)


def test_cli_train_resumes_overwrites_and_prints_the_loss(tiny_model, spatial_out, tmp_path, capsys):
    """Steps fewer than train.log_every: the summary line says so (it used to print "final loss None")."""
    from spatialforge.cli.main import main
    from spatialforge.vlmtrain.config import TRAIN_OUTPUT

    out = tmp_path / "run"
    assert main(_train_args(tiny_model, spatial_out, out, "--max-steps", "2", "--save-steps", "1")) == 0
    printed = capsys.readouterr().out
    assert "None" not in printed and "no loss logged (2 steps; a loss is logged every 10" in printed
    assert "mean training loss" in printed
    assert f"evaluate it with: spatialforge eval run --benchmark BENCHMARK --model hf:{out.resolve() / 'adapter'}" \
        in printed
    assert all(TRAIN_OUTPUT.owned(p.name) for p in out.iterdir()), sorted(p.name for p in out.iterdir())
    (out / "notes.txt").write_text("mine")
    assert main(_train_args(tiny_model, spatial_out, out, "--max-steps", "3", "--save-steps", "1")) == 0  # resumed
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"].endswith("checkpoint-2")
    assert "no loss logged (3 steps" in capsys.readouterr().out
    # checkpoints written in another prompt (an older spatialforge) are not trained on in this one
    stored_path = out / "vlm_train_config.json"
    good = stored_path.read_text()
    stored = json.loads(good)
    stored["prompt"]["system_prompt"] = "You are a helpful assistant."
    stored_path.write_text(json.dumps(stored))
    assert main(_train_args(tiny_model, spatial_out, out, "--max-steps", "4", "--save-steps", "1")) == 2
    assert "trained with another prompt" in _one_line_error(capsys)
    stored_path.write_text(good)
    assert main(_train_args(tiny_model, spatial_out, out, "--max-steps", "3", "--no-resume")) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert main(_train_args(tiny_model, spatial_out, out, "--max-steps", "1", "--save-steps", "1",
                            "--overwrite")) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["resumed_from"] is None
    assert not (out / "checkpoint-2").exists() and (out / "notes.txt").read_text() == "mine"
    assert "notes.txt" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "flag"), [
    (["--max-steps", "0"], "--max-steps"), (["--lr", "-1"], "--lr"), (["--lr", "0"], "--lr"),
    (["--spatial-share", "1.5"], "--spatial-share"), (["--device", "gpu"], "--device"),
    (["--eval-limit", "0"], "--eval-limit"), (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"), (["--save-steps", "0"], "--save-steps"), (["--base-model", ""], "--base-model"),
])
def test_cli_train_values_fail_at_parse_time_naming_the_flag(tiny_model, spatial_out, tmp_path, capsys, extra, flag):
    from spatialforge.cli.main import main

    assert main(_train_args(tiny_model, spatial_out, tmp_path / "r", *extra)) == 2
    assert f"argument {flag}:" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_cli_train_messages_name_the_flag_the_user_typed(tiny_model, spatial_out, tmp_path, capsys):
    from spatialforge.cli.main import main

    out = tmp_path / "r"
    assert main(_train_args(tiny_model, spatial_out, out, "--spatial-share", "0.5")) == 2
    err = _one_line_error(capsys)
    assert "--spatial-share 0.5 (below 1) needs --general-data" in err and "data." not in err
    assert main(_train_args(tiny_model, spatial_out, out, "--set", "data.spatial_share=0.5")) == 2
    assert "data.spatial_share 0.5 (below 1) needs --general-data" in _one_line_error(capsys)
    cfg = tmp_path / "mix.toml"
    cfg.write_text("[data]\nspatial_share = 0.25\n")
    assert main(_train_args(tiny_model, spatial_out, out, "--config", str(cfg))) == 2
    assert "data.spatial_share 0.25 (below 1) needs --general-data" in _one_line_error(capsys)
    args = _train_args(tiny_model, spatial_out, out)
    del args[1]  # no DATASET
    assert main(args) == 2
    assert "the DATASET argument (a spatialforge output folder) is required" in _one_line_error(capsys)
    assert main(_train_args(tiny_model, spatial_out, out, "--set", "train.device=gpu")) == 2
    assert "train.device must be auto, cpu, cuda, cuda:N or mps" in _one_line_error(capsys)
    if not torch.cuda.is_available():  # accepted like everywhere, then refused here naming the flag
        for dev in ("cuda", "cuda:1"):
            assert main(_train_args(tiny_model, spatial_out, out, "--device", dev)) == 2
            assert f"--device {dev}: CUDA is not available" in _one_line_error(capsys)
    assert not out.exists()  # refused before anything was written
