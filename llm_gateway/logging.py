"""One JSON object per line on stdout (python-json-logger's orjson formatter).

Logging sits on the hot path (three lines per request at info), so it is kept cheap:
the gateway's own events skip the LogRecord and are serialised straight from their
fields dict to UTF-8 bytes (written to stdout's binary buffer: no decode and
re-encode), the timestamp's seconds part is formatted once per second,
caller/thread/process look-ups are off, and lines written inside the event loop are
buffered and written with one ``write`` + ``flush`` per loop iteration instead of one
per line (order is kept; the buffer is flushed at exit and on close). Third-party
records take python-json-logger's own path into the same buffer.

Every line carries ``timestamp``, ``level``, ``message`` and ``request_id`` (from a
ContextVar set by the request-id middleware, so lines written deep in the router or
an adapter carry it too). Secrets never reach a line: the formatter replaces every
configured key (vendor and gateway keys) wherever it would appear, and nothing in the
gateway logs headers or bodies in the first place.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

log = logging.getLogger("llm_gateway")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                logging.ERROR: "error", logging.CRITICAL: "critical"}


_NOW: Any = object()  # format_event's "the current request" default
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # a timestamp's end, by millisecond


class GatewayFormatter(OrjsonFormatter):
    """timestamp (UTC, ISO 8601, ms), lowercase level, message, request_id, then extras."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__("%(message)s")
        # Matched in the UTF-8 bytes of a line (orjson's output): the same text either way.
        self._secrets = [s.encode() for s in (secrets or []) if len(s) >= 4]
        self._ts_sec = -1
        self._ts_prefix = ""

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        t = record.created
        sec = int(t)
        if sec != self._ts_sec:
            self._ts_sec = sec
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        log_record["timestamp"] = f"{self._ts_prefix}.{int((t - sec) * 1000):03d}Z"
        log_record["level"] = _LEVEL_NAMES.get(record.levelno) or record.levelname.lower()
        log_record["message"] = record.getMessage()
        d = record.__dict__
        log_record["request_id"] = d.get("request_id") or request_id_var.get()
        fields = d.get("_fields")
        if fields is not None:  # our own events: one dict, already the line's extra keys
            for k, v in fields.items():
                if k not in log_record:
                    log_record[k] = v
        else:  # third-party records: whatever ``extra`` they carried
            for k, v in d.items():
                if k not in _RESERVED and k not in log_record:
                    log_record[k] = v
        if record.exc_info:
            log_record["exc_info"] = self.formatException(record.exc_info)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record).encode()).decode()

    def format_event(self, level: int, message: str, fields: dict[str, Any], t: float | None = None,
                     request_id: Any = _NOW) -> bytes:
        """One of the gateway's own lines, as UTF-8 bytes (no LogRecord, no decode and
        re-encode on the way to stdout): the same JSON the LogRecord path gives. ``t``
        and ``request_id``: the moment and request the line is about, when it is
        formatted later (``event_later``); by default now's, from the context."""
        if t is None:
            t = time.time()
        if request_id is _NOW:
            request_id = request_id_var.get()
        sec = int(t)
        if sec != self._ts_sec:
            self._ts_sec = sec
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        ts = self._ts_prefix + _MILLIS[int((t - sec) * 1000)]
        lvl = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
        data = {"timestamp": ts, "level": lvl, "message": message, "request_id": request_id, **fields}
        if len(data) != 4 + len(fields):  # a field named like a base key: the base key wins
            data.update(timestamp=ts, level=lvl, message=message, request_id=request_id)
        try:  # str keys throughout, as almost always: orjson's faster path
            out = orjson.dumps(data, default=self.json_default)
        except TypeError:  # a nested dict with other keys (OPT_NON_STR_KEYS, as the LogRecord path)
            out = orjson.dumps(data, default=self.json_default, option=orjson.OPT_NON_STR_KEYS)
        return self._redact(out)

    def _redact(self, out: bytes) -> bytes:
        for secret in self._secrets:
            if out.find(secret) >= 0:  # not ``in``: that raises and clears a TypeError inside CPython
                out = out.replace(secret, b"[REDACTED]")
        return out


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a traceback quoting up to 100 bytes of the offending line for every
    malformed request (a header over MAX_HEADER_BYTES, too many headers...). That is the
    client's error, already answered with 400; keep one line without the quoted bytes,
    which may hold a credential (an oversized Authorization header)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.msg = f"malformed HTTP request refused with {exc.code or 400} ({type(exc).__name__})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.__dict__.setdefault("event", "error")
            record.__dict__.setdefault("error_type", "malformed_request")
        return True


_MALFORMED = MalformedRequestFilter()

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName", "_fields"}


class LineHandler(logging.Handler):
    """Writes formatted lines; inside a running event loop they are batched per iteration.

    Lines are kept as UTF-8 bytes and written to the stream's binary buffer when it has
    one (``sys.stdout.buffer``), else decoded for a text stream (a ``StringIO`` in tests)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[bytes | tuple[Any, ...]] = []
        self._scheduled = False
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode()
        except Exception:
            self.handleError(record)
            return
        self._queue(line)  # Handler.handle holds the lock

    def emit_event(self, level: int, message: str, fields: dict[str, Any]) -> None:
        """The gateway's own event lines: the same JSON as ``emit`` gives, made straight
        from the fields (no LogRecord)."""
        fmt: GatewayFormatter = self.formatter  # type: ignore[assignment]
        try:
            line = fmt.format_event(level, message, fields)
            with self.lock:  # type: ignore[union-attr]  # a thread's record may be flushing
                self._queue(line)
        except Exception:
            self.handleError(logging.LogRecord("llm_gateway", level, "", 0, message, None, None))

    def defer_event(self, level: int, message: str, fields: dict[str, Any]) -> None:
        """``emit_event``, formatted when the batch is written, in its place among the
        other lines; time and request id are taken now."""
        entry = (time.time(), level, message, fields, request_id_var.get())
        with self.lock:  # type: ignore[union-attr]
            self._queue(entry)

    def _queue(self, line: bytes | tuple[Any, ...]) -> None:
        self._pending.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def _write(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        parts = [line if type(line) is bytes else self._format_deferred(line) for line in lines]
        if b"" in parts:  # a deferred line that failed to format was reported instead
            parts = [p for p in parts if p]
        out = b"\n".join(parts) + b"\n"
        stream = self.stream
        try:
            binary = getattr(stream, "buffer", None)
            if binary is not None:
                binary.write(out)
                binary.flush()
            else:
                stream.write(out.decode())
                stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: nothing left to tell
            pass

    def _format_deferred(self, entry: tuple[Any, ...]) -> bytes:
        t, level, message, fields, request_id = entry
        try:
            fmt: GatewayFormatter = self.formatter  # type: ignore[assignment]
            return fmt.format_event(level, message, fields, t, request_id)
        except Exception:
            self.handleError(logging.LogRecord("llm_gateway", level, "", 0, message, None, None))
            return b""

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            self._write()

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
        super().close()


def setup_logging(level: str, secrets: list[str] | None = None, stream: Any = None) -> logging.Handler:
    # No caller, thread or process look-ups per record: the lines never show them.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _fast
    handler = LineHandler(stream or sys.stdout)
    handler.setFormatter(GatewayFormatter(secrets))
    _fast = handler
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_llm_gateway", False):
            root.removeHandler(h)
            h.close()
    handler._llm_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    log.setLevel(_LEVELS[level])
    # aiohttp's own access log duplicates ours; its error lines stay (warning and up).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server_log.filters:
        server_log.addFilter(_MALFORMED)
    return handler


_fast: LineHandler | None = None  # set by setup_logging: our events skip the LogRecord


def event_later(level: int, message: str, **fields: Any) -> None:
    """``event``, but the line is formatted when the pending lines are written (the event
    loop's next turn), still in the order events were logged: for lines written while a
    request is on its way to the vendor, whose formatting should not delay it. The
    fields must not change afterwards."""
    if log.isEnabledFor(level):
        if _fast is not None:
            _fast.defer_event(level, message, fields)
        else:
            log.log(level, message, extra={"_fields": fields})


def event(level: int, message: str, **fields: Any) -> None:
    """Write one event line; fields become top-level JSON keys."""
    if log.isEnabledFor(level):
        if _fast is not None:
            _fast.emit_event(level, message, fields)
        else:
            log.log(level, message, extra={"_fields": fields})
