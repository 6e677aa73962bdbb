"""The web pages in a real headless browser (Debian's chromium through Playwright): the calls
table lists the stored calls, a model filter narrows it, a click opens the trace with its
transcript, a session reads as turns in order, the analytics page draws its charts, and a hostile
prompt renders inert (no dialog, no script run, shown as text)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from collector.model import STATUS_OK, GenAI, Resource, Scope, Span
from tests.query_dataset import MS_NS, load, make_dataset
from tests.web_helpers import get_json, serve

CHROMIUM = "/usr/bin/chromium"
HOSTILE_PROMPT = ('<script>window.__pwned = 1; alert(1)</script><img src=x onerror="window.__pwned = 2; alert(2)">'
                  '\x1b[2J\x1b]0;title\x07 plain words')
HOSTILE_TRACE = "feedfacefeedfacefeedfacefeedface"


def _hostile_span(start_ns: int) -> Span:
    resource = Resource({"service.name": "<b>svc</b>"})
    genai = GenAI(provider="openai", operation="chat", request_model="gpt-4o", response_model="gpt-4o",
                  input_tokens=5, output_tokens=5, cost_usd=0.001, session_id="<i>s-hostile</i>",
                  user_id="\x1b[31mred\x1b[0m",
                  input_messages=[{"role": "user", "parts": [{"type": "text", "content": HOSTILE_PROMPT}]}],
                  output_messages=[{"role": "assistant", "parts": [{"type": "text", "content": "<svg onload=alert(3)>"}]}])
    return Span(resource=resource, scope=Scope("t", "1"), trace_id=bytes.fromhex(HOSTILE_TRACE),
                span_id=bytes.fromhex("0badc0de0badc0de"), parent_span_id=b"", name="chat <u>gpt-4o</u>", kind=3,
                start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + 50 * MS_NS, status_code=STATUS_OK,
                genai=genai)


@pytest.fixture(scope="module")
def dataset():
    data = make_dataset()
    data.spans.append(_hostile_span(data.base_ns + 3 * MS_NS))  # the oldest call: last in the table
    return data


@pytest.fixture(scope="module")
def site(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("ui") / "store.db"
    load("sqlite", {"path": str(path)}, dataset)
    with serve(str(path)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is required in CI (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    # a CSP violation is logged to the console: the vendored chart library must need no exception
    page.on("console", lambda m: page.errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield page
    context.close()


def _model(span) -> str:
    return span.genai.response_model or span.genai.request_model


def _rows(page) -> list[list[str]]:
    page.wait_for_selector("#calls tbody tr.call")
    return page.eval_on_selector_all("#calls tbody tr.call", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_calls_table_lists_the_calls_and_a_model_filter_narrows_it(page, site, dataset):
    page.goto(f"{site}/calls")
    rows = _rows(page)
    calls = [s for s in dataset.spans if s.genai is not None and s.genai.model]
    assert len(rows) == min(50, len(calls))
    newest = max(calls, key=lambda s: s.start_time_unix_nano)
    assert rows[0][3] == _model(newest) and rows[0][1] == newest.resource.attributes["service.name"]

    page.fill("input[name=model]", "claude-sonnet-4")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"model=claude-sonnet-4"))
    page.wait_for_function("() => [...document.querySelectorAll('#calls tbody tr.call td:nth-child(4)')]"
                           ".every(td => td.textContent === 'claude-sonnet-4')")
    narrowed = _rows(page)
    assert len(narrowed) == sum(_model(s) == "claude-sonnet-4" for s in calls) < len(rows)
    export = page.get_attribute("#export", "href")
    assert "model=claude-sonnet-4" in export and "format=csv" in export

    page.reload()  # the URL carries the filter (a deep link)
    assert len(_rows(page)) == len(narrowed)
    assert page.input_value("input[name=model]") == "claude-sonnet-4"
    page.click("th[data-sort=cost]")
    page.wait_for_url(re.compile(r"sort=cost"))
    assert not page.errors and not page.dialogs


def test_clicking_a_call_opens_its_trace_with_the_transcript(page, site, dataset):
    page.goto(f"{site}/calls")
    _rows(page)
    first = page.locator("#calls tbody tr.call").first
    first.locator("td.preview").click()
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}"))
    trace_id = page.url.split("/traces/")[1].split("#")[0]
    page.wait_for_selector(".transcript .msg.user")
    spans = [s for s in dataset.spans if s.trace_id.hex() == trace_id]
    prompts = [s.genai.input_messages[0]["parts"][0]["content"] for s in spans if s.genai and s.genai.input_messages]
    shown = page.eval_on_selector_all(".transcript .msg.user", "els => els.map(e => e.lastChild.textContent)")
    assert shown == prompts
    assert page.locator("#waterfall tbody tr").count() == len(spans)
    page.wait_for_selector(".compare td:has-text('p50')")  # beside the model's 7-day medians
    assert not page.errors


def test_session_page_shows_turns_in_order(page, site):
    status, session = get_json(f"{site}/api/v1/sessions/s1")
    assert status == 200
    page.goto(f"{site}/sessions")
    page.click("a[href='/sessions/s1']")
    page.wait_for_selector("section.turn")
    numbers = page.eval_on_selector_all("section.turn", "els => els.map(e => Number(e.dataset.turn))")
    questions = page.eval_on_selector_all("section.turn .msg.user", "els => els.map(e => e.lastChild.textContent)")
    assert numbers == list(range(1, len(session["turns"]) + 1))
    assert questions == [t["input_messages"][0]["parts"][0]["content"] for t in session["turns"]]
    starts = [t["start_time"] for t in session["turns"]]
    assert starts == sorted(starts)


def test_analytics_page_draws_its_charts(page, site):
    page.goto(f"{site}/analytics?range=30d")
    page.wait_for_selector("body[data-drawn]")
    drawn = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
        const chart = Chart.getChart(c);
        const points = chart ? chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v !== null).length, 0) : 0;
        const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let ink = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) ink++;
        return [c.id, points, ink];
    })""")
    assert len(drawn) == 7
    for name, points, ink in drawn:
        assert points > 0 and ink > 500, name
    assert not page.errors


def test_hostile_prompt_renders_inert(page, site):
    page.goto(f"{site}/traces/{HOSTILE_TRACE}")
    page.wait_for_selector(".transcript .msg.user")
    text = page.text_content(".transcript .msg.user")
    assert "<script>window.__pwned = 1; alert(1)</script>" in text and '<img src=x onerror="' in text
    assert "\\x1b[2J" in text and "\x1b" not in text  # the escape shown, never the raw byte
    assert page.text_content(".transcript .msg.assistant").endswith("<svg onload=alert(3)>")
    assert page.locator("main img, main svg, main script:not([src]), main b, main u").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    page.goto(f"{site}/calls?offset=50")  # the same call in the calls table and a session link
    page.wait_for_selector("#calls tbody tr.call")
    assert page.locator("#calls tbody td:has-text('<i>s-hostile</i>')").count() == 1
    assert page.locator("main img, main i, main b").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.errors == []
