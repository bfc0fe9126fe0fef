"""The admin API's handlers: check the admin key, decode, call the service, respond (JSON,
or CSV for usage). Mounted only when admin is on; errors are OpenAI's envelope."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from proxy.admin.bodies import KeyCreate, KeyPatch, decode
from proxy.admin.console import COOKIE, CSRF_HEADER
from proxy.admin.console_routes import CONSOLE_ROUTES
from proxy.admin.runtime import AdminRuntime
from proxy.api.request_id import AnyRequest, read_headers
from proxy.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from proxy.gateway import Gateway
from proxy.keys import bearer_token

NO_STORE = {"cache-control": "no-store"}  # secrets are shown once: never kept by a cache
CONSOLE_HEADERS = frozenset({CSRF_HEADER.encode()})
_encode = msgspec.json.Encoder().encode


def authorize(request: AnyRequest, gateway: Gateway) -> AdminRuntime:
    """The admin backend, for a caller with the admin key or, without a bearer key, a console
    session: 401 with neither, 403 for any other key (compared in constant time) or a
    console write without its CSRF token, 404 while admin is off."""
    admin, admin_key = gateway.admin, gateway.policy.config.admin.key
    if admin is None or not admin_key:
        raise NotFoundError(f"Unknown path: {request.method} {request.url.path}")
    authorization, _, found = read_headers(request, CONSOLE_HEADERS)
    token = bearer_token(authorization)
    console = None if token else admin.console
    cookie, csrf = request.cookies.get(COOKIE), found.get(CSRF_HEADER)
    if console is not None and console.admits(request.method, cookie, csrf):
        return admin  # signed in through the console (its CSRF token checked on writes)
    if not token:
        raise AuthenticationError(
            "The admin API needs the admin key: 'Authorization: Bearer <admin key>'."
        )
    sent = hashlib.sha256(token.encode()).digest()
    if not hmac.compare_digest(sent, hashlib.sha256(admin_key.encode()).digest()):
        raise PermissionDeniedError("This key may not use the admin API.")
    return admin


def reply(content: Any, status: int = 200) -> Response[bytes]:
    return Response(
        _encode(content), status_code=status, media_type="application/json", headers=NO_STORE
    )


@post("/admin/keys", status_code=201)
async def create_key(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    admin = authorize(request, gateway)
    body = decode(await request.body(), KeyCreate)
    return reply(await admin.service.create_key(body), 201)


@get("/admin/keys")
async def list_keys(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    return reply(await authorize(request, gateway).service.list_keys())


@get("/admin/keys/{name:str}")
async def get_key(
    request: AnyRequest, gateway: NamedDependency[Gateway], name: FromPath[str]
) -> Response[bytes]:
    return reply(await authorize(request, gateway).service.get_key(name))


@patch("/admin/keys/{name:str}")
async def update_key(
    request: AnyRequest, gateway: NamedDependency[Gateway], name: FromPath[str]
) -> Response[bytes]:
    admin = authorize(request, gateway)
    body = decode(await request.body(), KeyPatch)
    return reply(await admin.service.update_key(name, body))


@delete("/admin/keys/{name:str}", status_code=200)
async def delete_key(
    request: AnyRequest, gateway: NamedDependency[Gateway], name: FromPath[str]
) -> Response[bytes]:
    return reply(await authorize(request, gateway).service.delete_key(name))


@post("/admin/keys/{name:str}/rotate", status_code=200)
async def rotate_key(
    request: AnyRequest, gateway: NamedDependency[Gateway], name: FromPath[str]
) -> Response[bytes]:
    return reply(await authorize(request, gateway).service.rotate_key(name))


@get("/admin/usage")
async def usage(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[Any]:
    admin = authorize(request, gateway)
    output, content = await admin.service.usage(dict(request.query_params))
    if output == "csv":
        return Response(content, media_type="text/csv; charset=utf-8", headers=NO_STORE)
    return reply(content)


@get("/admin/audit")
async def audit(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    admin = authorize(request, gateway)
    return reply(await admin.service.audit(dict(request.query_params)))


@get("/admin/overview")
async def overview(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    admin = authorize(request, gateway)
    return reply(await admin.service.overview(dict(request.query_params)))


@get("/admin/policy")
async def policy(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[bytes]:
    return reply(authorize(request, gateway).service.policy())


ADMIN_ROUTES = [
    create_key,
    list_keys,
    get_key,
    update_key,
    delete_key,
    rotate_key,
    usage,
    audit,
    overview,
    policy,
    *CONSOLE_ROUTES,  # 404 unless admin.ui
]
