"""A local Hugging Face vision-language model (``hf:<hub id or folder>``) answering spatial VQA items.

Loads lazily, on the first :meth:`HFVisionLanguageModel.answer` (or :meth:`~HFVisionLanguageModel.load`), with
``AutoProcessor.from_pretrained(model_id)`` and ``AutoModelForImageTextToText.from_pretrained(model_id, dtype=...)``:
the same path for a hub id (``Qwen/Qwen2.5-VL-3B-Instruct``, ``HuggingFaceTB/SmolVLM-256M-Instruct``,
``llava-hf/llava-1.5-7b-hf``, ``google/paligemma2-3b-mix-224``) and for a local folder. Needs
``spatialforge[models]``; with ``HF_HUB_OFFLINE=1`` only cached or local models load.

Prompt (one per item, the text from :func:`~spatialforge.eval.models.base.build_prompt`):

``chat`` format (every processor that ships a chat template: Qwen2.5-VL, SmolVLM / Idefics3, LLaVA ...)
    ``[{"role": "system", "content": [{"type": "text", "text": system_prompt}]},``
    `` {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]`` rendered by
    ``processor.apply_chat_template(..., add_generation_prompt=True, tokenize=False, **chat_template_kwargs)``;
    the processor then expands the image placeholder into the image tokens (Qwen:
    ``<|vision_start|><|image_pad|>...<|vision_end|>``, one pad per 28 x 28 pixels; Idefics3:
    ``<fake_token_around_image><global-img><image>...``; LLaVA: 576 ``<image>``). The system turn is left
    out when ``system_prompt`` is ``""``; a template that rejects the system role gets the system
    text as the first paragraph of the user turn instead. Blind mode (``use_image=False``) sends the
    same chat without the image entry, and no pixels.
``plain`` format (no chat template, and always for PaliGemma)
    PaliGemma is a prefix-LM prompted as ``<image>...<image><bos>{prefix}\\n``: the text is
    ``plain_template`` (default ``"answer en {prompt}"`` for PaliGemma -- the task syntax of the
    mix checkpoints -- else ``"{prompt}"``) with the prompt's line breaks folded into spaces, the
    processor inserts the image tokens, ``<bos>`` and the newline. Blind mode tokenizes
    ``<bos>{prefix}\\n`` directly (the PaliGemma processor refuses text without an image). No system
    prompt is sent in this format.

Generation: items are batched ``batch_size`` at a time in input order, left-padded (the backend sets
``padding_side="left"`` on its own processor's tokenizer), greedy unless ``do_sample`` (then seeded
with ``seed`` inside a forked RNG, so the global torch RNG is left as it was), ``max_new_tokens`` new
tokens; only the new tokens are decoded (special tokens skipped) and stripped. Greedy decoding
overrides a checkpoint's sampling defaults (``temperature``, ``top_p``, ``top_k``); its other
generation settings (e.g. Qwen2.5-VL's ``repetition_penalty``) apply and are listed by ``describe()``.
Each answer's ``meta``: ``new_tokens`` (before the end token), ``truncated`` (no end token within
``max_new_tokens``) and ``batch_size`` (of the ``generate()`` call that produced it).

Failures: an item whose image cannot be read (or is empty) gets ``ModelAnswer(text=None,
error="DatasetError: ...")`` and is not sent (its batch goes one item smaller; images are decoded
batch by batch). A batch whose preprocessing or generation raises is
retried item by item, so one bad item only fails itself (its error is ``"<ExceptionType>: <message>"``).
:meth:`answer` raises :class:`~spatialforge.errors.SpatialForgeError` when a model cannot be used at
all: loading fails (:class:`~spatialforge.errors.ConfigError`), or every item of a call (two or more)
failed in generation with the same error (a systematic failure, e.g. a processor that does not
fit the model).

Processor notes: SmolVLM-256M/500M-Instruct load as Idefics3 (``Idefics3Processor``); SmolVLM2 checkpoints
(``HuggingFaceTB/SmolVLM2-2.2B-Instruct`` ...) load as ``SmolVLMForConditionalGeneration`` with ``SmolVLMProcessor``,
which needs the ``num2words`` package (in the ``models`` extra) and gets the batch's images as one list per prompt
(it reads a flat list as the images of a single prompt); their prompt is the SmolVLM chat layout
``<|im_start|>User:<image>...<end_of_utterance>\nAssistant:``, the image expanded into its tiles
(``<fake_token_around_image><row_i_col_j><image>...``) and the global image (``<global-img>``). Qwen2.5-VL's
processor keeps images up to ~12.8 M pixels (16 k image tokens): bound it with ``max_image_side`` or
``processor_kwargs={"max_pixels": ...}``.

LoRA adapters: a local folder holding ``adapter_config.json`` (e.g. ``RUN/adapter`` of ``spatialforge
train``) is loaded as its base model (``base_model_name_or_path``: a folder, else a hub id at the
config's ``revision``) with the adapter applied by PEFT (``PeftModel.from_pretrained``; needs the
``peft`` package of ``spatialforge[train]``); the processor comes from the adapter folder when it
holds one (the trainer saves it there), else from the base model. A relative base path is read
from the working directory; one that is not there is a :class:`~spatialforge.errors.ConfigError`
saying which file to fix (spatialforge train now stores the absolute path).

``describe()`` gives the model id, the resolved device and dtype, the prompt format and the
generation settings (JSON-serialisable). ``fingerprint()`` gives what decides the answers, for the
evaluation run folder (:mod:`spatialforge.eval.models.fingerprint`): the weights (for a local
folder the signature of each file, for an adapter those of the adapter and of its base model, for
a hub id the commit its revision resolves to), the dtype (``auto`` resolved), the generation
settings (``max_new_tokens``, ``do_sample``, the seed when sampling), the image size limit and
processor options, and the prompt (:func:`~spatialforge.eval.models.base.prompt_fingerprint`, the
plain template, the chat template options; the chat template itself is in the files). Device and
batch size are left out: they do not decide the answers. A model wrapped with :meth:`from_loaded`
is in memory: its weights cannot be fingerprinted (``{"in_memory": name}``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialforge._optional import require
from spatialforge.errors import ConfigError, DatasetError, SpatialForgeError
from spatialforge.eval.models.base import (
    SYSTEM_PROMPT,
    ModelAnswer,
    build_prompt,
    chat_messages,
    check_prompt_style,
    prompt_fingerprint,
)
from spatialforge.eval.models.fingerprint import folder_source, hub_source
from spatialforge.eval.types import BenchmarkItem

__all__ = ["ADAPTER_CONFIG", "DTYPES", "PLAIN_FORMAT_MODEL_TYPES", "HFVisionLanguageModel", "adapter_base",
           "read_adapter_config", "system_turn_supported"]

#: the file that marks a PEFT adapter folder
ADAPTER_CONFIG = "adapter_config.json"
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")

DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Model types prompted in the plain format even if their tokenizer carries a (text) chat template.
PLAIN_FORMAT_MODEL_TYPES = frozenset({"paligemma"})
_DEFAULT_PLAIN_TEMPLATES = {"paligemma": "answer en {prompt}"}
#: Model types whose processor takes a batch's images as one list per prompt (SmolVLM2's ``SmolVLMProcessor``
#: reads a flat list as all the images of a single prompt).
_NESTED_IMAGES_MODEL_TYPES = frozenset({"smolvlm"})
_ERROR_CHARS = 500


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"hf: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > _ERROR_CHARS:
        text = text[:_ERROR_CHARS] + "..."
    return f"{type(exc).__name__}: {text}"


def _local_folder(model_id: str) -> Path | None:
    """The folder ``model_id`` names (as ``from_pretrained`` decides: an existing directory), else ``None``."""
    path = Path(model_id)
    return path if path.is_dir() else None


def read_adapter_config(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s PEFT ``adapter_config.json`` (``None`` when it is not an adapter folder)."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"hf: {path}: unreadable adapter config ({exc})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"hf: {path}: no base_model_name_or_path (the model the adapter was trained on)")
    return config


def adapter_base(folder: str | Path, config: Mapping[str, Any]) -> tuple[str, bool]:
    """The base model of the adapter in ``folder``: ``(absolute folder, True)`` or ``(hub id, False)``.

    A relative path is read from the working directory, as PEFT does. A path that is not a folder
    and cannot be a hub id (absolute, ``./``, ``../``, ``~``, more than one ``/``) is a
    :class:`ConfigError` naming the file to fix.
    """
    base = str(config["base_model_name_or_path"]).strip()
    path = Path(base).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    if path.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1 or "\\" in base:
        raise ConfigError(f"hf: the adapter {folder} was trained on {base!r}, which is not a folder (seen from "
                          f"{Path.cwd()}); set base_model_name_or_path in {Path(folder) / ADAPTER_CONFIG} to the base "
                          "model's absolute path or hub id")
    return base, False


def system_turn_supported(processor: Any, chat_template_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``processor``'s chat template accepts a system turn (some raise ``System role not supported``)."""
    jinja2 = require("jinja2", extra="models")
    try:
        processor.apply_chat_template(chat_messages(["?"], system_prompt="system", image=False),
                                      add_generation_prompt=True, tokenize=False, **dict(chat_template_kwargs or {}))
    except jinja2.TemplateError:
        return False
    return True


@dataclass
class _Job:
    """One item on its way through a batch."""

    index: int
    item: BenchmarkItem
    prompt: str
    image: Any = None  # PIL RGB image, or None in blind mode


class HFVisionLanguageModel:
    """A local transformers VLM (see the module doc for prompts, batching and failures).

    ``device``: ``auto`` (cuda, else mps, else cpu), ``cpu``, ``cuda[:N]`` or ``mps``.
    ``dtype``: ``auto`` (bfloat16 on a GPU that supports it, else float16 on a GPU, float32 on the
    CPU), ``float32``, ``bfloat16`` or ``float16``. ``max_image_side``: images larger than this
    (pixels, longest side) are shrunk first, keeping the aspect ratio (Qwen2.5-VL's token count grows
    with the image area); not those of point questions, answered in pixels of the image their prompt
    names. ``processor_kwargs`` go to ``AutoProcessor.from_pretrained`` (e.g.
    ``{"max_pixels": 1003520}`` for Qwen2.5-VL), ``chat_template_kwargs`` to ``apply_chat_template``.
    ``plain_template``: the prompt format (with ``{prompt}``) for processors without a chat template.
    """

    def __init__(
        self,
        model_id: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        max_image_side: int | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        trust_remote_code: bool = False,
        *,
        processor_kwargs: Mapping[str, Any] | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        prompt_style: str = "default",
        plain_template: str | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(model_id, str) or not model_id.strip():
            raise ConfigError("hf: the model id is empty (use hf:<hub id or local folder>)")
        if not isinstance(device, str) or (device != "auto" and device.split(":")[0] not in ("cpu", "cuda", "mps")):
            raise ConfigError(f"hf: device must be auto, cpu, cuda[:N] or mps, got {device!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"hf: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        for flag, value in (("do_sample", do_sample), ("trust_remote_code", trust_remote_code)):
            if not isinstance(value, bool):
                raise ConfigError(f"hf: {flag} must be true or false, got {value!r}")
        for what, mapping in (("chat_template_kwargs", chat_template_kwargs), ("processor_kwargs", processor_kwargs)):
            if mapping is not None and not isinstance(mapping, Mapping):
                raise ConfigError(f"hf: {what} must be a mapping of keyword arguments, got {mapping!r}")
        if not isinstance(system_prompt, str):
            raise ConfigError("hf: system_prompt must be a string ('' sends none)")
        if plain_template is not None and (not isinstance(plain_template, str) or "{prompt}" not in plain_template):
            raise ConfigError(f"hf: plain_template must be a string containing {{prompt}}, got {plain_template!r}")
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ConfigError(f"hf: seed must be an integer, got {seed!r}")
        self.model_id = model_id.strip()
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.do_sample = do_sample
        self.max_image_side = None if max_image_side is None else _positive_int("max_image_side", max_image_side)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.processor_kwargs = dict(processor_kwargs or {})
        self.trust_remote_code = trust_remote_code
        self.system_prompt = system_prompt
        self.prompt_style = check_prompt_style(prompt_style)
        self.plain_template = plain_template
        self._plain_template_option = plain_template  # None: the model type's default (decided by its files)
        self.seed = int(seed)
        self.name = f"hf:{self.model_id}"
        self.in_memory = False  # True for from_loaded(): no files to fingerprint
        self.adapter_base: str | None = None  # set by load() for an adapter folder
        # set by load()
        self.model: Any = None
        self.processor: Any = None
        self.device: str | None = None
        self.dtype: str | None = None
        self.model_type: str | None = None
        self.prompt_format: str | None = None  # "chat" or "plain"
        self._system_in_user = False  # the chat template rejects a system turn

    # ------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load the processor and the model (a no-op when loaded). Failures raise :class:`ConfigError`."""
        if self.model is not None:
            return
        from spatialforge._device import resolve_device

        tf = require("transformers", extra="models", feature="the Hugging Face VLM backend")
        torch = require("torch", extra="models", feature="the Hugging Face VLM backend")
        device = resolve_device(self.device_name)
        dtype = self._resolve_dtype(torch, device)
        folder = _local_folder(self.model_id)
        adapter = read_adapter_config(folder) if folder is not None else None
        if adapter is not None:
            processor, model = self._load_adapter(tf, getattr(torch, dtype), folder, adapter)
            self._attach(model, processor, device, dtype)
            return
        try:
            processor = tf.AutoProcessor.from_pretrained(self.model_id, trust_remote_code=self.trust_remote_code,
                                                         **self.processor_kwargs)
            model = tf.AutoModelForImageTextToText.from_pretrained(
                self.model_id, dtype=getattr(torch, dtype), trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"hf: cannot load {self.model_id!r} as an image-text-to-text model "
                              f"({_one_line(exc)})") from exc
        self._attach(model, processor, device, dtype)

    def _load_adapter(self, tf: Any, dtype: Any, folder: Path, config: Mapping[str, Any]) -> tuple[Any, Any]:
        """The processor and the base model with the PEFT adapter in ``folder`` applied (see the module doc)."""
        peft = require("peft", extra="train", feature="evaluating a LoRA adapter")
        base, local = adapter_base(folder, config)
        revision = None if local else config.get("revision")
        own_processor = any((folder / name).is_file() for name in _PROCESSOR_FILES)
        try:
            processor = tf.AutoProcessor.from_pretrained(
                str(folder) if own_processor else base, trust_remote_code=self.trust_remote_code,
                **({} if own_processor else {"revision": revision}), **self.processor_kwargs)
            model = tf.AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, revision=revision,
                                                                   trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            hint = "" if local else (f"; if {base!r} is a folder path relative to where the adapter was trained, set "
                                     f"base_model_name_or_path in {folder / ADAPTER_CONFIG} to its absolute path")
            raise ConfigError(f"hf: cannot load the base model {base!r} of the adapter {folder} "
                              f"({_one_line(exc)}){hint}") from exc
        try:
            model = peft.PeftModel.from_pretrained(model, str(folder))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ConfigError(f"hf: cannot apply the adapter {folder} to {base!r} ({_one_line(exc)})") from exc
        self.adapter_base = base
        return processor, model

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, name: str, **options: Any) -> HFVisionLanguageModel:
        """Wrap a model already in memory (e.g. one being fine-tuned) for evaluation.

        The processor's tokenizer is switched to left padding (batched generation); restore it
        afterwards if the caller trains with the same processor.
        """
        self = cls(name, **options)
        self.in_memory = True
        torch = require("torch", extra="models", feature="the Hugging Face VLM backend")
        param = next(model.parameters())
        dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(param.dtype,
                                                                                                   "float32")
        self._attach(model, processor, str(param.device), dtype)
        return self

    def _attach(self, model: Any, processor: Any, device: str, dtype: str) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(f"hf: the processor of {self.model_id!r} ({type(processor).__name__}) has no tokenizer")
        tokenizer.padding_side = "left"  # this backend's own processor instance: decoder-only batched generation
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(device).eval()
        self.model_type = str(getattr(model.config, "model_type", "") or "")
        has_template = bool(getattr(processor, "chat_template", None))
        self.prompt_format = "chat" if has_template and self.model_type not in PLAIN_FORMAT_MODEL_TYPES else "plain"
        if self.plain_template is None:
            self.plain_template = _DEFAULT_PLAIN_TEMPLATES.get(self.model_type, "{prompt}")
        self.processor, self.model, self.device, self.dtype = processor, model, device, dtype

    def unload(self) -> None:
        """Drop the model and the processor (the next answer() loads them again)."""
        device = self.device or "cpu"
        self.model = self.processor = None
        if device.startswith("cuda"):
            torch = require("torch", extra="models")
            torch.cuda.empty_cache()

    def _resolve_dtype(self, torch: Any, device: str) -> str:
        if self.dtype_name != "auto":
            return self.dtype_name
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device == "mps":
            return "float16"
        return "float32"

    # ------------------------------------------------------------ public API
    def describe(self) -> dict[str, Any]:
        """The configuration for the run manifest (resolved device / dtype / prompt format once loaded)."""
        return {
            "backend": "hf",
            "name": self.name,
            "model_id": self.model_id,
            "adapter_base": self.adapter_base,
            "loaded": self.model is not None,
            "model_type": self.model_type,
            "model_class": type(self.model).__name__ if self.model is not None else None,
            "device": self.device or self.device_name,
            "dtype": self.dtype or self.dtype_name,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "seed": self.seed if self.do_sample else None,
            "max_image_side": self.max_image_side,
            "prompt_style": self.prompt_style,
            "prompt_format": self.prompt_format,
            "system_prompt": self.system_prompt if self.prompt_format != "plain" else "",
            "plain_template": self.plain_template if self.prompt_format == "plain" else None,
            "chat_template_kwargs": dict(self.chat_template_kwargs),
            "processor_kwargs": dict(self.processor_kwargs),
            "trust_remote_code": self.trust_remote_code,
            "checkpoint_generation_config": self._checkpoint_generation_config(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """What decides the answers (see the module doc); reads no weights, loads nothing."""
        if self.dtype is not None:
            dtype = self.dtype
        elif self.dtype_name != "auto":
            dtype = self.dtype_name
        else:
            from spatialforge._device import resolve_device

            torch = require("torch", extra="models", feature="the Hugging Face VLM backend")
            dtype = self._resolve_dtype(torch, resolve_device(self.device_name))
        return {
            "backend": "hf",
            "weights": self._weights_fingerprint(),
            "dtype": dtype,
            "generation": {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                           "seed": self.seed if self.do_sample else None},
            "image": {"max_image_side": self.max_image_side, "processor_kwargs": dict(self.processor_kwargs)},
            "prompt": {**prompt_fingerprint(self.prompt_style, self.system_prompt),
                       "plain_template": self._plain_template_option,
                       "chat_template_kwargs": dict(self.chat_template_kwargs)},
            "trust_remote_code": self.trust_remote_code,
        }

    def _weights_fingerprint(self) -> dict[str, Any]:
        if self.in_memory:
            return {"model": {"in_memory": self.model_id}}
        folder = _local_folder(self.model_id)
        if folder is None:
            return {"model": hub_source(self.model_id)}
        adapter = read_adapter_config(folder)
        if adapter is None:
            return {"model": folder_source(folder)}
        base, local = adapter_base(folder, adapter)
        return {"adapter": folder_source(folder),
                "base model": folder_source(base) if local else hub_source(base, adapter.get("revision"))}

    def _checkpoint_generation_config(self) -> dict[str, Any] | None:
        """The checkpoint's own generation settings (e.g. a repetition penalty, which greedy decoding keeps)."""
        config = getattr(self.model, "generation_config", None) if self.model is not None else None
        if config is None:
            return None
        skip = {"transformers_version", "_from_model_config", "do_sample", "temperature", "top_p", "top_k"}
        return {k: v for k, v in sorted(config.to_diff_dict().items())
                if k not in skip and isinstance(v, str | int | float | bool | list | type(None))}

    def answer(self, items: Sequence[BenchmarkItem], *, progress: bool = False,
               use_image: bool = True) -> list[ModelAnswer]:
        """One answer per item, in input order (``use_image=False``: the question without the image)."""
        items = list(items)
        if not items:
            return []
        self.load()
        answers: list[ModelAnswer | None] = [None] * len(items)
        generation_errors: list[str] = []
        sent = 0
        with tqdm(total=len(items), desc=self.name, unit="q", disable=not progress, file=sys.stderr) as bar:
            for s in range(0, len(items), self.batch_size):  # images are decoded one batch at a time
                batch: list[_Job] = []
                for i in range(s, min(s + self.batch_size, len(items))):
                    item = items[i]
                    prompt = build_prompt(item, self.prompt_style, with_image=use_image)
                    try:
                        batch.append(_Job(i, item, prompt, self._load_image(item) if use_image else None))
                    except DatasetError as exc:
                        answers[i] = ModelAnswer(id=item.id, text=None, error=_one_line(exc), meta={"stage": "image"})
                if batch:
                    sent += len(batch)
                    for job, ans in zip(batch, self._run_batch(batch), strict=True):
                        answers[job.index] = ans
                        if ans.error is not None:
                            generation_errors.append(ans.error)
                bar.update(min(s + self.batch_size, len(items)) - s)
        if len(generation_errors) >= 2 and len(generation_errors) == sent == len(items) \
                and len(set(generation_errors)) == 1:
            raise SpatialForgeError(f"{self.name}: every item failed the same way: {generation_errors[0]}")
        return [a for a in answers if a is not None]

    # ------------------------------------------------------------ one batch
    def _load_image(self, item: BenchmarkItem) -> Any:
        image = item.load_image()
        if image.width < 1 or image.height < 1:
            raise DatasetError(f"{item.id}: the image is empty ({image.width} x {image.height})")
        side = self.max_image_side
        # a point question is answered in pixels of the image its prompt names: it goes at full size
        if side is not None and max(image.size) > side and item.kind != "point":
            from PIL import Image

            scale = side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        return image

    def _run_batch(self, batch: list[_Job]) -> list[ModelAnswer]:
        """Answers for ``batch``; if the batch fails, each item is tried alone."""
        start = time.perf_counter()
        try:
            texts, meta = self._generate(batch)
        except Exception as exc:  # a failing batch is retried item by item; each failure is recorded
            if len(batch) == 1:
                return [ModelAnswer(id=batch[0].item.id, text=None, error=_one_line(exc),
                                    latency_s=time.perf_counter() - start, meta={"stage": "generate"})]
            return [self._run_batch([job])[0] for job in batch]
        latency = (time.perf_counter() - start) / len(batch)
        return [ModelAnswer(id=job.item.id, text=text, latency_s=latency, meta={**m, "batch_size": len(batch)})
                for job, text, m in zip(batch, texts, meta, strict=True)]

    def _chat_text(self, job: _Job) -> str:
        """The chat prompt of ``job``: :func:`~spatialforge.eval.models.base.chat_messages` (also what training
        renders) through the processor's chat template."""
        image = job.image is not None
        if self.system_prompt and not self._system_in_user:
            jinja2 = require("jinja2", extra="models")
            try:
                return self._render(chat_messages([job.prompt], system_prompt=self.system_prompt, image=image))
            except jinja2.TemplateError:  # e.g. raise_exception('System role not supported')
                self._system_in_user = True
        return self._render(chat_messages([job.prompt], system_prompt=self.system_prompt, image=image,
                                          system_in_user=True))

    def _render(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                  **self.chat_template_kwargs)

    def _plain_text(self, job: _Job) -> str:
        return (self.plain_template or "{prompt}").format(prompt=" ".join(job.prompt.split()))

    def _inputs(self, batch: list[_Job]) -> dict[str, Any]:
        """The model inputs of ``batch`` (left-padded tensors, not yet on the device)."""
        processor = self.processor
        tokenizer = processor.tokenizer
        with_images = batch[0].image is not None
        if self.prompt_format == "chat":
            texts = [self._chat_text(job) for job in batch]
            if with_images:
                images = [job.image for job in batch]
                if self.model_type in _NESTED_IMAGES_MODEL_TYPES:
                    images = [[image] for image in images]  # one image per prompt
                return dict(processor(text=texts, images=images, padding=True, return_tensors="pt"))
            return dict(processor(text=texts, padding=True, return_tensors="pt"))
        texts = [self._plain_text(job) for job in batch]
        if with_images:
            image_token = getattr(processor, "image_token", None) or "<image>"
            return dict(processor(text=[image_token + t for t in texts], images=[job.image for job in batch],
                                  padding=True, return_tensors="pt"))
        # text only: the format the processor builds around the image tokens (PaliGemma: <bos>prefix\n)
        bos = tokenizer.bos_token or ""
        enc = dict(tokenizer([f"{bos}{t}\n" for t in texts], padding=True, add_special_tokens=False,
                             return_tensors="pt"))
        if self.model_type == "paligemma" and "token_type_ids" not in enc:
            enc["token_type_ids"] = enc["input_ids"].new_zeros(enc["input_ids"].shape)  # 0 = the prefix
        return enc

    def _generate(self, batch: list[_Job]) -> tuple[list[str], list[dict[str, Any]]]:
        torch = require("torch", extra="models")
        inputs = self._inputs(batch)
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels
        model_dtype = getattr(torch, self.dtype or "float32")
        inputs = {k: (v.to(self.device, dtype=model_dtype) if v.is_floating_point() else v.to(self.device))
                  if hasattr(v, "to") else v for k, v in inputs.items()}
        tokenizer = self.processor.tokenizer
        gen_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                      "pad_token_id": tokenizer.pad_token_id}
        if not self.do_sample:  # a checkpoint's sampling defaults would only warn under greedy decoding
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        rng = (torch.random.fork_rng(devices=[torch.device(self.device).index or 0]
                                     if str(self.device).startswith("cuda") else [])
               if self.do_sample else contextlib.nullcontext())
        with rng, torch.inference_mode():
            if self.do_sample:
                torch.manual_seed(self.seed)
            out = self.model.generate(**inputs, **gen_kwargs)
        new = out[:, inputs["input_ids"].shape[1]:].cpu()
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        eos = self.model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            stop.add(tokenizer.eos_token_id)
        meta = []
        for row in new.tolist():
            n = next((k for k, t in enumerate(row) if t in stop), None)
            meta.append({"new_tokens": len(row) if n is None else n, "truncated": n is None})
        return texts, meta
