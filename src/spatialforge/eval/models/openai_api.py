"""A model behind an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, Ollama ...).

Standard library only (``urllib.request``, ``json``, ``base64``, ``concurrent.futures``); Pillow
encodes the images. Each item is one request::

    POST {base_url}/chat/completions
    {"model": ..., "max_tokens": ..., "temperature": ...,
     "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                  {"role": "user", "content": [
                      {"type": "text", "text": <prompt>},
                      {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}]}]}

* The API key is read from the environment variable ``api_key_env`` at each :meth:`answer` call and
  sent as ``Authorization: Bearer <key>``; without it (local servers) no ``Authorization`` header is
  sent. The key is never stored on the object, never in :meth:`describe`, and is redacted from
  error messages.
* ``concurrency`` requests run in parallel (a thread pool); answers come back in input order.
* HTTP 408 / 409 / 429 / 5xx, timeouts and connection errors are retried up to ``max_retries``
  times, waiting ``Retry-After`` (or ``retry-after-ms``) when the server sends it, else an
  exponential backoff ``backoff_s * 2**k`` times a jitter in [0.5, 1.5) derived from the item id
  (deterministic, yet spreads the items apart), capped at 60 s.
* Any other HTTP error is not retried: the item's error is ``"HTTP 400: <message from the body>"``.
* A 2xx response that is not a chat completion (malformed JSON, no choices) is that item's error.
* The official endpoint (host ``api.openai.com``) always needs a key: without one in ``api_key_env``,
  :meth:`answer` raises :class:`~spatialforge.errors.ConfigError` naming the variable at once, before
  any request.
* HTTP 401 / 403 (the key is missing or rejected) and 404 (a wrong URL or model) are never retried:
  the remaining items are not sent. If no item got an answer, :class:`~spatialforge.errors.ConfigError`
  is raised, saying whether the key was missing (naming the variable) or rejected. Likewise, when the server
  cannot be reached at all (an item gives up on connection errors or timeouts before any HTTP
  response came back), or ``2 * concurrency`` items in a row give up that way, the remaining items
  are not sent, and :class:`~spatialforge.errors.SpatialForgeError` is raised if nothing was answered.
* ``timeout_s`` is the socket timeout of a request (connecting, and each read).

``fingerprint()`` (what the evaluation run folder checks before resuming): the public base URL,
the model name, ``max_tokens``, ``temperature``, ``extra_body`` (secret-looking values masked),
whether and how images are sent, and the prompt
(:func:`~spatialforge.eval.models.base.prompt_fingerprint`). The key, concurrency, retries and
timeouts are left out: they do not decide the answers.

Newer OpenAI reasoning models reject ``max_tokens`` / ``temperature``: pass ``max_tokens=None`` /
``temperature=None`` to leave them out, and ``extra_body={"max_completion_tokens": 512}``.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from spatialforge import __version__
from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.eval.models.base import (
    SYSTEM_PROMPT,
    ModelAnswer,
    build_prompt,
    check_prompt_style,
    prompt_fingerprint,
)
from spatialforge.eval.types import BenchmarkItem

__all__ = ["DEFAULT_BASE_URL", "OpenAICompatibleModel", "retry_delay"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_REQUIRED_HOSTS = frozenset({"api.openai.com"})  # endpoints that answer nothing without a key
JPEG_QUALITY = 90
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 120.0
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx
FATAL_STATUS = frozenset({401, 403, 404})
_ERROR_BODY_CHARS = 300
_SECRET_WORDS = ("key", "secret", "password", "authorization", "bearer")


def retry_delay(attempt: int, *, backoff_s: float, retry_after: float | None = None, key: str = "") -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    ``Retry-After`` from the server wins (capped at ``MAX_RETRY_AFTER_S``); otherwise
    ``backoff_s * 2**(attempt - 1)`` times a deterministic jitter in [0.5, 1.5) from ``key``,
    capped at ``MAX_BACKOFF_S``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    jitter = 0.5 + zlib.crc32(f"{key}|{attempt}".encode()) / 2**32
    return min(backoff_s * 2 ** (attempt - 1) * jitter, MAX_BACKOFF_S)


def parse_retry_after(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``Retry-After`` header (seconds or an HTTP date), else ``None``."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return when.timestamp() - time.time()


# ---------------------------------------------------------------- option checks


def _int_option(name: str, value: Any, *, minimum: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"openai: {name} must be an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or out != float(value) or out < minimum:
        raise ConfigError(f"openai: {name} must be an integer >= {minimum}, got {value!r}")
    return out


def _float_option(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"openai: {name} must be a number, got {value!r}") from None
    bad = out <= minimum if strict else out < minimum
    if isinstance(value, bool) or bad or out != out:
        relation = ">" if strict else ">="
        raise ConfigError(f"openai: {name} must be a number {relation} {minimum}, got {value!r}")
    return out


def _bool_option(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"openai: {name} must be true or false, got {value!r}")


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment (they can hold credentials)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _is_http_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urllib.parse.urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _scrub(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) with the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, Mapping):
        return {str(k): ("***" if any(w in str(k).lower() for w in _SECRET_WORDS) else _scrub(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _error_message(raw: bytes) -> str:
    """The human message of an error body (OpenAI ``{"error": {"message": ...}}`` and common variants)."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = err.get("message") or err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
        message = message or data.get("message") or data.get("detail")
    if message is None or not str(message).strip():
        message = text or "(empty body)"
    message = " ".join(str(message).split())
    if len(message) > _ERROR_BODY_CHARS:
        message = message[:_ERROR_BODY_CHARS] + "..."
    return message


class _BadResponse(Exception):
    """A 2xx response that is not a usable chat completion."""


def _parse_completion(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The answer text and meta of a chat-completion body; :class:`_BadResponse` if malformed."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        head = raw[:60].decode("utf-8", errors="replace")
        raise _BadResponse(f"malformed response: not JSON ({head!r})") from None
    if not isinstance(data, dict):
        raise _BadResponse("malformed response: not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        if data.get("error") is not None:
            raise _BadResponse(f"API error: {_error_message(raw)}")
        raise _BadResponse("malformed response: no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _BadResponse("malformed response: choices[0] has no message")
    meta: dict[str, Any] = {}
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
        if not pieces and content:
            raise _BadResponse("malformed response: message content has no text part")
        text = "".join(pieces)
    elif content is None and isinstance(message.get("refusal"), str):
        text = message["refusal"]
        meta["refusal"] = True
    else:
        raise _BadResponse("malformed response: message has no content")
    if isinstance(choice.get("finish_reason"), str):
        meta["finish_reason"] = choice["finish_reason"]
    if isinstance(data.get("usage"), dict):
        meta["usage"] = {k: v for k, v in data["usage"].items() if isinstance(v, int | float)}
    if isinstance(data.get("model"), str):
        meta["response_model"] = data["model"]
    return text.strip(), meta


@dataclass(frozen=True)
class _Reply:
    """What one POST produced: an HTTP status and body, or a transport error."""

    status: int | None = None
    body: bytes = b""
    headers: Any = None
    transport_error: str | None = None


class _Run:
    """The state one :meth:`OpenAICompatibleModel.answer` call shares between its worker threads."""

    def __init__(self, *, api_key: str | None, use_image: bool, giveup_limit: int) -> None:
        self.api_key = api_key
        self.use_image = use_image
        self.giveup_limit = giveup_limit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stop_reason: str | None = None
        self.stop_error: SpatialForgeError | None = None
        self.any_response = False
        self._giveups_in_row = 0

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the run stops first; True if it stopped."""
        return self._stop.wait(seconds) if seconds > 0 else self._stop.is_set()

    def halt(self, reason: str, error: SpatialForgeError | None = None) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_error = error
            self._stop.set()

    def note_response(self) -> None:
        with self._lock:
            self.any_response = True
            self._giveups_in_row = 0

    def note_transport_giveup(self) -> bool:
        """Count an item that gave up on transport errors; True if the server looks unreachable."""
        with self._lock:
            self._giveups_in_row += 1
            return not self.any_response or self._giveups_in_row >= self.giveup_limit

    def redact(self, text: str) -> str:
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text


class OpenAICompatibleModel:
    """A VLM behind an OpenAI-compatible chat-completions endpoint (see the module doc)."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 4,
        timeout_s: float = 60,
        backoff_s: float = 1.0,
        max_tokens: int | None = 128,
        temperature: float | None = 0.0,
        send_image: bool = True,
        image_max_side: int | None = 1024,
        extra_body: Mapping[str, Any] | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        prompt_style: str = "default",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("openai: the model name is empty (use openai:<model>[@<base_url>])")
        if not _is_http_url(base_url):
            raise ConfigError(f"openai: base_url must be an http(s) URL, got {_public_url(str(base_url))!r}")
        if api_key_env is not None and not isinstance(api_key_env, str):
            raise ConfigError(f"openai: api_key_env must be the name of an environment variable, got {api_key_env!r}")
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ConfigError("openai: extra_body must be a mapping of JSON fields")
        if not isinstance(system_prompt, str):
            raise ConfigError("openai: system_prompt must be a string ('' sends none)")
        self.model = model.strip()
        self.base_url = base_url.strip().rstrip("/")
        self.api_key_env = api_key_env or None
        self.concurrency = _int_option("concurrency", concurrency, minimum=1)
        self.max_retries = _int_option("max_retries", max_retries, minimum=0)
        self.timeout_s = _float_option("timeout_s", timeout_s, minimum=0.0, strict=True)
        self.backoff_s = _float_option("backoff_s", backoff_s, minimum=0.0)
        self.max_tokens = None if max_tokens is None else _int_option("max_tokens", max_tokens, minimum=1)
        self.temperature = None if temperature is None else _float_option("temperature", temperature, minimum=0.0)
        self.send_image = _bool_option("send_image", send_image)
        self.image_max_side = (None if image_max_side in (None, 0)
                               else _int_option("image_max_side", image_max_side, minimum=16))
        self.extra_body = dict(extra_body or {})
        try:
            json.dumps(self.extra_body)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"openai: extra_body is not JSON-serialisable ({exc})") from None
        self.system_prompt = system_prompt
        self.prompt_style = check_prompt_style(prompt_style)
        self.name = f"openai:{self.model}"
        self.url = f"{self.base_url}/chat/completions"

    # ------------------------------------------------------------ public API

    def describe(self) -> dict[str, Any]:
        """The configuration for the run manifest (the key's variable name, never the key)."""
        return {
            "backend": "openai",
            "name": self.name,
            "model": self.model,
            "base_url": _public_url(self.base_url),
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "backoff_s": self.backoff_s,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "send_image": self.send_image,
            "image_max_side": self.image_max_side,
            "image_format": f"jpeg (quality {JPEG_QUALITY})",
            "system_prompt": self.system_prompt,
            "prompt_style": self.prompt_style,
            "extra_body": _scrub(self.extra_body),
        }

    def fingerprint(self) -> dict[str, Any]:
        """What decides the answers: endpoint, model, generation settings, images, prompt (never the key)."""
        return {
            "backend": "openai",
            "base_url": _public_url(self.base_url),
            "model": self.model,
            "generation": {"max_tokens": self.max_tokens, "temperature": self.temperature,
                           "extra_body": _scrub(self.extra_body)},
            "image": {"send_image": self.send_image, "image_max_side": self.image_max_side,
                      "image_format": f"jpeg (quality {JPEG_QUALITY})"},
            "prompt": prompt_fingerprint(self.prompt_style, self.system_prompt),
        }

    def answer(self, items: Sequence[BenchmarkItem], *, progress: bool = False,
               use_image: bool = True) -> list[ModelAnswer]:
        """One answer per item, in input order (see the module doc for retries and failures)."""
        items = list(items)
        if not items:
            return []
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        host = urllib.parse.urlsplit(self.base_url).hostname
        if not key and host in KEY_REQUIRED_HOSTS:  # fail now, not after retrying an answer that cannot come
            raise ConfigError(f"{self.name}: the API key is missing ({host} needs one): {self._key_advice()}")
        run = _Run(api_key=key or None, use_image=self.send_image and use_image,
                   giveup_limit=max(4, 2 * self.concurrency))
        opener = urllib.request.build_opener()
        answers: list[ModelAnswer | None] = [None] * len(items)
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="sf-openai")
        try:
            with tqdm(total=len(items), desc=self.name, unit="q", disable=not progress, file=sys.stderr) as bar:
                futures = {pool.submit(self._answer_one, item, run, opener): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    answers[futures[future]] = future.result()
                    bar.update(1)
        except BaseException:
            run.halt("interrupted")
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        done = [a for a in answers if a is not None]
        if run.stop_error is not None and not any(a.ok for a in done):
            raise run.stop_error
        return done

    # ------------------------------------------------------------ one item

    def _payload(self, item: BenchmarkItem, use_image: bool) -> bytes:
        prompt = build_prompt(item, self.prompt_style, with_image=use_image)
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        if use_image:
            content.append({"type": "image_url", "image_url": {"url": self._image_data_url(item)}})
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        body.update(self.extra_body)
        return json.dumps(body).encode("utf-8")

    def _image_data_url(self, item: BenchmarkItem) -> str:
        from PIL import Image

        img = item.load_image()
        side = self.image_max_side
        # a point question is answered in pixels of the image its prompt names: it goes at full size
        if side is not None and max(img.size) > side and item.kind != "point":
            scale = side / max(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def _post(self, opener: urllib.request.OpenerDirector, payload: bytes, api_key: str | None) -> _Reply:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"spatialforge/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=self.timeout_s) as resp:
                return _Reply(status=resp.status, body=resp.read(), headers=resp.headers)
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            return _Reply(status=exc.code, body=body, headers=exc.headers)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return _Reply(transport_error=f"timed out after {self.timeout_s:g} s")
            return _Reply(transport_error=f"cannot connect to {_public_url(self.url)}: {exc.reason}")
        except TimeoutError:
            return _Reply(transport_error=f"timed out after {self.timeout_s:g} s")
        except (OSError, http.client.HTTPException) as exc:
            return _Reply(transport_error=f"connection failed ({type(exc).__name__}: {exc})")

    def _answer_one(self, item: BenchmarkItem, run: _Run, opener: urllib.request.OpenerDirector) -> ModelAnswer:
        if run.stopped:
            return ModelAnswer(item.id, None, error=f"not sent: {run.stop_reason}")
        try:
            payload = self._payload(item, run.use_image)
        except (SpatialForgeError, OSError, ValueError) as exc:
            return ModelAnswer(item.id, None, error=f"image: {exc}")
        last_error = ""
        transport = False
        retry_after: float | None = None
        attempts = 0
        latency: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt and run.wait(retry_delay(attempt, backoff_s=self.backoff_s, retry_after=retry_after,
                                                key=item.id)):
                break
            if run.stopped:
                break
            attempts += 1
            start = time.monotonic()
            reply = self._post(opener, payload, run.api_key)
            latency = time.monotonic() - start
            meta: dict[str, Any] = {"attempts": attempts}
            if reply.transport_error is not None:
                last_error, transport, retry_after = reply.transport_error, True, None
                continue
            run.note_response()
            status = reply.status or 0
            if 200 <= status < 300:
                try:
                    text, extra = _parse_completion(reply.body)
                except _BadResponse as exc:
                    return ModelAnswer(item.id, None, error=run.redact(str(exc)), latency_s=latency, meta=meta)
                return ModelAnswer(item.id, text, latency_s=latency, meta={**meta, **extra})
            error = run.redact(f"HTTP {status}: {_error_message(reply.body)}")
            if status in FATAL_STATUS:
                run.halt(error, ConfigError(self._fatal_message(status, error, run)))
                return ModelAnswer(item.id, None, error=error, latency_s=latency, meta=meta)
            if status in RETRY_STATUS or status >= 500:
                last_error, transport, retry_after = error, False, parse_retry_after(reply.headers)
                continue
            return ModelAnswer(item.id, None, error=error, latency_s=latency, meta=meta)
        else:  # every attempt failed
            plural = "s" if attempts > 1 else ""
            error = run.redact(f"{last_error} (gave up after {attempts} attempt{plural})")
            if transport and run.note_transport_giveup():
                run.halt(f"the server is unreachable: {error}", SpatialForgeError(
                    f"{self.name}: the server at {_public_url(self.url)} is unreachable: {error}"))
            return ModelAnswer(item.id, None, error=error, latency_s=latency, meta={"attempts": attempts})
        # the run stopped (a fatal error elsewhere, or an interrupt) before this item was done
        if attempts == 0:
            return ModelAnswer(item.id, None, error=f"not sent: {run.stop_reason}")
        return ModelAnswer(item.id, None, error=run.redact(f"{last_error} (not retried: {run.stop_reason})"),
                           latency_s=latency, meta={"attempts": attempts})

    def _key_advice(self) -> str:
        if self.api_key_env:
            return f"set the environment variable {self.api_key_env} (or name another with --api-key-env)"
        return "no key is sent because api_key_env is unset; name the variable that holds it"

    def _fatal_message(self, status: int, error: str, run: _Run) -> str:
        """One line for an HTTP 401 / 403 / 404: what is wrong and what to do."""
        where = _public_url(self.url)
        if status == 404:
            return f"{self.name}: {error} from {where} (check the model name and base_url)"
        if run.api_key is None:
            return f"{self.name}: the API key is missing: {where} answered {error}; {self._key_advice()}"
        return (f"{self.name}: the API key in {self.api_key_env} was rejected: {where} answered {error}; "
                "check the key and its permissions")
