"""Console sessions: a signed token in an HttpOnly cookie, and the CSRF token derived from it.

A session token is `<nonce>.<expiry>.<mac>`, the MAC an HMAC-SHA256 of nonce and expiry under
a key derived from the admin key. Nothing is stored to accept one, so every replica and every
worker process with the same admin key accepts it (a load balancer needs no stickiness) and a
changed admin key ends every session at once. The CSRF token is another HMAC of the nonce:
checked without state too, and useless without the cookie it belongs to.

Signing out clears the cookie and, in this process, refuses the token until it would have
expired; elsewhere a copy of it stays valid until then (at most `LIFETIME`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

LIFETIME = 8 * 3600  # seconds: a working day, then sign in again
SIGNED_OUT_KEPT = 10_000  # signed-out nonces remembered at most (each only until it expires)
_CONTEXT = b"llm-proxy console session v1"


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires_at: int  # epoch seconds


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def same_secret(sent: str, expected: str) -> bool:
    """Compared in constant time, whatever the lengths (both hashed first)."""
    ours = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(hashlib.sha256(sent.encode()).digest(), ours)


class ConsoleSessions:
    def __init__(
        self,
        admin_key: Callable[[], str | None],  # the admin key in force (a reload may change it)
        clock: Callable[[], float] = time.time,
        lifetime: int = LIFETIME,
    ) -> None:
        self._admin_key = admin_key
        self._clock = clock
        self.lifetime = lifetime
        self._signed_out: dict[str, int] = {}  # nonce -> its expiry

    def is_admin_key(self, sent: str) -> bool:
        admin_key = self._admin_key()
        return bool(admin_key) and bool(sent) and same_secret(sent, admin_key or "")

    def issue(self) -> tuple[str, Session]:
        """A new session and its token (the cookie's value)."""
        session = Session(_b64(secrets.token_bytes(16)), int(self._clock()) + self.lifetime)
        return f"{session.nonce}.{session.expires_at}.{self._mac(b's', session)}", session

    def verify(self, token: str | None) -> Session | None:
        """The session a token stands for, or None: forged, expired, signed out, or signed
        with another admin key."""
        if not token or len(token) > 200 or not self._admin_key():
            return None
        nonce, _, rest = token.partition(".")
        expiry, _, mac = rest.partition(".")
        if not expiry.isdigit():
            return None
        session = Session(nonce, int(expiry))
        if not hmac.compare_digest(mac.encode(), self._mac(b"s", session).encode()):
            return None
        if session.expires_at <= self._clock() or nonce in self._signed_out:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return self._mac(b"c", session)

    def csrf_matches(self, session: Session, sent: str | None) -> bool:
        expected = self.csrf_token(session).encode()
        return bool(sent) and hmac.compare_digest((sent or "").encode(), expected)

    def sign_out(self, session: Session) -> None:
        now = self._clock()
        self._signed_out = {n: e for n, e in self._signed_out.items() if e > now}
        if len(self._signed_out) >= SIGNED_OUT_KEPT:  # full: the ones expiring soonest go
            for nonce in sorted(self._signed_out, key=self._signed_out.__getitem__)[:1000]:
                del self._signed_out[nonce]
        self._signed_out[session.nonce] = session.expires_at

    def _mac(self, purpose: bytes, session: Session) -> str:
        admin_key = (self._admin_key() or "").encode()
        key = hmac.new(admin_key, _CONTEXT, hashlib.sha256).digest()
        message = b"%s|%s|%d" % (purpose, session.nonce.encode(), session.expires_at)
        return _b64(hmac.new(key, message, hashlib.sha256).digest())
