// Sessions with turns, duration, tokens and cost; filters and page in the URL.
"use strict";
(() => {
  const {el, api, fmtMs, fmtTokens, fmtCost, fmtTime, nav, showError} = GC;
  const FIELDS = ["since", "user", "model", "search", "sort"];
  const LIMIT = 50;
  const form = document.getElementById("filters");

  async function load() {
    const params = new URLSearchParams(location.search);
    const query = new URLSearchParams();
    for (const name of FIELDS) {
      const value = params.get(name);
      form.elements[name].value = value || (name === "sort" ? "time" : "");
      if (value) query.set(name, value);
    }
    const offset = Number(params.get("offset") || 0);
    query.set("limit", String(LIMIT));
    query.set("offset", String(offset));
    try {
      const page = await api("sessions", query);
      document.querySelector("#sessions tbody").replaceChildren(...page.items.map((s) => {
        const href = "/sessions/" + encodeURIComponent(s.session_id);
        return el("tr", {},
          el("td", {}, fmtTime(s.start_time)), el("td", {}, el("a", {href}, s.session_id)), el("td", {}, s.user_id || "-"),
          el("td", {className: "num"}, s.turns), el("td", {className: "num"}, fmtMs(s.duration_ms)),
          el("td", {className: "num"}, fmtTokens(s.input_tokens) + "/" + fmtTokens(s.output_tokens)),
          el("td", {className: "num"}, fmtCost(s.cost_usd)),
          el("td", {className: "num" + (s.error_count ? " status-error" : "")}, s.error_count || ""));
      }));
      document.getElementById("page").textContent = page.items.length ? `${offset + 1}–${offset + page.items.length}` : "no sessions match";
      document.getElementById("prev").disabled = offset === 0;
      document.getElementById("next").disabled = page.next_offset === null;
    } catch (error) {
      showError(document.getElementById("message"), error);
    }
  }

  function go(params) {
    history.pushState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
    load();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of FIELDS) if (form.elements[name].value.trim()) params.set(name, form.elements[name].value.trim());
    go(params);
  });
  for (const [id, step] of [["prev", -1], ["next", 1]]) {
    document.getElementById(id).addEventListener("click", () => {
      const params = new URLSearchParams(location.search);
      const offset = Math.max(0, Number(params.get("offset") || 0) + step * LIMIT);
      if (offset) params.set("offset", String(offset)); else params.delete("offset");
      go(params);
    });
  }
  window.addEventListener("popstate", load);
  nav("/sessions");
  load();
})();
