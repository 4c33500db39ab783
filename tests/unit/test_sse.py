from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llm_gateway.sse import SSEParser, frame, frame_error

STREAM = (b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: line1\ndata: line2\n\n"
          b"data:nospace\n\nid: 7\ndata: [DONE]\n\n")


def parse_all(chunks):
    p = SSEParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close())
    return [(e.event, e.data) for e in out]


EXPECTED = [("message_start", '{"a":1}'), (None, "line1\nline2"), (None, "nospace"), (None, "[DONE]")]


def test_parses_whole():
    assert parse_all([STREAM]) == EXPECTED


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts):
    cuts = sorted(set(cuts))
    pieces, last = [], 0
    for c in cuts:
        pieces.append(STREAM[last:c])
        last = c
    pieces.append(STREAM[last:])
    assert parse_all(pieces) == EXPECTED


def test_final_event_without_blank_line_is_dispatched():
    assert parse_all([b"data: tail"]) == [(None, "tail")]


def test_framing():
    assert frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert frame(b'{"b":2}') == b'data: {"b":2}\n\n'
    assert frame_error({"error": {"message": "x"}}).startswith(b"event: error\ndata: {")


def test_fast_path_keeps_raw_bytes_and_matches_the_slow_path():
    data = b'data: {"x":1}\n\ndata:{"y":2}\n\n'
    fast = SSEParser().feed(data)
    assert [(e.data, e.raw) for e in fast] == [('{"x":1}', b'{"x":1}'), ('{"y":2}', b'{"y":2}')]
    # anything unusual (event lines, comments, partial events) takes the full parser
    assert [(e.event, e.data) for e in SSEParser().feed(b"event: a\ndata: 1\n\n")] == [("a", "1")]
    p = SSEParser()
    assert p.feed(b"data: par") == [] and [e.data for e in p.feed(b"t\n\n")] == ["part"]
