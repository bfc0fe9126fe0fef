"""Request ids: a leaf module, so the gateway, its HTTP shell and the local worker share one
format without importing each other."""

from __future__ import annotations

import re
from random import getrandbits

_SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return f"req_{getrandbits(128):032x}"  # unique, not secret: no need for os.urandom


def request_id_from(sent: str | None) -> str:
    """The caller's id when it is short and made of safe characters, else a new one."""
    return sent if sent and _SAFE.fullmatch(sent) else new_request_id()
