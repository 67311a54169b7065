"""Model backends for spatial VQA evaluation, chosen by a spec string (:func:`build_model`).

Spec forms:

* ``openai:<model>[@<base_url>]``: a model behind an OpenAI-compatible chat-completions endpoint
  (:class:`~spatialforge.eval.models.openai_api.OpenAICompatibleModel`; standard library only),
  e.g. ``openai:gpt-4o`` or ``openai:Qwen/Qwen2.5-VL-7B-Instruct@http://localhost:8000/v1``;
* ``hf:<model id or folder>``: a local transformers VLM
  (``spatialforge.eval.models.hf_vlm.HFVisionLanguageModel``, needs ``spatialforge[models]``; imported
  only when chosen);
* ``blind:<model spec>``: that model asked without the image (the language-prior baseline);
* ``prior``: fixed typical values (:class:`~spatialforge.eval.models.baselines.PriorModel`).

Keyword options go to the backend's constructor (to the inner model for ``blind:``); an unknown
option is a :class:`~spatialforge.errors.ConfigError` that lists the accepted ones.

Every backend has ``fingerprint()``: what decides its answers (weights, endpoint, generation
settings, prompt), checked by an evaluation run folder before it resumes
(:mod:`spatialforge.eval.models.fingerprint`).
"""

from __future__ import annotations

import importlib
import inspect
from types import MappingProxyType
from typing import Any

from spatialforge.errors import ConfigError, MissingExtraError
from spatialforge.eval.models.base import (
    PROMPT_STYLES,
    SYSTEM_PROMPT,
    ModelAnswer,
    VQAModel,
    build_prompt,
    chat_messages,
    prompt_fingerprint,
)
from spatialforge.eval.models.baselines import BlindModel, PriorModel
from spatialforge.eval.models.openai_api import OpenAICompatibleModel

__all__ = [
    "BACKENDS",
    "PROMPT_STYLES",
    "SPEC_FORMS",
    "SYSTEM_PROMPT",
    "BlindModel",
    "ModelAnswer",
    "OpenAICompatibleModel",
    "PriorModel",
    "VQAModel",
    "build_model",
    "build_prompt",
    "build_vlm",
    "chat_messages",
    "prompt_fingerprint",
]

# spec prefix -> "module:class", imported when the spec is used
BACKENDS = MappingProxyType({
    "openai": "spatialforge.eval.models.openai_api:OpenAICompatibleModel",
    "hf": "spatialforge.eval.models.hf_vlm:HFVisionLanguageModel",
    "prior": "spatialforge.eval.models.baselines:PriorModel",
})

SPEC_FORMS = ("openai:<model>[@<base_url>]", "hf:<model id or folder>", "blind:<model spec>", "prior")


def _spec_error(spec: str, why: str) -> ConfigError:
    return ConfigError(f"model spec {spec!r}: {why}; use one of: {', '.join(SPEC_FORMS)}")


def _backend_class(prefix: str) -> type:
    target = BACKENDS[prefix]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingExtraError:
        raise
    except ImportError as exc:
        if exc.name == module_name:
            raise ConfigError(f"the {prefix!r} model backend is not available in this installation "
                              f"({module_name} is missing)") from None
        raise MissingExtraError(f"the {prefix!r} model backend cannot be imported ({exc}): "
                                "pip install 'spatialforge[models]'") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"the {prefix!r} model backend is not available ({target} is missing)")
    return cls


def _construct(prefix: str, cls: type, *args: Any, **options: Any) -> VQAModel:
    """``cls(*args, **options)``; an option the constructor does not take is a ConfigError."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        positional = list(params)[: len(args)]
        accepted = [n for n, p in params.items() if n not in positional
                    and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigError(f"{prefix}: unknown option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(u) for u in unknown)}; accepted: {', '.join(accepted) or 'none'}")
    return cls(*args, **options)


def build_model(spec: str, **options: Any) -> VQAModel:
    """The model backend named by ``spec`` (see the module doc for the forms), built with ``options``."""
    if not isinstance(spec, str) or not spec.strip():
        raise _spec_error(str(spec), "empty")
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    prefix = prefix.strip().lower()
    rest = rest.strip()
    if prefix == "prior":
        if sep:
            raise _spec_error(spec, "'prior' takes no argument")
        return _construct("prior", _backend_class("prior"), **options)
    if prefix == "blind":
        if not rest:
            raise _spec_error(spec, "'blind:' needs the spec of the model to ask without the image")
        return BlindModel(build_model(rest, **options))
    if prefix == "openai" and sep:
        model, at, url = rest.rpartition("@")
        if at and url.strip().lower().startswith(("http://", "https://")):
            if "base_url" in options:
                raise _spec_error(spec, "the base_url is given both in the spec and as an option")
            options = {**options, "base_url": url.strip()}
            rest = model.strip()
        if not rest:
            raise _spec_error(spec, "the model name is empty")
        # the same settings under the names the local backend uses
        for alias, name in (("max_new_tokens", "max_tokens"), ("max_image_side", "image_max_side")):
            if alias in options:
                options = {name: options[alias], **{k: v for k, v in options.items() if k != alias}}
        return _construct("openai", _backend_class("openai"), rest, **options)
    if prefix == "hf" and sep:
        if not rest:
            raise _spec_error(spec, "the model id or folder is empty")
        return _construct("hf", _backend_class("hf"), rest, **options)
    raise _spec_error(spec, "unknown form")


def build_vlm(spec: str, *, api_key_env: str | None = None, timeout_s: float | None = None,
              max_retries: int | None = None, device: str | None = None, dtype: str | None = None,
              flag: str = "--vlm") -> VQAModel:
    """A VLM that is asked a text verbatim (prompt style ``plain``: the caller writes the whole prompt), as
    ``spatialforge reason --vlm`` and ``spatialforge app --vlm`` use it.

    ``api_key_env`` / ``timeout_s`` / ``max_retries`` go to an ``openai:`` backend, ``device`` / ``dtype`` to
    an ``hf:`` one (an option the backend does not take is left out, as the CLIs refuse it before); ``None``
    keeps the backend's default. A bad spec or option is a :class:`ConfigError` starting with ``flag``.
    """
    prefix = str(spec).strip().partition(":")[0].lower()
    options: dict[str, Any] = {}
    if prefix in ("openai", "hf"):
        options["prompt_style"] = "plain"  # the question verbatim, no answer-format instruction
    given = {"openai": {"api_key_env": api_key_env, "timeout_s": timeout_s, "max_retries": max_retries},
             "hf": {"device": device, "dtype": dtype}}.get(prefix, {})
    options.update({k: v for k, v in given.items() if v is not None})
    try:
        return build_model(spec, **options)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
