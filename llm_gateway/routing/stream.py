"""A streamed answer in flight: first-token and idle limits, and recovery after the first byte.

Before the first content chunk reaches the client the router retries and falls back
freely (``Router.open_stream``). After it, a cut, stalled or broken upstream stream is
*continued* on the next target (then, as a last resort, once on the same target):

* where the target accepts an assistant prefill (a catalog capability), the text
  already delivered is sent as a trailing assistant message with ``"prefix": true``
  and the continuation is appended as it comes;
* otherwise a fresh answer is requested and its already-delivered prefix is skipped;
  if the fresh answer does not start with what was delivered, splicing would produce
  nonsense, so recovery fails instead.

A target that rejects the prefill is asked for a fresh answer; its rejection never
replaces the original failure. When nothing can continue the answer the original
error is raised and the handler ends the client stream with an SSE error event and no
``[DONE]``: a truncated answer is never dressed up as complete. A single malformed
upstream event is skipped and logged; a second one fails the segment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .. import errors
from ..adapters.base import Chunk, StreamTranslator, UpstreamStream
from ..context import RequestContext
from ..logging import event
from ..sse import SSEParser
from .resolve import Target

if TYPE_CHECKING:
    from .router import Router

#: seconds a complete answer waits for the vendor's end marker before it is finalised
END_GRACE = 0.5


@dataclass(slots=True)
class Segment:
    """One upstream stream's share of the answer (usage and cost are settled per segment)."""

    target: Target
    request: dict[str, Any]
    up: UpstreamStream
    translator: StreamTranslator
    started: float
    parser: SSEParser = field(default_factory=SSEParser)
    malformed: int = 0
    ended: bool = False
    closed: bool = False
    #: fresh-answer recovery: text still to be skipped before new content is passed on
    skip: str = ""
    #: the skip is an echoed prefill: an answer that does not repeat it is passed on as is
    skip_lenient: bool = False
    #: text this segment delivered to the client (after skipping)
    delivered: list[str] = field(default_factory=list)
    continuation: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # complete: the vendor's last event is in (its connection may still be reused)
            self.up.close(complete=self.ended or self.translator.done)


class ClientWriter(Protocol):
    """Where a stream's chunks go (the handler's SSE response)."""

    #: ``write_nowait`` may be used (the response is under way on a plain transport)
    nowait: bool

    async def write(self, batch: list[Chunk]) -> None: ...

    def write_nowait(self, batch: list[Chunk]) -> bool:
        """Write now, without waiting; False when the client's buffer is full (``drain``)."""
        ...

    #: optional: one chunk passed through as received (its JSON bytes) written now, as
    #: ``write_nowait([chunk])`` would; None (or absent) when every batch must go
    #: through ``write_nowait`` (the answer is being recorded for the cache, say)
    write_event_nowait: Callable[[bytes], bool] | None

    async def drain(self) -> None:
        """Wait while the client's buffer is full (at once when it is not)."""
        ...


class LiveStream:
    """The client's one stream, made of one or more upstream segments."""

    def __init__(self, router: Router, ctx: RequestContext, seg: Segment, remaining: list[Target]) -> None:
        self.router = router
        self.ctx = ctx
        self.seg = seg
        self.segments = [seg]
        self.remaining = remaining
        self.pending: list[Chunk] = []
        self._next = seg.up.next_chunk
        self._push = getattr(seg.up, "push", None)  # None: this stream is read by the task only
        self._client: ClientWriter | None = None
        self._write_event: Callable[[bytes], bool] | None = None  # the client's, while pushing
        self._woken: asyncio.Future[None] | None = None
        self._push_error: Exception | None = None
        self._idle = 0.0
        #: STREAM_IDLE_TIMEOUT is time spent waiting on the upstream since its last event:
        #: keep-alives (SSE comments, blank lines, ``KEEPALIVE_EVENTS``) are not progress,
        #: and time spent writing to a slow client is not the upstream's idleness
        self._spent = 0.0  # waited since the last event, over the reads and pushes so far
        self._progress = False  # set by ``_take`` when a piece held an event
        self._base = 0.0  # while pushing: ``_spent`` before ``_mark``
        self._mark = 0.0  # while pushing: when the current quiet time began
        self.recovered = 0
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0
        self._watch: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[Any] | None = None  # the task blocked in a read, if any
        self._task: asyncio.Task[Any] | None = None
        self._expired = False
        self._same_target_retried = False  # the last resort (once on the broken target) is spent

    # ------------------------------------------------------------------ compatibility views
    @property
    def target(self) -> Target:
        return self.segments[0].target

    @property
    def translator(self) -> StreamTranslator:
        return self.seg.translator

    def delivered_text(self) -> str:
        return "".join(s for seg in self.segments for s in self._seg_text(seg))

    @staticmethod
    def _seg_text(seg: Segment) -> list[str]:
        return seg.delivered if seg.continuation else seg.translator.text

    # ------------------------------------------------------------------ reading
    def _take(self, data: bytes) -> None:
        """One network piece of the upstream body: its events translated into ``pending``."""
        seg = self.seg
        raw = seg.parser.single(data)
        if raw is not None:
            self._progress = True
            self._event(raw, seg.translator.feed_data)
        else:
            keepalive = seg.translator.KEEPALIVE_EVENTS
            for ev in seg.parser.feed(data):
                if ev.event not in keepalive:
                    self._progress = True
                self._event(ev, seg.translator.feed)

    def _event(self, ev: Any, feed: Any) -> None:
        seg = self.seg
        if seg.translator.done:
            return
        try:
            out = feed(ev)
        except ValueError as e:
            self._malformed(e)
            return
        if seg.continuation:
            out = self._splice(out)
        self.pending.extend(out)

    def _malformed(self, e: ValueError) -> None:
        """One malformed event is skipped (and logged); a second fails the segment."""
        seg = self.seg
        seg.malformed += 1
        event(logging.WARNING, "skipped a malformed stream event", event="error",
              error_type="malformed_event", status=None, provider=seg.target.provider,
              model=seg.target.model, attempt=self.ctx.attempts, detail=str(e)[:200])
        if seg.malformed > 1:
            raise errors.UpstreamBadResponse(
                f"{seg.target.provider} sent more than one malformed stream event") from None

    def _has_content(self) -> bool:
        tr = self.seg.translator
        if tr.text or tr.finish_reason is not None or tr.done:
            return True
        for c in self.pending:
            if isinstance(c, dict):
                for ch in c.get("choices") or ():
                    d = ch.get("delta") or {}
                    if d.get("tool_calls") or d.get("content") or ch.get("finish_reason"):
                        return True
            elif c.find(b'"tool_calls"') >= 0:
                return True
        return False

    async def fill_first(self, deadline: float) -> None:
        """Read until the first content (or the end) within the first-token deadline."""
        while not self._has_content():
            remaining = deadline - self.router.clock()
            if remaining <= 0:
                raise errors.UpstreamTimeout(
                    f"no first token within {self.router.settings.stream_first_token_timeout:g} s")
            if not await self._read(remaining, first=True):
                break
        if self.seg.ended:
            self._check_complete()

    def _arm(self, timeout: float) -> None:
        """Start a wait of at most ``timeout``: one watchdog timer per stream (``_watch``),
        moved only when it would fire too early or too late, not an ``asyncio.timeout``
        per chunk."""
        loop = self._loop
        self._deadline = loop.time() + timeout
        w = self._watch
        if w is None or w.when() > self._deadline:
            if w is not None:
                w.cancel()
            self._watch = loop.call_at(self._deadline, self._expire)
        if self._task is None:
            self._task = asyncio.current_task()
        self._reader = self._task

    def _timed_out(self, first: bool) -> errors.UpstreamTimeout:
        self._expired = False
        if self._reader is not None:
            self._reader.uncancel()
        s = self.router.settings
        what = (f"no first token within {s.stream_first_token_timeout:g} s" if first
                else f"the stream stalled for {s.stream_idle_timeout:g} s")
        return errors.UpstreamTimeout(what)

    async def _watched(self, aw: Any, timeout: float, first: bool) -> Any:
        """``await aw`` under the stream's watchdog: its expiry becomes ``UpstreamTimeout``."""
        self._arm(timeout)
        try:
            return await aw
        except asyncio.CancelledError:
            if not self._expired:
                raise
            raise self._timed_out(first) from None
        finally:
            self._reader = None

    async def _read(self, timeout: float, first: bool = False) -> bool:
        """Read one network piece into ``pending``. False at the end of the body."""
        seg = self.seg
        t0 = self._loop.time()
        data = await self._watched(self._next(), timeout, first)
        if not data:
            for ev in seg.parser.close():
                self._event(ev, seg.translator.feed)
            tail = seg.translator.finish()
            self.pending.extend(self._splice(tail) if seg.continuation else tail)
            seg.ended = True
            return False
        self._progress = False
        self._take(data)
        self._spent = 0.0 if self._progress else self._spent + (self._loop.time() - t0)
        return True

    # ------------------------------------------------------------------ push mode
    async def _pushed(self, client: ClientWriter, timeout: float, window: float) -> bool:
        """Let the upstream connection hand chunks straight to the client (``_on_data``,
        called inside the upstream protocol's ``data_received``) until the stream ends,
        fails, stalls or the client's buffer fills up. False: push mode was not possible
        now (pieces are waiting, or the stream cannot push): ``_read`` instead.
        ``timeout``: what is left of the idle ``window``, which each upstream event restarts."""
        push = self._push
        if push is None or not client.nowait:
            return False
        fut = self._loop.create_future()
        self._client, self._woken = client, fut
        self._write_event = getattr(client, "write_event_nowait", None)
        self._idle = window
        self._push_error = None  # one a timeout overtook belonged to the segment that failed
        if not push(self._on_data, self._wake):
            self._client = self._woken = self._write_event = None
            return False
        self._base, self._mark = self._spent, self._loop.time()
        try:
            await self._watched(fut, timeout, False)
        finally:
            self._client = self._woken = self._write_event = None
            self.seg.up.unpush()  # type: ignore[attr-defined]
            self._spent = self._base + (self._loop.time() - self._mark)
        err = self._push_error
        if err is not None:
            self._push_error = None
            raise err
        return True

    def _on_data(self, data: bytes) -> None:
        """One upstream piece in push mode: parsed, translated and written to the client
        now. Never raises (it runs inside the upstream protocol): a failure is kept for
        the waiting task, which handles it as ``_read`` would have."""
        try:
            seg = self.seg
            tr = seg.translator
            raw = seg.parser.single(data)
            if raw is not None and not seg.continuation and not tr.done:
                # The common piece, one event of a segment that is not a continuation:
                # ``_take`` and ``_event`` inlined (this runs per streamed chunk).
                self._mark = now = self._loop.time()
                self._deadline, self._base = now + self._idle, 0.0
                try:
                    out = tr.feed_data(raw)
                except ValueError as e:
                    self._malformed(e)
                    out = ()
            else:
                self._progress = False
                self._take(data)
                if self._progress:  # an event, not a keep-alive: the idle time starts again
                    self._mark = now = self._loop.time()
                    self._deadline, self._base = now + self._idle, 0.0
                out, self.pending = self.pending, []
            if out:
                write_event = self._write_event
                if write_event is not None and len(out) == 1 and type(out[0]) is bytes:
                    room = write_event(out[0])
                else:
                    room = self._client.write_nowait(out)  # type: ignore[union-attr]
                if not room:
                    self._wake()  # the client's buffer is full: the task waits for it
                    return
            if tr.done:
                self._wake()
            elif tr.finish_reason is not None and tr.answer_complete(self._n()):
                self._near_end()
        except Exception as e:  # noqa: BLE001 - handed to the task, raised there
            self._push_error = e
            self._wake()

    def _near_end(self) -> None:
        """The answer is all in; only the vendor's end marker ([DONE], message_stop) is
        still to come, normally at once. A vendor that goes silent now is waited for
        ``END_GRACE`` seconds, not the whole idle limit, before the answer is finalised."""
        if self._idle > END_GRACE:
            self._idle = END_GRACE
            self._deadline = min(self._deadline, self._loop.time() + END_GRACE)
            w = self._watch
            if w is not None and w.when() > self._deadline:
                w.cancel()
                self._watch = self._loop.call_at(self._deadline, self._expire)

    def _wake(self) -> None:
        """Back to the task: from now on pieces wait in the reader."""
        self.seg.up.unpush()  # type: ignore[attr-defined]
        fut = self._woken
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _expire(self) -> None:
        """The watchdog: cancel the pending read once its deadline has really passed."""
        self._watch = None
        if self._reader is None:
            return  # not reading (writing to the client): the next read sets a new deadline
        if self._loop.time() < self._deadline:
            self._watch = self._loop.call_at(self._deadline, self._expire)
            return
        self._expired = True
        self._reader.cancel()

    def _n(self) -> int:
        n = self.segments[0].request.get("n")
        return n if isinstance(n, int) and n > 1 else 1

    def _check_complete(self) -> None:
        seg = self.seg
        if seg.continuation and seg.skip and not seg.skip_lenient:
            raise errors.UpstreamBadResponse(
                f"{seg.target.provider}'s answer ended before the text already delivered; the answer cannot be "
                "continued", provider=seg.target.provider, model=seg.target.model)
        if not seg.translator.answer_complete(self._n()):
            raise errors.UpstreamUnavailable(
                f"{seg.target.provider} closed the stream before the answer was complete",
                provider=seg.target.provider, model=seg.target.model)

    async def pump(self, client: ClientWriter) -> None:
        """Pass the answer to the client, a batch of chunks per upstream piece; continue
        on another target when one breaks. Between the task's reads the upstream
        connection writes chunks to the client itself (push mode) while it can."""
        idle = self.router.settings.stream_idle_timeout
        self._spent = 0.0
        try:
            while True:
                try:
                    if self.pending:
                        out, self.pending = self.pending, []
                        await client.write(out)
                    else:
                        await client.drain()  # push mode stopped for a full client buffer
                    tr = self.seg.translator
                    if self.seg.ended or tr.done:
                        self._check_complete()
                        break
                    wait = END_GRACE if tr.finish_reason is not None and tr.answer_complete(self._n()) else idle
                    left = min(idle, wait) - self._spent
                    if left <= 0:  # only keep-alives since the last event, for the whole limit
                        raise errors.UpstreamTimeout(f"the stream stalled for {idle:g} s")
                    if not await self._pushed(client, left, min(idle, wait)):
                        await self._read(left)
                except errors.GatewayError as e:
                    if self._finished():
                        self._finalise(e)
                        break
                    self._failed(e)
                    await self._recover(e)
                    self._spent = 0.0  # a new segment, its first content just in
            self.router.health.success(self.seg.target.key, (time.perf_counter() - self.seg.started) * 1000.0)
        finally:
            self.close()

    def _finished(self) -> bool:
        """The answer is all in (its finish reason, and with n > 1 the usage that follows
        every choice's end): a cut or stall now only lost the vendor's end marker."""
        if self.seg.continuation and self.seg.skip:
            return False
        return self.seg.translator.answer_complete(self._n())

    def _finalise(self, e: errors.GatewayError) -> None:
        """SPEC 7: a stream that ends without [DONE] but otherwise complete is finalised,
        not generated again. Its connection is not reused (``Segment.close``)."""
        seg = self.seg
        event(logging.INFO, "stream finalised without the vendor's end marker", event="error",
              error_type=e.error_type, status=e.upstream_status or e.status, provider=seg.target.provider,
              model=seg.target.model, attempt=self.ctx.attempts, detail=e.message[:200])
        self._close_segment(seg)

    def _failed(self, e: errors.GatewayError) -> None:
        seg = self.seg
        e.provider = e.provider or seg.target.provider
        e.model = e.model or seg.target.model
        self.router.record_failure(self.ctx, seg.target, e)
        self._close_segment(seg)

    def _close_segment(self, seg: Segment) -> None:
        if not seg.closed:
            self.ctx.upstream_s += time.perf_counter() - seg.started
            seg.close()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for seg in self.segments:
            self._close_segment(seg)

    # ------------------------------------------------------------------ recovery
    async def _recover(self, original: errors.GatewayError) -> None:
        delivered = self.delivered_text()
        carry, self.pending = self.pending, []  # the broken segment's last good chunks go first
        n = self.segments[0].request.get("n")
        if (isinstance(n, int) and n > 1) or any(s.translator.tools_seen for s in self.segments):
            # Only choice 0's text can be continued: several choices, or tool calls (whose
            # deltas a second answer would repeat), cannot be spliced into one answer.
            self.pending = carry
            raise original
        base = self.segments[0].request
        clock, limit = self.router.clock, self.router.settings.stream_first_token_timeout
        broken = self.seg.target
        for t in self._candidates(broken):
            modes = ("prefill", "fresh") if t.prefill and delivered else ("fresh",)
            for mode in modes:
                body = dict(base)
                if mode == "prefill":
                    body["messages"] = [*base["messages"], {"role": "assistant", "content": delivered,
                                                            "prefix": True}]
                deadline = clock() + limit
                try:
                    seg = await self.router.open_segment(self.ctx, body, t)
                except errors.GatewayError as e:
                    self.router.record_failure(self.ctx, t, e)
                    if mode == "prefill" and isinstance(e, errors.ClientError):
                        continue  # the prefill was refused: ask this target for a fresh answer
                    break  # this target is out; the next one may do
                seg.continuation = True
                echoed = mode == "prefill" and t.adapter.prefill_echoes_prefix
                if mode == "fresh" or echoed:
                    seg.skip, seg.skip_lenient = delivered, echoed
                else:  # a prefill sent without its trailing whitespace (Anthropic refuses it): the
                    # continuation may start by writing it again; the client has it already
                    seg.skip, seg.skip_lenient = delivered[len(delivered.rstrip()):], True
                self._switch(seg)
                try:
                    await self.fill_first(deadline)
                except errors.GatewayError as e:
                    self.pending = []
                    self._failed(e)
                    if mode == "prefill" and isinstance(e, errors.ClientError):
                        continue
                    break
                self.pending = carry + self.pending
                self.recovered += 1
                self.ctx.error_type = None  # continued: the failure is in ctx.failures, not the outcome
                if t.key != self.segments[0].target.key:
                    self.ctx.fallback_used = True
                    if self.router.observer is not None:
                        self.router.observer.fallback(t.provider)
                where = "the same target" if t.key == broken.key else "another target"
                event(logging.INFO, f"stream continued on {where}", event="attempt",
                      provider=t.provider, model=t.model, attempt=self.ctx.attempts,
                      error_type=original.error_type, status=original.upstream_status or original.status,
                      delay_ms=0, mode=mode, delivered_chars=len(delivered))
                return
        self.pending = carry
        raise original

    def _candidates(self, broken: Target) -> Any:
        """Who may continue the answer: each fallback not yet tried, once, in order (the
        ones left after a success stay for a later failure), then, as the last resort,
        the target that broke, once per stream. Never an endless loop."""
        while self.remaining:
            yield self.remaining.pop(0)
        if not self._same_target_retried:
            self._same_target_retried = True
            yield broken

    def _switch(self, seg: Segment) -> None:
        self.seg = seg
        self.segments.append(seg)
        self._next = seg.up.next_chunk
        self._push = getattr(seg.up, "push", None)

    def _splice(self, chunks: list[Chunk]) -> list[Chunk]:
        """Continuation chunks: no second role, the already-delivered prefix skipped."""
        out: list[Chunk] = []
        seg = self.seg
        for c in chunks:
            obj = orjson.loads(c) if isinstance(c, bytes) else c
            keep = []
            for ch in obj.get("choices") or []:
                if ch.get("index", 0) != 0:
                    continue
                delta = dict(ch.get("delta") or {})
                delta.pop("role", None)
                content = delta.get("content")
                if content and seg.skip:
                    if seg.skip.startswith(content):
                        seg.skip = seg.skip[len(content):]
                        content = ""
                    elif content.startswith(seg.skip):
                        content = content[len(seg.skip):]
                        seg.skip = ""
                    elif seg.skip_lenient:
                        seg.skip = ""  # the vendor did not echo the prefill after all
                    else:
                        raise errors.UpstreamBadResponse(
                            "the fallback's fresh answer does not match the text already delivered; "
                            "the answer cannot be continued coherently")
                    delta["content"] = content
                if content:
                    seg.delivered.append(content)
                if all(v is None or v == "" for v in delta.values()):
                    delta = {}  # the continuation's opening chunk (content "", refusal null): nothing new
                if delta or ch.get("finish_reason"):
                    keep.append({**ch, "delta": delta})
            if keep:
                # one identity for the whole stream, as OpenAI's chunks have: the first segment's
                cid, created, model, _ = self.segments[0].translator.identity()
                chunk = {**obj, "choices": keep}
                if cid:
                    chunk["id"] = cid
                if created:
                    chunk["created"] = created
                if model:
                    chunk["model"] = model
                out.append(chunk)
        return out
