"""The operators' console: its static files (shipped in the package under proxy/admin/ui, read
once), the headers every /ui answer carries, and who a console request is.

The page calls the admin API with the session cookie; a write (anything but GET and HEAD)
must also carry the session's CSRF token in `x-csrf-token`. Requests with the admin key as a
bearer token do not go through here at all.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

from proxy.admin.sessions import ConsoleSessions
from proxy.errors import PermissionDeniedError

INDEX = "index.html"
ASSET_PATH = "/ui/assets/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "x-csrf-token"
COOKIE = "llm_proxy_console"
# Nothing but the proxy itself, no inline script or style, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
FOREVER = "public, max-age=31536000, immutable"  # a versioned URL never changes
REVALIDATE = "no-cache"  # kept, but checked against the ETag each time


class CsrfError(PermissionDeniedError):
    code = "csrf_token_invalid"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    version: str  # the first hex digits of the content's sha256

    def etag(self, gzipped: bool) -> str:
        return f'"{self.version}-gz"' if gzipped else f'"{self.version}"'


@dataclass(frozen=True, slots=True)
class AssetReply:
    status: int
    body: bytes
    headers: dict[str, str]


def _asset(name: str, body: bytes) -> Asset:
    media_type = MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
    version = hashlib.sha256(body).hexdigest()[:16]
    return Asset(body, gzip.compress(body, 9, mtime=0), media_type, version)


def load_assets() -> dict[str, Asset]:
    """The console's files; the page names each asset with its version (`?v=`), so a
    browser keeps an asset until the package ships another."""
    folder = resources.files("proxy.admin").joinpath("ui")
    raw = {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and "." + entry.name.rsplit(".", 1)[-1] in MEDIA_TYPES
    }
    assets = {name: _asset(name, body) for name, body in raw.items() if name != INDEX}
    page = raw[INDEX]
    for name, asset in assets.items():
        plain, versioned = f'"{ASSET_PATH}{name}"', f'"{ASSET_PATH}{name}?v={asset.version}"'
        page = page.replace(plain.encode(), versioned.encode())
    assets[INDEX] = _asset(INDEX, page)
    return assets


class Console:
    def __init__(self, sessions: ConsoleSessions, assets: Mapping[str, Asset]) -> None:
        self.sessions = sessions
        self.assets = dict(assets)

    @classmethod
    def load(cls, admin_key: Callable[[], str | None]) -> Console:
        return cls(ConsoleSessions(admin_key), load_assets())

    def admits(self, method: str, cookie: str | None, csrf: str | None) -> bool:
        """Is this a signed-in console request? False without a valid session; a write with
        a session but without its CSRF token is refused outright."""
        session = self.sessions.verify(cookie)
        if session is None:
            return False
        if method not in SAFE_METHODS and not self.sessions.csrf_matches(session, csrf):
            raise CsrfError(
                f"A console request that changes something needs the '{CSRF_HEADER}' header "
                "of its session."
            )
        return True

    def asset(
        self, name: str, version: str | None, if_none_match: str | None, gzip_ok: bool
    ) -> AssetReply | None:
        """An asset's answer (304 when the browser holds it already), None if unknown."""
        asset = self.assets.get(name)
        if asset is None:
            return None
        versioned = version == asset.version and name != INDEX
        headers = {
            **SECURITY_HEADERS,
            "etag": asset.etag(gzip_ok),
            "cache-control": FOREVER if versioned else REVALIDATE,
            "vary": "accept-encoding",
        }
        held = {tag.strip() for tag in (if_none_match or "").split(",")}
        if held & {asset.etag(False), asset.etag(True)}:
            return AssetReply(304, b"", headers)
        headers["content-type"] = asset.media_type
        if gzip_ok:
            headers["content-encoding"] = "gzip"
            return AssetReply(200, asset.gzipped, headers)
        return AssetReply(200, asset.body, headers)
