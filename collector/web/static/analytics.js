// Charts over 24 h / 7 d / 30 d / 90 d from two /api/v1/stats answers: by time bucket, and by
// model and time bucket (per-day percentiles cannot be merged from per-model ones).
"use strict";
(() => {
  const {el, api, nav, showError} = GC;
  const RANGES = {"24h": "hour", "7d": "day", "30d": "day", "90d": "day"};
  const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  const charts = {};
  const range = RANGES[new URLSearchParams(location.search).get("range")] ? new URLSearchParams(location.search).get("range") : "7d";
  const bucket = RANGES[range];

  function draw(id, type, labels, datasets, options = {}) {
    charts[id]?.destroy();
    charts[id] = new Chart(document.getElementById(id), {
      type, data: {labels, datasets: datasets.map((d, i) => ({borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], ...d}))},
      options: {animation: false, maintainAspectRatio: false, responsive: true, ...options},
    });
  }

  async function load() {
    const since = new URLSearchParams({since: range, by: bucket});
    const byModel = new URLSearchParams({since: range, by: "model," + bucket, top: "10"});
    try {
      const [overTime, perModel] = await Promise.all([api("stats", since), api("stats", byModel)]);
      const groups = overTime.groups;
      const labels = groups.map((g) => g[bucket]);
      draw("volume", "bar", labels, [{label: "calls", data: groups.map((g) => g.requests)}]);
      draw("latency", "line", labels, ["p50", "p95", "p99"].map((p) => ({label: p, data: groups.map((g) => g["latency_" + p + "_ms"])})));
      draw("errors", "line", labels, [{label: "error rate %", data: groups.map((g) => g.error_rate * 100)}]);
      draw("ttft", "line", labels, ["p50", "p95"].map((p) => ({label: p, data: groups.map((g) => g["ttft_" + p + "_ms"])})));
      const models = [...new Set(perModel.groups.map((g) => g.model))];
      const cost = new Map(perModel.groups.map((g) => [g.model + "\u0000" + g[bucket], g.cost_usd]));
      draw("cost", "bar", labels, models.map((m) => ({label: GC.clean(m), data: labels.map((b) => cost.get(m + "\u0000" + b) || 0)})),
        {scales: {x: {stacked: true}, y: {stacked: true}}});
      const users = perModel.top_users;
      draw("users", "bar", users.map((u) => GC.clean(u.user_id)), [{label: "spend", data: users.map((u) => u.cost_usd)}], {indexAxis: "y"});
      const perCall = perModel.cost_per_call;
      draw("percall", "bar", perCall.map((r) => GC.clean(r.model)), ["avg", "p50", "p95"].map((k) => ({label: k, data: perCall.map((r) => r["cost_per_call_" + k])})));
      document.body.dataset.drawn = String(groups.length);
    } catch (error) {
      showError(document.getElementById("message"), error);
    }
  }

  nav("/analytics");
  document.getElementById("ranges").replaceChildren(...Object.keys(RANGES).map((r) =>
    el("a", {href: "/analytics?range=" + r, className: r === range ? "active" : ""}, r)));
  load();
})();
