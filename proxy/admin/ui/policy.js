// llm-proxy console, the policy: the one in force (every secret masked by the proxy), its
// version and source, and how the last reload went.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const { h } = ui;
  const OPEN = ["upstreams", "models", "keys"]; // sections shown unfolded

  function render(root) {
    root.append(ui.pageHead("Policy", "The policy in force, defaults filled in, every secret masked."));
    return ui.loaded(root, "Loading the policy…", async () => parts(await ui.api("GET", "/admin/policy"))).stop;
  }

  function parts(policy) {
    const inForce = ui.facts([
      ["Version", h("code", { text: policy.version })],
      ["Source", h("code", { text: policy.source || "—" })],
      ["Loaded", ui.fmtTime(ui.when(policy.loaded_at))],
      ["Admin store", h("code", { text: policy.admin_store })],
    ]);
    const sections = Object.entries(policy.policy).map(([name, value]) =>
      h(
        "details",
        { class: "section", open: OPEN.includes(name) },
        h("summary", {}, name, h("span", { class: "muted", text: summaryOf(value) })),
        h("pre", { class: "json" }, json(value, "")),
      ),
    );
    return [
      h(
        "div",
        { class: "split" },
        ui.card("In force", null, h("div", { class: "card-body" }, inForce)),
        ui.card("Last reload", null, h("div", { class: "card-body" }, lastReload(policy.last_reload))),
      ),
      ui.card("proxy.yaml, as the proxy reads it", h("span", { class: "muted", text: "*** marks a masked secret" }), h("div", {}, sections)),
    ];
  }

  function lastReload(reload) {
    if (!reload) return h("p", { class: "muted", text: "No reload since the proxy started." });
    const tone = reload.result === "ok" ? "ok" : "bad";
    const at = ui.when(reload.at);
    return [
      ui.facts([
        ["Result", h("span", { class: `badge ${tone}`, text: reload.result })],
        ["Why", reload.reason || "—"],
        ["When", `${ui.fmtTime(at)} (${ui.ago(at)})`],
      ]),
      reload.errors && reload.errors.length ? h("ul", { class: "errors" }, reload.errors.map((e) => h("li", { text: e }))) : null,
    ];
  }

  function summaryOf(value) {
    if (Array.isArray(value)) return `${value.length} items`;
    if (value && typeof value === "object") return `${Object.keys(value).length} entries`;
    return JSON.stringify(value);
  }

  // Indented JSON as DOM nodes, each value coloured by its type and masked secrets marked.
  function json(value, indent) {
    const inner = `${indent}  `;
    const list = (open, close, items, item) =>
      items.length ? [`${open}\n`, items.map((x, i) => [inner, item(x), i < items.length - 1 ? ",\n" : "\n"]), indent, close] : open + close;
    if (Array.isArray(value)) return list("[", "]", value, (v) => json(v, inner));
    if (value && typeof value === "object") {
      return list("{", "}", Object.entries(value), ([k, v]) => [h("span", { class: "k", text: JSON.stringify(k) }), ": ", json(v, inner)]);
    }
    if (typeof value === "string") return h("span", { class: value.includes("***") ? "s mask" : "s", text: JSON.stringify(value) });
    return h("span", { class: typeof value === "number" ? "n" : "b", text: JSON.stringify(value) });
  }

  ui.pages.policy = { title: "Policy", render };
})();
