// llm-proxy console, keys: every client key with its spend against its budget; runtime keys
// made, rotated and revoked here (file keys are read-only); a secret is shown once.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const { h } = ui;

  function render(root) {
    const create = h("button", { class: "btn primary", type: "button", onclick: () => createDialog(page.refresh) }, "New key");
    root.append(ui.pageHead("Keys", "Client keys: those in proxy.yaml (read-only here) and those made at run time.", create));
    const page = ui.loaded(root, "Loading keys…", async () => {
      const keys = (await ui.api("GET", "/admin/keys")).data;
      return [ui.card("All keys", h("span", { class: "muted", text: `${keys.length} keys` }), keysTable(keys, () => page.refresh()))];
    });
    return page.stop;
  }

  function keysTable(keys, reload) {
    return ui.table(
      [
        { label: "Name", cell: keyName },
        { label: "Models", cell: (k) => h("div", { class: "chips" }, k.models.map((m) => h("span", { class: "chip", text: m }))) },
        { label: "Limits", cell: (k) => limitsText(k.limits) },
        { label: "Spend against budget", cell: budgetCell },
        { label: "Expires", cell: (k) => (k.expires_at ? ui.fmtDate(k.expires_at) : h("span", { class: "muted", text: "never" })) },
        { label: "Actions", end: true, cell: (k) => keyActions(k, reload) },
      ],
      keys,
      "No keys yet: the proxy is open to every caller. Make one with “New key”.",
    );
  }

  function keyName(key) {
    const tags = [];
    if (key.source === "file") tags.push(h("span", { class: "tag", title: "Defined in proxy.yaml: change it there", text: "policy file" }));
    if (key.expired) tags.push(h("span", { class: "tag bad", text: "expired" }));
    else if (!key.active) tags.push(h("span", { class: "tag warn", title: "A file key with this name wins", text: "inactive" }));
    const made = key.created_at ? h("span", { class: "sub", text: `created ${ui.fmtDate(key.created_at)}` }) : null;
    return [h("span", { class: "name", text: key.name }), " ", tags, made];
  }

  function limitsText(limits) {
    const parts = [];
    if (limits && limits.requests) parts.push(`${limits.requests} requests`);
    if (limits && limits.burst) parts.push(`burst ${limits.burst}`);
    if (limits && limits.tokens) parts.push(`${limits.tokens} tokens`);
    if (limits && limits.concurrency) parts.push(`${limits.concurrency} at once`);
    if (!parts.length) return h("span", { class: "muted", text: "default" });
    return parts.map((text, i) => h("span", { class: i ? "sub" : null, text }));
  }

  function budgetCell(key) {
    if (!key.budget) return h("span", { class: "muted", text: "no budget" });
    const spent = key.spend ? key.spend.spent_usd : 0;
    const share = Math.min(1, spent / key.budget.usd);
    const fill = h("span");
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    const meter = h(
      "div",
      {
        class: `bar ${share >= 1 ? "bad" : share >= 0.8 ? "warn" : ""}`,
        role: "meter",
        "aria-label": `Spend of ${key.name} against its budget`,
        "aria-valuemin": "0",
        "aria-valuemax": String(key.budget.usd),
        "aria-valuenow": String(spent),
      },
      fill,
    );
    const text = `${ui.fmtUsd(spent)} of ${ui.fmtUsd(key.budget.usd)} a ${key.budget.period}`;
    return h("div", { class: "budget" }, meter, h("span", { class: "sub", text }));
  }

  function keyActions(key, reload) {
    if (key.source === "file") return h("span", { class: "muted", title: "Change it in proxy.yaml", text: "read-only" });
    const button = (label, className, action) =>
      h("button", { class: `btn small ${className}`, type: "button", "aria-label": `${label} ${key.name}`, onclick: () => action(key.name, reload) }, label);
    return h("div", { class: "row-actions" }, button("Rotate", "", rotate), button("Revoke", "link-danger", revoke));
  }

  // -- rotate, revoke, the secret shown once ----------------------------------------------

  async function rotate(name, reload) {
    const description = "A new secret replaces the current one, which is refused at once. Limits, budget and usage stay with the key.";
    if (!(await ui.confirm(`Rotate ${name}?`, description, "Rotate key"))) return;
    try {
      showSecret("New secret", name, (await ui.api("POST", `/admin/keys/${encodeURIComponent(name)}/rotate`)).key);
    } catch (error) {
      ui.alert("Could not rotate the key", error.message);
    }
    reload();
  }

  async function revoke(name, reload) {
    const description = "Requests with this key are refused at once. This cannot be undone; its usage stays in the ledger.";
    if (!(await ui.confirm(`Revoke ${name}?`, description, "Revoke key"))) return;
    try {
      await ui.api("DELETE", `/admin/keys/${encodeURIComponent(name)}`);
    } catch (error) {
      ui.alert("Could not revoke the key", error.message);
    }
    reload();
  }

  async function copy(field, status) {
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (error) {
      field.select(); // plain http beyond localhost has no clipboard API
      document.execCommand("copy");
    }
    status.textContent = "Copied to the clipboard.";
  }

  function showSecret(title, name, secret) {
    const field = h("input", { id: "secret-value", type: "text", readonly: true, "aria-label": `Secret of ${name}`, spellcheck: "false" });
    field.value = secret;
    const status = h("p", { class: "muted", role: "status" });
    const body = h(
      "div",
      { class: "dialog-body" },
      h("div", { class: "banner warn" }, h("strong", { text: "Shown once." }), h("span", { text: "Copy it now: the proxy keeps only its hash, so it cannot show it again." })),
      h("div", { class: "secret" }, field, h("button", { class: "btn", type: "button", onclick: () => copy(field, status) }, "Copy")),
      status,
    );
    const done = h("button", { class: "btn primary", type: "button", onclick: () => box.close() }, "Done");
    const box = ui.dialog(title, `The secret of “${name}”. Callers send it as a bearer key.`, body, [done]);
    box.addEventListener("close", () => (field.value = "")); // nothing of it stays in the page
    field.focus();
    field.select();
  }

  // -- a new key --------------------------------------------------------------------------

  // the API's `param` for a refused field -> the input that holds it
  const PARAM_INPUTS = {
    name: "name",
    models: "models",
    "limits.requests": "requests",
    "limits.tokens": "tokens",
    "limits.concurrency": "concurrency",
    budget: "usd",
    "budget.usd": "usd",
    expires_at: "expires",
    metadata: "metadata",
  };

  function keyInputs() {
    const text = (props) => h("input", { autocomplete: "off", spellcheck: "false", ...props });
    return {
      name: text({ required: true, maxlength: "64", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" }),
      expires: h("input", { type: "date" }),
      models: text({ placeholder: "*" }),
      requests: text({ placeholder: "60/minute" }),
      tokens: text({ placeholder: "100000/minute" }),
      concurrency: h("input", { type: "number", min: "1", step: "1", placeholder: "10" }),
      usd: h("input", { type: "number", min: "0.01", step: "0.01", placeholder: "50" }),
      period: h("select", {}, ["month", "week", "day"].map((p) => h("option", { value: p, text: p }))),
      metadata: h("textarea", { placeholder: "owner=alice\nteam=search", spellcheck: "false" }),
    };
  }

  function field(inputs, name, label, help) {
    const input = inputs[name];
    input.id = `key-${name}`;
    input.name = name;
    return h("div", { class: "field" }, h("label", { for: input.id, text: label }), input, help ? h("span", { class: "help", text: help }) : null);
  }

  function keyForm(inputs, problem) {
    const row = (className, ...fields) => h("div", { class: `row ${className}` }, fields);
    return h(
      "form",
      { class: "dialog-body form", id: "create-key-form", novalidate: true },
      problem,
      row("two", field(inputs, "name", "Name", "Letters, digits, . _ - ; unique across all keys."), field(inputs, "expires", "Expires", "Optional (UTC).")),
      field(inputs, "models", "Models", "Model names or globs, separated by commas. Empty: every model."),
      h(
        "fieldset",
        {},
        h("legend", { text: "Limits (empty: the policy's default)" }),
        row("", field(inputs, "requests", "Requests"), field(inputs, "tokens", "Tokens"), field(inputs, "concurrency", "In flight")),
      ),
      row("two", field(inputs, "usd", "Budget (USD)", "Optional. Spend is counted from the prices in the policy."), field(inputs, "period", "Per")),
      field(inputs, "metadata", "Metadata", "Optional labels, one name=value a line."),
    );
  }

  function createDialog(reload) {
    const inputs = keyInputs();
    const problem = h("p", { class: "form-error", role: "alert", hidden: true });
    const form = keyForm(inputs, problem);
    const cancel = h("button", { class: "btn", type: "button", onclick: () => box.close() }, "Cancel");
    const submit = h("button", { class: "btn primary", type: "submit", form: form.id }, "Create key");
    const box = ui.dialog("New key", "The secret is shown once, when the key is made.", form, [cancel, submit]);
    inputs.name.focus();

    const refuse = (message, param) => {
      problem.textContent = message;
      problem.hidden = false;
      const input = inputs[PARAM_INPUTS[param] || ""];
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const input of Object.values(inputs)) input.removeAttribute("aria-invalid");
      problem.hidden = true;
      submit.disabled = true;
      try {
        const created = await ui.api("POST", "/admin/keys", keyBody(inputs));
        box.close();
        showSecret("Key created", created.name, created.key);
        reload();
      } catch (error) {
        refuse(error.message, error.param);
      } finally {
        submit.disabled = false;
      }
    });
  }

  class FormProblem extends Error {
    constructor(message, param) {
      super(message);
      this.param = param;
    }
  }

  // The form as the body of POST /admin/keys: only what was filled in.
  function keyBody(inputs) {
    const value = (name) => inputs[name].value.trim();
    if (!value("name")) throw new FormProblem("The key needs a name.", "name");
    const body = { name: value("name") };
    const models = value("models").split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    const limits = {};
    if (value("requests")) limits.requests = value("requests");
    if (value("tokens")) limits.tokens = value("tokens");
    if (value("concurrency")) limits.concurrency = Number(value("concurrency"));
    if (Object.keys(limits).length) body.limits = limits;
    if (value("usd")) body.budget = { usd: Number(value("usd")), period: value("period") };
    if (value("expires")) body.expires_at = value("expires");
    const metadata = metadataOf(inputs.metadata.value);
    if (Object.keys(metadata).length) body.metadata = metadata;
    return body;
  }

  function metadataOf(text) {
    const metadata = {};
    for (const line of text.split("\n").filter((l) => l.trim())) {
      const at = line.indexOf("=");
      if (at < 1) throw new FormProblem(`Metadata lines are name=value: “${line.trim()}”.`, "metadata");
      metadata[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return metadata;
  }

  ui.pages.keys = { title: "Keys", render };
})();
