"""``POST /api/v1/replay`` over real HTTP (uvicorn on a free port) against the fake
OpenAI-compatible server, and the trace page's Replay button in a real headless browser."""

from __future__ import annotations

import json

import pytest

from tests import fake_openai
from tests.fake_openai import FakeOpenAI
from tests.storage_helpers import hexid
from tests.test_replay import SECRET, store  # noqa: F401 - the stored calls fixture
from tests.test_web_ui_browser import browser, page  # noqa: F401 - chromium fixtures
from tests.web_helpers import request, serve

TOKEN = "replay-test-token-0123456789"


def post(url: str, body, token: str | None = TOKEN, content_type: str = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, answer = request(url, token, {"Content-Type": content_type}, data)
    return status, json.loads(answer)


@pytest.fixture
def site(store, monkeypatch):  # noqa: F811
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        with serve(store, TOKEN) as base:
            yield base, fake


def test_replay_endpoint_answers_like_the_cli(site):
    base, fake = site
    status, doc = post(f"{base}/api/v1/replay", {"trace_id": hexid(1, 16), "model": "gpt-4o-mini",
                                                 "system": "Be brief.", "record": True})
    assert status == 200, doc
    assert doc["replay"]["answer"] == fake_openai.ANSWER and doc["original"]["answer"] == "Paris, I think."
    assert fake.requests[-1]["model"] == "gpt-4o-mini"
    assert fake.requests[-1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert fake.headers[-1]["Authorization"] == f"Bearer {SECRET}"  # the server's key, not the client's
    assert doc["recorded"]["trace_id"] and SECRET not in json.dumps(doc)
    status, _, body = request(f"{base}/api/v1/traces/{doc['recorded']['trace_id']}", TOKEN)
    trace = json.loads(body)
    assert status == 200 and trace["spans"][0]["attributes"]["replay.of"] == hexid(101, 8)


def test_replay_endpoint_errors(site):
    base, fake = site
    url = f"{base}/api/v1/replay"
    assert post(url, {"trace_id": hexid(1, 16)}, token=None)[0] == 401
    assert post(url, {"trace_id": hexid(1, 16)}, content_type="text/plain")[0] == 415
    assert post(url, b"{not json")[0] == 400
    status, doc = post(url, {"trace_id": hexid(1, 16), "temperature": "hot"})
    assert status == 400 and doc["error"].startswith("temperature:")
    assert post(url, {"trace_id": hexid(1, 16), "colour": 1})[0] == 400
    assert post(url, {})[0] == 400
    assert post(url, {"trace_id": "ab" * 16})[0] == 404
    status, doc = post(url, {"trace_id": hexid(4, 16)})
    assert status == 422 and "sampled out" in doc["error"]
    status, doc = post(url, {"trace_id": hexid(5, 16)})
    assert status == 422 and "redacted" in doc["error"]
    assert fake.requests == []
    status, doc = post(url, {"trace_id": hexid(1, 16), "model": fake_openai.FAILING_MODEL})
    assert status == 502 and "overloaded" in doc["error"] and SECRET not in doc["error"]


def test_replay_button_on_the_trace_page(site, page):  # noqa: F811
    base, fake = site
    page.goto(f"{base}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.goto(f"{base}/traces/{hexid(1, 16)}")
    page.click("details.replay-panel summary")
    page.fill("form.replay input[name=model]", "gpt-4o-mini")
    page.fill("form.replay textarea[name=system]", "Answer in French.")
    page.click("button.replay-button")
    page.wait_for_selector(".replay-answer", timeout=30_000)
    assert fake_openai.ANSWER in page.inner_text(".replay-answer")
    assert "+The capital of France is Paris." in page.inner_text(".replay-diff")
    assert fake.requests[-1]["model"] == "gpt-4o-mini"
    assert fake.requests[-1]["messages"][0]["content"] == "Answer in French."
    assert page.errors == [] and page.dialogs == []
