// Shared by every page: API calls, safe DOM building, number formats, the navigation bar.
// Span data is attacker-controlled: it only ever reaches the page through textContent (el()),
// never innerHTML, and control characters are shown escaped (clean()), as the CLI does.
"use strict";

const GC = (() => {
  const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

  function clean(value) {
    if (value === null || value === undefined) return "";
    return String(value).replace(CONTROLS, (c) => {
      const code = c.charCodeAt(0);
      return code < 0x100 ? "\\x" + code.toString(16).padStart(2, "0") : "\\u" + code.toString(16).padStart(4, "0");
    });
  }

  // el("a", {href: "/x", className: "y"}, "text", child...): text children are set as text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "href") {
        node.setAttribute("href", safeHref(value));
      } else if (key === "dataset") {
        Object.assign(node.dataset, value);
      } else if (key === "style") {
        Object.assign(node.style, value);
      } else {
        node[key] = value;
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(clean(child)));
    }
    return node;
  }

  function safeHref(href) {
    return typeof href === "string" && href.startsWith("/") && !href.startsWith("//") ? href : "#";
  }

  async function api(path, params) {
    const query = params ? "?" + params.toString() : "";
    const response = await fetch("/api/v1/" + path + query, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (response.status === 401) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new Error("authentication required");
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // A write (feedback): JSON in and out; a refusal's message is thrown.
  async function send(method, path, document) {
    const init = {method, credentials: "same-origin", headers: {Accept: "application/json"}};
    if (document !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(document);
    }
    const response = await fetch("/api/v1/" + path, init);
    if (response.status === 401) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new Error("authentication required");
    }
    const body = response.status === 204 ? null : await response.json();
    if (!response.ok) throw new Error(body && body.error || response.statusText);
    return body;
  }

  // Thumbs up / down for one call: POST /api/v1/feedback (name "thumbs", value 1 / 0, source
  // "user"), then onDone(score); `chosen` (1 / 0) marks a thumb already given from this page.
  // Buttons, not links: no inline handler anywhere (CSP).
  function thumbs(call, onDone, chosen) {
    const box = el("span", {className: "thumbs"});
    const button = (value, label, text) => {
      const b = el("button", {type: "button", className: "thumb" + (chosen === value ? " chosen" : ""), title: label, dataset: {value: String(value)}}, text);
      b.setAttribute("aria-label", label);
      b.addEventListener("click", async (event) => {
        event.stopPropagation();
        box.querySelectorAll("button").forEach((x) => { x.disabled = true; });
        try {
          const score = await send("POST", "feedback", {trace_id: call.trace_id, span_id: call.span_id,
            session_id: call.session_id || undefined, name: "thumbs", value, source: "user"});
          b.classList.add("chosen");
          box.dataset.scoreId = String(score.id);
          if (onDone) onDone(score);
        } catch (error) {
          box.replaceChildren(el("span", {className: "error"}, String(error.message || error)));
        }
      });
      return b;
    };
    box.append(button(1, "thumbs up", "\u{1F44D}"), button(0, "thumbs down", "\u{1F44E}"));
    return box;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1) return ms.toFixed(2) + "ms";
    if (ms < 1000) return ms.toFixed(0) + "ms";
    if (ms < 60000) return (ms / 1000).toFixed(2) + "s";
    const m = Math.floor(ms / 60000);
    if (m < 60) return m + "m" + String(Math.floor(ms / 1000) % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  }

  function fmtTokens(n) {
    if (n === null || n === undefined) return "-";
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1e3).toFixed(1) + "k";
    return (n / 1e6).toFixed(1) + "M";
  }

  function fmtCost(usd) {
    if (usd === null || usd === undefined) return "-";
    if (usd === 0) return "$0";
    if (usd < 0.01) return "$" + usd.toFixed(5);
    return "$" + usd.toFixed(usd < 10 ? 4 : 2);
  }

  function fmtTime(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "-";
  }

  function fmtPct(ratio) {
    return ratio === null || ratio === undefined ? "-" : (ratio * 100).toFixed(1) + "%";
  }

  // One message's text: OTel GenAI parts (text / tool_call / tool_call_response) or plain content.
  function partText(part) {
    if (typeof part === "string") return part;
    if (!part || typeof part !== "object") return JSON.stringify(part);
    if (part.type === "text" || part.content !== undefined && part.type === undefined) return String(part.content ?? "");
    if (part.type === "tool_call") return "tool call " + (part.name || "") + "(" + JSON.stringify(part.arguments ?? {}) + ")";
    if (part.type === "tool_call_response") return "tool result: " + (typeof part.response === "string" ? part.response : JSON.stringify(part.response));
    return JSON.stringify(part);
  }

  function messageText(message) {
    if (typeof message === "string") return message;
    if (!message || typeof message !== "object") return JSON.stringify(message);
    if (Array.isArray(message.parts)) return message.parts.map(partText).join("\n");
    if (message.content !== undefined) return typeof message.content === "string" ? message.content : JSON.stringify(message.content);
    return JSON.stringify(message);
  }

  function preview(messages, role, limit = 120) {
    const list = Array.isArray(messages) ? messages : [];
    const mine = list.filter((m) => m && m.role === role);
    const chosen = (mine.length ? mine : list).at(-1);
    if (chosen === undefined) return "";
    const text = messageText(chosen).replace(/\s+/g, " ").trim();
    return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
  }

  function nav(active) {
    const links = [["/calls", "Calls"], ["/sessions", "Conversations"], ["/analytics", "Analytics"]];
    const bar = el("nav", {className: "top"}, el("span", {className: "brand"}, "genai-collector"),
      links.map(([href, label]) => el("a", {href, className: href === active ? "active" : ""}, label)));
    document.body.prepend(bar);
  }

  function showError(where, error) {
    where.replaceChildren(el("p", {className: "error"}, String(error.message || error)));
  }

  return {clean, el, api, send, thumbs, fmtMs, fmtTokens, fmtCost, fmtTime, fmtPct, messageText, preview, nav, showError};
})();
