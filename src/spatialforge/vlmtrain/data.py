"""Training examples for VLM fine-tuning: spatial rows, general VQA rows, the mix, the collator.

An *example* is a dict ``{"images": [PIL.Image, ...], "messages": [...], "spatial": bool}`` in
the Hugging Face chat format (``content`` is a list of ``{"type": "image"}`` and
``{"type": "text", "text": ...}`` parts, one image part per image, in order).

* :class:`SpatialExamples` reads a ``spatialforge generate`` output folder; each image's QA pairs
  are split into chunks of at most ``max_qa_per_example`` pairs, each chunk a conversation that
  repeats the image in its first user turn. The conversation is the one ``spatialforge eval run``
  sends for the same questions: a system turn with the evaluation's system prompt, and user turns
  written by :func:`spatialforge.eval.models.base.build_prompt` (the question and its answer-format
  instruction), through :func:`spatialforge.eval.models.base.chat_messages`; the assistant turns
  are the dataset's answers.
* :class:`GeneralExamples` adapts any Hugging Face dataset with an image column and a
  conversation (schema in docs/training.md, "General VQA data").
* :func:`mix_schedule` decides, deterministically from a seed, which source every position of
  the training sequence comes from (spatial with probability ``spatial_share``, by examples).
* :class:`AssistantOnlyCollator` renders the processor's chat template, runs the processor, and
  masks everything except the assistant answers and their end-of-turn token with ``-100``.

Importing this module needs neither torch nor ``datasets``; they are imported when used.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from spatialforge._optional import require
from spatialforge.errors import DatasetError, SpatialForgeError
from spatialforge.eval.models.base import SYSTEM_PROMPT, build_prompt, chat_messages, check_prompt_style
from spatialforge.io.dataset import iter_rows

__all__ = [
    "IGNORE_INDEX",
    "SOURCE_KEY",
    "AssistantOnlyCollator",
    "GeneralExamples",
    "MixedExamples",
    "PositionCollator",
    "SpatialExamples",
    "assistant_segments",
    "chunk_conversation",
    "mix_schedule",
    "open_general_dataset",
    "plan_length",
]

IGNORE_INDEX = -100
# The collator adds this (batch,) tensor (1 = spatial example, 0 = general); the trainer removes it before the
# forward pass and counts examples and tokens per source with it.
SOURCE_KEY = "sf_is_spatial"

_IMAGE_PART: dict[str, Any] = {"type": "image"}


# ----------------------------------------------------------------------------------------------------------------
# Conversations


def _text_part(text: Any, where: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise DatasetError(f"{where}: a text part must hold a string, got {type(text).__name__}")
    return {"type": "text", "text": text}


def _normalise_content(content: Any, where: str) -> list[dict[str, Any]]:
    """Content as a list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return [_text_part(content, where)]
    if not isinstance(content, (list, tuple)):
        raise DatasetError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for part in content:
        if not isinstance(part, dict):
            raise DatasetError(f"{where}: a content part must be a mapping, got {type(part).__name__}")
        kind = part.get("type")
        if kind == "image":
            parts.append(dict(_IMAGE_PART))
        elif kind == "text":
            parts.append(_text_part(part.get("text"), where))
        else:
            raise DatasetError(f"{where}: unsupported content part type {kind!r} (expected image or text)")
    return parts


def _normalise_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DatasetError(f"{where}: messages must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise DatasetError(f"{where}: message {i} must be a mapping with role system, user or assistant")
        out.append({"role": message["role"], "content": _normalise_content(message.get("content"),
                                                                          f"{where}, message {i}")})
    if not any(m["role"] == "assistant" for m in out):
        raise DatasetError(f"{where}: the conversation has no assistant turn (nothing to learn from)")
    return out


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _count_images(messages: Sequence[dict[str, Any]]) -> int:
    return sum(1 for m in messages for p in m["content"] if p["type"] == "image")


def _insert_images(messages: list[dict[str, Any]], n: int, where: str) -> list[dict[str, Any]]:
    """Put ``n`` image parts at the start of the first user turn (for conversations without placeholders)."""
    for m in messages:
        if m["role"] == "user":
            m["content"] = [dict(_IMAGE_PART) for _ in range(n)] + m["content"]
            return messages
    raise DatasetError(f"{where}: no user turn to attach the image to")


def chunk_conversation(messages: Sequence[dict[str, Any]], max_qa: int, where: str = "row") -> list[list[dict]]:
    """Split a one-image user/assistant conversation into chunks of at most ``max_qa`` QA pairs.

    The image part is removed from wherever it was and put first in each chunk's first user turn,
    so every chunk is a complete conversation about the image.
    """
    if max_qa < 1:
        raise SpatialForgeError(f"max_qa must be >= 1, got {max_qa}")
    turns = _normalise_messages(messages, where)
    n_images = _count_images(turns)
    if n_images != 1:
        raise DatasetError(f"{where}: expected exactly one image part in the messages, found {n_images}")
    if len(turns) % 2 or any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(turns)):
        raise DatasetError(f"{where}: messages must alternate user / assistant, starting with user")
    for m in turns:
        m["content"] = [p for p in m["content"] if p["type"] != "image"]
    pairs = [turns[i:i + 2] for i in range(0, len(turns), 2)]
    chunks = []
    for start in range(0, len(pairs), max_qa):
        chunk = [dict(m, content=list(m["content"])) for pair in pairs[start:start + max_qa] for m in pair]
        chunk[0]["content"] = [dict(_IMAGE_PART), *chunk[0]["content"]]
        chunks.append(chunk)
    return chunks


def _decode_image(value: Any, where: str) -> Image.Image:
    """A PIL image from a PIL image, ``{"bytes", "path"}`` mapping, raw bytes or a file path."""
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = Image.open(value["path"])
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, Path)):
            image = Image.open(value)
        else:
            raise DatasetError(f"{where}: cannot read an image from a {type(value).__name__}")
        return image.convert("RGB")
    except OSError as exc:
        raise DatasetError(f"{where}: unreadable image ({exc})") from None


# ----------------------------------------------------------------------------------------------------------------
# Sources


#: why a question of a dataset row is left out of training (counted in ``SpatialExamples.skipped_questions``)
_SKIPPED_REASONS = ("missing_afford",)


class _LeftOut(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _spatial_prompt(qa: Any, style: str, where: str, *, afford: Any = None,
                    meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """The user prompt ``eval run`` sends for one ``qa`` record of a spatialforge dataset, and its answer.

    ``afford`` / ``meta["image_size"]``: the record's ``afford`` entry and the image size (affordance point
    questions). A point question without its afford entry raises ``_LeftOut`` (counted, not trained on);
    any other unusable record is a :class:`DatasetError`."""
    from spatialforge.eval import benchmarks

    try:  # the very item `eval run --benchmark OUT` asks, so the prompt is the same text
        item = benchmarks.spatialforge_item("train", qa, b"", dict(meta or {}), afford=afford)
    except benchmarks._Skip as skip:
        if skip.reason in _SKIPPED_REASONS:
            raise _LeftOut(skip.reason) from None
        raise DatasetError(f"{where}: a QA pair cannot be used ({skip})") from None
    return build_prompt(item, style), item.reference_answer


def _reasoned(messages: Any, k: int, answer: str) -> str:
    """The training target of the ``k``-th QA pair: its answer, or, when the dataset was generated with
    ``--with-reasoning``, the row's ``<think>steps</think>`` + answer turn for it (the chain to learn)."""
    try:
        text = messages[2 * k + 1]["content"][0]["text"]
    except (TypeError, IndexError, KeyError):
        return answer
    return text if isinstance(text, str) and text.startswith("<think>") and text.endswith(answer) else answer


class SpatialExamples:
    """The chunked QA conversations of a ``spatialforge generate`` output (images decoded on access).

    Each conversation is what evaluation sends (see the module doc): ``system_prompt`` (default:
    the evaluation's :data:`~spatialforge.eval.models.base.SYSTEM_PROMPT`; ``""``: none, the chat
    template's default) and the :func:`~spatialforge.eval.models.base.build_prompt` text of each
    question in ``prompt_style``; ``system_in_user`` for chat templates that refuse a system turn
    (the evaluation backend does the same). The QA records are read into memory once; the image
    column stays in Arrow buffers (the original file bytes) and each image is decoded when its
    example is requested.

    Affordance questions (``generate --afford``) are trained on like the others: the choice ones as
    choices, the point ones with the point instruction of ``eval run`` (it names the image size) and the
    dataset's answer (pixel and 3D point). A point question whose row lacks its ``afford`` entry is left
    out and counted in ``skipped_questions`` (reason ``missing_afford``).
    """

    def __init__(self, out_dir: str | Path, max_qa_per_example: int, *, system_prompt: str = SYSTEM_PROMPT,
                 prompt_style: str = "default", system_in_user: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.system_prompt = system_prompt
        self.prompt_style = check_prompt_style(prompt_style)
        self.system_in_user = system_in_user
        if max_qa_per_example < 1:
            raise SpatialForgeError(f"max_qa_per_example must be >= 1, got {max_qa_per_example}")
        files = sorted((self.out_dir / "data").glob("*.parquet"))
        if not files:
            raise DatasetError(f"{self.out_dir}: no Parquet shards under data/ (is this a spatialforge generate "
                               "output?)", path=str(self.out_dir))
        try:
            names = set(pq.read_schema(files[0]).names)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{files[0]}: cannot read the Parquet schema ({exc})", path=str(files[0])) from None
        columns = ["scene_id", "qa", "messages", *(c for c in ("width", "height", "afford") if c in names)]
        rows = list(iter_rows(self.out_dir, columns=columns))
        self._images = []
        for f in files:
            try:
                self._images.extend(pq.read_table(f, columns=["image"]).column("image").chunks)
            except (OSError, KeyError, ValueError) as exc:
                raise DatasetError(f"{f}: cannot read the image column ({exc})", path=str(f)) from None
        self._image_offsets = np.cumsum([0] + [len(c) for c in self._images])
        if self._image_offsets[-1] != len(rows):
            raise DatasetError(f"{self.out_dir}: {_plural(len(rows), 'row')} but "
                               f"{_plural(int(self._image_offsets[-1]), 'image')}")
        self.scene_ids: list[str] = []
        self._items: list[tuple[int, list[str], list[str]]] = []  # (row, prompts, answers)
        self.rows_without_questions = 0
        self.skipped_questions: dict[str, int] = {}
        for r, row in enumerate(rows):
            if not row["qa"]:
                self.rows_without_questions += 1
                continue
            where = f"{self.out_dir} scene {row['scene_id']!r}"
            afford = {str(a["qa_id"]): a for a in row.get("afford") or () if isinstance(a, dict) and a.get("qa_id")}
            meta = {"image_size": (row["width"], row["height"])} if row.get("width") and row.get("height") else {}
            turns = []
            for k, qa in enumerate(row["qa"]):
                qa_id = str(qa.get("id")) if isinstance(qa, dict) else ""
                try:
                    q, a = _spatial_prompt(qa, self.prompt_style, where, afford=afford.get(qa_id), meta=meta)
                except _LeftOut as out:
                    self.skipped_questions[out.reason] = self.skipped_questions.get(out.reason, 0) + 1
                    continue
                turns.append((q, _reasoned(row.get("messages"), k, a)))
            if not turns:
                continue
            for start in range(0, len(turns), max_qa_per_example):
                chunk = turns[start:start + max_qa_per_example]
                self._items.append((r, [q for q, _ in chunk], [a for _, a in chunk]))
            self.scene_ids.append(row["scene_id"])
        if not self._items:
            raise DatasetError(f"{self.out_dir}: the dataset holds no questions to train on")

    def __len__(self) -> int:
        return len(self._items)

    def image(self, row: int) -> Image.Image:
        k = int(np.searchsorted(self._image_offsets, row, side="right") - 1)
        value = self._images[k][row - int(self._image_offsets[k])].as_py()
        return _decode_image(value, f"{self.out_dir} row {row}")

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The conversation of example ``index`` (without decoding its image)."""
        _, prompts, answers = self._items[index]
        return chat_messages(prompts, answers, system_prompt=self.system_prompt, image=True,
                             system_in_user=self.system_in_user)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": [self.image(self._items[index][0])], "messages": self.messages(index), "spatial": True}


def open_general_dataset(source: str, split: str = "train", config_name: str | None = None):
    """A Hugging Face ``datasets.Dataset`` from a ``save_to_disk`` folder, a data file / folder or a hub name
    (``config_name``: the hub dataset's configuration, e.g. one subset of a collection)."""
    datasets = require("datasets", extra="train", feature="general VQA data")
    path = Path(source).expanduser()
    builders = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
    try:
        if path.is_dir() and any((path / n).is_file() for n in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DatasetError(f"{source}: no split {split!r} (has {', '.join(ds)})", path=source)
                ds = ds[split]
        elif path.is_file() and path.suffix.lower() in builders:
            ds = datasets.load_dataset(builders[path.suffix.lower()], data_files=str(path), split="train")
        else:  # a local data folder or a hub dataset name
            ds = datasets.load_dataset(str(path) if path.exists() else source, config_name, split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        raise DatasetError(f"{source}: cannot load the general dataset ({type(exc).__name__}: {exc})",
                           path=source) from None
    return ds


class GeneralExamples:
    """A general VQA dataset as examples. Expected schema (checked on the column names):

    * image: an ``image`` column (one image: a ``datasets`` Image, ``{"bytes", "path"}``, bytes or a
      path) or an ``images`` column (a list of those); rows whose image is missing are text-only.
    * conversation, the first of:
      ``messages`` (chat format: ``role`` + ``content`` string or list of image / text parts),
      ``conversations`` (LLaVA: ``from`` human / gpt / system + ``value``, ``<image>`` marks the
      image position), or ``question`` + ``answer`` columns (one turn; an answer list uses its
      first entry).

    When the conversation holds no image placeholder, the images go first in the first user turn;
    otherwise the number of placeholders must equal the number of images.
    """

    def __init__(self, dataset: Any, name: str = "general data", limit: int | None = None) -> None:
        columns = set(dataset.column_names)
        self.name = name
        self.image_column = "image" if "image" in columns else "images" if "images" in columns else None
        if "messages" in columns:
            self.kind = "messages"
        elif "conversations" in columns:
            self.kind = "conversations"
        elif {"question", "answer"} <= columns:
            self.kind = "question_answer"
        else:
            raise DatasetError(f"{name}: needs a messages, conversations or question + answer column "
                               f"(has {', '.join(sorted(columns))})")
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(range(limit))
        self.dataset = dataset
        if len(dataset) == 0:
            raise DatasetError(f"{name}: the dataset is empty")

    def __len__(self) -> int:
        return len(self.dataset)

    def _images(self, row: dict[str, Any], where: str) -> list[Image.Image]:
        if self.image_column is None:
            return []
        value = row.get(self.image_column)
        if value is None:
            return []
        values = value if self.image_column == "images" else [value]
        return [_decode_image(v, where) for v in values if v is not None]

    def _messages(self, row: dict[str, Any], where: str) -> list[dict[str, Any]]:
        if self.kind == "messages":
            return _normalise_messages(row["messages"], where)
        if self.kind == "conversations":
            roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                     "system": "system"}
            turns = row["conversations"]
            if not isinstance(turns, (list, tuple)):
                raise DatasetError(f"{where}: conversations must be a list")
            messages = []
            for i, turn in enumerate(turns):
                if not isinstance(turn, dict) or turn.get("from") not in roles or not isinstance(turn.get("value"),
                                                                                                   str):
                    raise DatasetError(f"{where}: conversation turn {i} needs from (human / gpt / system) and value")
                content: list[dict[str, Any]] = []
                for k, piece in enumerate(turn["value"].split("<image>")):
                    if k:
                        content.append(dict(_IMAGE_PART))
                    if piece.strip():
                        content.append({"type": "text", "text": piece.strip()})
                messages.append({"role": roles[turn["from"]], "content": content})
            return _normalise_messages(messages, where)
        question, answer = row["question"], row["answer"]
        if isinstance(answer, (list, tuple)) and answer:
            answer = answer[0]
        if not isinstance(question, str) or not isinstance(answer, str):
            raise DatasetError(f"{where}: question and answer must be strings")
        return [{"role": "user", "content": [{"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]

    def __getitem__(self, index: int) -> dict[str, Any]:
        where = f"{self.name} row {index}"
        row = self.dataset[int(index)]
        images = self._images(row, where)
        messages = self._messages(row, where)
        n_parts = _count_images(messages)
        if n_parts == 0 and images:
            messages = _insert_images(messages, len(images), where)
        elif n_parts != len(images):
            raise DatasetError(f"{where}: {_plural(n_parts, 'image placeholder')} but {_plural(len(images), 'image')}")
        return {"images": images, "messages": messages, "spatial": False}


# ----------------------------------------------------------------------------------------------------------------
# The mix


def plan_length(n_spatial: int, n_general: int, spatial_share: float, epochs: float) -> int:
    """Examples in ``epochs`` epochs: an epoch shows every spatial example once in expectation
    (``ceil(n_spatial / share)`` examples), or every general example when ``share == 0``."""
    if spatial_share > 0:
        if n_spatial < 1:
            raise SpatialForgeError("spatial_share > 0 needs spatial examples")
        per_epoch = math.ceil(n_spatial / spatial_share)
    else:
        if n_general < 1:
            raise SpatialForgeError("spatial_share = 0 needs general examples")
        per_epoch = n_general
    return max(1, math.ceil(per_epoch * epochs))


def _index_stream(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices into ``range(n)``: shuffled passes without replacement, reshuffled on each pass."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    passes = math.ceil(count / n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def mix_schedule(n_spatial: int, n_general: int, spatial_share: float, length: int, seed: int) -> np.ndarray:
    """The source of every position: an ``(length, 2)`` int array of ``(is_spatial, index)``.

    Position ``i`` is spatial when the ``i``-th uniform draw of a seeded generator is below
    ``spatial_share``; the spatial (general) positions take the examples of that source in
    shuffled passes. Three independent generators (choice, spatial order, general order) keep
    the schedule prefix-stable: a longer run starts with the same sequence as a shorter one.
    """
    if not 0 <= spatial_share <= 1:
        raise SpatialForgeError(f"spatial_share must be in [0, 1], got {spatial_share}")
    choice = np.random.default_rng([seed, 0]).random(length) < spatial_share
    n_sp = int(choice.sum())
    if n_sp and n_spatial < 1:
        raise SpatialForgeError("the mix needs spatial examples but there are none")
    if n_sp < length and n_general < 1:
        raise SpatialForgeError("the mix needs general examples but there are none")
    order = np.zeros((length, 2), dtype=np.int64)
    order[:, 0] = choice
    order[choice, 1] = _index_stream(n_spatial, n_sp, np.random.default_rng([seed, 1]))
    order[~choice, 1] = _index_stream(n_general, length - n_sp, np.random.default_rng([seed, 2]))
    return order


class MixedExamples:
    """A map-style dataset over a :func:`mix_schedule` (read it in order: the schedule is the shuffle)."""

    def __init__(self, spatial: SpatialExamples | None, general: GeneralExamples | None, order: np.ndarray) -> None:
        self.spatial = spatial
        self.general = general
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        is_spatial, k = (int(v) for v in self.order[index])
        source = self.spatial if is_spatial else self.general
        if source is None:
            raise SpatialForgeError(f"position {index} refers to a missing source")
        return source[k]

    def spatial_share(self, n: int | None = None) -> float:
        """The share of spatial examples among the first ``n`` positions (all by default)."""
        head = self.order[: len(self.order) if n is None else n]
        return float(head[:, 0].mean()) if len(head) else 0.0

    def positions_dataset(self) -> Any:
        """A ``datasets.Dataset`` with one ``position`` column ``0 .. len - 1`` (what the trainer iterates;
        :class:`PositionCollator` turns positions into examples, so images are decoded in the loader workers)."""
        datasets = require("datasets", extra="train", feature="VLM training")
        return datasets.Dataset.from_dict({"position": np.arange(len(self.order), dtype=np.int64)})


class PositionCollator:
    """Rows ``{"position": i}`` -> the examples at those schedule positions -> ``collator(examples)``."""

    def __init__(self, examples: MixedExamples, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.examples = examples
        self.collator = collator

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.collator([self.examples[int(row["position"])] for row in rows])


# ----------------------------------------------------------------------------------------------------------------
# Collator


def assistant_segments(processor: Any, messages: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """The rendered conversation and, per assistant turn, ``(header, answer)`` texts.

    ``header`` is what the template emits to open an assistant turn (the generation prompt, e.g.
    ``<|im_start|>assistant\\n``) and ``answer`` the turn's content plus its end-of-turn token,
    without trailing whitespace. Found by rendering growing prefixes of the conversation, which
    requires a template whose rendering of a prefix is a prefix of the full rendering.
    """
    def render(msgs: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
        return processor.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=generation_prompt)

    full = render(messages, False)
    segments = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise DatasetError("a conversation must not start with an assistant turn")
        before = render(messages[:i], False)
        prompt = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(prompt) and prompt.startswith(before)):
            raise SpatialForgeError(
                "the chat template does not render conversation prefixes as prefixes of the whole "
                "conversation, so the assistant turns cannot be located for loss masking")
        answer = upto[len(prompt):].rstrip()
        if not answer:
            raise DatasetError(f"assistant turn {i} renders empty")
        segments.append((prompt[len(before):], answer))
    return full, segments


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    """First position ``>= start`` where ``needle`` occurs in ``haystack``, or -1."""
    n = len(needle)
    first = needle[0]
    for p in range(start, len(haystack) - n + 1):
        if haystack[p] == first and haystack[p:p + n] == needle:
            return p
    return -1


class AssistantOnlyCollator:
    """Examples -> a padded batch whose ``labels`` are ``-100`` except on the assistant answers.

    Each assistant turn's tokens (content and end-of-turn token) are located in the processed
    ``input_ids`` by tokenizing the turn's header + answer and searching forward from the previous
    turn; only the answer part is unmasked. Sequences longer than ``max_length`` are cut on the
    right (an error if that would cut image tokens). Adds :data:`SOURCE_KEY`.
    """

    _SEQ_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")

    def __init__(self, processor: Any, max_length: int | None = None) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if self.tokenizer.pad_token_id is None:
            raise SpatialForgeError("the tokenizer has no pad token (set tokenizer.pad_token)")
        self.max_length = max_length
        self._media_ids = [i for i in (getattr(processor, "image_token_id", None),
                                       getattr(processor, "video_token_id", None)) if isinstance(i, int)]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        torch = require("torch", extra="train", feature="VLM training")
        texts, images, segments = [], [], []
        for ex in examples:
            text, segs = assistant_segments(self.processor, ex["messages"])
            texts.append(text)
            segments.append(segs)
            images.extend(ex["images"])
        batch = self.processor(text=texts, images=images or None, padding=True, padding_side="right",
                               return_tensors="pt")
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, segs in enumerate(segments):
            ids = input_ids[row].tolist()
            cursor = 0
            for k, (header, answer) in enumerate(segs):
                turn = self._ids(header + answer)
                head = self._ids(header)
                skip = len(head) if turn[: len(head)] == head else 0
                if skip == 0:
                    turn = self._ids(answer)
                p = _find(ids, turn, cursor)
                if p < 0:
                    raise SpatialForgeError(
                        f"assistant turn {k} ({answer[:60]!r}) not found in the tokenized conversation: the "
                        "tokenizer splits it differently in context")
                labels[row, p + skip:p + len(turn)] = input_ids[row, p + skip:p + len(turn)]
                cursor = p + len(turn)
        batch["labels"] = labels
        if self.max_length is not None and input_ids.shape[1] > self.max_length:
            cut = input_ids[:, self.max_length:]
            media = torch.zeros_like(cut, dtype=torch.bool)
            for token in self._media_ids:
                media |= cut == token
            if "mm_token_type_ids" in batch:
                media |= batch["mm_token_type_ids"][:, self.max_length:] != 0
            if bool(media.any()):
                raise DatasetError(f"an example is longer than data.max_length={self.max_length} tokens and "
                                   "truncation would cut image tokens: raise data.max_length, lower "
                                   "data.max_qa_per_example or model.max_pixels")
            for key in self._SEQ_KEYS:
                if key in batch:
                    batch[key] = batch[key][:, : self.max_length]
        batch[SOURCE_KEY] = torch.tensor([1 if ex["spatial"] else 0 for ex in examples], dtype=torch.long)
        return batch
