// llm-proxy console, shared parts: building DOM (never innerHTML: text from the proxy is never
// parsed as markup), formatting, the admin API, and the page furniture every page uses.
// Each file of the console adds to one namespace; app.js, loaded last, starts it.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const session = (ui.session = { csrf: null, onExpired: () => {} });

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
  }

  ui.h = (tag, props, ...children) => {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : value);
    }
    append(el, children);
    return el;
  };

  ui.svg = (tag, attrs, ...children) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
    append(el, children);
    return el;
  };
  const h = ui.h;

  // -- formatting -------------------------------------------------------------------------

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const missing = (x) => x === null || x === undefined;
  ui.fmtInt = (n) => (missing(n) ? "—" : integer.format(n));
  ui.fmtNum = (n) => (missing(n) ? "—" : decimal.format(n));
  ui.fmtPct = (x) => (missing(x) ? "—" : `${decimal.format(x * 100)}%`);
  ui.fmtUsd = (x) => {
    if (missing(x)) return "—";
    const digits = x !== 0 && Math.abs(x) < 1 ? 4 : 2;
    return `$${x.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: digits })}`;
  };
  ui.fmtMs = (ms) => {
    // a tile's value: the number, then its unit in small type
    if (missing(ms)) return ["—"];
    if (ms >= 1000) return [decimal.format(ms / 1000), h("small", { text: "s" })];
    return [decimal.format(ms < 10 ? ms : Math.round(ms)), h("small", { text: "ms" })];
  };
  ui.fmtMsText = (ms) => {
    if (missing(ms)) return "—";
    return ms >= 1000 ? `${decimal.format(ms / 1000)} s` : `${decimal.format(Math.round(ms * 10) / 10)} ms`;
  };
  ui.compact = (value) => {
    if (value >= 1e6) return `${decimal.format(value / 1e6)}M`;
    if (value >= 1e3) return `${decimal.format(value / 1e3)}k`;
    return decimal.format(value);
  };
  ui.when = (epochSeconds) => (epochSeconds ? new Date(epochSeconds * 1000) : null);
  ui.fmtTime = (date) => (date ? date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "—");
  ui.fmtDate = (iso) => (iso ? new Date(iso).toLocaleDateString(undefined, { dateStyle: "medium" }) : "—");
  ui.isoDay = (date) => date.toISOString().slice(0, 10);
  ui.ago = (date) => {
    if (!date) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (seconds < 60) return `${seconds}s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  };

  // -- the admin API ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `The proxy answered HTTP ${status}.`);
      this.status = status;
      this.param = error.param || null;
    }
  }

  // JSON in and out; writes carry the session's CSRF token; a 401 means the session ended.
  ui.api = async (method, path, body) => {
    const headers = { accept: "application/json" };
    if (method !== "GET") headers["x-csrf-token"] = session.csrf || "";
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) session.onExpired();
    if (!response.ok) throw new ApiError(response.status, data.error || {});
    return data;
  };

  // -- page furniture ---------------------------------------------------------------------

  ui.pageHead = (title, description, ...actions) =>
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", { text: title }), h("p", { class: "muted", text: description })),
      h("div", { class: "actions" }, actions),
    );

  ui.card = (title, aside, ...body) =>
    h("section", { class: "card", "aria-label": title }, h("div", { class: "card-head" }, h("h2", { text: title }), aside), body);

  ui.tile = (label, value, sub, tone) =>
    h(
      "div",
      { class: `card tile ${tone || ""}` },
      h("span", { class: "label", text: label }),
      h("span", { class: "value" }, value),
      h("span", { class: "sub", text: sub }),
    );

  // columns: [{label, cell(row), num?, end?}]; a row may carry rowClass
  ui.table = (columns, rows, emptyText) => {
    if (!rows.length) return h("p", { class: "empty", text: emptyText });
    const align = (c) => (c.num ? "num" : c.end ? "end" : null);
    const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: align(c), text: c.label })));
    const body = rows.map((row) =>
      h("tr", { class: row.rowClass || null }, columns.map((c) => h("td", { class: align(c) }, c.cell(row)))),
    );
    return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
  };

  ui.facts = (pairs) => h("dl", { class: "facts" }, pairs.map(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]));

  ui.errorBanner = (error) =>
    h("div", { class: "banner bad", role: "alert" }, h("strong", { text: "Error" }), h("span", { text: error.message }));

  // A page's content, loaded once: `load()` resolves to its parts; stale answers are dropped.
  ui.loaded = (root, loadingText, load) => {
    const content = h("div", { class: "stack" }, h("p", { class: "empty", text: loadingText }));
    root.append(content);
    let stopped = false;
    const refresh = () =>
      load().then(
        (parts) => stopped || content.replaceChildren(...parts),
        (error) => stopped || content.replaceChildren(ui.errorBanner(error)),
      );
    refresh();
    return { refresh, stop: () => (stopped = true) };
  };

  // -- dialogs ----------------------------------------------------------------------------

  ui.dialog = (title, description, body, buttons) => {
    const box = h(
      "dialog",
      { "aria-labelledby": "dialog-title" },
      h("div", { class: "dialog-head" }, h("h2", { id: "dialog-title", text: title }), description ? h("p", { class: "muted", text: description }) : null),
      body,
      h("div", { class: "dialog-foot" }, buttons),
    );
    box.addEventListener("close", () => box.remove());
    document.body.append(box);
    box.showModal();
    return box;
  };

  // Resolves true only for the confirming button; Cancel has the focus, Escape cancels.
  ui.confirm = (title, description, action) =>
    new Promise((resolve) => {
      const cancel = h("button", { class: "btn", type: "button", onclick: () => box.close() }, "Cancel");
      const confirm = h("button", { class: "btn danger", type: "button", onclick: () => { resolve(true); box.close(); } }, action);
      const box = ui.dialog(title, description, null, [cancel, confirm]);
      box.addEventListener("close", () => resolve(false));
      cancel.focus();
    });

  ui.alert = (title, message) => {
    const close = h("button", { class: "btn primary", type: "button", onclick: () => box.close() }, "Close");
    const box = ui.dialog(title, message, null, [close]);
    close.focus();
  };
})();
