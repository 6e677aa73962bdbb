// The Replay panel under each LLM call of the trace page: send the call again (model and system
// prompt editable) through POST /api/v1/replay, then show both answers, their tokens, latency
// and cost, and the diff. Listeners only (the CSP forbids inline handlers); text via el().
"use strict";

const Replay = (() => {
  const {el, send, fmtMs, fmtTokens, fmtCost, messageText, showError} = GC;

  function systemText(span) {
    return (span.system_instructions || []).map((p) => typeof p === "string" ? p : messageText({parts: [p]})).join("\n");
  }

  function result(r) {
    const row = (label, a, b) => el("tr", {}, el("td", {}, label), el("td", {className: "num"}, a), el("td", {className: "num"}, b));
    const tokens = (x) => fmtTokens(x.input_tokens) + "/" + fmtTokens(x.output_tokens);
    return [
      el("table", {className: "compare"},
        el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {className: "num"}, "stored"), el("th", {className: "num"}, "replay"))),
        el("tbody", {}, row("model", r.original.model || "-", r.replay.model || "-"),
          row("tokens in/out", tokens(r.original), tokens(r.replay)),
          row("latency", fmtMs(r.original.latency_ms), fmtMs(r.replay.latency_ms)),
          row("cost", fmtCost(r.original.cost_usd), fmtCost(r.replay.cost_usd)))),
      el("div", {className: "msg assistant replay-answer"}, el("span", {className: "role"}, "replay"), r.replay.answer),
      el("pre", {className: "raw replay-diff"}, r.diff || "(same answer)"),
      r.recorded ? el("p", {className: "muted"}, "recorded as ", el("a", {href: "/traces/" + r.recorded.trace_id}, "trace " + r.recorded.trace_id)) : null,
    ];
  }

  function panel(span) {
    const model = el("input", {type: "text", name: "model", value: span.request_model || span.response_model || ""});
    const system = el("textarea", {name: "system", rows: 3, value: systemText(span)});
    const record = el("input", {type: "checkbox", name: "record"});
    const button = el("button", {type: "submit", className: "replay-button"}, "Replay");
    const out = el("div", {className: "replay-result"});
    const form = el("form", {className: "replay"},
      el("label", {}, "model ", model), el("label", {}, "system prompt", system),
      el("label", {}, record, " record the replay"), button);
    const original = systemText(span);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      out.replaceChildren(el("p", {className: "muted"}, "waiting for the model…"));
      const body = {trace_id: span.trace_id, span_id: span.span_id, model: model.value.trim() || null, record: record.checked};
      if (system.value !== original) body.system = system.value;
      try {
        out.replaceChildren(...result(await send("POST", "replay", body)));
      } catch (error) {
        showError(out, error);
      } finally {
        button.disabled = false;
      }
    });
    return el("details", {className: "replay-panel"}, el("summary", {}, "Replay this call"), form, out);
  }

  return {panel};
})();
