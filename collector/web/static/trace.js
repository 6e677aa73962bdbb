// One trace: the span tree as a waterfall, each LLM call's transcript beside its model's
// 7-day medians, raw attributes and the trace's log records.
"use strict";
(() => {
  const {el, api, send, thumbs, fmtMs, fmtTokens, fmtCost, fmtTime, messageText, nav, showError} = GC;
  const traceId = decodeURIComponent(location.pathname.split("/").pop());

  // Spans in tree order with their depth; orphans (parent not in the trace) are roots; a cycle
  // cannot loop (each span is placed once).
  function treeOrder(spans) {
    const ids = new Set(spans.map((s) => s.span_id));
    const children = new Map();
    for (const s of spans) {
      const parent = s.parent_span_id && ids.has(s.parent_span_id) && s.parent_span_id !== s.span_id ? s.parent_span_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    }
    const out = [];
    const placed = new Set();
    const visit = (s, depth) => {
      if (placed.has(s.span_id)) return;
      placed.add(s.span_id);
      out.push([s, depth]);
      for (const c of children.get(s.span_id) || []) visit(c, depth + 1);
    };
    for (const root of children.get(null) || []) visit(root, 0);
    for (const s of spans) visit(s, 0);
    return out;
  }

  function waterfall(spans) {
    const starts = spans.map((s) => Date.parse(s.start_time) + (Number(s.start_time.slice(20, 26)) % 1000) / 1000);
    const t0 = Math.min(...starts);
    const end = Math.max(...spans.map((s, i) => starts[i] + (s.duration_ms || 0)));
    const total = Math.max(end - t0, 1e-3);
    const index = new Map(spans.map((s, i) => [s.span_id, i]));
    return treeOrder(spans).map(([s, depth]) => {
      const left = (starts[index.get(s.span_id)] - t0) / total * 100;
      const width = Math.max((s.duration_ms || 0) / total * 100, 0.3);
      const bar = el("div", {className: "bar" + (s.status === "error" ? " err" : ""), style: {left: left + "%", width: Math.min(width, 100 - left) + "%"}});
      const name = s.model ? el("a", {href: "#span-" + s.span_id}, s.name) : s.name;
      return el("tr", {id: "row-" + s.span_id},
        el("td", {style: {paddingLeft: (6 + depth * 16) + "px"}}, name),
        el("td", {className: "bar-cell"}, el("div", {className: "track"}, bar)),
        el("td", {className: "num"}, fmtMs(s.duration_ms)),
        el("td", {className: "num"}, s.input_tokens === null && s.output_tokens === null ? "-" : fmtTokens(s.input_tokens) + "/" + fmtTokens(s.output_tokens)),
        el("td", {className: "num"}, fmtCost(s.cost_usd)),
        el("td", {className: s.status === "error" ? "status-error" : ""}, s.status + (s.status_message ? ": " + s.status_message : "")));
    });
  }

  function messageBox(role, text) {
    const kind = ["system", "user", "assistant"].includes(role) ? role : "tool";
    return el("div", {className: "msg " + kind}, el("span", {className: "role"}, role), text);
  }

  function transcript(span) {
    const out = [];
    for (const part of span.system_instructions || []) out.push(messageBox("system", typeof part === "string" ? part : messageText({parts: [part]})));
    for (const m of [...(span.input_messages || []), ...(span.output_messages || [])]) {
      out.push(messageBox(m && m.role ? String(m.role) : "message", messageText(m)));
    }
    return out.length ? out : [el("p", {className: "muted"}, "no messages recorded")];
  }

  function comparison(span) {
    const table = el("table", {className: "compare"},
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {className: "num"}, "this call"), el("th", {className: "num"}, "model, last 7 days"))));
    const tbody = el("tbody", {}, el("tr", {}, el("td", {colSpan: 3, className: "muted"}, "loading the model's medians…")));
    table.append(tbody);
    const model = span.response_model || span.request_model;
    const params = new URLSearchParams({by: "model", since: "7d", model: span.request_model || model});
    api("stats", params).then((stats) => {
      const g = stats.groups.find((x) => x.model === span.model) || stats.groups[0];
      const perCall = stats.cost_per_call.find((x) => x.model === (g && g.model));
      if (!g) { tbody.replaceChildren(el("tr", {}, el("td", {colSpan: 3, className: "muted"}, "no calls of this model in the last 7 days"))); return; }
      tbody.replaceChildren(
        el("tr", {}, el("td", {}, "latency"), el("td", {className: "num"}, fmtMs(span.duration_ms)), el("td", {className: "num"}, "p50 " + fmtMs(g.latency_p50_ms))),
        el("tr", {}, el("td", {}, "tokens in/out"), el("td", {className: "num"}, fmtTokens(span.input_tokens) + "/" + fmtTokens(span.output_tokens)),
          el("td", {className: "num"}, "avg " + fmtTokens(Math.round(g.input_tokens / g.requests)) + "/" + fmtTokens(Math.round(g.output_tokens / g.requests)))),
        el("tr", {}, el("td", {}, "cost"), el("td", {className: "num"}, fmtCost(span.cost_usd)), el("td", {className: "num"}, "p50 " + fmtCost(perCall ? perCall.cost_per_call_p50 : null))),
        el("tr", {}, el("td", {}, "TTFT"), el("td", {className: "num"}, fmtMs(span.ttft_ms)), el("td", {className: "num"}, "p50 " + fmtMs(g.ttft_p50_ms))));
    }).catch((error) => tbody.replaceChildren(el("tr", {}, el("td", {colSpan: 3, className: "error"}, error.message))));
    return table;
  }

  function raw(title, value) {
    if (value === null || value === undefined || (typeof value === "object" && !Object.keys(value).length)) return null;
    return el("details", {}, el("summary", {}, title), el("pre", {className: "raw"}, JSON.stringify(value, null, 2)));
  }

  function call(span) {
    const model = span.response_model || span.request_model || "";
    return el("section", {className: "transcript", id: "span-" + span.span_id},
      el("h2", {}, span.name + (span.name.includes(model) ? "" : " " + model) + " · " + fmtTime(span.start_time)),
      el("p", {}, "Was this answer good? ", thumbs(span, loadScores)),
      el("p", {className: "muted"}, `${span.provider || "-"} · ${fmtMs(span.duration_ms)} · ${fmtTokens(span.input_tokens)}/${fmtTokens(span.output_tokens)} tokens · ${fmtCost(span.cost_usd)}` +
        (span.session_id ? " · session " + span.session_id : "") + (span.user_id ? " · user " + span.user_id : "")),
      comparison(span),
      el("div", {className: "messages"}, transcript(span)),
      span.input_messages ? Replay.panel(span) : null,
      raw("span attributes", {...(span.attributes || {}), ...(span.content_attributes || {})}),
      raw("resource attributes", span.resource_attributes),
      raw("events", span.events), raw("links", span.links));
  }

  function logs(records) {
    if (!records.length) return el("p", {className: "muted"}, "no log records for this trace");
    const keys = Object.keys(records[0]).filter((k) => k !== "trace_id");
    return el("table", {}, el("thead", {}, el("tr", {}, keys.map((k) => el("th", {}, k)))),
      el("tbody", {}, records.map((r) => el("tr", {}, keys.map((k) => el("td", {className: "preview"}, typeof r[k] === "object" && r[k] !== null ? JSON.stringify(r[k]) : r[k]))))));
  }

  // Feedback and scores (docs/feedback.md): each with a button that removes it.
  function scores(items) {
    if (!items.length) return el("p", {className: "muted"}, "no feedback for this trace");
    const fmtValue = (v) => v === null || v === undefined ? "-" : String(v);
    return el("table", {className: "scores"},
      el("thead", {}, el("tr", {}, ["time (UTC)", "call", "name", "value", "label", "source", "author", "comment", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, items.map((s) => {
        // evaluation results (negative ids) go with their log records, not from here
        const remove = s.id > 0 ? el("button", {type: "button", className: "thumb", title: "remove this score"}, "remove") : null;
        remove?.addEventListener("click", async () => {
          try { await send("DELETE", "feedback/" + s.id); loadScores(); } catch (error) { showError(document.getElementById("message"), error); }
        });
        return el("tr", {className: "score", dataset: {span: s.span_id || ""}},
          el("td", {}, fmtTime(s.time)),
          el("td", {}, s.span_id ? el("a", {href: "#span-" + s.span_id}, s.span_id) : "(trace)"),
          el("td", {}, s.name), el("td", {className: "num"}, fmtValue(s.value)), el("td", {}, s.label || "-"),
          el("td", {}, s.source), el("td", {}, s.author || "-"), el("td", {className: "preview"}, s.comment || ""),
          el("td", {}, remove));
      })));
  }

  async function loadScores() {
    try {
      const answer = await api("traces/" + encodeURIComponent(traceId) + "/feedback");
      document.getElementById("scores").replaceChildren(scores(answer.items));
    } catch (error) {
      showError(document.getElementById("message"), error);
    }
  }

  async function load() {
    try {
      const trace = await api("traces/" + encodeURIComponent(traceId));
      const spans = trace.spans;
      document.getElementById("title").textContent = "trace " + trace.trace_id;
      const errors = spans.filter((s) => s.status === "error").length;
      const cost = spans.reduce((a, s) => a + (s.cost_usd || 0), 0);
      const services = [...new Set(spans.map((s) => s.service).filter(Boolean))].join(", ");
      document.getElementById("summary").textContent = GC.clean(`${fmtTime(spans[0].start_time)} · ${services || "-"} · ${spans.length} spans · ${errors} errors · ${fmtCost(cost)}`);
      document.querySelector("#waterfall tbody").replaceChildren(...waterfall(spans));
      const llm = spans.filter((s) => s.model || s.input_messages || s.output_messages);
      document.getElementById("calls").replaceChildren(...(llm.length ? llm.map(call) : [el("p", {className: "muted"}, "no LLM calls in this trace")]));
      document.getElementById("logs").replaceChildren(logs(trace.logs));
      document.getElementById("scores").replaceChildren(scores(trace.scores || []));
      if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
    } catch (error) {
      showError(document.getElementById("message"), error);
    }
  }

  nav("");
  load();
})();
