// llm-proxy console, the overview: live traffic (refreshed every few seconds while the page
// is shown), every route with its breaker (open ones stand out), every model, the proxy's state.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const { h } = ui;
  const REFRESH_MS = 5000;
  const BREAKER = { closed: "ok", "half-open": "warn", parked: "warn", open: "bad" };
  const ORDER = { open: 0, "half-open": 1, parked: 2, closed: 3 };

  function render(root) {
    const live = h("span", { class: "live", text: "Loading…" });
    const body = h("div", { class: "stack" });
    root.append(ui.pageHead("Overview", "Live traffic on this replica, and every model and route with its breaker.", live), body);
    let timer = null;
    let stopped = false;
    let updated = null;

    async function tick() {
      if (!document.hidden) {
        try {
          // the last minute for the figures, ten minutes for the chart
          const [now, recent] = await Promise.all([ui.api("GET", "/admin/overview?minutes=1"), ui.api("GET", "/admin/overview?minutes=10")]);
          if (stopped) return;
          body.replaceChildren(...parts(now, recent));
          announceOpen(recent.routes);
          updated = new Date();
          live.className = "live";
        } catch (error) {
          if (stopped) return;
          live.className = "live stale";
          if (!updated) body.replaceChildren(ui.errorBanner(error));
        }
        live.textContent = updated ? `Live · updated ${updated.toLocaleTimeString()}` : "Not updated";
      }
      if (!stopped) timer = setTimeout(tick, REFRESH_MS);
    }
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  function parts(now, recent) {
    const routes = Object.entries(recent.routes).map(([label, route]) => ({ label, ...route }));
    const open = routes.filter((route) => route.state === "open");
    return [
      open.length ? openBanner(open) : null,
      tiles(now.traffic),
      h(
        "div",
        { class: "split" },
        ui.card("Traffic, last 10 minutes", legend(), h("div", { class: "card-body" }, trafficChart(recent.traffic.per_minute))),
        ui.card("Proxy", null, h("div", { class: "card-body" }, proxyFacts(recent))),
      ),
      ui.card("Routes", h("span", { class: "muted", text: `${routes.length} routes` }), routesTable(routes)),
      ui.card("Models", h("span", { class: "muted", text: `${recent.models.length} models` }), modelsTable(recent.models, recent.routes)),
    ].filter(Boolean);
  }

  function openBanner(open) {
    const text = open.length === 1 ? "1 route has an open breaker:" : `${open.length} routes have an open breaker:`;
    return h("div", { class: "banner bad" }, h("strong", { text }), h("span", { class: "mono", text: open.map((r) => r.label).join(", ") }));
  }

  // Screen readers hear when the set of open breakers changes, not every refresh.
  let announced = "";
  function announceOpen(routes) {
    const open = Object.keys(routes).filter((label) => routes[label].state === "open").sort().join(", ");
    if (open === announced) return;
    announced = open;
    document.getElementById("announcer").textContent = open ? `Open breakers: ${open}` : "No open breakers.";
  }

  function tiles(traffic) {
    const errorTone = traffic.error_rate >= 0.05 ? "bad" : traffic.error_rate > 0 ? "warn" : "";
    return h(
      "div",
      { class: "tiles" },
      ui.tile("Requests / s", [ui.fmtNum(traffic.requests_per_second)], `${ui.fmtInt(traffic.requests)} in the last minute`),
      ui.tile("Error rate", [ui.fmtPct(traffic.error_rate)], `${ui.fmtInt(traffic.errors)} errors · ${ui.fmtInt(traffic.rejected)} refused`, errorTone),
      ui.tile("Latency p50", ui.fmtMs(traffic.latency_ms.p50), "last minute"),
      ui.tile("Latency p95", ui.fmtMs(traffic.latency_ms.p95), "last minute"),
    );
  }

  function legend() {
    return h("div", { class: "legend" }, h("span", {}, h("i"), "requests"), h("span", {}, h("i", { class: "err" }), "errors (5xx)"));
  }

  function trafficChart(perMinute) {
    const points = perMinute.map((m) => ({
      label: new Date(m.minute * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }),
      bar: m.requests,
      part: m.errors,
      detail: `${ui.fmtInt(m.requests)} requests · ${ui.fmtInt(m.errors)} errors · ${ui.fmtInt(m.rejected)} refused`,
    }));
    return ui.barChart(points, { height: 180, summary: "Requests and errors per minute over the last 10 minutes" });
  }

  function proxyFacts(overview) {
    const { policy, storage = {} } = overview;
    const facts = [
      ["Policy version", h("code", { text: policy.version })],
      ["Loaded", ui.fmtTime(ui.when(policy.loaded_at))],
      ["Last reload", policy.last_reload ? reloadBadge(policy.last_reload) : "none since start"],
      ["Limits storage", storage.limits ? reachable(storage.limits.backend, storage.limits.ok) : "—"],
      ["Cache", storage.cache ? reachable(storage.cache.backend, storage.cache.ok) : "—"],
      ["Admin store", storage.admin ? reachable(storage.admin.store, storage.admin.reachable) : "—"],
      ["Keys", `${ui.fmtInt(overview.keys.file)} in the file · ${ui.fmtInt(overview.keys.runtime)} runtime`],
    ];
    for (const [name, upstream] of Object.entries(overview.upstreams)) {
      if (!upstream.configured) facts.push([`Upstream ${name}`, h("span", { class: "badge warn", text: `not configured: $${upstream.missing_env}` })]);
    }
    return ui.facts(facts);
  }

  function reachable(name, ok) {
    return h("span", { class: `badge ${ok ? "ok" : "bad"}`, text: ok ? name : `${name}: unreachable` });
  }

  function reloadBadge(reload) {
    const tone = reload.result === "ok" ? "ok" : "bad";
    return h("span", {}, h("span", { class: `badge ${tone}`, text: reload.result }), " ", h("span", { class: "muted", text: ui.ago(ui.when(reload.at)) }));
  }

  function routesTable(routes) {
    const sorted = [...routes].sort((a, b) => (ORDER[a.state] ?? 4) - (ORDER[b.state] ?? 4) || a.label.localeCompare(b.label));
    return ui.table(
      [
        { label: "Route", cell: (r) => h("span", { class: "mono", text: r.label }) },
        { label: "Upstream", cell: (r) => r.upstream },
        { label: "Breaker", cell: (r) => h("span", { class: `badge ${BREAKER[r.state] || ""}`, text: r.state }) },
        { label: "In flight", num: true, cell: (r) => ui.fmtInt(r.inflight) },
        { label: "Latency", num: true, cell: (r) => ui.fmtMsText(r.latency_ms) },
        { label: "Errors, 1 min", num: true, cell: (r) => ui.fmtPct(r.error_rate_1m) },
        { label: "Calls, 1 min", num: true, cell: (r) => ui.fmtInt(r.calls_1m) },
      ],
      sorted.map((r) => ({ ...r, rowClass: r.state === "open" ? "is-open" : null })),
      "No routes in the policy.",
    );
  }

  function routeChip(label, routes) {
    const state = (routes[label] || {}).state || "closed";
    const tone = state === "closed" ? "" : BREAKER[state] || "";
    const note = state === "closed" ? null : ` (${state})`;
    return h("span", { class: `chip ${tone}`, title: `breaker ${state}` }, h("span", { class: "dot", "aria-hidden": "true" }), label, note);
  }

  function modelsTable(models, routes) {
    return ui.table(
      [
        { label: "Model", cell: (m) => h("span", { class: "name mono", text: m.name }) },
        { label: "Strategy", cell: (m) => m.strategy },
        { label: "Routes", cell: (m) => h("div", { class: "chips" }, m.routes.map((label) => routeChip(label, routes))) },
        { label: "Fallbacks", cell: (m) => (m.fallbacks.length ? m.fallbacks.join(", ") : h("span", { class: "muted", text: "—" })) },
      ],
      models,
      "No models in the policy.",
    );
  }

  ui.pages.overview = { title: "Overview", render };
})();
