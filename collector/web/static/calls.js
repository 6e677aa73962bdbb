// The calls table: filters, sort and page live in the URL (deep links); live refresh every 5 s.
"use strict";
(() => {
  const {el, api, thumbs, fmtMs, fmtTokens, fmtCost, fmtTime, preview, nav, showError} = GC;
  const FILTERS = ["since", "model", "provider", "service", "status", "user", "session", "search", "attr", "min_cost", "min_latency_ms"];
  const LIMIT = 50;
  const form = document.getElementById("filters");
  const body = document.querySelector("#calls tbody");
  const message = document.getElementById("message");
  let timer = null;
  const given = new Map();  // span id -> thumb given from this page: kept across live refreshes

  function state() {
    return new URLSearchParams(location.search);
  }

  function filterParams(params) {
    const out = new URLSearchParams();
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value) out.set(name, value);
    }
    return out;
  }

  function fillForm(params) {
    for (const name of FILTERS) form.elements[name].value = params.get(name) || "";
  }

  function row(call) {
    const link = "/traces/" + encodeURIComponent(call.trace_id) + "#span-" + encodeURIComponent(call.span_id);
    const tr = el("tr", {className: "call", dataset: {href: link}},
      el("td", {}, el("a", {href: link}, fmtTime(call.start_time))),
      el("td", {}, call.service), el("td", {}, call.name),
      el("td", {}, call.response_model || call.request_model),
      el("td", {className: "num"}, fmtTokens(call.input_tokens) + "/" + fmtTokens(call.output_tokens)),
      el("td", {className: "num"}, fmtCost(call.cost_usd)),
      el("td", {className: "num"}, fmtMs(call.duration_ms)),
      el("td", {className: "num"}, fmtMs(call.ttft_ms)),
      el("td", {className: call.status === "error" ? "status-error" : ""}, call.status),
      el("td", {}, call.session_id ? el("a", {href: "/sessions/" + encodeURIComponent(call.session_id)}, call.session_id) : "-"),
      el("td", {}, call.user_id || "-"),
      el("td", {className: "preview"}, preview(call.input_messages, "user")),
      el("td", {}, thumbs(call, (score) => given.set(call.span_id, score.value), given.get(call.span_id))));
    tr.addEventListener("click", (event) => {
      if (!(event.target instanceof HTMLAnchorElement)) location.assign(tr.dataset.href);
    });
    return tr;
  }

  async function load() {
    const params = state();
    const query = filterParams(params);
    const sort = params.get("sort") || "time";
    const offset = Number(params.get("offset") || 0);
    query.set("sort", sort);
    query.set("limit", String(LIMIT));
    query.set("offset", String(offset));
    document.querySelectorAll("th[data-sort]").forEach((th) => th.classList.toggle("sorted", th.dataset.sort === sort));
    const exportQuery = filterParams(params);
    exportQuery.set("format", "csv");
    document.getElementById("export").setAttribute("href", "/api/v1/export?" + exportQuery.toString());
    try {
      const page = await api("calls", query);
      body.replaceChildren(...page.items.map(row));
      if (!page.items.length) body.replaceChildren(el("tr", {}, el("td", {colSpan: 13, className: "muted"}, "no calls match")));
      message.replaceChildren();
      document.getElementById("page").textContent = page.items.length ? `${offset + 1}–${offset + page.items.length}` : "";
      document.getElementById("prev").disabled = offset === 0;
      document.getElementById("next").disabled = page.next_offset === null;
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      showError(message, error);
    }
  }

  function go(params, push = true) {
    const url = location.pathname + (params.toString() ? "?" + params.toString() : "");
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
    load();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const sort = state().get("sort");
    if (sort) params.set("sort", sort);
    go(params);
  });
  document.getElementById("clear").addEventListener("click", () => { fillForm(new URLSearchParams()); go(new URLSearchParams()); });
  document.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    const params = state();
    params.set("sort", th.dataset.sort);
    params.delete("offset");
    go(params);
  }));
  function page(step) {
    const params = state();
    const offset = Math.max(0, Number(params.get("offset") || 0) + step * LIMIT);
    if (offset) params.set("offset", String(offset)); else params.delete("offset");
    go(params);
  }
  document.getElementById("prev").addEventListener("click", () => page(-1));
  document.getElementById("next").addEventListener("click", () => page(1));
  const live = document.getElementById("live");
  function schedule() {
    clearInterval(timer);
    timer = live.checked ? setInterval(load, 5000) : null;
  }
  live.addEventListener("change", schedule);
  window.addEventListener("popstate", () => { fillForm(state()); load(); });

  nav("/calls");
  fillForm(state());
  load();
  schedule();
})();
