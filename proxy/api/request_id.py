"""The request id: the client's `x-request-id` when sent (bounded), else a new one."""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Request

AnyRequest = Request[Any, Any, Any]
_SAFE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(request: AnyRequest) -> str:
    state = request.scope.setdefault("state", {})
    request_id: str | None = state.get("request_id")
    if request_id is None:
        sent = request.headers.get("x-request-id")
        request_id = sent if sent and _SAFE.match(sent) else f"req_{uuid.uuid4().hex}"
        state["request_id"] = request_id
    return request_id
