"""The console over HTTP on a real proxy: 404 while admin is off or `admin.ui` is false, the
page and its assets (CSP and the other headers, no inline script, versioned assets, ETags,
gzip), signing in and out, the session cookie's attributes, CSRF on every write made with the
cookie while bearer calls stay as they were, forged and foreign sessions refused, a session
accepted by another replica with the same admin key, and the admin key in no answer or log."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import REPO_ROOT, UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .conftest import USER_MESSAGES, assert_openai_error

ADMIN_KEY = "admin-key-for-the-console-http-tests-51c2"
COOKIE = "llm_proxy_console"
UI = REPO_ROOT / "proxy" / "admin" / "ui"
CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
}


def console_policy(base_url: str, store: str, ui: bool = True) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"fake": upstream},
        "models": {"chat": {"routes": [{"upstream": "fake", "model": "upstream-chat"}]}},
        "admin": {"key": "${LLM_PROXY_ADMIN_KEY}", "store": store, "ui": ui},
        "cache": {"backend": "none"},
    }


def start_console(
    launcher: Callable[..., RunningProxy],
    fake: FakeOpenAI,
    store: Path,
    admin_key: str = ADMIN_KEY,
    ui: bool = True,
) -> RunningProxy:
    policy = console_policy(fake.base_url, f"sqlite:///{store}", ui)
    return launcher(policy, env={"LLM_PROXY_ADMIN_KEY": admin_key})


@pytest.fixture(scope="module")
def console(
    proxy_launcher: ProxyLauncher,
    fake_openai_server: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningProxy]:
    store = tmp_path_factory.mktemp("console") / "admin.db"
    running = start_console(proxy_launcher.start, fake_openai_server, store)
    yield running
    running.stop()


@pytest.fixture
def http(console: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.url, timeout=10) as client:
        yield client


def signed_in(http: httpx.Client) -> str:
    """Sign `http` in (its cookie jar keeps the session); the session's CSRF token."""
    response = http.post("/ui/session", json={"key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return assert_openai_error(response.json())


def set_cookie(response: httpx.Response) -> dict[str, str]:
    """The session's Set-Cookie header as {attribute (lower case): value}."""
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE)]
    name_value, *attributes = [part.strip() for part in header.split(";")]
    parsed = {"value": name_value.partition("=")[2]}
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        parsed[name.lower()] = value
    return parsed


# -- 404s ---------------------------------------------------------------------------------------


CONSOLE_PATHS = ("/ui", "/ui/", "/ui/assets/app.js", "/ui/session")


def test_the_console_is_404_when_admin_is_off(proxy: RunningProxy) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        for path in CONSOLE_PATHS:
            error_of(http.get(path), 404)
        error_of(http.post("/ui/session", json={"key": ADMIN_KEY}), 404)


def test_the_console_is_404_with_ui_off_while_the_api_works(
    start_proxy: Callable[..., RunningProxy], fake_openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    running = start_console(start_proxy, fake_openai_server, tmp_path / "admin.db", ui=False)
    with httpx.Client(base_url=running.url, timeout=10) as http:
        for path in CONSOLE_PATHS:
            error_of(http.get(path), 404)
        error_of(http.post("/ui/session", json={"key": ADMIN_KEY}), 404)
        bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert http.get("/admin/keys", headers=bearer).status_code == 200
        assert http.post("/admin/keys", json={"name": "k"}, headers=bearer).status_code == 201


def test_unknown_assets_are_404(http: httpx.Client) -> None:
    for path in ("/ui/assets/nothing.js", "/ui/assets/index.html", "/ui/assets/..%2Fapp.js"):
        error_of(http.get(path), 404)


# -- the page and its assets --------------------------------------------------------------------


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.styles = 0
        self.style_attributes = 0
        self.handlers: list[str] = []
        self.assets: list[str] = []
        self._in_script = False
        self.inline_script = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.style_attributes += "style" in named
        self.handlers += [name for name in named if name.startswith("on")]
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True
        self.styles += tag == "style"
        for attribute in ("src", "href"):
            value = named.get(attribute)
            if value and value.startswith("/ui/assets/"):
                self.assets.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


def test_the_page_has_a_strict_csp_and_nothing_inline(http: httpx.Client) -> None:
    response = http.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert {name: policy.get(name) for name in CSP} == CSP
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    markup = _Markup()
    markup.feed(response.text)
    assert markup.scripts and all(script.get("src") for script in markup.scripts)
    assert markup.inline_script == "" and markup.styles == 0
    assert markup.style_attributes == 0 and markup.handlers == []
    assert "http://" not in response.text and "https://" not in response.text
    assert ADMIN_KEY not in response.text


def test_assets_are_versioned_cached_and_compressed(http: httpx.Client) -> None:
    page = http.get("/ui")
    markup = _Markup()
    markup.feed(page.text)
    shipped = {path.name for path in UI.iterdir() if path.is_file()} - {"index.html"}
    assert {url.split("?")[0].rsplit("/", 1)[1] for url in markup.assets} == shipped
    for url in markup.assets:
        assert re.fullmatch(r"/ui/assets/[a-z]+\.(js|css|svg)\?v=[0-9a-f]{16}", url), url
        plain = http.get(url, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200 and plain.content
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" in plain.headers
        zipped = http.get(url, headers={"accept-encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == plain.content  # httpx decoded it
        assert zipped.headers["vary"] == "accept-encoding"
        again = http.get(url, headers={"if-none-match": plain.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    unversioned = http.get("/ui/assets/app.js")
    assert unversioned.headers["cache-control"] == "no-cache"  # checked against its ETag
    assert page.headers["cache-control"] == "no-cache"
    held = http.get("/ui", headers={"if-none-match": page.headers["etag"]})
    assert held.status_code == 304
    sizes = {url: len(http.get(url).content) for url in markup.assets}
    assert sum(sizes.values()) < 150_000, sizes  # small: no framework, no fonts


# -- signing in and out -------------------------------------------------------------------------


def test_a_wrong_key_is_a_401_that_reveals_nothing(http: httpx.Client) -> None:
    for sent in ("wrong", ADMIN_KEY[:-1], ADMIN_KEY + "x", ""):
        response = http.post("/ui/session", json={"key": sent})
        error = error_of(response, 401)
        assert error["code"] == "invalid_admin_key"
        assert "set-cookie" not in response.headers
        assert ADMIN_KEY not in response.text and (not sent or sent not in response.text)
    error_of(http.post("/ui/session", content=b"key=" + ADMIN_KEY.encode()), 400)
    assert ADMIN_KEY not in http.post("/ui/session", content=b"{").text
    assert http.get("/ui/session").json() == {"signed_in": False}


def test_signing_in_sets_a_strict_http_only_session_cookie(http: httpx.Client) -> None:
    response = http.post("/ui/session", json={"key": ADMIN_KEY})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["signed_in"] is True and len(body["csrf_token"]) >= 32
    cookie = set_cookie(response)
    assert "httponly" in cookie and cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/" and int(cookie["max-age"]) > 0
    assert "secure" not in cookie  # plain http: a browser would drop a Secure cookie
    assert ADMIN_KEY not in response.headers["set-cookie"] and ADMIN_KEY not in response.text
    assert http.get("/ui/session").json()["csrf_token"] == body["csrf_token"]


def test_the_cookie_is_secure_behind_tls(console: RunningProxy) -> None:
    with httpx.Client(base_url=console.url, timeout=10) as http:
        forwarded = {"x-forwarded-proto": "https"}
        response = http.post("/ui/session", json={"key": ADMIN_KEY}, headers=forwarded)
        assert "secure" in set_cookie(response)


def test_signing_out_refuses_the_old_cookie(http: httpx.Client) -> None:
    csrf = signed_in(http)
    cookie = http.cookies[COOKIE]
    error_of(http.delete("/ui/session"), 403)  # a write: the CSRF token is needed
    assert http.get("/admin/keys").status_code == 200
    response = http.delete("/ui/session", headers={"x-csrf-token": csrf})
    assert response.status_code == 200
    assert set_cookie(response)["max-age"] == "0"
    assert http.get("/ui/session").json() == {"signed_in": False}
    with httpx.Client(base_url=str(http.base_url), cookies={COOKIE: cookie}) as old:
        error_of(old.get("/admin/keys"), 401)
        assert old.get("/ui/session").json() == {"signed_in": False}


# -- CSRF ---------------------------------------------------------------------------------------


def test_writes_with_the_cookie_need_the_csrf_token(
    http: httpx.Client, console: RunningProxy
) -> None:
    csrf = signed_in(http)
    assert http.get("/admin/keys").status_code == 200  # reads need only the cookie
    assert http.get("/admin/overview").status_code == 200

    refused = [
        http.post("/admin/keys", json={"name": "csrf-made"}),
        http.post("/admin/keys", json={"name": "csrf-made"}, headers={"x-csrf-token": "x"}),
        http.post("/admin/keys", json={"name": "csrf-made"}, headers={"x-csrf-token": ""}),
    ]
    for response in refused:
        assert error_of(response, 403)["code"] == "csrf_token_invalid"
    assert "csrf-made" not in {key["name"] for key in http.get("/admin/keys").json()["data"]}

    made = http.post("/admin/keys", json={"name": "csrf-made"}, headers={"x-csrf-token": csrf})
    assert made.status_code == 201
    secret = made.json()["key"]
    for method, path, body in (
        ("PATCH", "/admin/keys/csrf-made", {"models": ["nothing"]}),
        ("POST", "/admin/keys/csrf-made/rotate", None),
        ("DELETE", "/admin/keys/csrf-made", None),
    ):
        response = http.request(method, path, json=body)
        assert error_of(response, 403)["code"] == "csrf_token_invalid", (method, path)
    client = openai.OpenAI(base_url=console.base_url, api_key=secret, max_retries=0)
    assert client.chat.completions.create(model="chat", messages=USER_MESSAGES)  # unchanged

    headers = {"x-csrf-token": csrf}
    assert http.patch("/admin/keys/csrf-made", json={"models": ["x"]}, headers=headers).is_success
    assert http.delete("/admin/keys/csrf-made", headers=headers).status_code == 200


def test_bearer_calls_stay_as_they_were(console: RunningProxy) -> None:
    with httpx.Client(base_url=console.url, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
        made = http.post("/admin/keys", json={"name": "bearer-made"}, headers=bearer)
        assert made.status_code == 201  # no CSRF token: not a cookie request
        assert http.delete("/admin/keys/bearer-made", headers=bearer).status_code == 200
        # a wrong bearer key is refused even beside a valid session cookie
        signed_in(http)
        wrong = {"Authorization": "Bearer not-the-admin-key"}
        error_of(http.get("/admin/keys", headers=wrong), 403)
    with httpx.Client(base_url=console.url, timeout=10) as anonymous:
        error_of(anonymous.get("/admin/keys"), 401)


# -- forged and foreign sessions ----------------------------------------------------------------


def test_forged_sessions_are_refused(http: httpx.Client) -> None:
    csrf = signed_in(http)
    token = http.cookies[COOKIE]
    nonce, expiry, mac = token.split(".")
    other_nonce = ("B" if nonce[0] == "A" else "A") + nonce[1:]
    forgeries = [
        f"{nonce}.{int(expiry) + 3600}.{mac}",  # a longer life
        f"{other_nonce}.{expiry}.{mac}",
        f"{nonce}.{expiry}.{mac[:-2]}",
        f"{nonce}.{expiry}",
        "",
        "a.b.c",
    ]
    with httpx.Client(base_url=str(http.base_url), timeout=10) as other:
        for forged in forgeries:
            other.cookies.set(COOKIE, forged)
            error_of(other.get("/admin/keys"), 401)
            response = other.post("/admin/keys", json={"name": "f"}, headers={"x-csrf-token": csrf})
            error_of(response, 401)


def test_a_session_is_good_on_every_replica_with_the_same_admin_key(
    start_proxy: Callable[..., RunningProxy],
    fake_openai_server: FakeOpenAI,
    tmp_path: Path,
    http: httpx.Client,
) -> None:
    csrf = signed_in(http)
    cookies = {COOKIE: http.cookies[COOKIE]}
    twin = start_console(start_proxy, fake_openai_server, tmp_path / "twin.db")
    stranger = start_console(
        start_proxy, fake_openai_server, tmp_path / "other.db", admin_key=ADMIN_KEY + "-other"
    )
    with httpx.Client(base_url=twin.url, cookies=cookies, timeout=10) as replica:
        assert replica.get("/admin/keys").status_code == 200
        response = replica.post("/admin/keys", json={"name": "t"}, headers={"x-csrf-token": csrf})
        assert response.status_code == 201
    with httpx.Client(base_url=stranger.url, cookies=cookies, timeout=10) as other:
        error_of(other.get("/admin/keys"), 401)
        assert other.get("/ui/session").json() == {"signed_in": False}


def test_the_admin_key_is_in_no_log(http: httpx.Client, console: RunningProxy) -> None:
    http.post("/ui/session", json={"key": "a-wrong-key"})
    signed_in(http)
    assert ADMIN_KEY not in console.log()
