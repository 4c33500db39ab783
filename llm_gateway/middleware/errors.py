"""Every failure becomes the OpenAI error envelope; no traceback ever reaches a client."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import orjson
from aiohttp import web

from .. import errors
from ..keys import CTX, LIFECYCLE, SETTINGS
from ..logging import event, log

_HTTP_MAP: dict[int, type[errors.GatewayError]] = {
    400: errors.BadRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
}


def error_response(err: errors.GatewayError, request_id: str) -> web.Response:
    headers = err.headers()
    headers["X-Request-ID"] = request_id
    return web.Response(status=err.status, body=orjson.dumps(err.envelope(request_id)),
                        content_type="application/json", headers=headers)


def _from_http(exc: web.HTTPException, request: web.Request) -> errors.GatewayError:
    cls = _HTTP_MAP.get(exc.status, errors.GatewayError)
    if exc.status == 404:
        return errors.NotFound(f"No route for {request.method} {request.path}.", code="not_found")
    if exc.status == 405:
        return errors.MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    if exc.status == 413:
        return errors.PayloadTooLarge(
            f"The request body exceeds the gateway's limit of {request.app[SETTINGS].max_request_bytes} bytes "
            "(MAX_REQUEST_BYTES).")
    err = cls(exc.reason or "request failed", status=exc.status)
    err.type = "invalid_request_error" if exc.status < 500 else "server_error"
    if cls is errors.GatewayError:  # a status of aiohttp's own (403 from a static route, 431, ...)
        try:
            err.code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            err.code = f"http_{exc.status}"
    return err


def scrub_bytes(body: bytes, request: web.Request) -> bytes:
    """Defence in depth: a vendor message that quotes one of our keys never reaches a client.

    Adapters build messages from parsed fields (never a raw upstream body), but those
    fields are the vendor's text; a configured key found in an error envelope (a JSON
    answer, or a stream's SSE error event) is masked."""
    for secret in request.app[SETTINGS].secrets():
        key = secret.encode()
        if key and body.find(key) >= 0:
            body = body.replace(key, b"[REDACTED]")
    return body


def _scrub(resp: web.Response, request: web.Request) -> web.Response:
    body = resp.body
    if isinstance(body, bytes):
        scrubbed = scrub_bytes(body, request)
        if scrubbed is not body:
            resp.body = scrubbed
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    ctx = request[CTX]
    lifecycle = request.app[LIFECYCLE]
    task = request.task
    lifecycle["requests"].add(task)  # shutdown cancels what is still running at its deadline
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not lifecycle["stopping"] or ctx.error_type == "shutdown":
            raise  # a client that left, or a stream that already ended with its error event
        # The gateway's drain time is over before this request was answered: say so.
        ctx.error_type, ctx.outcome_status = "shutdown", 503
        event(logging.WARNING, "request cut by the gateway's shutdown", event="error", error_type="shutdown",
              status=503, provider=ctx.provider, model=ctx.model, attempt=ctx.attempts, detail=None)
        err = errors.UpstreamUnavailable("The gateway is shutting down; this request was cut before it was "
                                         "answered. Send it again.", retry_after=1.0, status=503)
        return error_response(err, ctx.request_id)
    except errors.GatewayError as e:
        ctx.error_type = ctx.error_type or e.error_type
        if isinstance(e, errors.ClientError) and not ctx.failures:
            event(logging.INFO, e.message[:500], event="error", error_type=e.error_type, status=e.status,
                  provider=e.provider, model=e.model, attempt=ctx.attempts, detail=e.message[:500])
        resp = _scrub(error_response(e, ctx.request_id), request)
        if ctx.attempts:  # a proxied request that failed upstream: its overhead is still ours to show
            resp.headers["X-Gateway-Attempts"] = str(ctx.attempts)
            resp.headers["X-Gateway-Overhead-Ms"] = f"{ctx.overhead_ms():.3f}"
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err = _from_http(exc, request)
        ctx.error_type = err.error_type
        return error_response(err, ctx.request_id)
    except (ConnectionResetError, ConnectionError):
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("unhandled error", extra={"event": "error", "error_type": "internal_error", "status": 500})
        ctx.error_type = "internal_error"
        err = errors.InternalError("The gateway hit an internal error; it has been logged with this request id.")
        return error_response(err, ctx.request_id)
    finally:
        lifecycle["requests"].discard(task)
