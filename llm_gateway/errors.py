"""The gateway's error tree.

Every failure the gateway reports is a ``GatewayError``. Each class knows its HTTP
status, its OpenAI error ``type`` and ``code``, and whether the router may retry it
(same target) or move on to the next target. Adapters turn vendor errors into these;
the errors middleware turns them into the OpenAI envelope
``{"error": {"message", "type", "param", "code", "request_id"}}``.

::

    GatewayError
    ├── ClientError                      the caller's fault, never retried
    │   ├── BadRequest (400)
    │   │   ├── InvalidJSON
    │   │   ├── UnsupportedParameter     a field the chosen vendor/version cannot take
    │   │   ├── ContextTooLong           context_length_exceeded: next larger target or back
    │   │   └── ContentPolicy            vendor refused on policy grounds
    │   ├── AuthenticationError (401)    the caller's gateway key
    │   ├── PermissionDenied (403)
    │   ├── RequestTimeout (408)         the client sent its body too slowly
    │   ├── RateLimitExceeded (429)      the gateway's own per-tenant/per-key limit
    │   ├── NotFound (404)               unknown route or model
    │   ├── PayloadTooLarge (413)
    │   └── CostLimitExceeded (402)
    │       └── BudgetExceeded   a tenant's daily or monthly budget (code budget_exceeded)
    ├── LimiterUnavailable (503)         the shared rate-limit store is down (fail-closed)
    └── UpstreamError                    a target failed; the router decides
        ├── RateLimited (429)            retryable, honours retry_after
        ├── Overloaded (503)             Anthropic 529 and friends; retryable
        ├── UpstreamTimeout (504)        retryable; moves on by default
        ├── UpstreamUnavailable (502)    5xx, connection refused/reset; retryable
        ├── UpstreamAuthFailed (502)     *our* vendor key was refused: never the client's 401
        ├── UpstreamBadResponse (502)    unparseable or malformed vendor answer
        └── AllTargetsFailed             every target failed; keeps each attempt
"""

from __future__ import annotations

import re
from typing import Any


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        model: str | None = None,
        upstream_status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: for the log only, never a client: what the vendor said where the client is not
        #: told (a refused key: the vendor's text can carry a masked fragment of it)
        self.detail = detail
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.model = model
        self.upstream_status = upstream_status

    @property
    def error_type(self) -> str:
        """Short class-derived name used in logs (``rate_limited``, ``timeout`` ...)."""
        return _snake(type(self).__name__)

    def envelope(self, request_id: str | None) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
            "request_id": request_id,
        }
        return {"error": err}

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None and self.status in (429, 503):
            return {"Retry-After": str(max(1, int(round(self.retry_after + 0.499))))}
        return {}


_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    """``UpstreamTimeout`` -> ``upstream_timeout``; an acronym stays one word
    (``InvalidJSON`` -> ``invalid_json``, not ``invalid_j_s_o_n``)."""
    return _WORD_START.sub("_", name).lower()


# ---------------------------------------------------------------- the caller's fault
class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BadRequest(ClientError):
    pass


class InvalidJSON(BadRequest):
    code = "invalid_json"


class UnsupportedParameter(BadRequest):
    code = "unsupported_parameter"


class ContextTooLong(BadRequest):
    code = "context_length_exceeded"


class ContentPolicy(BadRequest):
    code = "content_policy_violation"


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="llm-gateway"'}


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ClientError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class CostLimitExceeded(ClientError):
    status = 402
    type = "insufficient_quota"
    code = "cost_limit_exceeded"


class BudgetExceeded(CostLimitExceeded):
    """A tenant's budget, not the request's max_cost_usd: its own error_type in logs and
    the ledger, so the two refusals can be told apart."""

    code = "budget_exceeded"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class RateLimitExceeded(ClientError):
    """The gateway's own limit (requests or tokens per minute); not an upstream's 429."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class LimiterUnavailable(GatewayError):
    """RATE_LIMIT_FAIL_OPEN=false and the shared store cannot be reached."""

    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


# ---------------------------------------------------------------- a target failed
class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class RateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Overloaded(UpstreamError):
    status = 503
    type = "overloaded_error"
    code = "upstream_overloaded"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "upstream_unavailable"


class UpstreamAuthFailed(UpstreamError):
    status = 502
    code = "upstream_auth_failed"
    retryable = False


class UpstreamBadResponse(UpstreamError):
    status = 502
    code = "upstream_bad_response"
    retryable = False


class AllTargetsFailed(UpstreamError):
    """Every target failed. ``attempts`` keeps each attempt's error, in order."""

    retryable = False

    def __init__(self, message: str, *, attempts: list[dict[str, Any]], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.attempts = attempts

    def envelope(self, request_id: str | None) -> dict[str, Any]:
        env = super().envelope(request_id)
        env["error"]["attempts"] = self.attempts
        return env


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"
