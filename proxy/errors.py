"""One exception tree; each class knows its HTTP status and OpenAI error type/code.

ProxyError
├── InvalidRequestError            400 invalid_request_error
│   ├── UpstreamRejectedError      400 (the upstream's 400/422 message)
│   └── UnsupportedEndpointError   400 unsupported_endpoint
├── AuthenticationError            401
├── PermissionDeniedError          403
├── ModelNotFoundError             404 model_not_found
├── NotFoundError                  404 (unknown path)
├── MethodNotAllowedError          405
├── RequestTooLargeError           413
├── RateLimitError                 429 rate_limit_exceeded
├── UpstreamError                  502 upstream_error
│   └── UpstreamAuthError          502 upstream_auth_error
├── ServiceUnavailableError        503
│   └── UpstreamNotConfiguredError 503 upstream_not_configured
├── UpstreamTimeoutError           504 timeout
└── InternalError                  500
"""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


_encode = msgspec.json.Encoder().encode


class ProxyError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.headers = headers or {}
        # for an upstream failure: the upstream's HTTP status, "timeout" or "connect",
        # matched against `retry.on`
        self.cause = cause

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))

    def body(self) -> bytes:
        return _encode(self.envelope())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            seconds = max(self.retry_after, 0.0)
            headers["retry-after"] = str(max(1, round(seconds + 0.4999)))
            headers["retry-after-ms"] = str(int(seconds * 1000))
        return headers


class InvalidRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"


class UpstreamRejectedError(InvalidRequestError):
    """The upstream judged the request invalid (its 400/422): the client's fault."""


class UnsupportedEndpointError(InvalidRequestError):
    """No route of the model can serve this kind of request (e.g. embeddings of a chat model)."""

    code = "unsupported_endpoint"


class AuthenticationError(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(ProxyError):
    status = 403
    type = "permission_denied"
    code = "permission_denied"


class ModelNotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(ProxyError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class InsufficientQuotaError(RateLimitError):
    """A budget is spent: retrying will not help, so the SDKs are told not to."""

    type = "insufficient_quota"
    code = "insufficient_quota"

    def response_headers(self) -> dict[str, str]:
        return {**super().response_headers(), "x-should-retry": "false"}


class UpstreamError(ProxyError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    type = "upstream_auth_error"
    code = "upstream_auth_error"


class ServiceUnavailableError(ProxyError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamNotConfiguredError(ServiceUnavailableError):
    code = "upstream_not_configured"


class UpstreamTimeoutError(ProxyError):
    status = 504
    type = "timeout"
    code = "timeout"


class InternalError(ProxyError):
    status = 500
    type = "server_error"
    code = "internal_error"


# The `reason` label of a failed upstream call comes from this set, never from upstream text
# (an upstream's error code may be anything, even an echo of a credential).
REASONS = frozenset(
    {
        "timeout",
        "connect",
        "invalid_request_error",
        "context_length_exceeded",
        "upstream_error",
        "upstream_auth_error",
        "upstream_model_not_found",
        "rate_limit_exceeded",
        "service_unavailable",
        "worker_not_ready",
        "timeout_error",
    }
)


def reason_label(exc: ProxyError) -> str:
    """What failed, for metrics: the upstream's HTTP status, timeout, connect, or our code."""
    cause = exc.cause
    if cause is not None and ((cause.isdigit() and len(cause) == 3) or cause in REASONS):
        return cause
    code = exc.code if exc.code in REASONS else exc.type
    return code if code in REASONS else "other"
