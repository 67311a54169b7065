"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the model-backend tests.

``with FakeOpenAIServer() as server:`` starts a real HTTP server on an ephemeral port in a
background thread; ``server.base_url`` is ``http://127.0.0.1:<port>/v1``. ``POST /v1/chat/completions``
answers ``"echo: <first word of the user text>"`` after ``delay_s`` seconds, unless the user text
holds a marker (the counts are per distinct user text):

* ``[429xN]``: HTTP 429 with ``Retry-After: <retry_after>`` the first N times, then an answer;
* ``[500xN]``: HTTP 500 the first N times, then an answer;
* ``[slow]``: waits ``slow_s`` before answering (beyond the client's timeout);
* ``[400]``: HTTP 400 with an OpenAI-style error body;
* ``[401]``: HTTP 401 whose message echoes the Authorization header (a careless server);
* ``[403]``: HTTP 403 (a key without access to the model);
* ``[404]``: HTTP 404 (unknown model);
* ``[badjson]``: HTTP 200 with a body that is not JSON;
* ``[nochoices]``: HTTP 200 with a JSON object without ``choices``;
* ``[parts]``: the content as a list of text parts.

With ``api_key="..."`` the server requires ``Authorization: Bearer <api_key>`` on every request, as
hosted APIs do: a request without it, or with another key, gets HTTP 401 before anything else.

Every request is recorded (:class:`Recorded`: path, headers, parsed body) and the highest number of
requests in flight at once is kept in ``max_in_flight``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "Recorded"]

_MARKER = re.compile(r"\[(\w+?)(?:x(\d+))?\]")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = field(repr=False, default=b"")

    @property
    def user_content(self) -> list[dict[str, Any]]:
        return self.body["messages"][-1]["content"]

    @property
    def user_text(self) -> str:
        return "".join(p["text"] for p in self.user_content if p.get("type") == "text")

    @property
    def image_urls(self) -> list[str]:
        return [p["image_url"]["url"] for p in self.user_content if p.get("type") == "image_url"]


class FakeOpenAIServer:
    """See the module doc. Thread-safe; use as a context manager."""

    def __init__(self, *, delay_s: float = 0.0, slow_s: float = 1.0, retry_after: str | None = "0",
                 oracle: Any = None, api_key: str | None = None) -> None:
        self.api_key = api_key  # when set, required as "Authorization: Bearer <api_key>"
        self.oracle = oracle  # optional: user text -> the answer to send instead of the echo
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # a client that hung up is fine
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def requests_for(self, marker: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if isinstance(r.body, dict) and marker in r.user_text]

    # ------------------------------------------------------------ handling

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        rec = Recorded(path=h.path, headers={k: v for k, v in h.headers.items()}, body=body, raw=raw)
        with self._lock:
            self.requests.append(rec)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        h._sf_counted = True  # type: ignore[attr-defined]  # released when the response is sent (see _send_raw)
        try:
            self._respond(h, rec)
        finally:
            self._release(h)

    def _release(self, h: BaseHTTPRequestHandler) -> None:
        """A request stops being in flight before its response goes out: the client may send its
        next request as soon as it has read this one, and that must not count as one more in flight."""
        if getattr(h, "_sf_counted", False):
            h._sf_counted = False  # type: ignore[attr-defined]
            with self._lock:
                self._in_flight -= 1

    def _respond(self, h: BaseHTTPRequestHandler, rec: Recorded) -> None:
        if self.api_key is not None:
            auth = h.headers.get("Authorization")
            if auth is None:
                return self._send(h, 401, {"error": {"message": "You didn't provide an API key.",
                                                     "type": "invalid_request_error"}})
            if auth != f"Bearer {self.api_key}":
                return self._send(h, 401, {"error": {"message": "Incorrect API key provided.",
                                                     "type": "invalid_request_error"}})
        if h.path != "/v1/chat/completions" or not isinstance(rec.body, dict):
            return self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
        text = rec.user_text
        with self._lock:
            seen = self._counts.get(text, 0)
            self._counts[text] = seen + 1
        if self.delay_s:
            self._closing.wait(self.delay_s)
        for name, count in _MARKER.findall(text):
            n = int(count or 1)
            if name == "429" and seen < n:
                headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
                return self._send(h, 429, {"error": {"message": "Rate limit reached", "type": "requests"}}, headers)
            if name == "500" and seen < n:
                return self._send(h, 500, {"error": {"message": "internal error"}})
            if name == "slow":
                self._closing.wait(self.slow_s)
            if name == "400":
                return self._send(h, 400, {"error": {"message": "Invalid image data", "type": "invalid_request"}})
            if name == "401":
                auth = h.headers.get("Authorization", "")
                return self._send(h, 401, {"error": {"message": f"Incorrect API key provided: {auth}"}})
            if name == "403":
                return self._send(h, 403, {"error": {"message": "You do not have access to this model"}})
            if name == "404":
                return self._send(h, 404, {"error": {"message": f"The model {rec.body.get('model')} does not exist"}})
            if name == "badjson":
                return self._send_raw(h, 200, b'{"choices": [{"message": {"content": "trunc')
            if name == "nochoices":
                return self._send(h, 200, {"id": "x", "object": "chat.completion"})
            if name == "parts":
                content: Any = [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]
                return self._send(h, 200, self._completion(rec, content))
        if self.oracle is not None:
            return self._send(h, 200, self._completion(rec, self.oracle(text)))
        words = text.split()
        return self._send(h, 200, self._completion(rec, f"echo: {words[0] if words else ''}"))

    @staticmethod
    def _completion(rec: Recorded, content: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": rec.body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any,
              headers: dict[str, str] | None = None) -> None:
        self._send_raw(h, status, json.dumps(payload).encode(), headers)

    def _send_raw(self, h: BaseHTTPRequestHandler, status: int, data: bytes,
                  headers: dict[str, str] | None = None) -> None:
        self._release(h)
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (timeout) and closed the connection
            pass
