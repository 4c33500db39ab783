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
