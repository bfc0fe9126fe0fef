// llm-proxy console: signing in and out, and the router between the pages (#/overview,
// #/keys, #/usage, #/policy). The session is an HttpOnly cookie the page never sees; its CSRF
// token lives in memory only. Nothing is ever written to browser storage.
"use strict";

(() => {
  const ui = globalThis.llmProxyConsole;
  const { session } = ui;
  const main = document.getElementById("main");
  const views = {
    boot: document.getElementById("boot"),
    signin: document.getElementById("signin"),
    app: document.getElementById("app"),
  };
  let leavePage = null; // stops the current page's timers and late answers

  function show(name) {
    for (const [key, el] of Object.entries(views)) el.hidden = key !== name;
  }

  function stopPage() {
    if (leavePage) leavePage();
    leavePage = null;
  }

  function showSignIn(note) {
    session.csrf = null;
    stopPage();
    main.replaceChildren();
    const noteEl = document.getElementById("signin-note");
    noteEl.textContent = note || "";
    noteEl.hidden = !note;
    show("signin");
    document.title = "Sign in · llm-proxy";
    document.getElementById("signin-key").focus();
  }
  session.onExpired = () => showSignIn("Your session has ended. Sign in again.");

  function showApp(csrf) {
    session.csrf = csrf;
    show("app");
    route();
  }

  function route() {
    if (!session.csrf) return;
    const asked = location.hash.replace(/^#\/?/, "").split("?")[0];
    const name = ui.pages[asked] ? asked : "overview";
    stopPage();
    for (const link of document.querySelectorAll("nav a[data-page]")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${ui.pages[name].title} · llm-proxy`;
    main.replaceChildren();
    leavePage = ui.pages[name].render(main) || null;
  }

  window.addEventListener("hashchange", () => {
    route();
    main.focus({ preventScroll: true });
  });

  async function boot() {
    let state = { signed_in: false };
    try {
      const response = await fetch("/ui/session", { cache: "no-store", credentials: "same-origin" });
      if (response.ok) state = await response.json();
    } catch (error) {
      state = { signed_in: false };
    }
    if (state.signed_in) showApp(state.csrf_token);
    else showSignIn();
  }

  async function signIn(key) {
    const response = await fetch("/ui/session", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ key }),
      cache: "no-store",
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (response.ok && data.signed_in) return data.csrf_token;
    throw new Error(
      response.status === 401 ? "That key was not accepted. Check it and try again." : `Could not sign in (HTTP ${response.status}).`,
    );
  }

  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const input = form.elements.key;
    const error = document.getElementById("signin-error");
    const button = form.querySelector("button");
    const key = input.value;
    input.value = ""; // the key is not kept, not even in the field
    error.textContent = "";
    button.disabled = true;
    try {
      if (!key) throw new Error("Enter the admin key.");
      const csrf = await signIn(key);
      input.removeAttribute("aria-invalid");
      showApp(csrf);
      return;
    } catch (failure) {
      error.textContent = failure instanceof TypeError ? "The proxy could not be reached." : failure.message;
    } finally {
      button.disabled = false;
    }
    input.setAttribute("aria-invalid", "true");
    input.focus();
  });

  document.getElementById("signout").addEventListener("click", async () => {
    try {
      await fetch("/ui/session", { method: "DELETE", headers: { "x-csrf-token": session.csrf || "" }, credentials: "same-origin" });
    } finally {
      if (location.hash) history.replaceState(null, "", location.pathname);
      showSignIn("You are signed out.");
    }
  });

  boot();
})();
