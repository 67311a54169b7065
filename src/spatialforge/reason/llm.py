"""Planners: the LLM side of ``spatialforge reason``, behind one small interface.

A planner holds the conversation in the OpenAI chat-message format and has three methods:

* ``start(question, tools, system_prompt) -> messages``: the opening messages;
* ``next_step(messages, tools, max_tokens=None) -> LLMStep``: the model's next move -- tool calls
  (:class:`ToolCall`), or a final answer, or an ``error`` when the reply could not be read (the agent
  hands that back as an observation);
* ``observe(messages, step, observations)``: append the step and the tools' results to ``messages``.

Protocols (``protocol``):

``tools`` (:class:`ToolCallingPlanner`, ``--llm openai:MODEL[@URL]``)
    Native tool calling of an OpenAI-compatible ``/chat/completions`` endpoint: the request carries
    ``tools`` (the OpenAI function specs) and ``tool_choice: "auto"``; a reply's ``message.tool_calls``
    (``{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}``) are the calls, its
    ``content`` without calls is the answer. Results go back as ``{"role": "tool", "tool_call_id", "content":
    "<JSON>"}`` messages. HTTP (key from the environment, retries, timeouts, one-line errors) is the
    evaluation backend's (:class:`~spatialforge.eval.models.openai_api.OpenAICompatibleModel`).
``react`` (:class:`ReActPlanner`, ``--llm react+openai:MODEL[@URL]`` or ``hf:PATH``)
    Plain text for models without tool calling: the system prompt lists the tools and the format::

        Thought: <reasoning>
        Action: <tool name> {"argument": value, ...}

    then the agent answers ``Observation: <result JSON>`` as a user turn, until the model writes
    ``Final Answer: <answer>``. (``Action Input: {...}`` on the next line is read too.) Text after an
    ``Observation:`` the model writes itself is dropped; an unreadable reply gets an observation that
    says what is wrong. One action per step.
``scripted`` (:class:`ScriptedPlanner`)
    A deterministic fake LLM: emits a given list of tool calls, then the answer a given function computes
    from their results (tests, and the exact chain of the composite benchmark).

Chat backends: :class:`OpenAIChat` (the endpoint) and :class:`HFChat` (a local transformers causal LM
with its tokenizer's chat template, greedy decoding).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from spatialforge.errors import ConfigError, SpatialForgeError

__all__ = [
    "LLM_SPEC_FORMS",
    "HFChat",
    "LLMError",
    "LLMStep",
    "Observation",
    "OpenAIChat",
    "Planner",
    "ReActPlanner",
    "ScriptedPlanner",
    "ToolCall",
    "ToolCallingPlanner",
    "build_planner",
    "parse_react",
    "react_system_prompt",
]

LLM_SPEC_FORMS = ("openai:MODEL[@BASE_URL]", "react+openai:MODEL[@BASE_URL]", "hf:MODEL_ID_OR_FOLDER")
_CHARS_PER_TOKEN = 4  # a token estimate when a backend does not count


class LLMError(SpatialForgeError):
    """The LLM gave no usable reply (unreachable, retries exhausted, not a chat completion)."""


@dataclass(frozen=True)
class ToolCall:
    """A call the LLM asked for; ``error`` when its arguments could not be read (not run then)."""

    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "args": self.args}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class LLMStep:
    """One LLM reply: tool calls, or an answer, or an ``error`` saying why the reply is unusable."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    answer: str | None = None
    value: Any = None
    error: str | None = None
    tokens: int | None = None
    tokens_estimated: bool = False
    message: dict[str, Any] | None = None  # the assistant message to append (native protocol)


@dataclass(frozen=True)
class Observation:
    """The outcome of one tool call: ``result`` or ``error``."""

    call: ToolCall
    result: dict[str, Any] | None = None
    error: str | None = None

    def content(self) -> str:
        return json.dumps(self.result if self.error is None else {"error": self.error})


class Planner(Protocol):
    name: str
    protocol: str

    def start(self, question: str, tools: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]: ...

    def next_step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                  max_tokens: int | None = None) -> LLMStep: ...

    def observe(self, messages: list[dict[str, Any]], step: LLMStep, observations: Sequence[Observation]) -> None: ...


def _estimate_tokens(*texts: str) -> int:
    return max(1, math.ceil(sum(len(t) for t in texts) / _CHARS_PER_TOKEN))


def _message_chars(messages: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in messages)


# ---------------------------------------------------------------- chat backends

@dataclass(frozen=True)
class ChatReply:
    """A chat reply: its text, raw tool calls (native protocol), tokens used and whether they are estimated."""

    text: str
    tool_calls: list[Any] = field(default_factory=list)
    tokens: int | None = None
    tokens_estimated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def _parse_chat_reply(raw: bytes) -> ChatReply:
    """A chat completion with or without ``tool_calls``; LLMError if it is not one."""
    from spatialforge.eval.models.openai_api import _BadResponse, _parse_completion

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LLMError(f"malformed response: not JSON ({raw[:60].decode('utf-8', errors='replace')!r})") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(
        choices[0], dict) else None
    tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    tokens = int(tokens) if isinstance(tokens, int | float) and not isinstance(tokens, bool) else None
    if isinstance(tool_calls, list) and tool_calls:
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        return ChatReply(text.strip(), list(tool_calls), tokens)
    try:
        text, meta = _parse_completion(raw)
    except _BadResponse as exc:
        raise LLMError(str(exc)) from None
    return ChatReply(text, [], tokens, meta=meta)


class OpenAIChat:
    """Chat completions (with tools) from an OpenAI-compatible endpoint, through the evaluation backend's HTTP code.

    ``model``: an :class:`~spatialforge.eval.models.openai_api.OpenAICompatibleModel` (its URL, key variable,
    timeout, retries, temperature and ``extra_body`` apply; its prompt settings do not).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                 max_tokens: int | None = None, stop: Sequence[str] = ()) -> ChatReply:
        from spatialforge.eval.models.openai_api import (
            FATAL_STATUS,
            KEY_REQUIRED_HOSTS,
            RETRY_STATUS,
            _error_message,
            _Run,
            parse_retry_after,
            retry_delay,
        )

        m = self.model
        key = os.environ.get(m.api_key_env, "").strip() if m.api_key_env else ""
        host = urllib.parse.urlsplit(m.base_url).hostname
        if not key and host in KEY_REQUIRED_HOSTS:
            raise ConfigError(f"{m.name}: the API key is missing ({host} needs one): {m._key_advice()}")
        run = _Run(api_key=key or None, use_image=False, giveup_limit=1)
        body: dict[str, Any] = {"model": m.model, "messages": messages}
        limit = max_tokens if max_tokens is not None else m.max_tokens
        if limit is not None:
            body["max_tokens"] = int(limit)
        if m.temperature is not None:
            body["temperature"] = m.temperature
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if stop:
            body["stop"] = list(stop)
        body.update(m.extra_body)
        payload = json.dumps(body).encode("utf-8")
        opener = urllib.request.build_opener()
        last_error, retry_after, attempts = "", None, 0
        for attempt in range(m.max_retries + 1):
            if attempt:
                time.sleep(retry_delay(attempt, backoff_s=m.backoff_s, retry_after=retry_after, key=m.model))
            attempts += 1
            reply = m._post(opener, payload, run.api_key)
            if reply.transport_error is not None:
                last_error, retry_after = reply.transport_error, None
                continue
            status = reply.status or 0
            if 200 <= status < 300:
                try:
                    parsed = _parse_chat_reply(reply.body)
                except LLMError as exc:
                    raise LLMError(f"{m.name}: {run.redact(str(exc))}") from None
                if parsed.tokens is None:
                    return ChatReply(parsed.text, parsed.tool_calls,
                                     _estimate_tokens(_message_chars(messages), parsed.text), True, parsed.meta)
                return parsed
            error = run.redact(f"HTTP {status}: {_error_message(reply.body)}")
            if status in FATAL_STATUS:
                raise ConfigError(m._fatal_message(status, error, run))
            if status in RETRY_STATUS or status >= 500:
                last_error, retry_after = error, parse_retry_after(reply.headers)
                continue
            raise LLMError(f"{m.name}: {error}")
        raise LLMError(f"{m.name}: {run.redact(last_error)} (gave up after {attempts} attempt"
                       f"{'s' if attempts > 1 else ''})")


class HFChat:
    """A local transformers chat model (``AutoTokenizer`` + ``AutoModelForCausalLM``), greedy decoding.

    The prompt is the tokenizer's chat template (``add_generation_prompt=True``); a tokenizer without one
    gets ``role: content`` lines and ``assistant:``. A template that refuses the system role gets the
    system text as the first paragraph of the first user turn. Loads on the first :meth:`complete`.
    """

    def __init__(self, model_id: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False) -> None:
        from spatialforge.eval.models.hf_vlm import DTYPES

        if not isinstance(model_id, str) or not model_id.strip():
            raise ConfigError("hf: the model id is empty (use hf:<hub id or local folder>)")
        if dtype not in DTYPES:
            raise ConfigError(f"hf: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.model_id = model_id.strip()
        self.device_name = device
        self.dtype_name = dtype
        self.trust_remote_code = trust_remote_code
        self.name = f"hf:{self.model_id}"
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: str | None = None

    def load(self) -> None:
        if self.model is not None:
            return
        from spatialforge._device import resolve_device
        from spatialforge._optional import require
        from spatialforge.eval.models.hf_vlm import _one_line

        tf = require("transformers", extra="models", feature="a local LLM planner")
        torch = require("torch", extra="models", feature="a local LLM planner")
        device = resolve_device(self.device_name)
        dtype = self.dtype_name
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else (
                "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float16")
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(self.model_id, trust_remote_code=self.trust_remote_code)
            model = tf.AutoModelForCausalLM.from_pretrained(self.model_id, dtype=getattr(torch, dtype),
                                                            trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"hf: cannot load {self.model_id!r} as a causal language model "
                              f"({_one_line(exc)})") from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device

    def _prompt(self, messages: list[dict[str, Any]]) -> str:
        import jinja2

        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return "".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages) + "assistant:"
        try:
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (jinja2.TemplateError, ValueError, TypeError) as exc:  # e.g. a template without a system role
            if not messages or messages[0]["role"] != "system":
                raise ConfigError(f"hf: the chat template of {self.model_id!r} fails: {exc}") from exc
            system, rest = messages[0], [dict(m) for m in messages[1:]]
            if rest and rest[0]["role"] == "user":
                rest[0]["content"] = f"{system['content']}\n\n{rest[0]['content']}"
            return tok.apply_chat_template(rest, add_generation_prompt=True, tokenize=False)

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                 max_tokens: int | None = None, stop: Sequence[str] = ()) -> ChatReply:
        import torch

        self.load()
        prompt = self._prompt(messages)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        n_in = int(inputs["input_ids"].shape[1])
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=int(max_tokens or 256), do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for s in stop:
            if s in text:
                text = text[: text.index(s)]
        return ChatReply(text.strip(), [], n_in + int(new.shape[0]))


# ---------------------------------------------------------------- native tool calling

def _native_start(question: str, system_prompt: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    return messages


def _native_observe(messages: list[dict[str, Any]], step: LLMStep, observations: Sequence[Observation]) -> None:
    if step.message is not None:
        messages.append(step.message)
    else:
        messages.append({"role": "assistant", "content": step.text})
    for obs in observations:
        messages.append({"role": "tool", "tool_call_id": obs.call.id, "content": obs.content()})
    if step.error and not observations:
        messages.append({"role": "user", "content": f"Error: {step.error}"})


def _read_tool_calls(raw_calls: list[Any]) -> tuple[list[ToolCall], list[dict[str, Any]]]:
    """The calls of a reply, and the same calls cleaned up for echoing back in the assistant message."""
    calls, echoed = [], []
    for i, raw in enumerate(raw_calls):
        raw = raw if isinstance(raw, dict) else {}
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        call_id = str(raw.get("id") or f"call_{i}")
        name = str(fn.get("name") or "")
        arguments = fn.get("arguments")
        args: dict[str, Any] = {}
        error = None
        if isinstance(arguments, dict):
            args = arguments
        elif isinstance(arguments, str) and arguments.strip():
            try:
                parsed = json.loads(arguments)
            except ValueError as exc:
                error = f"the arguments of {name or 'the call'} are not valid JSON ({exc.msg} at char {exc.pos})"
            else:
                if isinstance(parsed, dict):
                    args = parsed
                else:
                    error = f"the arguments of {name or 'the call'} must be a JSON object"
        if not name:
            error = "a tool call without a tool name"
        calls.append(ToolCall(call_id, name, args, error))
        echoed.append({"id": call_id, "type": "function",
                       "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                                    else json.dumps(args)}})
    return calls, echoed


class ToolCallingPlanner:
    """Native tool calling (``tools`` protocol) through :class:`OpenAIChat`."""

    protocol = "tools"

    def __init__(self, chat: OpenAIChat) -> None:
        self.chat = chat
        self.name = chat.name

    def start(self, question: str, tools: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
        return _native_start(question, system_prompt)

    def next_step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                  max_tokens: int | None = None) -> LLMStep:
        reply = self.chat.complete(messages, tools=tools, max_tokens=max_tokens)
        if reply.tool_calls:
            calls, echoed = _read_tool_calls(reply.tool_calls)
            message = {"role": "assistant", "content": reply.text or None, "tool_calls": echoed}
            return LLMStep(reply.text, tuple(calls), tokens=reply.tokens, tokens_estimated=reply.tokens_estimated,
                           message=message)
        if not reply.text.strip():
            return LLMStep("", error="empty reply: call a tool or give the final answer", tokens=reply.tokens,
                           tokens_estimated=reply.tokens_estimated)
        return LLMStep(reply.text, answer=reply.text.strip(), tokens=reply.tokens,
                       tokens_estimated=reply.tokens_estimated)

    def observe(self, messages: list[dict[str, Any]], step: LLMStep, observations: Sequence[Observation]) -> None:
        _native_observe(messages, step, observations)


# ---------------------------------------------------------------- ReAct

REACT_FORMAT = """Work in steps. In each step write exactly:
Thought: <what you need next>
Action: <tool name> {"argument": value, ...}
and stop there: the result comes back as "Observation: ...". Call one tool per step.
When you know the answer, write:
Thought: <why>
Final Answer: <the answer, short>"""

_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*([A-Za-z_][\w]*)?(.*)$", re.MULTILINE)
_ACTION_INPUT = re.compile(r"^[ \t]*Action[ \t]*Input[ \t]*:(.*)$", re.MULTILINE | re.DOTALL)
_FINAL = re.compile(r"^[ \t]*Final[ \t]*Answer[ \t]*:(.*)$", re.MULTILINE | re.DOTALL | re.IGNORECASE)
_OBSERVATION = re.compile(r"^[ \t]*Observation[ \t]*:", re.MULTILINE)


def react_system_prompt(system_prompt: str, tools: list[dict[str, Any]]) -> str:
    """The system prompt of the ReAct protocol: the task, the tools with their arguments, the format."""
    lines = [system_prompt.strip(), "", "Tools:"] if system_prompt.strip() else ["Tools:"]
    for spec in tools:
        fn = spec["function"]
        props = fn.get("parameters", {}).get("properties", {})
        required = set(fn.get("parameters", {}).get("required", []))
        args = ", ".join(f"{k}{'' if k in required else '?'}" for k in props)
        lines.append(f"- {fn['name']}({args}): {fn.get('description', '')}")
    lines += ["", REACT_FORMAT]
    return "\n".join(lines)


def parse_react(text: str, call_id: str = "react") -> LLMStep:
    """Read one ReAct reply: an action (a :class:`ToolCall`), a final answer, or an ``error`` saying what is wrong.

    ``text`` after an ``Observation:`` line (the model inventing the tool's result) is dropped; the first of
    ``Action:`` and ``Final Answer:`` wins.
    """
    obs = _OBSERVATION.search(text)
    kept = text[: obs.start()] if obs else text
    action = _ACTION.search(kept)
    final = _FINAL.search(kept)
    if final and (action is None or final.start() < action.start()):
        answer = final.group(1).strip()
        if not answer:
            return LLMStep(kept.strip(), error="the Final Answer is empty")
        return LLMStep(kept[: final.end()].strip(), answer=answer)
    if action is None:
        return LLMStep(kept.strip(), error='no "Action: <tool> {json arguments}" and no "Final Answer: ..." line')
    name = action.group(1)
    if not name:
        return LLMStep(kept.strip(), error="the Action line names no tool")
    rest = kept[action.start(2):]
    if final:
        rest = rest[: max(0, final.start() - action.start(2))]
    head = action.group(2).strip()
    if not head:
        more = _ACTION_INPUT.search(rest)
        rest = more.group(1) if more else ""
    rest = rest.strip()
    if not rest:
        return LLMStep(kept[: action.end()].strip(), tool_calls=(ToolCall(call_id, name, {}),))
    start = rest.find("{")
    if start != 0:
        return LLMStep(kept.strip(), tool_calls=(ToolCall(call_id, name, {}, error=(
            f"the arguments of {name} must be a JSON object after the tool name, e.g. "
            f'Action: {name} {{"a": 1}}')),))
    try:
        args, end = json.JSONDecoder().raw_decode(rest)
    except ValueError as exc:
        return LLMStep(kept.strip(), tool_calls=(ToolCall(call_id, name, {}, error=(
            f"the arguments of {name} are not valid JSON ({exc.args[0].split(':')[0]})")),))
    if not isinstance(args, dict):
        return LLMStep(kept.strip(), tool_calls=(ToolCall(call_id, name, {}, error=(
            f"the arguments of {name} must be a JSON object")),))
    shown = kept[: kept.index(rest) + end] if rest in kept else kept
    return LLMStep(shown.strip(), tool_calls=(ToolCall(call_id, name, args),))


class ReActPlanner:
    """The plain-text ReAct protocol over any chat backend (:class:`OpenAIChat`, :class:`HFChat`)."""

    protocol = "react"

    def __init__(self, chat: Any, name: str | None = None) -> None:
        self.chat = chat
        self.name = name or f"react+{chat.name}"

    def start(self, question: str, tools: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": react_system_prompt(system_prompt, tools)},
                {"role": "user", "content": f"Question: {question}"}]

    def next_step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                  max_tokens: int | None = None) -> LLMStep:
        reply = self.chat.complete(messages, max_tokens=max_tokens, stop=("\nObservation:",))
        n = sum(1 for m in messages if m["role"] == "assistant") + 1
        step = parse_react(reply.text, call_id=f"react_{n}")
        return LLMStep(step.text, step.tool_calls, step.answer, error=step.error, tokens=reply.tokens,
                       tokens_estimated=reply.tokens_estimated)

    def observe(self, messages: list[dict[str, Any]], step: LLMStep, observations: Sequence[Observation]) -> None:
        messages.append({"role": "assistant", "content": step.text})
        if observations:
            obs = observations[0]
            text = json.dumps(obs.result) if obs.error is None else f"Error: {obs.error}"
        else:
            text = f"Error: {step.error}. Answer in the format: Thought / Action, or Final Answer."
        messages.append({"role": "user", "content": f"Observation: {text}"})


# ---------------------------------------------------------------- scripted

def _default_answer_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ScriptedPlanner:
    """A deterministic fake LLM: the tool calls of ``plan`` (``(name, args)`` pairs), then ``conclude(results)``.

    ``results`` are the tools' result dicts in plan order (``{"error": message}`` for a call that failed),
    read back from the conversation, so the answer depends only on what the tools returned. ``batch``: all
    calls in one step (as parallel tool calls), else one call per step. ``answer_text`` renders the value
    (default: yes/no for a bool, 4 significant digits for a float).
    """

    protocol = "tools"

    def __init__(self, plan: Sequence[tuple[str, Mapping[str, Any]]], conclude: Callable[[list[dict[str, Any]]], Any],
                 *, answer_text: Callable[[Any], str] | None = None, batch: bool = True,
                 name: str = "scripted") -> None:
        self.plan = [(str(n), dict(a)) for n, a in plan]
        self.conclude = conclude
        self.answer_text = answer_text or _default_answer_text
        self.batch = batch
        self.name = name

    def start(self, question: str, tools: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
        return _native_start(question, system_prompt)

    def next_step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                  max_tokens: int | None = None) -> LLMStep:
        emitted = sum(len(m.get("tool_calls") or ()) for m in messages if m["role"] == "assistant")
        if emitted < len(self.plan):
            todo = self.plan[emitted:] if self.batch else self.plan[emitted:emitted + 1]
            calls = tuple(ToolCall(f"call_{emitted + i}", n, a) for i, (n, a) in enumerate(todo))
            echoed = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.args)}}
                      for c in calls]
            return LLMStep("", calls, tokens=0, message={"role": "assistant", "content": None, "tool_calls": echoed})
        results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
        value = self.conclude(results)
        return LLMStep("", answer=self.answer_text(value), value=value, tokens=0)

    def observe(self, messages: list[dict[str, Any]], step: LLMStep, observations: Sequence[Observation]) -> None:
        _native_observe(messages, step, observations)


# ---------------------------------------------------------------- specs

def build_planner(spec: str, *, api_key_env: str | None = None, timeout_s: float | None = None,
                  max_retries: int | None = None, temperature: float | None = None,
                  device: str | None = None, dtype: str | None = None) -> Planner:
    """The planner ``spec`` names (:data:`LLM_SPEC_FORMS`); options left ``None`` keep the backend's default."""
    from spatialforge.eval.models import build_model

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--llm: empty spec; use one of: {', '.join(LLM_SPEC_FORMS)}")
    text = spec.strip()
    react = text.lower().startswith("react+")
    inner = text[len("react+"):] if react else text
    prefix = inner.partition(":")[0].strip().lower()
    if prefix == "openai":
        options = {k: v for k, v in (("api_key_env", api_key_env), ("timeout_s", timeout_s),
                                     ("max_retries", max_retries), ("temperature", temperature)) if v is not None}
        chat = OpenAIChat(build_model(inner, system_prompt="", **options))
        return ReActPlanner(chat) if react else ToolCallingPlanner(chat)
    if prefix == "hf" and inner.partition(":")[2].strip():
        chat = HFChat(inner.partition(":")[2].strip(), device=device or "auto", dtype=dtype or "auto")
        return ReActPlanner(chat, name=chat.name if not react else f"react+{chat.name}")
    raise ConfigError(f"--llm {spec!r}: unknown form; use one of: {', '.join(LLM_SPEC_FORMS)} (hf: models use "
                      "the ReAct protocol)")
