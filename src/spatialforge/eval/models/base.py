"""The protocol every spatial-VQA model backend implements, and the prompt they all send.

A backend answers a batch of :class:`~spatialforge.eval.types.BenchmarkItem` with one
:class:`ModelAnswer` per item, in input order. A problem with one item (an unreadable image, an
HTTP 400, a malformed response, a timeout after the retries) becomes that item's answer with
``text=None`` and ``error`` set; ``answer`` raises only for configuration errors (bad key, wrong
URL or model) or when no item could be answered at all.

Blind mode (the language-prior baseline): ``answer(items, use_image=False)`` asks the same
question without the image. Every backend accepts the ``use_image`` keyword; one that never sees
images (the prior baseline) ignores it. :class:`~spatialforge.eval.models.baselines.BlindModel`
wraps any backend and always passes ``use_image=False``.

The prompt (:func:`build_prompt`): the benchmark question verbatim, then one short instruction
that asks for a direct answer in a form the answer parser reads, chosen by the item's kind and
unit, without hinting at any value:

* lengths (unit ``m``): "Answer directly with a single value and its unit of length."
* ratios: "Answer directly with a single number."
* clock directions: "Answer directly with a clock direction: an hour from 1 to 12."
* yes/no: "Answer directly with yes or no."
* choice: "Answer directly with one of: <option 1>; <option 2>."
* point (the affordance "where would you hold ...?" questions): "Answer with the point in the image as
  pixel coordinates (x, y), x from the left edge and y from the top edge of the W x H image, then its
  3D position (x, y, z) in metres: x to the camera's right, y forward, z up from the floor below the
  camera." (the image size when the item knows it, :data:`POINT_INSTRUCTION`)

Without the image the prompt adds "No image is available; give your best guess." so that the
blind baseline measures the language prior instead of counting refusals. Style ``plain`` sends the
question alone (an option for models prompted that way elsewhere). :data:`SYSTEM_PROMPT` is the
same for every item and names no image, so it also fits blind mode.

One prompt for training and evaluation: ``spatialforge train`` builds the user turns of its spatial
examples with :func:`build_prompt` (style ``default``) and opens them with the :data:`SYSTEM_PROMPT`
turn, through :func:`chat_messages`, the function the ``hf:`` backend renders its chat prompts
from; the ``openai:`` backend sends the same system and user texts. A model fine-tuned by
spatialforge is therefore evaluated on exactly the conversation layout it was trained on.

Fingerprints: a backend may define ``fingerprint() -> dict`` (JSON-serialisable, deterministic,
never a secret): everything that decides its answers (weights, endpoint, generation settings, the
prompt: :func:`prompt_fingerprint`). An evaluation run folder stores it and refuses to resume with
a model whose fingerprint differs (:func:`spatialforge.eval.models.fingerprint.fingerprint_changes`
says what changed). A backend without ``fingerprint()`` is identified by its ``name`` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from spatialforge.errors import ConfigError
from spatialforge.eval.types import BenchmarkItem

__all__ = [
    "BLIND_NOTE",
    "POINT_INSTRUCTION",
    "PROMPT_STYLES",
    "SYSTEM_PROMPT",
    "ModelAnswer",
    "VQAModel",
    "build_prompt",
    "chat_messages",
    "check_prompt_style",
    "prompt_fingerprint",
]

SYSTEM_PROMPT = (
    "You answer questions about the 3D spatial layout of a scene: the distances, sizes and relative "
    "positions of its objects. Answer directly and briefly."
)

PROMPT_STYLES = ("default", "plain")

BLIND_NOTE = "No image is available; give your best guess."

_QUANT_INSTRUCTIONS = {
    "m": "Answer directly with a single value and its unit of length.",
    "ratio": "Answer directly with a single number.",
    "clock": "Answer directly with a clock direction: an hour from 1 to 12.",
}
_YES_NO_INSTRUCTION = "Answer directly with yes or no."
#: the answer format of kind ``point`` (``{size}``: " of the W x H image" when the item knows its size)
POINT_INSTRUCTION = ("Answer with the point in the image as pixel coordinates (x, y), x from the left edge and y "
                     "from the top edge{size}, then its 3D position (x, y, z) in metres: x to the camera's right, "
                     "y forward, z up from the floor below the camera.")


@dataclass(frozen=True)
class ModelAnswer:
    """A model's answer to one item.

    ``text``: the raw answer (``None`` when the item failed; ``error`` then says why in one line).
    ``latency_s``: seconds of the request that produced the answer (the last attempt).
    ``meta``: backend details, e.g. ``attempts``, ``finish_reason``, ``usage``.
    """

    id: str
    text: str | None
    error: str | None = None
    latency_s: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.text is not None and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "error": self.error, "latency_s": self.latency_s,
                "meta": dict(self.meta)}


@runtime_checkable
class VQAModel(Protocol):
    """A model backend (``openai:gpt-4o``, ``hf:Qwen/Qwen2.5-VL-3B-Instruct``, ``blind:...``, ``prior``)."""

    name: str

    def answer(self, items: Sequence[BenchmarkItem], *, progress: bool = False,
               use_image: bool = True) -> list[ModelAnswer]:
        """One answer per item, in input order. ``use_image=False``: ask without the image (blind).

        A per-item failure is an answer with ``text=None`` and ``error`` set; raises
        :class:`~spatialforge.errors.SpatialForgeError` only for a configuration error or a total failure.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """The configuration for the run manifest: JSON-serialisable, never a secret."""
        ...


def check_prompt_style(style: str) -> str:
    """``style`` if it is a known prompt style, else :class:`ConfigError` listing them."""
    if style not in PROMPT_STYLES:
        raise ConfigError(f"unknown prompt style {style!r}; use one of: {', '.join(PROMPT_STYLES)}")
    return style


def build_prompt(item: BenchmarkItem, style: str = "default", *, with_image: bool = True) -> str:
    """The user prompt for ``item``: the question plus a short answer-format instruction (see the module doc)."""
    check_prompt_style(style)
    question = item.question.strip()
    if style == "plain":
        return question
    if item.kind == "quantitative":
        instruction = _QUANT_INSTRUCTIONS.get(item.unit, "Answer directly with a single value.")
    elif item.kind == "yes_no":
        instruction = _YES_NO_INSTRUCTION
    elif item.kind == "point":
        size = (item.meta or {}).get("image_size")
        instruction = POINT_INSTRUCTION.format(size=f" of the {size[0]} x {size[1]} image" if size else "")
    else:
        instruction = "Answer directly with one of: " + "; ".join(o.strip() for o in item.options) + "."
    parts = [question, instruction]
    if not with_image:
        parts.append(BLIND_NOTE)
    return "\n".join(parts)


def chat_messages(prompts: Sequence[str], answers: Sequence[str] = (), *, system_prompt: str = SYSTEM_PROMPT,
                  image: bool = True, system_in_user: bool = False) -> list[dict[str, Any]]:
    """The chat conversation a chat-template model sees, in the Hugging Face format.

    A system turn holding ``system_prompt`` (none when it is ``""``), then the user turns
    ``prompts`` alternating with the assistant turns ``answers``: evaluation asks one prompt and
    gives no answer, a training example gives one answer per prompt. With ``image``, an image part
    opens the first user turn. ``system_in_user`` (for chat templates that refuse the system role):
    the system text becomes the first paragraph of the first user turn instead of a turn of its own.
    """
    if not prompts:
        raise ValueError("chat_messages needs at least one prompt")
    if len(answers) not in (len(prompts), len(prompts) - 1):
        raise ValueError(f"chat_messages: {len(answers)} answers for {len(prompts)} prompts")
    messages: list[dict[str, Any]] = []
    if system_prompt and not system_in_user:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    for i, prompt in enumerate(prompts):
        text = f"{system_prompt}\n\n{prompt}" if i == 0 and system_prompt and system_in_user else prompt
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if i == 0 and image:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user", "content": content})
        if i < len(answers):
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answers[i]}]})
    return messages


def _template_digest(style: str) -> str:
    """A digest of the text :func:`build_prompt` writes in ``style`` for every kind and unit, with and without the
    image: it changes whenever the instructions or their layout change (another spatialforge version).

    The instruction of kind ``point`` (:data:`POINT_INSTRUCTION`) is not in it, so that adding it left the
    run folders of earlier versions resumable: an evaluation run fingerprints it with the point items of its
    benchmark (:func:`spatialforge.eval.runner.run_eval`)."""
    probes = [BenchmarkItem(id=f"probe-{unit}", benchmark="probe", question="QUESTION", kind="quantitative",
                            type="probe", truth=1.0, unit=unit) for unit in ("m", "ratio")]
    probes += [
        BenchmarkItem(id="probe-clock", benchmark="probe", question="QUESTION", kind="quantitative", type="probe",
                      truth=3, unit="clock"),
        BenchmarkItem(id="probe-yes-no", benchmark="probe", question="QUESTION", kind="yes_no", type="probe",
                      truth=True, unit="bool"),
        BenchmarkItem(id="probe-choice", benchmark="probe", question="QUESTION", kind="choice", type="probe",
                      truth=0, unit="option", options=("OPTION A", "OPTION B")),
    ]  # the point instruction is fingerprinted with the point items instead (see the docstring)
    texts = [build_prompt(item, style, with_image=with_image) for item in probes for with_image in (True, False)]
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def prompt_fingerprint(style: str, system_prompt: str) -> dict[str, Any]:
    """What decides the prompt text of a backend: the style, the system prompt and a digest of the template."""
    check_prompt_style(style)
    return {"style": style, "system_prompt": system_prompt, "template": _template_digest(style)}
