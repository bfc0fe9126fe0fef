// llm-proxy console, usage: requests and spend per UTC day from the ledger over a chosen
// range, as a chart and a table (or per key, model or route), and the same as CSV.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const { h } = ui;
  const DAY_MS = 86400000;
  const GROUPS = { day: "Per day", key: "Per key", model: "Per model", route: "Per route" };

  function lastDays(days) {
    return { days, since: ui.isoDay(new Date(Date.now() - (days - 1) * DAY_MS)), until: ui.isoDay(new Date()) };
  }

  const query = (state, group, format) =>
    `/admin/usage?${new URLSearchParams({ group_by: group, since: state.since, until: state.until, ...(format ? { format } : {}) })}`;

  function render(root) {
    const state = { ...lastDays(30), group: "day" };
    const controls = rangeControls(state, () => page.refresh());
    root.append(ui.pageHead("Usage", "Requests, tokens and spend from the usage ledger (UTC days)."), controls.element);
    const page = ui.loaded(root, "Loading usage…", async () => {
      controls.update();
      const [days, grouped] = await Promise.all([
        ui.api("GET", query(state, "day")),
        state.group === "day" ? null : ui.api("GET", query(state, state.group)),
      ]);
      const select = (group) => {
        state.group = group;
        page.refresh();
      };
      return parts(state, days.data, (grouped || days).data, select);
    });
    return page.stop;
  }

  function rangeControls(state, changed) {
    const presets = h("div", { class: "segmented", role: "group", "aria-label": "Range" });
    const since = h("input", { id: "usage-since", type: "date" });
    const until = h("input", { id: "usage-until", type: "date" });
    const csv = h("a", { class: "btn", id: "usage-csv" }, "Download CSV");
    for (const days of [7, 30, 90]) {
      const pick = () => {
        Object.assign(state, lastDays(days));
        changed();
      };
      presets.append(h("button", { type: "button", "data-days": String(days), onclick: pick }, `${days} days`));
    }
    for (const input of [since, until]) {
      input.addEventListener("change", () => {
        if (!since.value || !until.value) return;
        Object.assign(state, { days: null, since: since.value, until: until.value });
        changed();
      });
    }
    const update = () => {
      since.value = state.since;
      until.value = state.until;
      for (const button of presets.children) button.setAttribute("aria-pressed", String(Number(button.dataset.days) === state.days));
      csv.href = query(state, state.group, "csv");
      csv.setAttribute("download", `llm-proxy-usage-${state.group}-${state.since}-${state.until}.csv`);
    };
    const label = (input, text) => h("label", { for: input.id, text });
    const element = h("div", { class: "range" }, presets, label(since, "From"), since, label(until, "to"), until, csv);
    return { element, update };
  }

  // every day of the range, days without requests as zeros
  function everyDay(since, until, rows) {
    const byDay = new Map(rows.map((row) => [row.day, row]));
    const days = [];
    for (let t = Date.parse(`${since}T00:00:00Z`); t <= Date.parse(`${until}T00:00:00Z`); t += DAY_MS) {
      const day = ui.isoDay(new Date(t));
      days.push(byDay.get(day) || { day, requests: 0, prompt_tokens: 0, completion_tokens: 0, spend_usd: 0 });
    }
    return days;
  }

  function parts(state, dayRows, groupRows, select) {
    const total = (name) => dayRows.reduce((sum, row) => sum + row[name], 0);
    const tiles = h(
      "div",
      { class: "tiles" },
      ui.tile("Requests", [ui.fmtInt(total("requests"))], `${state.since} – ${state.until}`),
      ui.tile("Prompt tokens", [ui.compact(total("prompt_tokens"))], ui.fmtInt(total("prompt_tokens"))),
      ui.tile("Completion tokens", [ui.compact(total("completion_tokens"))], ui.fmtInt(total("completion_tokens"))),
      ui.tile("Spend", [ui.fmtUsd(total("spend_usd"))], "from the prices in the policy"),
    );
    return [tiles, chart(state, everyDay(state.since, state.until, dayRows)), totals(state, state.group === "day" ? [...dayRows].reverse() : groupRows, select)];
  }

  function chart(state, days) {
    const points = days.map((row) => ({
      label: new Date(`${row.day}T00:00:00Z`).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" }),
      bar: row.requests,
      line: row.spend_usd,
      detail: `${ui.fmtInt(row.requests)} requests · ${ui.fmtUsd(row.spend_usd)}`,
    }));
    const legend = h("div", { class: "legend" }, h("span", {}, h("i"), "requests"), h("span", {}, h("i", { class: "spend" }), "spend (right axis)"));
    const summary = `Requests and spend per day from ${state.since} to ${state.until}`;
    const drawn = ui.barChart(points, { height: 240, lineLabel: ui.fmtUsd, summary });
    return ui.card("Requests and spend per day", legend, h("div", { class: "card-body" }, drawn));
  }

  function totals(state, rows, select) {
    const tabs = h("div", { class: "segmented", role: "group", "aria-label": "Group the table" });
    for (const [group, label] of Object.entries(GROUPS)) {
      tabs.append(h("button", { type: "button", "aria-pressed": String(group === state.group), onclick: () => select(group) }, label));
    }
    const first = { label: GROUPS[state.group].replace("Per ", ""), cell: (r) => h("span", { class: state.group === "day" ? "num" : "mono", text: r[state.group] }) };
    const table = ui.table(
      [
        first,
        { label: "Requests", num: true, cell: (r) => ui.fmtInt(r.requests) },
        { label: "Prompt tokens", num: true, cell: (r) => ui.fmtInt(r.prompt_tokens) },
        { label: "Completion tokens", num: true, cell: (r) => ui.fmtInt(r.completion_tokens) },
        { label: "Spend", num: true, cell: (r) => ui.fmtUsd(r.spend_usd) },
      ],
      rows,
      "No requests in this range.",
    );
    return ui.card("Totals", tabs, table);
  }

  ui.pages.usage = { title: "Usage", render };
})();
