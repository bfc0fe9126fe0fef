"""Pictures of the console for docs/operators.md: `python tests/browser/screenshots.py
[docs/console]`. Starts the fake upstream and a real proxy with the console on, gives the
ledger a month of sample history, makes a few keys, sends traffic (some of it failing, so a
breaker opens) and saves one PNG per page."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "browser"))

import httpx  # noqa: E402
import openai  # noqa: E402
from console_setup import (  # noqa: E402
    ADMIN_KEY,
    FILE_KEY,
    FLAKY_MODEL,
    console_policy,
    launch,
    seed_history,
    sign_in,
)
from fakes.openai_upstream import FakeOpenAI, status  # noqa: E402
from fakes.proxy_harness import ProxyLauncher, RunningProxy  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

KEYS = [
    {
        "name": "search-team",
        "models": ["gpt-4o*"],
        "limits": {"requests": "60/minute", "tokens": "200000/minute"},
        "budget": {"usd": 1.0, "period": "day"},
        "metadata": {"owner": "alice"},
    },
    {
        "name": "support-bot",
        "models": ["gpt-4o-mini"],
        "limits": {"requests": "600/minute", "concurrency": 8},
        "budget": {"usd": 2.0, "period": "week"},
    },
    {"name": "batch-jobs", "expires_at": "2027-06-30", "budget": {"usd": 0.05, "period": "day"}},
    {"name": "playground"},
]
TRAFFIC = {"search-team": ("gpt-4o", 24), "support-bot": ("gpt-4o-mini", 30)}
HELLO = [{"role": "user", "content": "hi"}]


def chat(proxy: RunningProxy, key: str, model: str, times: int) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)
    for _ in range(times):
        with contextlib.suppress(openai.APIStatusError):  # spent budgets, the failing model
            client.chat.completions.create(model=model, messages=HELLO)


def make_keys_and_traffic(proxy: RunningProxy, fake: FakeOpenAI) -> None:
    admin = httpx.Client(
        base_url=proxy.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    secrets = {body["name"]: admin.post("/admin/keys", json=body).json()["key"] for body in KEYS}
    fake.reply = " ".join(["token"] * 3000)  # long answers: spend shows on the budget bars
    for name, (model, count) in TRAFFIC.items():
        chat(proxy, secrets[name], model, count)
    chat(proxy, secrets["batch-jobs"], "gpt-4o", 3)  # the third is over its budget
    fake.reply = "Hello from the fake upstream model"
    chat(proxy, FILE_KEY, "gpt-4o-mini", 40)
    chat(proxy, "sk-nobody", "gpt-4o", 3)
    fake.script(status(500), status(500))  # the flaky model's breaker opens
    chat(proxy, secrets["playground"], FLAKY_MODEL, 2)


def shoot(proxy: RunningProxy, out: Path, profile: Path) -> None:
    with sync_playwright() as playwright:
        for scheme in ("light", "dark"):
            context = launch(playwright, profile / scheme, color_scheme=scheme)
            page = context.new_page()
            page.goto(f"{proxy.url}/ui")
            page.get_by_label("Admin key").wait_for()
            if scheme == "light":
                page.screenshot(path=out / "sign-in.png")
            sign_in(page, proxy.url)
            page.locator(".tiles").wait_for()
            page.wait_for_timeout(300)
            page.screenshot(path=out / f"overview{'-dark' if scheme == 'dark' else ''}.png")
            if scheme == "light":
                pages(page, proxy, out)
            context.close()  # a fresh profile for the next scheme


def pages(page: Page, proxy: RunningProxy, out: Path) -> None:
    page.goto(f"{proxy.url}/ui#/keys")
    page.locator("table").wait_for()
    page.screenshot(path=out / "keys.png")
    page.get_by_role("button", name="New key").click()
    page.get_by_label("Name").fill("data-science")
    page.get_by_label("Models").fill("gpt-4o-mini, gpt-4o")
    page.get_by_label("Requests").fill("120/minute")
    page.get_by_label("Budget (USD)").fill("25")
    page.screenshot(path=out / "new-key.png")
    page.get_by_role("button", name="Create key").click()
    page.locator("#secret-value").wait_for()
    page.screenshot(path=out / "secret.png")
    page.get_by_role("button", name="Done").click()
    page.goto(f"{proxy.url}/ui#/usage")
    page.locator(".chart svg").wait_for()
    page.wait_for_timeout(200)
    page.screenshot(path=out / "usage.png")
    page.goto(f"{proxy.url}/ui#/policy")
    page.locator("details.section[open]").first.wait_for()
    page.screenshot(path=out / "policy.png")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        launcher = ProxyLauncher(work)
        store = work / "admin.db"
        proxy = launcher.start(
            console_policy(fake.base_url, f"sqlite:///{store}"),
            env={"LLM_PROXY_ADMIN_KEY": ADMIN_KEY},
        )
        try:
            seed_history(store)
            make_keys_and_traffic(proxy, fake)
            shoot(proxy, out, work / "profiles")
        finally:
            launcher.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
