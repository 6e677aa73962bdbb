// One session as a chat timeline: each turn's question and answer with its tokens, cost, latency.
"use strict";
(() => {
  const {el, api, fmtMs, fmtTokens, fmtCost, fmtTime, messageText, nav, showError} = GC;
  const sessionId = decodeURIComponent(location.pathname.slice("/sessions/".length));

  function turn(t, number) {
    const question = (t.input_messages || []).filter((m) => m && m.role === "user").at(-1);
    const answers = t.output_messages || [];
    return el("section", {className: "turn", dataset: {turn: String(number)}},
      el("div", {className: "meta"}, `turn ${number} · ${fmtTime(t.start_time)} · ${t.response_model || t.request_model || "-"} · ` +
        `${fmtTokens(t.input_tokens)}/${fmtTokens(t.output_tokens)} tokens · ${fmtCost(t.cost_usd)} · ${fmtMs(t.duration_ms)}` +
        (t.status === "error" ? " · error" : "") + " · ",
        el("a", {href: "/traces/" + encodeURIComponent(t.trace_id) + "#span-" + encodeURIComponent(t.span_id)}, "trace")),
      question ? el("div", {className: "msg user"}, el("span", {className: "role"}, "user"), messageText(question)) : null,
      answers.map((m) => el("div", {className: "msg assistant"}, el("span", {className: "role"}, m && m.role ? String(m.role) : "assistant"), messageText(m))),
      t.status === "error" ? el("p", {className: "error"}, t.status_message || t.error_type || "error") : null);
  }

  async function load() {
    try {
      const found = await api("sessions/" + encodeURIComponent(sessionId));
      const s = found.session;
      document.getElementById("title").textContent = "session " + GC.clean(s.session_id);
      document.getElementById("summary").textContent = GC.clean(`user ${s.user_id || "-"} · ${fmtTime(s.start_time)} · ${fmtMs(s.duration_ms)} · ` +
        `${s.turns} turns · ${fmtTokens(s.input_tokens)}/${fmtTokens(s.output_tokens)} tokens · ${fmtCost(s.cost_usd)} · ${s.error_count} errors`);
      document.getElementById("turns").replaceChildren(...found.turns.map((t, i) => turn(t, i + 1)));
    } catch (error) {
      showError(document.getElementById("message"), error);
    }
  }

  nav("/sessions");
  load();
})();
