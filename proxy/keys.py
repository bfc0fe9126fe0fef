"""Client keys: who a caller is, which models it may use, its own limits and budget.

A key comes from proxy.yaml (compiled with the policy) or, at run time, from the operators'
store; both become the same `ClientKey`, held in memory and looked up by the sha256 of the
secret, so no request ever waits on a database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import translate

from proxy.config import BudgetConfig, KeyConfig, LimitSpec
from proxy.errors import AuthenticationError
from proxy.limits.scopes import Limits, compile_limits


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    digest: bytes
    allowed: re.Pattern[str] | None  # None: every model
    limits: Limits | None = None
    own_limits: bool = False  # False: `limits.default` applies
    budget: BudgetConfig | None = None
    expires_at: float | None = None  # epoch seconds; refused from then on
    runtime: bool = False  # made through the admin API (file keys are read-only there)

    def allows(self, model: str) -> bool:
        return self.allowed is None or self.allowed.fullmatch(model) is not None


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    key: ClientKey | None = None

    def allows(self, model: str) -> bool:
        return self.key is None or self.key.allows(model)


ANONYMOUS = Caller("anonymous")
NO_KEYS: Mapping[bytes, ClientKey] = {}


def compile_key(
    name: str,
    digest: bytes,
    models: list[str],
    limits: LimitSpec | None = None,
    budget: BudgetConfig | None = None,
    expires_at: float | None = None,
    runtime: bool = False,
) -> ClientKey:
    allowed = None
    if "*" not in models:
        allowed = re.compile("|".join(f"(?:{translate(glob)})" for glob in models) or "(?!)")
    return ClientKey(
        name,
        digest,
        allowed,
        compile_limits("key", limits),
        limits is not None,
        budget,
        expires_at,
        runtime,
    )


def key_from_config(key: KeyConfig) -> ClientKey:
    if key.sha256 is not None:
        digest = bytes.fromhex(key.sha256)
    else:
        digest = hashlib.sha256((key.key or "").encode()).digest()
    expires = parse_expiry(key.expires_at) if key.expires_at is not None else None
    return compile_key(key.name, digest, key.models, key.limits, key.budget, expires)


def parse_expiry(value: str) -> float:
    """Epoch seconds from an ISO 8601 time (UTC unless it says otherwise)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def authenticate(
    authorization: str | None,
    keys: Mapping[bytes, ClientKey],
    runtime: Mapping[bytes, ClientKey] = NO_KEYS,
) -> Caller:
    """Map the Authorization header to a caller: anonymous when no key exists anywhere,
    else a 401 for a missing, unknown or expired key."""
    if not keys and not runtime:
        return ANONYMOUS
    token = bearer_token(authorization)
    if not token:
        raise AuthenticationError(
            "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'."
        )
    digest = hashlib.sha256(token.encode()).digest()
    key = keys.get(digest) or runtime.get(digest)
    if key is None or not hmac.compare_digest(key.digest, digest):
        raise AuthenticationError("Incorrect API key provided.")
    if key.expires_at is not None and time.time() >= key.expires_at:
        raise AuthenticationError("The API key has expired.", code="expired_api_key")
    return Caller(key.name, key)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
