"""The console's handlers: the page and its assets under /ui, and its session at /ui/session
(GET: who am I, POST: sign in with the admin key, DELETE: sign out). 404 while admin is off or
with `admin.ui: false`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath

from proxy.admin.console import COOKIE, CSRF_HEADER, INDEX, SECURITY_HEADERS, Console
from proxy.admin.sessions import Session
from proxy.api.request_id import AnyRequest
from proxy.errors import AuthenticationError, InvalidRequestError, NotFoundError
from proxy.gateway import Gateway

_encode = msgspec.json.Encoder().encode


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(max_length=4096)]


_decode_sign_in = msgspec.json.Decoder(SignIn).decode


def _console(request: AnyRequest, gateway: Gateway) -> Console:
    admin = gateway.admin
    if admin is None or admin.console is None or not gateway.policy.config.admin.key:
        raise NotFoundError(f"Unknown path: {request.method} {request.url.path}")
    return admin.console


def _header(request: AnyRequest, name: bytes) -> str | None:
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _over_https(request: AnyRequest) -> bool:
    """Did the browser use https? Either to us, or to the TLS terminator in front of us
    (which says so in X-Forwarded-Proto). A wrong claim only makes a cookie stricter."""
    forwarded = (_header(request, b"x-forwarded-proto") or "").split(",")[0].strip().lower()
    return request.scope.get("scheme") == "https" or forwarded == "https"


def _json(content: Any, status: int = 200, cookies: list[Cookie] | None = None) -> Response[bytes]:
    headers = {**SECURITY_HEADERS, "cache-control": "no-store"}
    return Response(
        _encode(content),
        status_code=status,
        media_type="application/json",
        headers=headers,
        cookies=cookies,
    )


def _cookie(request: AnyRequest, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_over_https(request),
    )


def _signed_in(console: Console, session: Session) -> dict[str, Any]:
    expires = datetime.fromtimestamp(session.expires_at, UTC).isoformat().replace("+00:00", "Z")
    return {
        "signed_in": True,
        "csrf_token": console.sessions.csrf_token(session),
        "expires_at": expires,
    }


def _serve(request: AnyRequest, console: Console, name: str) -> Response[bytes]:
    reply = console.asset(
        name,
        request.query_params.get("v"),
        _header(request, b"if-none-match"),
        "gzip" in (_header(request, b"accept-encoding") or ""),
    )
    if reply is None:
        raise NotFoundError(f"Unknown path: {request.method} {request.url.path}")
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


@get("/ui")
async def console_page(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    return _serve(request, _console(request, gateway), INDEX)


@get("/ui/assets/{name:str}")
async def console_asset(
    request: AnyRequest, gateway: NamedDependency[Gateway], name: FromPath[str]
) -> Response[bytes]:
    console = _console(request, gateway)
    if name == INDEX:
        raise NotFoundError(f"Unknown path: {request.method} {request.url.path}")
    return _serve(request, console, name)


@get("/ui/session")
async def session_state(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    console = _console(request, gateway)
    session = console.sessions.verify(request.cookies.get(COOKIE))
    if session is None:
        return _json({"signed_in": False})
    return _json(_signed_in(console, session))


@post("/ui/session", status_code=200)
async def sign_in(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """The admin key in, a session cookie out. A wrong key says only that it is wrong."""
    console = _console(request, gateway)
    try:
        sent = _decode_sign_in(await request.body()).key
    except (msgspec.DecodeError, UnicodeDecodeError):  # a ValidationError too; bad UTF-8
        raise InvalidRequestError(
            'Sign in with a JSON body: {"key": "<the admin key>"}.', param="key"
        ) from None
    if not console.sessions.is_admin_key(sent):
        raise AuthenticationError("That is not the admin key.", code="invalid_admin_key")
    token, session = console.sessions.issue()
    cookie = _cookie(request, token, console.sessions.lifetime)
    return _json(_signed_in(console, session), cookies=[cookie])


@delete("/ui/session", status_code=200)
async def sign_out(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Ends the session (its CSRF token required, as for every write); the cookie goes
    either way."""
    console = _console(request, gateway)
    cookie = request.cookies.get(COOKIE)
    session = console.sessions.verify(cookie)
    if session is not None:
        console.admits("DELETE", cookie, _header(request, CSRF_HEADER.encode()))
        console.sessions.sign_out(session)
    return _json({"signed_in": False}, cookies=[_cookie(request, "", 0)])


CONSOLE_ROUTES = [console_page, console_asset, session_state, sign_in, sign_out]
