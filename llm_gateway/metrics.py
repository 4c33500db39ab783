"""Prometheus metrics (``GET /metrics``), one ``CollectorRegistry`` per app.

A per-app registry (not prometheus-client's global one) lets tests run several apps in
one process without "Duplicated timeseries" errors, and keeps what one app counts out
of another's scrape.

Where the numbers come from:
* ``record(request, ctx, status)`` — called once per request from the access-log
  middleware's ``finally`` (the one "request finished" place, streams included, so a
  stream's latency is the whole stream): requests, latency, overhead, upstream time,
  time to first token, tokens and cost.
* the response cache: ``cache_result`` (hit / miss / bypass / coalesced) and
  ``cache_backend_state``.
* the router (``router.observer = metrics``): ``retry`` and ``fallback``; the health
  table (``health.on_cooldown``): ``cooldown`` when a target's circuit opens.

Label cardinality is bounded: ``route`` is the matched route pattern (or
``unmatched``), never the raw path; provider, model and tenant values are capped
(``MAX_LABEL_VALUES`` distinct values each, then ``other``), since with no gateway keys a
tenant is whatever a body says and ``provider/any-model`` is forwarded. No request ids
or free text are labels. A label child is a plain number found by one dict lookup (the
lean types below), so a request's metrics cost a few additions.

Tokens and cost count what upstream calls used: a cache hit adds its request, latency
and cache counters, but no tokens and no cost (it cost nothing).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.samples import Sample

from .context import RequestContext

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MAX_LABEL_VALUES = 200
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


# Lean metric types. prometheus_client's own take a threading.Lock on every inc() and
# observe(): eight of them per request cost ~30 CPU-us (bench/profile.py). Every update
# here happens on the app's event loop thread, so a child is a plain number; the
# registry reads them through a collector at scrape time and prometheus_client still
# writes the exposition format (the same names, HELP, TYPE, _total/_bucket/_created).

class _CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf only)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound is in it
        self.sum += value


class _Family:
    kind = ""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] | list[str] = (),
                 buckets: tuple[float, ...] = (), registry: list[_Family] | None = None) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(buckets)
        self.children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._unlabelled = self.labels()
        if registry is not None:
            registry.append(self)

    def _new(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        c = self.children.get(values)
        if c is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
            c = self.children[values] = self._new()
        return c

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled.dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled.set(value)

    def collect(self) -> Metric:
        raise NotImplementedError


class Counter(_Family):
    def _new(self) -> _CounterChild:
        return _CounterChild()

    def collect(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, c in list(self.children.items()):
            fam.add_metric(values, c.value, created=c.created)
        return fam


class Gauge(_Family):
    def _new(self) -> _GaugeChild:
        return _GaugeChild()

    def collect(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, c in list(self.children.items()):
            fam.add_metric(values, c.value)
        return fam


class Histogram(_Family):
    def _new(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def collect(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for values, c in list(self.children.items()):
            acc, cumulative = 0, []
            for le, n in zip(bounds, c.counts):
                acc += n
                cumulative.append((le, float(acc)))
            fam.add_metric(values, cumulative, c.sum)
            fam.samples.append(Sample(self.name + "_created", dict(zip(self.labelnames, values)), c.created))
        return fam


class _Collector:
    def __init__(self, families: list[_Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for f in self.families:
            yield f.collect()


class _Capped:
    """Pass a label value through until ``cap`` distinct values were seen; then ``other``.
    ``known`` values (the catalog's models, the configured providers) always pass and do
    not count: made-up model names cannot push real ones into ``other``."""

    __slots__ = ("seen", "cap", "known")

    def __init__(self, cap: int = MAX_LABEL_VALUES) -> None:
        self.seen: set[str] = set()
        self.cap = cap
        self.known: frozenset[str] = frozenset()

    def __call__(self, v: str) -> str:
        if v in self.seen or v in self.known:
            return v
        if len(self.seen) < self.cap:
            self.seen.add(v)
            return v
        return "other"


def route_of(request: web.Request) -> str:
    """The matched route pattern (``/v1/chat/completions``, ``/ui/``) or ``unmatched``."""
    try:
        res = request.match_info.route.resource
    except AttributeError:
        return "unmatched"
    return res.canonical if res is not None else "unmatched"


class Metrics:
    def __init__(self) -> None:
        r: list[_Family] = []
        self.requests = Counter("llm_gateway_requests", "Requests by route, provider, model and HTTP status.",
                                ["route", "provider", "model", "status"], registry=r)
        self.latency = Histogram("llm_gateway_request_duration_seconds",
                                 "Whole-request latency (a stream: until its last byte).", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("llm_gateway_upstream_duration_seconds",
                                  "Time spent waiting on upstreams per request (all attempts), by the "
                                  "provider and model that answered.", ["provider", "model"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llm_gateway_time_to_first_token_seconds",
                              "Streams: request start to the first content chunk in hand.",
                              ["provider", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("llm_gateway_overhead_seconds",
                                  "Time spent in the gateway itself (total minus upstream).", ["route"],
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.input_tokens = Counter("llm_gateway_input_tokens", "Input (prompt) tokens sent upstream.",
                                    ["provider", "model", "tenant"], registry=r)
        self.output_tokens = Counter("llm_gateway_output_tokens", "Output (completion) tokens received.",
                                     ["provider", "model", "tenant"], registry=r)
        self.cost = Counter("llm_gateway_cost_usd", "Upstream cost in USD.", ["provider", "model", "tenant"],
                            registry=r)
        self.cache = Counter("llm_gateway_cache_requests",
                             "Response-cache outcomes: hit, miss, bypass, coalesced (served by a concurrent "
                             "identical request's answer).", ["result"], registry=r)
        self.cache_up = Gauge("llm_gateway_cache_backend_up", "1 when the cache backend answers.", ["backend"],
                              registry=r)
        self.retries = Counter("llm_gateway_retries", "Retries of the same target, by provider.", ["provider"],
                               registry=r)
        self.fallbacks = Counter("llm_gateway_fallbacks", "Moves to the next target, by the provider that "
                                 "failed.", ["provider"], registry=r)
        self.cooldowns = Counter("llm_gateway_cooldowns", "Circuits opened (target cooled down), by provider.",
                                 ["provider"], registry=r)
        self.in_flight = Gauge("llm_gateway_requests_in_flight", "API requests being served now.", registry=r)
        self._providers = _Capped()
        self._models = _Capped()
        self._tenants = _Capped()
        #: (route, provider, model, status) -> the children every request updates, found once
        self._every_request: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(r))
        for result in ("hit", "miss", "bypass", "coalesced"):
            self.cache.labels(result)  # present at 0 from the start

    def know(self, providers: Any, models: Any) -> None:
        """Label values that are always reported as themselves (see ``_Capped``)."""
        self._providers.known = frozenset(providers)
        self._models.known = frozenset(models)

    # ------------------------------------------------------------------ per request
    def record(self, request: web.Request, ctx: RequestContext, status: int) -> None:
        route = route_of(request)
        provider = self._providers(ctx.provider or "")
        model = self._models(ctx.model or "")
        key = (route, provider, model, status)
        children = self._every_request.get(key)
        if children is None:  # as many keys as the requests counter has children
            children = self._every_request[key] = (
                self.requests.labels(route, provider, model, str(status)), self.latency.labels(route),
                self.overhead.labels(route))
        requests, latency, overhead = children
        requests.inc()
        latency.observe(ctx.elapsed_ms() / 1000.0)
        overhead.observe(ctx.overhead_ms() / 1000.0)
        if ctx.upstream_s > 0.0:
            self.upstream.labels(provider, model).observe(ctx.upstream_s)
        if ctx.first_token_s is not None:
            self.ttft.labels(provider, model).observe(ctx.first_token_s)
        if ctx.cache != "HIT" and ctx.provider:
            tenant = self._tenants(ctx.tenant or "default")
            u = ctx.usage
            if u:
                pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
                if pt:
                    self.input_tokens.labels(provider, model, tenant).inc(pt)
                if ct:
                    self.output_tokens.labels(provider, model, tenant).inc(ct)
            if ctx.cost:
                self.cost.labels(provider, model, tenant).inc(float(ctx.cost))

    # ------------------------------------------------------------------ cache
    def cache_result(self, result: str) -> None:
        self.cache.labels(result).inc()

    def cache_backend_state(self, backend: str, up: bool) -> None:
        self.cache_up.labels(backend).set(1 if up else 0)

    # ------------------------------------------------------------------ router / health observer
    def retry(self, provider: str) -> None:
        self.retries.labels(self._providers(provider)).inc()

    def fallback(self, provider: str) -> None:
        self.fallbacks.labels(self._providers(provider)).inc()

    def cooldown(self, target_key: str) -> None:
        """``target_key`` is ``provider/model`` (health's key)."""
        self.cooldowns.labels(self._providers(target_key.partition("/")[0])).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
