"""Event lines: the four base keys first and never overridden by a field of the same name."""

from __future__ import annotations

import io
import logging

import orjson

from llm_gateway.logging import event, request_id_var, setup_logging


def test_event_line_base_keys_first_and_kept() -> None:
    buf = io.StringIO()
    handler = setup_logging("info", ["sk-live-secret-1234"], stream=buf)
    token = request_id_var.set("req-1")
    try:
        event(logging.INFO, "hello", event="response", timestamp="forged", request_id="forged", status=200,
              detail="key sk-live-secret-1234 leaked")
    finally:
        request_id_var.reset(token)
        handler.flush()
    line = orjson.loads(buf.getvalue().splitlines()[-1])
    assert list(line)[:4] == ["timestamp", "level", "message", "request_id"]
    assert (line["level"], line["message"], line["request_id"]) == ("info", "hello", "req-1")
    assert line["timestamp"] != "forged" and line["timestamp"].endswith("Z")
    assert line["event"] == "response" and line["status"] == 200
    assert line["detail"] == "key [REDACTED] leaked"


async def test_a_deferred_line_keeps_its_place_time_and_request_id(monkeypatch) -> None:
    """``event_later`` formats at write time, but the line is the one it would have been."""
    import time

    from llm_gateway.logging import event_later

    buf = io.StringIO()
    handler = setup_logging("info", ["sk-live-secret-1234"], stream=buf)
    try:
        token = request_id_var.set("req-a")
        event_later(logging.INFO, "first", event="request", detail="sk-live-secret-1234")
        request_id_var.reset(token)
        logged_at = time.time()
        monkeypatch.setattr(time, "time", lambda: logged_at + 3600.0)  # formatted an hour "later"
        token = request_id_var.set("req-b")
        event(logging.INFO, "second", event="response")
        request_id_var.reset(token)
        assert buf.getvalue() == ""  # both wait for the loop's next turn
    finally:
        handler.flush()
        monkeypatch.undo()
    first, second = (orjson.loads(x) for x in buf.getvalue().splitlines())
    assert (first["message"], first["request_id"], second["message"], second["request_id"]) == (
        "first", "req-a", "second", "req-b")
    assert first["detail"] == "[REDACTED]"
    assert first["timestamp"] < second["timestamp"]  # taken when logged, not when formatted


async def test_lines_reach_a_binary_stream_in_order_as_utf8() -> None:
    """stdout's own buffer gets the bytes (no decode and re-encode); the gateway's lines,
    deferred ones and third-party records keep their order, non-ASCII text survives, a
    nested dict with non-string keys is still written, and secrets are still replaced."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    handler = setup_logging("info", ["sk-live-secret-1234"], stream=stream)
    from llm_gateway.logging import event_later

    try:
        event_later(logging.INFO, "first", event="request", detail="héllo ✓ sk-live-secret-1234")
        logging.getLogger("aiohttp.server").warning("third-party %s", "record")
        event(logging.INFO, "third", event="response", counts={1: "one"})
    finally:
        handler.flush()
    lines = [orjson.loads(x) for x in raw.getvalue().splitlines()]
    assert [x["message"] for x in lines] == ["first", "third-party record", "third"]
    assert lines[0]["detail"] == "héllo ✓ [REDACTED]"
    assert lines[2]["counts"] == {"1": "one"}
    assert raw.getvalue().endswith(b"\n") and b"\n\n" not in raw.getvalue()
