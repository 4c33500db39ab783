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


def test_single_is_only_taken_for_one_whole_data_line_event():
    p = SSEParser()
    assert p.single(b'data: {"x":1}\n\n') == b'{"x":1}'
    assert p.single(b"data:[DONE]\n\n") == b"[DONE]"
    assert p.single(b"data:\n\n") == b""
    for other in (b'data: {"x":1}\n\ndata: 2\n\n',  # two events
                  b"data: a\ndata: b\n\n",  # one event of two lines
                  b"event: e\ndata: 1\n\n", b": keep-alive\n\n", b"id: 1\n\n",
                  b'data: {"x":1}\r\n\r\n', b"data: a\rdata: b\n\n",  # CR line ends
                  b"data: partial", b"data: x\n"):
        assert p.single(other) is None, other
    p.feed(b"data: par")  # an event is half read: what follows must go through feed
    assert p.single(b"t\n\n") is None and p.single(b"data: t\n\n") is None


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_single_or_feed_gives_the_same_events(cuts):
    """How LiveStream reads: ``single`` when it applies, else ``feed``."""
    cuts = sorted(set(cuts))
    pieces, last = [], 0
    for c in [*cuts, len(STREAM)]:
        pieces.append(STREAM[last:c])
        last = c
    p = SSEParser()
    out = []
    for piece in pieces:
        raw = p.single(piece)
        if raw is not None:
            out.append((None, raw.decode()))
        else:
            out.extend((e.event, e.data) for e in p.feed(piece))
    out.extend((e.event, e.data) for e in p.close())
    assert out == EXPECTED
