"""Training AffordanceCLIP on referring segmentation (RefCOCO family, or the synthetic shapes task).

Only the FPN and the head train; the CLIP is frozen (eval mode, no gradient). One step =
``grad_accum`` micro-batches of ``batch_size`` refs; each ref contributes one sentence sampled
with a generator seeded by ``(seed, sample position)``, so the data order and the sentences are a
pure function of the seed and the position: a resumed run continues exactly where it stopped.

Loss: the pixel-text contrastive loss: sigmoid binary cross-entropy between the per-pixel logits
(upsampled to the input size) and the letterboxed mask, averaged over all pixels (``bce``) or as
the mean of the positive pixels' and the negative pixels' means (``balanced``).

Outputs in ``OUT``: ``checkpoints/step-NNNNNNN/`` (trainable weights, config, trainer state; the
last two are kept), ``final/``, ``log.jsonl`` (loss, learning rate, throughput, validation
referring-segmentation mIoU and overall IoU, skipped refs), ``train_summary.json``. The trainer
state holds plain data only and is read with ``torch.load(..., weights_only=True)``. A resume
checks that the config and the number of training refs are the run's (a longer schedule needs
``extend``) and cuts ``log.jsonl`` back to the checkpoint, so no step is logged twice.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from spatialforge._optional import require
from spatialforge.afford.checkpoint import save_checkpoint
from spatialforge.afford.config import RESUMABLE_CHANGES, AffordConfig, config_changes, describe_change
from spatialforge.afford.predict import preprocess, resolve_device
from spatialforge.afford.transforms import letterbox_mask, unletterbox
from spatialforge.errors import ConfigError, DatasetError, SpatialForgeError
from spatialforge.io.dataset import atomic_write_json

torch = require("torch", extra="afford", feature="AffordanceCLIP training")

__all__ = ["RefSegDataset", "evaluate_referring", "lr_factor", "pixel_text_loss", "train"]


# ----------------------------------------------------------------------------- data
class RefSegDataset(torch.utils.data.Dataset):
    """Refs of a source (``RefDataset``, ``ConcatRefDataset``, ``ShapesRefDataset``) as training tensors.

    Indexed by a sample position ``k``: the ref is ``order(k)`` and the sentence is drawn with
    ``default_rng([seed, k])``. A ref whose image or mask cannot be read yields a skip record.
    """

    def __init__(self, source: Any, image_size: int, seed: int) -> None:
        if len(source) == 0:
            raise SpatialForgeError("the training data holds no refs")
        self.source, self.size, self.seed = source, image_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.source)

    def ref_index(self, k: int) -> int:
        n = len(self.source)
        epoch = k // n
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch, 7]).permutation(n)}
        return int(self._perms[epoch][k % n])

    def __getitem__(self, k: int) -> dict[str, Any]:
        sample = self.source[self.ref_index(k)]
        try:
            image = self.source.image(sample)
            mask = self.source.mask(sample)
        except DatasetError as exc:  # recorded and counted by the training loop
            return {"skip": True, "ref_id": getattr(sample, "ref_id", None), "reason": str(exc),
                    "kind": "unreadable_image_or_mask"}
        x, boxes = preprocess([image], self.size)
        sentence = self.source.sentence(sample, np.random.default_rng([self.seed, k]))
        return {"skip": False, "image": torch.from_numpy(x[0]),
                "mask": torch.from_numpy(letterbox_mask(mask, boxes[0])), "sentence": sentence}


class _Positions(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [it for it in items if not it["skip"]]
    out: dict[str, Any] = {"skipped": [it for it in items if it["skip"]], "n": len(kept)}
    if kept:
        out["images"] = torch.stack([it["image"] for it in kept])
        out["masks"] = torch.stack([it["mask"] for it in kept])
        out["sentences"] = [it["sentence"] for it in kept]
    return out


# ----------------------------------------------------------------------------- loss, schedule
def pixel_text_loss(logits: Any, masks: Any, kind: str = "bce") -> Any:
    """Sigmoid BCE of (N, H, W) logits against (N, H, W) masks in [0, 1]."""
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), masks.float(), reduction="none")
    if kind == "bce":
        return per_pixel.mean()
    pos = masks > 0.5
    neg = ~pos
    terms = [per_pixel[sel].mean() for sel in (pos, neg) if sel.any()]
    return torch.stack(terms).mean()


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up, then the schedule."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * t
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _amp(device: str, amp: str) -> tuple[bool, Any]:
    if amp == "off" or not device.startswith("cuda"):  # CPU / MPS: full precision
        return False, None
    if amp == "auto":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return True, torch.bfloat16 if amp == "bf16" else torch.float16


# ----------------------------------------------------------------------------- validation
def evaluate_referring(model: Any, source: Any, *, device: str, max_refs: int | None = None, batch_size: int = 16,
                       progress: bool = False) -> dict[str, Any]:
    """Referring segmentation: every sentence of the first ``max_refs`` refs, thresholded at 0.5
    at the image's own size. Returns mIoU (mean over sentences), overall IoU (sum I / sum U) and counts."""
    model.eval()
    size = model.config.image_size
    refs = [source[i] for i in range(len(source) if max_refs is None else min(max_refs, len(source)))]
    jobs = [(r, s) for r in refs for s in r.sentences]
    ious, inter_sum, union_sum, skipped = [], 0, 0, Counter()
    for start in tqdm(range(0, len(jobs), batch_size), desc="validate", disable=not progress, file=sys.stderr,
                      leave=False):
        chunk = jobs[start:start + batch_size]
        images, masks, sentences = [], [], []
        for ref, sent in chunk:
            try:
                images.append(source.image(ref))
                masks.append(source.mask(ref))
                sentences.append(sent)
            except DatasetError:
                skipped["unreadable"] += 1
        if not images:
            continue
        x, boxes = preprocess(images, size)
        with torch.no_grad():
            text = model.clip.text_features(sentences)
            logits = model(torch.from_numpy(x).to(device), text)[:, 0].float().cpu().numpy()
        for lg, box, gt in zip(logits, boxes, masks, strict=True):
            pred = unletterbox(lg, box) > 0.0  # sigmoid > 0.5
            gt = gt.astype(bool)
            inter, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
            ious.append(inter / union if union else 1.0)
            inter_sum += inter
            union_sum += union
    return {"mIoU": float(np.mean(ious)) if ious else float("nan"),
            "oIoU": inter_sum / union_sum if union_sum else float("nan"),
            "sentences": len(ious), "refs": len(refs), "skipped": dict(skipped)}


# ----------------------------------------------------------------------------- the loop
def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))


def _load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of a step checkpoint, unpickled with ``weights_only`` (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (the checkpoint cannot be resumed); use --overwrite to start again"
                          ) from None
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: unreadable trainer state ({first}); use --overwrite to start again") from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"{path}: not a trainer state of this version (missing {', '.join(missing)}); "
                          "use --overwrite to start again")
    return state


_STATE_KEYS = ("optimizer", "scheduler", "scaler", "step", "position", "torch_rng", "config", "log_bytes",
               "train_refs")


def _check_resume(state: dict[str, Any], config: AffordConfig, n_refs: int, extend: bool, where: Path) -> None:
    """Refuse a resume whose settings differ from the run's, except a longer schedule with ``extend``."""
    changes = config_changes(state["config"], config.to_dict())
    model = [c for c in changes if c[0].startswith("model.")]
    if model:
        raise ConfigError(f"{where}: the run was started with another model config "
                          f"({'; '.join(describe_change(*c) for c in model)}); use the same settings, "
                          "a new --out, or --overwrite")
    steps = [c for c in changes if c[0] == "train.steps"]
    other = [c for c in changes if c[0] not in RESUMABLE_CHANGES and c[0] != "train.steps"]
    if other or (steps and steps[0][2] < steps[0][1]):
        shown = other + [c for c in steps if c[2] < c[1]]
        raise ConfigError(f"{where}: the run was started with another training config "
                          f"({'; '.join(describe_change(*c) for c in shown)}); use the same settings, a new "
                          "--out, or --overwrite (only a longer train.steps can be resumed, with --extend)")
    if steps and not extend:
        raise ConfigError(f"{where}: the run was started for {steps[0][1]} steps, not {steps[0][2]}; add --extend "
                          "to lengthen its schedule (the learning-rate schedule is stretched to the new length)")
    if extend and not steps:
        raise ConfigError(f"--extend: the run in {where} already has train.steps {config.train.steps}; "
                          "give a larger --steps")
    if state["train_refs"] != n_refs:
        raise ConfigError(f"{where}: the training data holds {n_refs} refs, the run was started on "
                          f"{state['train_refs']}; resume on the same data, or use a new --out")


def train(config: AffordConfig, out_dir: str | Path, *, train_source: Any, val_source: Any | None = None,
          progress: bool = True, log: Callable[[str], None] | None = None, model: Any = None,
          stop_at: int | None = None, extend: bool = False) -> dict[str, Any]:
    """Train (resuming from the latest checkpoint in ``out_dir`` if there is one); returns the summary.

    ``model``: an already built :class:`AffordanceCLIP` for ``config.model`` (default: built here).
    ``stop_at``: stop after this step with a resumable checkpoint, as if interrupted (for
    time-limited jobs); the schedule still spans ``train.steps``.

    A resume must use the run's config: a changed model or training setting raises a
    :class:`ConfigError` naming the changed keys (except :data:`~spatialforge.afford.config.RESUMABLE_CHANGES`),
    and so does a different number of training refs. A larger ``train.steps`` is accepted only with
    ``extend=True`` (the schedule is stretched to the new length). ``log.jsonl`` is cut back to what
    it held at the checkpoint, so no step is logged twice.

    The caller owns ``out_dir`` (the CLI claims it with :func:`spatialforge.io.outdir.prepare_output_dir`).
    """
    from spatialforge.afford.model import AffordanceCLIP, count_parameters

    tc, out = config.train, Path(out_dir)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    model = AffordanceCLIP.from_config(config.model, device=device) if model is None else model.to(device)
    params = count_parameters(model)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tc.steps, tc.warmup_steps, tc.schedule, tc.min_lr_ratio))
    use_amp, amp_dtype = _amp(device, tc.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    step, position, skipped, history = 0, 0, Counter(), []
    val: dict[str, Any] | None = None  # the latest validation (kept across a resume)
    log_path = out / "log.jsonl"
    previous = _checkpoints(out)
    if extend and not previous:
        raise ConfigError(f"--extend: {out} holds no checkpoint of a run to extend")
    if previous:
        from safetensors.torch import load_file

        last = previous[-1]
        state = _load_trainer_state(last / "trainer_state.pt")
        _check_resume(state, config, len(train_source), extend, out)
        model.load_state_dict(load_file(str(last / "model.safetensors")), strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, position = state["step"], state["position"]
        skipped = Counter(state.get("skipped", {}))
        history = state.get("history", [])
        val = state.get("validation")
        torch.set_rng_state(state["torch_rng"])
        if log_path.exists() and log_path.stat().st_size > state["log_bytes"]:
            with log_path.open("r+b") as f:  # drop what the interrupted steps after the checkpoint logged
                f.truncate(state["log_bytes"])
        log(f"resuming from {last} (step {step})" + (f", extending the run to {tc.steps} steps" if extend else ""))
    out.mkdir(parents=True, exist_ok=True)

    data = RefSegDataset(train_source, config.model.image_size, tc.seed)
    per_step = tc.batch_size * tc.grad_accum
    loader = torch.utils.data.DataLoader(
        data, batch_size=tc.batch_size, sampler=_Positions(position, position + (tc.steps - step) * per_step),
        num_workers=tc.workers, collate_fn=_collate, pin_memory=device.startswith("cuda"),
        persistent_workers=False)
    batches = iter(loader)

    def write_log(rec: dict[str, Any]) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def checkpoint(name: str | None = None, metrics: dict | None = None) -> Path:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "step": step, "position": position, "skipped": dict(skipped),
                 "history": history, "torch_rng": torch.get_rng_state(), "config": config.to_dict(),
                 "validation": val,
                 "log_bytes": log_path.stat().st_size if log_path.exists() else 0, "train_refs": len(train_source)}
        folder = out / "checkpoints" / f"step-{step:07d}" if name is None else out / name
        save_checkpoint(folder, model, step=step, metrics=metrics, trainer_state=state if name is None else None,
                        train_config=asdict(tc))
        for old in _checkpoints(out)[:-2]:
            shutil.rmtree(old)
        return folder

    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", disable=not progress, file=sys.stderr)
    window: list[float] = []
    t_last, samples_since = time.perf_counter(), 0
    model.train()
    end = tc.steps if stop_at is None else min(tc.steps, stop_at)
    while step < end:
        optimizer.zero_grad(set_to_none=True)
        # fetch the step's micro-batches first, so each one's loss is weighted by its share of the
        # step's readable refs (a partly unreadable micro-batch weighs less; all kept refs count equally)
        micro = []
        for _ in range(tc.grad_accum):
            batch = next(batches)
            position += tc.batch_size
            for rec in batch["skipped"]:
                skipped[rec.get("kind", "unreadable")] += 1
                write_log({"step": step, "skipped_ref": rec["ref_id"], "reason": rec["reason"]})
            if batch["n"]:
                micro.append(batch)
        kept = sum(b["n"] for b in micro)
        if kept == 0:
            raise SpatialForgeError(f"step {step}: every ref of {tc.grad_accum} batches was unreadable "
                                    f"({dict(skipped)}); check the data (see {log_path})")
        loss_sum = 0.0
        for batch in micro:
            images = batch["images"].to(device, non_blocking=True)
            masks = batch["masks"].to(device, non_blocking=True)
            text = model.clip.text_features(batch["sentences"])
            with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                logits = model(images, text)[:, 0]
            loss = pixel_text_loss(logits, masks, tc.loss) * (batch["n"] / kept)
            scaler.scale(loss).backward()
            loss_sum += float(loss.detach())
            samples_since += batch["n"]
        if tc.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), tc.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        window.append(loss_sum)
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]:.4f}")
        if step % tc.log_every == 0 or step == tc.steps:
            now = time.perf_counter()
            rec = {"step": step, "loss": float(np.mean(window)), "lr": scheduler.get_last_lr()[0],
                   "samples_per_s": samples_since / max(now - t_last, 1e-9), "skipped": sum(skipped.values())}
            history.append({"step": step, "loss": rec["loss"]})
            write_log(rec)
            window, t_last, samples_since = [], now, 0
        if val_source is not None and (step % tc.val_every == 0 or step == tc.steps):
            val = evaluate_referring(model, val_source, device=device, max_refs=tc.val_max_refs, progress=progress)
            model.train()
            write_log({"step": step, "val": val})
            log(f"step {step}: validation mIoU {val['mIoU']:.4f}, overall IoU {val['oIoU']:.4f} "
                f"({val['sentences']} sentences)")
        if step % tc.save_every == 0 or step == end:
            checkpoint(metrics=val)
    bar.close()
    final = checkpoint("final", metrics=val) if step >= tc.steps else None
    summary = {"steps": step, "finished": step >= tc.steps, "samples": position,
               "final_checkpoint": None if final is None else str(final), "parameters": params,
               "device": device, "amp": str(amp_dtype) if use_amp else "off", "validation": val,
               "skipped": dict(skipped), "loss_history": history}
    atomic_write_json(out / "train_summary.json", summary)
    return summary
