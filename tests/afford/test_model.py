"""AffordanceCLIP network, checkpoints, prompts and inference on a tiny random ResNet CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from spatialforge.afford.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from spatialforge.afford.config import AffordConfig, ModelConfig, apply_overrides, load_afford_config  # noqa: E402
from spatialforge.afford.model import AffordanceCLIP, LightFPN, build_clip, count_parameters  # noqa: E402
from spatialforge.afford.predict import AffordancePredictor, preprocess  # noqa: E402
from spatialforge.afford.prompts import expand_prompts, normalise_action  # noqa: E402
from spatialforge.afford.train import lr_factor, pixel_text_loss  # noqa: E402
from spatialforge.afford.transforms import Letterbox, letterbox, letterbox_mask, unletterbox  # noqa: E402
from spatialforge.errors import ConfigError  # noqa: E402

from .tiny_clip_rn import TINY_EMBED_DIM, build_tiny_rn_clip  # noqa: E402


@pytest.fixture(scope="module")
def clip_name(tmp_path_factory):
    return build_tiny_rn_clip(tmp_path_factory.mktemp("tinyrn"))


def _model(clip_name: str, **kw) -> AffordanceCLIP:
    torch.manual_seed(0)
    cfg = ModelConfig(clip_model=clip_name, clip_pretrained=None, image_size=64, fpn_dim=16, **kw)
    return AffordanceCLIP.from_config(cfg).eval()


def test_features_match_open_clip(clip_name):
    m = _model(clip_name)
    v = m.clip.clip.visual
    x = torch.randn(2, 3, 64, 64)
    c8, c16, c32, g = m.clip.image_features(x)
    ref = v.forward_intermediates(x, indices=[1, 2, 3, 4])
    for ours, theirs in zip((c8, c16, c32), ref["image_intermediates"][1:], strict=True):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g, ref["image_features"])  # our attention pool == open_clip's at the native size
    torch.testing.assert_close(g, v(x))
    assert (c8.shape[-1], c16.shape[-1], c32.shape[-1]) == (8, 4, 2)  # strides 8, 16, 32
    assert m.clip.signature() == {"channels": [64, 128, 256], "embed_dim": TINY_EMBED_DIM}


def test_other_input_sizes_interpolate_the_position_embedding(clip_name):
    m = _model(clip_name)
    text = m.clip.prompt_features([["pour"], ["cut with"]])
    for size in (64, 96, 128):
        y = m(torch.randn(1, 3, size, size), text[None])
        assert y.shape == (1, 2, size, size) and torch.isfinite(y).all()


def test_clip_is_frozen_and_stays_in_eval(clip_name):
    m = _model(clip_name)
    before = {k: v.clone() for k, v in m.clip.state_dict().items()}
    m.train()
    assert not m.clip.training and not any(mod.training for mod in m.clip.modules())
    assert m.fpn.training
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1)
    x = torch.randn(3, 3, 64, 64)
    text = m.clip.text_features(["a", "b", "c"])
    loss = pixel_text_loss(m(x, text)[:, 0], (torch.rand(3, 64, 64) > 0.5).float())
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in m.clip.parameters())
    assert all(p.grad is not None for p in m.trainable_parameters())
    after = m.clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    counts = count_parameters(m)
    assert counts["trainable"] == counts["requires_grad"] == sum(p.numel() for p in m.trainable_parameters())


def test_full_size_rn101_head_is_a_few_million_parameters():
    fpn = LightFPN((512, 1024, 2048), 512, 256)  # RN101: layer2/3/4 channels, 512-d embedding
    n = sum(p.numel() for p in fpn.parameters()) + 2  # + logit scale and bias
    assert 2_000_000 < n < 5_000_000, n


def test_vit_clip_is_refused(tmp_path):
    import open_clip

    with pytest.raises(ConfigError, match="ModifiedResNet"):
        build_clip("ViT-B-32", None)
    with pytest.raises(ConfigError, match="cannot build the CLIP model"):
        build_clip("NoSuchModel-123", None)
    assert open_clip  # imported for the factory


def test_prompts_and_ensembles(clip_name):
    assert normalise_action("cut_with") == "cut with"
    assert expand_prompts(["pour"], "something") == [["something to pour"]]
    assert len(expand_prompts(["pour", "cut_with"], "ensemble")[1]) == 4
    assert expand_prompts("sit on", "a chair to {}") == [["a chair to sit on"]]
    with pytest.raises(ConfigError, match="empty prompt"):
        expand_prompts(["  "])
    with pytest.raises(ConfigError, match="unknown template set"):
        expand_prompts(["pour"], "fancy")
    m = _model(clip_name)
    single = m.clip.prompt_features([["pour"]])
    torch.testing.assert_close(single, m.clip.text_features(["pour"]))
    both = m.clip.text_features(["pour", "something to pour"])
    ens = m.clip.prompt_features([["pour", "something to pour"]])
    torch.testing.assert_close(ens[0], torch.nn.functional.normalize(both.mean(0), dim=0))


def test_letterbox_round_trip_and_mask_alignment():
    img = np.zeros((30, 60, 3), np.uint8)
    img[10:20, 40:50] = 255
    square, box = letterbox(img, 64)
    assert box == Letterbox(64, 0, 16, 64, 32, 60, 30)
    mask = np.zeros((30, 60), bool)
    mask[10:20, 40:50] = True
    m = letterbox_mask(mask, box)
    assert m.shape == (64, 64) and m[:16].sum() == 0 and m[48:].sum() == 0  # padding is background
    assert np.all(square[m > 0.5].mean(axis=0) > 200)  # the mask lands on the bright patch
    heat = unletterbox(m, box)
    assert heat.shape == (30, 60)
    assert ((heat > 0.5) == mask).mean() > 0.97


def test_loss_and_schedule_values():
    logits = torch.tensor([[[0.0, 2.0], [-2.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # per pixel: ln 2, ln(1 + e^-2), ln(1 + e^-2), ln 2
    a, b = np.log(2.0), np.log1p(np.exp(-2.0))
    assert float(pixel_text_loss(logits, target, "bce")) == pytest.approx((a + b) / 2, rel=1e-6)
    target2 = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # positives: ln 2; negatives: ln(1 + e^2), ln(1 + e^-2), ln 2 -> balanced = mean of the two means
    neg = (np.log1p(np.exp(2.0)) + b + a) / 3
    assert float(pixel_text_loss(logits, target2, "balanced")) == pytest.approx((a + neg) / 2, rel=1e-6)
    assert lr_factor(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(80, 100, 0, "constant", 0.0) == 1.0


def test_checkpoint_round_trip_and_mismatches(clip_name, tmp_path):
    m = _model(clip_name)
    with torch.no_grad():
        m.logit_bias.fill_(-1.25)
    ckpt = save_checkpoint(tmp_path / "ck", m, step=7, metrics={"mIoU": 0.5})
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["step"] == 7 and meta["model"]["fpn_dim"] == 16
    assert meta["backbone"] == dict(m.clip.signature(), weights=m.clip.weights_fingerprint())
    from safetensors.torch import load_file

    assert not any(k.startswith("clip.") for k in load_file(str(ckpt / "model.safetensors")))  # trainable only
    loaded = load_checkpoint(ckpt)
    x = torch.randn(1, 3, 64, 64)
    t = m.clip.text_features(["pour"])
    torch.testing.assert_close(loaded(x, t), m(x, t))

    other = build_tiny_rn_clip(tmp_path / "wide", width=16)  # another backbone: other feature sizes
    with pytest.raises(ConfigError, match="different backbone"):
        load_checkpoint(ckpt, clip_model=other)
    same_sizes = build_tiny_rn_clip(tmp_path / "reseeded", seed=1)  # same architecture, other weights
    with pytest.raises(ConfigError, match="other weights than the one the checkpoint was trained with"):
        load_checkpoint(ckpt, clip_model=same_sizes)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad/config.json: unreadable"):
        load_checkpoint(tmp_path / "bad")
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nothing")
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable weights"):
        load_checkpoint(ckpt)
    m2 = _model(clip_name, normalize_pixels=True)
    ck2 = save_checkpoint(tmp_path / "ck2", m2)
    meta = json.loads((ck2 / "config.json").read_text())
    meta["model"]["fpn_dim"] = 8
    (ck2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="different fpn_dim"):
        load_checkpoint(ck2)


def test_predictor_maps_at_image_size_and_batch_invariant(clip_name, tmp_path):
    m = _model(clip_name)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 64), (64, 30), (50, 50))]
    one = AffordancePredictor(m, batch_size=1).predict(images, ["pour", "cut with"])
    three = AffordancePredictor(m, batch_size=3).predict(images, ["pour", "cut with"])
    for img, a, b in zip(images, one, three, strict=True):
        assert a.shape == (2, *img.shape[:2]) and a.dtype == np.float32
        assert np.all((a >= 0) & (a <= 1))
        np.testing.assert_allclose(a, b, atol=1e-5)
    each = AffordancePredictor(m, batch_size=2).predict_each(images, ["pour", "cut with", "pour"])
    np.testing.assert_allclose(each[1], one[1][1], atol=1e-5)
    np.testing.assert_allclose(each[2], one[2][0], atol=1e-5)
    gray = AffordancePredictor(m).predict([images[0][..., 0]], ["pour"])[0]
    assert gray.shape == (1, 40, 64)
    with pytest.raises(ConfigError, match="no prompt"):
        AffordancePredictor(m).predict(images, [])
    x, boxes = preprocess(images, 64)
    assert x.shape == (3, 3, 64, 64) and boxes[1].w == 30 * 64 // 64


def test_config_files_and_overrides(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text('[model]\nfpn_dim = 128\nclip_pretrained = "openai"\n[train]\nlr = 1e-3\n'
                 'datasets = ["refcoco/unc", "refcocog/umd"]\n')
    cfg = load_afford_config(p, ["train.steps=10", "model.clip_pretrained=none", "train.val_max_refs=none"])
    assert cfg.model.fpn_dim == 128 and cfg.model.clip_pretrained is None
    assert cfg.train.lr == 1e-3 and cfg.train.steps == 10 and cfg.train.val_max_refs is None
    assert cfg.train.datasets == ("refcoco/unc", "refcocog/umd")
    assert apply_overrides(AffordConfig(), ["train.datasets=shapes"]).train.datasets == ("shapes",)
    for bad, msg in (("train.lr", "expected section.key=value"), ("optim.lr=1", "unknown section"),
                     ("train.lrr=1", "unknown key 'lrr'"), ("train.steps=abc", "expected int"),
                     ("train.steps=0", "train.steps must be >= 1"), ("model.image_size=100", "multiple of 32")):
        with pytest.raises(ConfigError, match=msg):
            apply_overrides(AffordConfig(), [bad])
    p.write_text("[train]\nsteps = 0\n")
    with pytest.raises(ConfigError, match=str(p)):
        load_afford_config(p)
    p.write_text("[optim]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_afford_config(p)


def test_full_size_rn101_architecture_random_init():
    """The default architecture, built offline without weights: feature strides and sizes at 224 px."""
    torch.manual_seed(0)
    m = AffordanceCLIP.from_config(ModelConfig(clip_pretrained=None)).eval()
    assert m.clip.signature() == {"channels": [512, 1024, 2048], "embed_dim": 512}
    c8, c16, c32, g = m.clip.image_features(torch.randn(1, 3, 224, 224))
    assert (c8.shape, c16.shape, c32.shape, g.shape) == ((1, 512, 28, 28), (1, 1024, 14, 14), (1, 2048, 7, 7),
                                                         (1, 512))
    counts = count_parameters(m)
    assert counts["trainable"] == 3_346_690 and counts["requires_grad"] == counts["trainable"]


@pytest.mark.weights
@pytest.mark.skipif(__import__("os").environ.get("SPATIALFORGE_WEIGHTS") != "1",
                    reason="set SPATIALFORGE_WEIGHTS=1 (downloads / uses cached openai RN101 weights)")
def test_real_openai_rn101_text_embeddings_are_meaningful():
    m = AffordanceCLIP.from_config(ModelConfig()).eval()
    t = m.clip.text_features(["a photo of a cat", "a photo of a kitten", "a tax form"])
    sims = (t @ t.T).numpy()
    assert sims[0, 1] > sims[0, 2] + 0.05


def test_head_stays_float32_under_autocast(clip_name):
    m = _model(clip_name)
    x = torch.randn(1, 3, 64, 64)
    t = m.clip.text_features(["pour"])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = m(x, t)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, m(x, t), rtol=0.05, atol=0.05)
