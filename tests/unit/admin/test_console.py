"""Console sessions and assets without a server: tokens that expire, die with the admin key
and at sign-out; CSRF tokens bound to their session; who `Console.admits`; the shipped files
loaded with versioned names, ETags, 304s and gzip."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from proxy.admin.console import (
    FOREVER,
    INDEX,
    REVALIDATE,
    SECURITY_HEADERS,
    Console,
    CsrfError,
    load_assets,
)
from proxy.admin.sessions import LIFETIME, SIGNED_OUT_KEPT, ConsoleSessions

UI = Path(__file__).resolve().parents[3] / "proxy" / "admin" / "ui"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def sessions_with(key: list[str | None], clock: Clock) -> ConsoleSessions:
    return ConsoleSessions(lambda: key[0], clock)


def test_a_token_lasts_its_lifetime(clock: Clock) -> None:
    sessions = sessions_with(["admin-key"], clock)
    token, session = sessions.issue()
    assert sessions.verify(token) == session
    assert session.expires_at == int(clock.now) + LIFETIME
    clock.now += LIFETIME - 1
    assert sessions.verify(token) == session
    clock.now += 1
    assert sessions.verify(token) is None


def test_a_new_admin_key_ends_every_session(clock: Clock) -> None:
    key: list[str | None] = ["admin-key"]
    sessions = sessions_with(key, clock)
    token, _ = sessions.issue()
    key[0] = "rotated-admin-key"
    assert sessions.verify(token) is None
    key[0] = None  # admin off
    assert sessions.verify(token) is None
    assert not sessions.is_admin_key("")


def test_only_the_admin_key_signs_in(clock: Clock) -> None:
    sessions = sessions_with(["admin-key"], clock)
    assert sessions.is_admin_key("admin-key")
    for wrong in ("", "admin-ke", "admin-key ", "ADMIN-KEY"):
        assert not sessions.is_admin_key(wrong)


def test_forged_tokens_are_refused(clock: Clock) -> None:
    sessions = sessions_with(["admin-key"], clock)
    token, _ = sessions.issue()
    other = sessions_with(["another-key"], clock).issue()[0]
    nonce, expiry, mac = token.split(".")
    for forged in (
        other,
        f"{nonce}.{int(expiry) + 1}.{mac}",
        f"{nonce}.{expiry}.{mac}x",
        f"{nonce}.-{expiry}.{mac}",
        f"{nonce}.{expiry}",
        "x" * 500,
        None,
        "",
    ):
        assert sessions.verify(forged) is None, forged


def test_the_csrf_token_belongs_to_its_session(clock: Clock) -> None:
    sessions = sessions_with(["admin-key"], clock)
    _, one = sessions.issue()
    _, two = sessions.issue()
    assert sessions.csrf_token(one) != sessions.csrf_token(two)
    assert sessions.csrf_matches(one, sessions.csrf_token(one))
    assert not sessions.csrf_matches(one, sessions.csrf_token(two))
    assert not sessions.csrf_matches(one, None) and not sessions.csrf_matches(one, "")


def test_signing_out_refuses_the_token_until_it_would_expire(clock: Clock) -> None:
    sessions = sessions_with(["admin-key"], clock)
    token, session = sessions.issue()
    kept, _ = sessions.issue()
    sessions.sign_out(session)
    assert sessions.verify(token) is None
    assert sessions.verify(kept) is not None
    for _ in range(SIGNED_OUT_KEPT + 5):
        sessions.sign_out(sessions.issue()[1])
    assert len(sessions._signed_out) <= SIGNED_OUT_KEPT
    clock.now += LIFETIME + 1
    sessions.sign_out(sessions.issue()[1])
    assert len(sessions._signed_out) == 1  # the expired ones are forgotten


def test_console_admits_reads_with_the_cookie_and_writes_with_its_csrf(clock: Clock) -> None:
    console = Console(sessions_with(["admin-key"], clock), {})
    token, session = console.sessions.issue()
    csrf = console.sessions.csrf_token(session)
    assert console.admits("GET", token, None)
    assert console.admits("POST", token, csrf)
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        with pytest.raises(CsrfError) as refused:
            console.admits(method, token, None)
        assert refused.value.status == 403 and refused.value.code == "csrf_token_invalid"
        with pytest.raises(CsrfError):
            console.admits(method, token, csrf + "x")
    assert not console.admits("POST", "forged", csrf)
    assert not console.admits("GET", None, None)


def test_the_shipped_files_are_loaded_with_versioned_names() -> None:
    assets = load_assets()
    shipped = {path.name for path in UI.iterdir() if path.is_file()}
    assert set(assets) == shipped
    page = assets[INDEX].body.decode()
    for name, asset in assets.items():
        if name != INDEX:
            assert f'"/ui/assets/{name}?v={asset.version}"' in page
        assert gzip.decompress(asset.gzipped) == asset.body
    assert not re.search(r'"/ui/assets/[^"?]+"', page)  # none left unversioned


def test_an_asset_answer_caches_revalidates_and_compresses(clock: Clock) -> None:
    console = Console(sessions_with(["k"], clock), load_assets())
    script = console.assets["app.js"]
    fresh = console.asset("app.js", script.version, None, gzip_ok=False)
    assert fresh is not None and fresh.status == 200 and fresh.body == script.body
    assert fresh.headers["cache-control"] == FOREVER
    assert fresh.headers["content-type"].startswith("text/javascript")
    assert SECURITY_HEADERS.items() <= fresh.headers.items()
    stale = console.asset("app.js", "0" * 16, None, gzip_ok=True)
    assert stale is not None and stale.headers["cache-control"] == REVALIDATE
    assert stale.headers["content-encoding"] == "gzip" and stale.body == script.gzipped
    held = console.asset("app.js", None, f'W/"x", {fresh.headers["etag"]}', gzip_ok=True)
    assert held is not None and held.status == 304 and held.body == b""
    page = console.asset(INDEX, console.assets[INDEX].version, None, gzip_ok=False)
    assert page is not None and page.headers["cache-control"] == REVALIDATE
    assert console.asset("missing.js", None, None, gzip_ok=False) is None
