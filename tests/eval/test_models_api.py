"""Model backends: the OpenAI-compatible HTTP client end to end against a local fake server, baselines, specs."""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
import time
import types

import pytest
from PIL import Image

from spatialforge.errors import ConfigError, SpatialForgeError
from spatialforge.eval.models import (
    SYSTEM_PROMPT,
    BlindModel,
    ModelAnswer,
    OpenAICompatibleModel,
    PriorModel,
    VQAModel,
    build_model,
    build_prompt,
)
from spatialforge.eval.models.openai_api import parse_retry_after, retry_delay
from spatialforge.eval.types import BenchmarkItem
from tests.eval.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-SECRET-1234567890"


def _png(width: int = 640, height: int = 480) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def _item(i: int | str, question: str = "how far apart are the mug and the chair?", *, kind: str = "quantitative",
          type: str = "distance", unit: str = "m", truth=1.0, options=(), image: bytes | None = PNG) -> BenchmarkItem:
    return BenchmarkItem(id=f"q{i}", benchmark="test", question=question, kind=kind, type=type, truth=truth,
                         unit=unit, options=tuple(options), image_bytes=image)


def _q(i: int, marker: str = "") -> BenchmarkItem:
    """An item whose user text starts with its own token ``Q<i>`` (the fake server echoes it)."""
    return _item(i, f"Q{i} {marker} how far apart are the mug and the chair?".replace("  ", " "))


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SF_TEST_KEY", raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _model(srv: FakeOpenAIServer, **kw) -> OpenAICompatibleModel:
    options = dict(model="fake-vlm", base_url=srv.base_url, api_key_env="SF_TEST_KEY", concurrency=4,
                   max_retries=3, timeout_s=5, backoff_s=0.01)
    options.update(kw)
    return OpenAICompatibleModel(**options)


# ---------------------------------------------------------------- requests and order


def test_order_preserved_and_concurrency_bounded():
    items = [_q(i) for i in range(20)]
    with FakeOpenAIServer(delay_s=0.03) as srv:
        answers = _model(srv, concurrency=4).answer(items)
    assert [a.id for a in answers] == [it.id for it in items]
    assert [a.text for a in answers] == [f"echo: Q{i}" for i in range(20)]
    assert all(a.ok and a.error is None and a.latency_s is not None for a in answers)
    assert answers[0].meta["attempts"] == 1 and answers[0].meta["finish_reason"] == "stop"
    assert answers[0].meta["usage"]["total_tokens"] == 13 and answers[0].meta["response_model"] == "fake-vlm"
    assert len(srv.requests) == 20
    assert 2 <= srv.max_in_flight <= 4


def test_request_body_image_and_model(server):
    item = _item(0, "How far apart are the mug and the chair?", image=_png(2000, 1000))
    [answer] = _model(server, image_max_side=512).answer([item])
    assert answer.ok
    [rec] = server.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["Content-Type"] == "application/json"
    body = rec.body
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 128 and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    text_part, image_part = user["content"]
    assert text_part == {"type": "text", "text": build_prompt(item)}
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (512, 256)


def test_a_point_question_goes_at_the_size_its_prompt_names(server):
    """Its answer is pixels of the image the prompt names: shrinking the image would change the frame."""
    point = BenchmarkItem(id="p0", benchmark="test", question="Where would you hold the mug to pour?", kind="point",
                          type="afford_hold_point", truth={"pixel": (10, 20), "point_3d": (0.1, 1.0, 0.8)},
                          unit="point", image_bytes=_png(2000, 1000), meta={"image_size": (2000, 1000)})
    distance = _item(1, image=_png(2000, 1000))
    assert all(a.ok for a in _model(server, image_max_side=512, concurrency=1).answer([point, distance]))
    sizes = {}
    for rec in server.requests:
        text_part, image_part = rec.body["messages"][1]["content"]
        url = image_part["image_url"]["url"]
        sizes[text_part["text"]] = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size
    assert sizes[build_prompt(point)] == (2000, 1000) and "of the 2000 x 1000 image" in build_prompt(point)
    assert sizes[build_prompt(distance)] == (512, 256)


def test_small_image_not_resized_and_extra_body(server):
    model = _model(server, extra_body={"top_p": 0.5}, max_tokens=None, temperature=None, system_prompt="")
    assert model.answer([_q(0)])[0].ok
    body = server.requests[0].body
    assert body["top_p"] == 0.5 and "max_tokens" not in body and "temperature" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]
    url = server.requests[0].image_urls[0]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (640, 480)


def test_content_as_list_of_parts(server):
    [answer] = _model(server).answer([_q(0, "[parts]")])
    assert answer.text == "part one, part two"


def test_item_without_image_is_a_per_item_error(server):
    answers = _model(server).answer([_q(0), _item(1, image=None)])
    assert answers[0].ok
    assert answers[1].text is None and "no image" in answers[1].error
    assert len(server.requests) == 1


def test_empty_batch(server):
    assert _model(server).answer([]) == []
    assert server.requests == []


# ---------------------------------------------------------------- retries and errors


def test_retry_on_429_honours_retry_after(server):
    # backoff_s is huge: finishing quickly proves that Retry-After: 0 was used instead
    model = _model(server, backoff_s=30)
    start = time.monotonic()
    answers = model.answer([_q(0, "[429x2]"), _q(1)])
    assert time.monotonic() - start < 3
    assert answers[0].text == "echo: Q0" and answers[0].meta["attempts"] == 3
    assert len(server.requests_for("[429x2]")) == 3


def test_retry_on_500_then_success(server):
    [answer] = _model(server).answer([_q(0, "[500x1]")])
    assert answer.text == "echo: Q0" and answer.meta["attempts"] == 2


def test_retries_exhausted_on_500(server):
    answers = _model(server, max_retries=2).answer([_q(0, "[500x9]"), _q(1)])
    assert answers[0].text is None
    assert answers[0].error == "HTTP 500: internal error (gave up after 3 attempts)"
    assert answers[1].ok
    assert len(server.requests_for("[500x9]")) == 3


def test_timeout_is_a_per_item_error_after_retries():
    with FakeOpenAIServer(slow_s=2.0) as srv:
        model = _model(srv, timeout_s=0.2, max_retries=1)
        start = time.monotonic()
        answers = model.answer([_q(0), _q(1, "[slow]"), _q(2)])
        elapsed = time.monotonic() - start
    assert answers[0].ok and answers[2].ok
    assert answers[1].text is None
    assert answers[1].error == "timed out after 0.2 s (gave up after 2 attempts)"
    assert elapsed < 1.5


def test_400_is_not_retried(server):
    answers = _model(server).answer([_q(0, "[400]"), _q(1)])
    assert answers[0].error == "HTTP 400: Invalid image data"
    assert answers[0].meta["attempts"] == 1
    assert answers[1].ok
    assert len(server.requests_for("[400]")) == 1


@pytest.mark.parametrize(("marker", "message"), [("[badjson]", "malformed response: not JSON"),
                                                 ("[nochoices]", "malformed response: no choices")])
def test_malformed_response_is_a_per_item_error(server, marker, message):
    answers = _model(server).answer([_q(0, marker), _q(1)])
    assert answers[0].text is None and answers[0].error.startswith(message)
    assert answers[1].ok
    assert len(server.requests_for(marker)) == 1


def test_unreachable_server_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAICompatibleModel("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None,
                                  max_retries=1, backoff_s=0.01)
    with pytest.raises(SpatialForgeError, match="unreachable"):
        model.answer([_q(i) for i in range(10)])


def test_404_raises_config_error(server):
    with pytest.raises(ConfigError, match=r"HTTP 404: The model fake-vlm does not exist.*check the model name"):
        _model(server).answer([_q(i, "[404]") for i in range(6)])
    assert len(server.requests) <= 4  # the remaining items are not sent


# ---------------------------------------------------------------- the API key


def test_no_key_no_authorization_header(server):
    assert _model(server).answer([_q(0)])[0].ok
    assert "Authorization" not in server.requests[0].headers


def test_key_sent_as_bearer_and_never_leaked(server, monkeypatch):
    monkeypatch.setenv("SF_TEST_KEY", KEY)
    model = _model(server)
    answers = model.answer([_q(0), _q(1, "[400]")])
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert answers[0].ok and KEY not in answers[1].error
    description = json.dumps(model.describe())
    assert KEY not in description and "SF_TEST_KEY" in description
    assert KEY not in repr(model) and KEY not in json.dumps(vars(model), default=str)


def test_key_redacted_from_echoing_error_body(server, monkeypatch):
    monkeypatch.setenv("SF_TEST_KEY", KEY)
    with pytest.raises(ConfigError) as info:
        _model(server).answer([_q(0, "[401]")])
    message = str(info.value)
    assert KEY not in message and "HTTP 401" in message and "SF_TEST_KEY" in message
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_401_without_key_mentions_the_variable(server):
    with pytest.raises(ConfigError, match="set the environment variable SF_TEST_KEY"):
        _model(server).answer([_q(0, "[401]")])


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_server_that_needs_a_key_fails_at_once_naming_the_variable(monkeypatch, concurrency):
    """No key where the server needs one: one clear error, no retries, the other questions not sent."""
    items = [_q(i) for i in range(8)]
    with FakeOpenAIServer(api_key=KEY) as srv:
        with pytest.raises(ConfigError) as info:
            _model(srv, concurrency=concurrency, max_retries=4, backoff_s=5).answer(items)
        message = str(info.value)
        assert "API key is missing" in message and "SF_TEST_KEY" in message and "HTTP 401" in message
        texts = [r.user_text for r in srv.requests]
        assert len(texts) <= concurrency and len(set(texts)) == len(texts)  # at most one per worker, none retried
        monkeypatch.setenv("SF_TEST_KEY", "sk-wrong-key-000")
        with pytest.raises(ConfigError, match="API key in SF_TEST_KEY was rejected") as info:
            _model(srv, concurrency=1).answer(items)
        assert "sk-wrong-key-000" not in str(info.value)
        monkeypatch.setenv("SF_TEST_KEY", KEY)
        n = len(srv.requests)
        with pytest.raises(ConfigError, match=r"rejected.*HTTP 403"):  # a key without access: not retried
            _model(srv, concurrency=1).answer([_q(0, "[403]"), _q(1, "[403]")])
        assert len(srv.requests) == n + 1
        assert [a.ok for a in _model(srv).answer(items[:2])] == [True, True]


def test_the_official_endpoint_without_a_key_is_an_error_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sent = []
    monkeypatch.setattr(OpenAICompatibleModel, "_post", lambda self, *a: sent.append(a))
    with pytest.raises(ConfigError, match=r"API key is missing \(api.openai.com needs one\).*OPENAI_API_KEY"):
        build_model("openai:gpt-4o").answer([_q(0)])
    with pytest.raises(ConfigError, match="SF_TEST_KEY"):
        build_model("openai:gpt-4o", api_key_env="SF_TEST_KEY").answer([_q(0)])
    with pytest.raises(ConfigError, match="api_key_env is unset"):
        OpenAICompatibleModel("gpt-4o", api_key_env=None).answer([_q(0)])
    assert sent == []


def test_describe_without_secrets():
    model = OpenAICompatibleModel("gpt-4o", base_url="https://user:pw@example.com/v1?api-key=abc",
                                  extra_body={"api_key": "abc", "max_completion_tokens": 64})
    d = model.describe()
    assert d["name"] == "openai:gpt-4o" and d["base_url"] == "https://example.com/v1"
    assert d["extra_body"] == {"api_key": "***", "max_completion_tokens": 64}
    assert "abc" not in json.dumps(d) and "pw" not in json.dumps(d)
    assert isinstance(model, VQAModel)


def test_fingerprint_holds_what_decides_the_answers_and_no_secret():
    options = dict(base_url="https://user:pw@example.com/v1?api-key=abc", api_key_env="SF_TEST_KEY",
                   extra_body={"api_key": "abc", "top_p": 0.5})
    fp = OpenAICompatibleModel("gpt-4o", **options).fingerprint()
    assert "abc" not in json.dumps(fp) and "pw" not in json.dumps(fp)
    assert (fp["base_url"], fp["model"]) == ("https://example.com/v1", "gpt-4o")
    assert fp["generation"] == {"max_tokens": 128, "temperature": 0.0, "extra_body": {"api_key": "***", "top_p": 0.5}}
    assert fp["prompt"]["system_prompt"] == SYSTEM_PROMPT and fp["prompt"]["style"] == "default"
    # how requests are made does not decide the answers
    same = OpenAICompatibleModel("gpt-4o", **{**options, "api_key_env": None}, concurrency=9, max_retries=0,
                                 timeout_s=1)
    assert same.fingerprint() == fp
    for other in (dict(base_url="https://example.com/v2"), dict(temperature=0.5), dict(max_tokens=16),
                  dict(extra_body={"top_p": 0.9}), dict(send_image=False), dict(image_max_side=512),
                  dict(prompt_style="plain"), dict(system_prompt="")):
        assert OpenAICompatibleModel("gpt-4o", **{**options, **other}).fingerprint() != fp, other


# ---------------------------------------------------------------- blind mode


def test_blind_mode_sends_no_image(server):
    items = [_q(0), _item(1, image=None)]  # blind: an item without an image is fine
    blind = BlindModel(_model(server))
    answers = blind.answer(items)
    assert [a.ok for a in answers] == [True, True]
    assert blind.name == "blind:openai:fake-vlm"
    assert blind.describe()["inner"]["model"] == "fake-vlm"
    for rec in server.requests:
        assert rec.image_urls == []
        assert rec.user_text == build_prompt(items[0] if rec.user_text.startswith("Q0") else items[1],
                                             with_image=False)
        assert "No image is available" in rec.user_text


def test_send_image_false(server):
    _model(server, send_image=False).answer([_q(0)])
    assert server.requests[0].image_urls == []


def test_blind_rejects_model_without_use_image():
    class Old:
        name = "old"

        def answer(self, items, *, progress=False):
            return []

        def describe(self):
            return {}

    with pytest.raises(ConfigError, match="cannot answer without the image"):
        BlindModel(Old())


# ---------------------------------------------------------------- prompts


def test_build_prompt_forms():
    q = _item(0, "How far is the mug from the chair? ")
    assert build_prompt(q) == ("How far is the mug from the chair?\n"
                               "Answer directly with a single value and its unit of length.")
    assert build_prompt(q, "plain") == "How far is the mug from the chair?"
    assert build_prompt(q, with_image=False).endswith("No image is available; give your best guess.")
    yn = _item(1, "Is the mug left of the chair?", kind="yes_no", type="left_predicate", unit="bool", truth=True)
    assert build_prompt(yn).endswith("Answer directly with yes or no.")
    ch = _item(2, "Which is taller?", kind="choice", type="tall_choice", unit="option", truth=0,
               options=("the mug", "the chair"))
    assert build_prompt(ch).endswith("Answer directly with one of: the mug; the chair.")
    ck = _item(3, "At what clock?", type="clock_direction", unit="clock", truth=3)
    assert "hour from 1 to 12" in build_prompt(ck)
    with pytest.raises(ConfigError, match="prompt style"):
        build_prompt(q, "fancy")


# ---------------------------------------------------------------- prior baseline


def test_prior_defaults_and_phrasing():
    items = [
        _item(0, type="distance"),
        _item(1, type="width"),
        _item(2, type="height"),
        _item(3, type="height_ratio", unit="ratio"),
        _item(4, type="clock_direction", unit="clock", truth=3),
        _item(5, type="object_width_external"),  # keyword match
        _item(6, type="unknown_length"),  # unit fallback
        _item(7, kind="yes_no", type="left_predicate", unit="bool", truth=False),
        _item(8, kind="choice", type="tall_choice", unit="option", truth=1, options=("the mug", "the chair")),
    ]
    prior = PriorModel()
    texts = [a.text for a in prior.answer(items)]
    assert texts == ["about 1.5 meters", "about 0.5 meters", "about 0.8 meters", "about 1.0", "12 o'clock",
                     "about 0.5 meters", "about 1.5 meters", "yes", "the mug"]
    assert prior.name == "prior" and isinstance(prior, VQAModel)
    assert prior.describe()["values"]["distance"] == 1.5


def test_prior_overrides_and_errors():
    prior = PriorModel({"distance": 2, "clock": 3}, yes_no=False)
    items = [_item(0), _item(1, type="clock_direction", unit="clock", truth=3),
             _item(2, kind="yes_no", type="left_predicate", unit="bool", truth=False)]
    assert [a.text for a in prior.answer(items)] == ["about 2.0 meters", "12 o'clock", "no"]
    # clock_direction has its own entry; the unit entry is the fallback for other clock types
    assert prior.answer([_item(3, type="other_clock", unit="clock", truth=3)])[0].text == "3 o'clock"
    with pytest.raises(ConfigError, match="finite number"):
        PriorModel({"distance": "far"})
    with pytest.raises(ConfigError, match="clock"):
        PriorModel({"clock": 15})


def test_blind_prior():
    blind = build_model("blind:prior")
    assert blind.name == "blind:prior"
    assert blind.answer([_item(0)])[0].text == "about 1.5 meters"


# ---------------------------------------------------------------- specs


def test_build_model_openai_specs():
    m = build_model("openai:gpt-4o")
    assert isinstance(m, OpenAICompatibleModel) and m.name == "openai:gpt-4o"
    assert m.base_url == "https://api.openai.com/v1"
    m = build_model("openai:Qwen/Qwen2.5-VL-7B-Instruct@http://localhost:8000/v1/", concurrency=8)
    assert m.model == "Qwen/Qwen2.5-VL-7B-Instruct" and m.base_url == "http://localhost:8000/v1"
    assert m.concurrency == 8
    assert build_model("openai:claude@2024").model == "claude@2024"  # '@' without a URL is part of the name
    b = build_model("blind:openai:gpt-4o", timeout_s=5)
    assert isinstance(b, BlindModel) and b.inner.timeout_s == 5


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("", {}, "use one of: openai:<model>"),
    ("gpt-4o", {}, "unknown form"),
    ("openai:", {}, "model name is empty"),
    ("openai:@http://x/v1", {}, "model name is empty"),
    ("openai:m@http://x/v1", {"base_url": "http://y/v1"}, "both in the spec"),
    ("blind:", {}, "needs the spec"),
    ("prior:x", {}, "takes no argument"),
    ("hf:", {}, "is empty"),
    ("openai:gpt-4o", {"colour": "red"}, "unknown option 'colour'; accepted: base_url"),
    ("openai:gpt-4o", {"concurrency": 0}, "concurrency must be an integer >= 1"),
    ("openai:gpt-4o@ftp://x", {}, None),
])
def test_build_model_errors(spec, options, match):
    if match is None:  # '@ftp://' is not a URL form, so it stays in the name
        assert build_model(spec, **options).model == "gpt-4o@ftp://x"
        return
    with pytest.raises(ConfigError, match=match):
        build_model(spec, **options)


def test_build_model_hf_is_lazy(monkeypatch):
    class FakeHF:
        def __init__(self, model, *, dtype="auto"):
            self.name = f"hf:{model}"
            self.dtype = dtype

        def answer(self, items, *, progress=False, use_image=True):
            return [ModelAnswer(it.id, "x") for it in items]

        def describe(self):
            return {"backend": "hf"}

    module = types.ModuleType("spatialforge.eval.models.hf_vlm")
    module.HFVisionLanguageModel = FakeHF
    monkeypatch.setitem(sys.modules, "spatialforge.eval.models.hf_vlm", module)
    m = build_model("hf:Qwen/Qwen2.5-VL-3B-Instruct", dtype="bf16")
    assert m.name == "hf:Qwen/Qwen2.5-VL-3B-Instruct" and m.dtype == "bf16"
    assert build_model("blind:hf:/models/local").name == "blind:hf:/models/local"
    with pytest.raises(ConfigError, match="unknown option 'device_map'; accepted: dtype"):
        build_model("hf:x", device_map="auto")


def test_build_model_hf_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "spatialforge.eval.models.hf_vlm", None)
    with pytest.raises(ConfigError, match="'hf' model backend is not available"):
        build_model("hf:Qwen/Qwen2.5-VL-3B-Instruct")


def test_progress_bar(server, capsys):
    answers = _model(server).answer([_q(i) for i in range(3)], progress=True)
    assert [a.text for a in answers] == ["echo: Q0", "echo: Q1", "echo: Q2"]
    assert "openai:fake-vlm" in capsys.readouterr().err


def test_retry_helpers():
    assert retry_delay(1, backoff_s=1.0, retry_after=0.0) == 0.0
    assert retry_delay(1, backoff_s=1.0, retry_after=1e6) == 120.0
    d1 = retry_delay(1, backoff_s=1.0, key="q1")
    assert 0.5 <= d1 < 1.5 and d1 == retry_delay(1, backoff_s=1.0, key="q1")
    assert 2.0 <= retry_delay(3, backoff_s=1.0, key="q1") < 6.0
    assert retry_delay(30, backoff_s=1.0, key="q1") == 60.0
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "2"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_constructor_validation():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatibleModel("m", base_url="localhost:8000")
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatibleModel("m", base_url="http://localhost:port/v1")
    with pytest.raises(ConfigError, match="timeout_s"):
        OpenAICompatibleModel("m", timeout_s=0)
    with pytest.raises(ConfigError, match="extra_body"):
        OpenAICompatibleModel("m", extra_body={"x": object()})
    with pytest.raises(ConfigError, match="prompt style"):
        OpenAICompatibleModel("m", prompt_style="fancy")


def test_openai_accepts_the_local_backends_option_names():
    m = build_model("openai:x@http://127.0.0.1:9/v1", max_new_tokens=5, max_image_side=256)
    assert m.max_tokens == 5 and m.image_max_side == 256
