"""Thumbs in a real headless browser (Debian's chromium through Playwright): thumbs-down on a
call in the calls table is stored (the row does not navigate away) and shows on the trace page;
thumbs-up on the trace page adds a score there, and a score can be removed; no CSP violation."""

from __future__ import annotations

import re

import pytest

from tests.query_dataset import load, make_dataset
from tests.test_web_ui_browser import browser, page  # noqa: F401 - the shared browser fixtures
from tests.web_helpers import get_json, serve


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "store.db"
    load("sqlite", {"path": str(path)}, make_dataset(n_traces=4, seed=3))
    with serve(str(path)) as base:
        yield base


def test_thumbs_down_on_a_call_shows_on_its_trace_page(page, site):  # noqa: F811
    page.goto(f"{site}/calls")
    page.wait_for_selector("#calls tbody tr.call")
    page.uncheck("#live")  # a refresh would replace the row while its score is being sent
    row = page.locator("#calls tbody tr.call").first
    link = row.locator("a").first.get_attribute("href")
    trace_id, span_id = re.match(r"/traces/([0-9a-f]{32})#span-([0-9a-f]{16})", link).groups()
    row.locator("button[aria-label='thumbs down']").click()
    page.wait_for_selector("#calls tbody tr.call >> nth=0 >> button.thumb.chosen")
    assert page.url.endswith("/calls")  # the click scored the call, it did not open it
    # the table drawn anew (a sort click, as a live refresh does): the row keeps its thumb
    page.eval_on_selector_all("#calls tbody tr.call", "rows => rows.forEach(r => { r.dataset.old = '1'; })")
    page.click("th[data-sort=time]")
    page.wait_for_function("() => { const r = document.querySelector('#calls tbody tr.call'); return r && !r.dataset.old; }")
    redrawn = page.locator("#calls tbody tr.call").first
    assert redrawn.locator("a").first.get_attribute("href") == link
    assert redrawn.locator("button.thumb.chosen").get_attribute("data-value") == "0"

    status, stored = get_json(f"{site}/api/v1/traces/{trace_id}/feedback")
    assert status == 200
    assert [(s["span_id"], s["name"], s["value"], s["source"]) for s in stored["items"]] == [
        (span_id, "thumbs", 0.0, "user")]

    page.goto(f"{site}/traces/{trace_id}")
    page.wait_for_selector("#scores tr.score")
    cells = page.eval_on_selector_all("#scores tr.score td", "tds => tds.map(td => td.textContent)")
    assert cells[1:6] == [span_id, "thumbs", "0", "-", "user"]

    page.locator(f"#span-{span_id} button[aria-label='thumbs up']").click()
    page.wait_for_function("() => document.querySelectorAll('#scores tr.score').length === 2")
    page.locator("#scores tr.score button").first.click()  # remove the thumbs-down
    page.wait_for_function("() => document.querySelectorAll('#scores tr.score').length === 1")
    assert [s["value"] for s in get_json(f"{site}/api/v1/traces/{trace_id}/feedback")[1]["items"]] == [1.0]
    assert not page.errors and not page.dialogs
