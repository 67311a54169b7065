"""Training: it learns a referring task, the CLIP stays bit-identical, resume is exact, nothing is lost."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from spatialforge.afford.checkpoint import load_checkpoint  # noqa: E402
from spatialforge.afford.config import AffordConfig, ModelConfig, TrainConfig  # noqa: E402
from spatialforge.afford.model import AffordanceCLIP  # noqa: E402
from spatialforge.afford.predict import preprocess  # noqa: E402
from spatialforge.afford.shapes import ShapesRefDataset  # noqa: E402
from spatialforge.afford.train import RefSegDataset, evaluate_referring, train  # noqa: E402
from spatialforge.afford.transforms import letterbox_mask  # noqa: E402
from spatialforge.errors import ConfigError, DatasetError  # noqa: E402

from .tiny_clip_rn import build_tiny_rn_clip  # noqa: E402


@pytest.fixture(scope="module")
def clip_name(tmp_path_factory):
    return build_tiny_rn_clip(tmp_path_factory.mktemp("tinyrn"))


def _config(clip_name: str, size: int = 64, **train_kw) -> AffordConfig:
    kw = dict(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, workers=0, device="cpu", log_every=2, val_every=3,
              save_every=3, val_max_refs=8, loss="bce")
    kw.update(train_kw)
    return AffordConfig(ModelConfig(clip_model=clip_name, clip_pretrained=None, image_size=size, fpn_dim=32),
                        TrainConfig(**kw))


def _all_shapes_iou(source: ShapesRefDataset, n: int) -> float:
    """mIoU of the best text-blind answer: every shape of the image."""
    ious = []
    for ref in source.samples[:n]:
        union = np.zeros((source.size, source.size), bool)
        for other in source.samples:
            if other.image_id == ref.image_id:
                union |= source.mask(other)
        target = source.mask(ref)
        ious.append((union & target).sum() / union.sum())
    return float(np.mean(ious))


class _ShuffledText:
    """The first ``n`` refs of a source, each with the sentences of another of them (a fixed derangement):
    what a model scores when it cannot use the text."""

    def __init__(self, source: ShapesRefDataset, n: int) -> None:
        self.source = source
        refs = source.samples[:n]
        perm = np.random.default_rng(0).permutation(len(refs))
        while (perm == np.arange(len(refs))).any():
            perm = np.roll(perm, 1)
        self.samples = [dataclasses.replace(r, sentences=refs[j].sentences) for r, j in zip(refs, perm, strict=True)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]

    def image(self, sample):
        return self.source.image(sample)

    def mask(self, sample):
        return self.source.mask(sample)


def test_learns_coloured_shapes_named_by_colour_and_clip_stays_identical(clip_name, tmp_path):
    """A few hundred CPU steps: loss down, IoU far above chance and above any text-blind answer."""
    cfg = _config(clip_name, size=128, steps=500, batch_size=16, lr=1e-2, warmup_steps=20, log_every=50,
                  val_every=500, save_every=500, val_max_refs=60)
    train_src = ShapesRefDataset(200, size=128, seed=0, naming="colour")
    val_src = ShapesRefDataset(30, size=128, seed=1, split="val", naming="colour")
    torch.manual_seed(0)
    model = AffordanceCLIP.from_config(cfg.model)
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    summary = train(cfg, tmp_path / "run", train_source=train_src, val_source=val_src, progress=False, model=model)
    clip_after = model.clip.state_dict()
    assert all(torch.equal(clip_before[k], clip_after[k]) for k in clip_before)  # bit-identical, BN stats too

    losses = [h["loss"] for h in summary["loss_history"]]
    assert losses[-1] < 0.6 * losses[0], losses
    trained = summary["validation"]
    blind = _all_shapes_iou(val_src, 60)
    # the text-blind control: the same trained model, each ref given another ref's sentences
    shuffled = evaluate_referring(model, _ShuffledText(val_src, 60), device="cpu", max_refs=60)
    assert shuffled["sentences"] == trained["sentences"]
    assert trained["mIoU"] > max(0.5, blind + 0.15, shuffled["mIoU"] + 0.3), (trained, blind, shuffled)
    assert summary["finished"] and summary["skipped"] == {}
    # the saved checkpoint reproduces the trained model
    loaded = load_checkpoint(summary["final_checkpoint"])
    again = evaluate_referring(loaded, val_src, device="cpu", max_refs=60)
    assert again["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6)


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_interrupted_run_resumes_exactly(clip_name, tmp_path):
    src = ShapesRefDataset(12, size=64, seed=3, naming="full")
    cfg = _config(clip_name, steps=6, save_every=2)
    straight = train(cfg, tmp_path / "a", train_source=src, progress=False)
    part = train(cfg, tmp_path / "b", train_source=src, progress=False, stop_at=3)
    assert not part["finished"] and part["final_checkpoint"] is None
    assert (tmp_path / "b" / "checkpoints" / "step-0000003").is_dir()
    resumed = train(cfg, tmp_path / "b", train_source=src, progress=False)
    assert resumed["finished"] and resumed["samples"] == straight["samples"] == 6 * 4
    a, b = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # only the last two step checkpoints are kept
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6]


def test_gradient_accumulation_matches_a_big_batch(clip_name, tmp_path):
    src = ShapesRefDataset(10, size=64, seed=4)
    big = train(_config(clip_name, steps=1, batch_size=8, grad_clip=None), tmp_path / "big", train_source=src,
                progress=False)
    acc = train(_config(clip_name, steps=1, batch_size=4, grad_accum=2, grad_clip=None), tmp_path / "acc",
                train_source=src, progress=False)
    assert big["samples"] == acc["samples"] == 8
    a, b = _weights(tmp_path / "big" / "final"), _weights(tmp_path / "acc" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


class _Flaky(ShapesRefDataset):
    """Every third ref's image cannot be read."""

    def image(self, sample):
        if sample.ref_id % 3 == 0:
            raise DatasetError(f"/data/img_{sample.ref_id}.jpg: cannot read image", path="x")
        return super().image(sample)


def test_unreadable_refs_are_counted_and_logged(clip_name, tmp_path):
    src = _Flaky(8, size=64, seed=5)
    out = train(_config(clip_name, steps=4), tmp_path / "r", train_source=src, val_source=src, progress=False)
    order = RefSegDataset(src, 64, 0)  # the same data order as the run (seed 0)
    n_bad = sum(1 for k in range(16) if src.samples[order.ref_index(k)].ref_id % 3 == 0)
    assert sum(out["skipped"].values()) == n_bad > 0
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in log if "skipped_ref" in r) == n_bad
    assert out["validation"]["skipped"]["unreadable"] > 0


def test_evaluate_referring_is_exact_on_a_perfect_predictor(clip_name):
    """Plumbing check: a model whose logits are the letterboxed truth scores IoU 1."""
    src = ShapesRefDataset(4, size=64, seed=6)

    class Perfect(torch.nn.Module):
        config = ModelConfig(clip_model=clip_name, image_size=64)

        def __init__(self):
            super().__init__()
            self.clip = type("C", (), {"text_features": staticmethod(lambda s: torch.zeros(len(s), 1))})()
            self.queue = []

        def forward(self, x, text):
            return torch.stack(self.queue.pop(0))[:, None]

    model = Perfect()
    jobs = [(r, s) for r in src.samples for s in r.sentences]
    for start in range(0, len(jobs), 16):
        batch = jobs[start:start + 16]
        _, boxes = preprocess([src.image(r) for r, _ in batch], 64)
        model.queue.append([torch.from_numpy(letterbox_mask(src.mask(r), b) * 20 - 10) for (r, _), b in
                            zip(batch, boxes, strict=True)])
    res = evaluate_referring(model, src, device="cpu")
    assert res["sentences"] == len(jobs)
    assert res["mIoU"] > 0.97 and res["oIoU"] > 0.97


def test_accumulation_weights_micro_batches_by_readable_refs(clip_name, tmp_path):
    """Three of the first micro-batch's four refs are unreadable: accumulating 4 + 4 must equal one
    batch of 8 (both average over the 5 readable refs), not average the two micro-batch means."""
    src = ShapesRefDataset(10, size=64, seed=4)
    order = RefSegDataset(src, 64, 0)
    bad = {src.samples[order.ref_index(k)].ref_id for k in range(3)}

    class Unreadable(ShapesRefDataset):
        def image(self, sample):
            if sample.ref_id in bad:
                raise DatasetError(f"img_{sample.ref_id}.jpg: cannot read image", path="x")
            return super().image(sample)

    src = Unreadable(10, size=64, seed=4)
    big = train(_config(clip_name, steps=1, batch_size=8, grad_clip=None), tmp_path / "big", train_source=src,
                progress=False)
    acc = train(_config(clip_name, steps=1, batch_size=4, grad_accum=2, grad_clip=None), tmp_path / "acc",
                train_source=src, progress=False)
    assert sum(big["skipped"].values()) == sum(acc["skipped"].values()) == 3
    # the optimised objective (whose gradient the step follows) is the same mean over the 5 readable refs;
    # the mean of the two micro-batch means would weigh the lone readable ref of the first one 2.5x
    assert acc["loss_history"][0]["loss"] == pytest.approx(big["loss_history"][0]["loss"], rel=1e-5)


class _CrashesAt(ShapesRefDataset):
    """Interrupted (Ctrl-C) while reading the ``at``-th image of the run."""

    def __init__(self, *args, at: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.calls, self.at = 0, at

    def image(self, sample):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().image(sample)


def test_resume_after_an_interrupt_logs_every_step_once_and_matches_a_straight_run(clip_name, tmp_path):
    cfg = _config(clip_name, steps=6, save_every=2, log_every=1)
    straight = train(cfg, tmp_path / "a", train_source=ShapesRefDataset(12, size=64, seed=3), progress=False)
    crashing = _CrashesAt(12, size=64, seed=3, at=3 * 4 + 1)  # during step 4: steps 1-3 logged, checkpoint at 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", train_source=crashing, progress=False)
    log_path = tmp_path / "b" / "log.jsonl"
    assert [json.loads(line)["step"] for line in log_path.read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-0000002"]
    resumed = train(cfg, tmp_path / "b", train_source=ShapesRefDataset(12, size=64, seed=3), progress=False)
    log = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    a, b = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [h["step"] for h in resumed["loss_history"]] == [h["step"] for h in straight["loss_history"]]


def test_resume_refuses_changed_settings_and_extends_only_on_request(clip_name, tmp_path):
    src = ShapesRefDataset(8, size=64, seed=3)
    cfg = _config(clip_name, steps=2, save_every=1, log_every=1, val_every=100)
    train(cfg, tmp_path / "r", train_source=src, progress=False)
    changed = {"lr": 1e-3, "batch_size": 2, "loss": "balanced", "seed": 1, "schedule": "linear"}
    for key, value in changed.items():
        with pytest.raises(ConfigError, match=rf"another training config \(train\.{key} "):
            train(_config(clip_name, steps=2, save_every=1, log_every=1, val_every=100, **{key: value}),
                  tmp_path / "r", train_source=src, progress=False)
    other_model = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fpn_dim=16))
    with pytest.raises(ConfigError, match=r"another model config \(model\.fpn_dim 32 -> 16\)"):
        train(other_model, tmp_path / "r", train_source=src, progress=False)
    bigger = ShapesRefDataset(10, size=64, seed=3)
    with pytest.raises(ConfigError, match=rf"data holds {len(bigger)} refs, the run was started on {len(src)}"):
        train(cfg, tmp_path / "r", train_source=bigger, progress=False)
    longer = _config(clip_name, steps=4, save_every=1, log_every=1, val_every=100)
    with pytest.raises(ConfigError, match="add --extend"):
        train(longer, tmp_path / "r", train_source=src, progress=False)
    # where it runs may change (the device, the loader workers); the run goes on
    same = _config(clip_name, steps=2, save_every=1, log_every=1, val_every=100, device="auto", workers=0)
    assert train(same, tmp_path / "r", train_source=src, progress=False)["steps"] == 2
    out = train(longer, tmp_path / "r", train_source=src, progress=False, extend=True)
    assert out["finished"] and out["steps"] == 4 and out["samples"] == 4 * 4
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"train\.steps \(--steps\) 4 -> 2"):  # shorter than the run now is
        train(cfg, tmp_path / "r", train_source=src, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(cfg, tmp_path / "new", train_source=src, progress=False, extend=True)


class _Payload:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_trainer_state_is_loaded_with_weights_only(clip_name, tmp_path):
    src = ShapesRefDataset(8, size=64, seed=3)
    cfg = _config(clip_name, steps=2, save_every=1)
    train(cfg, tmp_path / "r", train_source=src, progress=False, stop_at=1)
    state_path = tmp_path / "r" / "checkpoints" / "step-0000001" / "trainer_state.pt"
    state = torch.load(state_path, weights_only=True)  # everything saved is plain data
    assert state["step"] == 1 and state["train_refs"] == len(src)
    # a trainer state that would run code when unpickled is refused, and the code never runs
    marker = tmp_path / "code-ran"
    torch.save(dict(state, history=[_Payload(marker)]), state_path)
    with pytest.raises(ConfigError, match="unreadable trainer state"):
        train(cfg, tmp_path / "r", train_source=src, progress=False)
    assert not marker.exists()
