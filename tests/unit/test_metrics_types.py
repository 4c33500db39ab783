"""The lean metric types (metrics.py) expose exactly what prometheus_client's own would."""

from __future__ import annotations

import prometheus_client as pc
from prometheus_client.parser import text_string_to_metric_families

from llm_gateway import metrics as lean

OBSERVED = (0.0, 0.005, 0.0051, 0.3, 7.0, 299.9, 300.0, 1e6)  # bounds themselves and beyond the last


def exposition(mod: object, registry: object, collector_registry: object) -> dict:
    c = mod.Counter("t_requests", "Requests.", ["route", "status"], registry=registry)
    h = mod.Histogram("t_latency_seconds", "Latency.", ["route"], buckets=lean._LATENCY_BUCKETS, registry=registry)
    g = mod.Gauge("t_in_flight", "In flight.", registry=registry)
    gl = mod.Gauge("t_backend_up", "Up.", ["backend"], registry=registry)
    c.labels("/a", "200").inc()
    c.labels("/a", "200").inc(2.5)
    c.labels("/b", "500").inc()
    for v in OBSERVED:
        h.labels("/a").observe(v)
    h.labels("/b")  # a child with no observation yet
    g.inc()
    g.inc()
    g.dec()
    gl.labels("redis").set(1)
    gl.labels("memory").set(0)
    text = pc.generate_latest(collector_registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                assert s.value > 1.7e9  # a wall-clock time; the exact value differs
                continue
            out[(fam.type, s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_lean_types_match_prometheus_client() -> None:
    ref_registry = pc.CollectorRegistry()
    reference = exposition(pc, ref_registry, ref_registry)
    families: list = []
    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(lean._Collector(families))
    ours = exposition(lean, families, registry)
    assert ours == reference
    assert reference[("histogram", "t_latency_seconds_bucket", (("le", "0.005"), ("route", "/a")))] == 2
    assert reference[("gauge", "t_in_flight", ())] == 1


def test_made_up_model_names_cannot_push_catalog_models_into_other() -> None:
    from llm_gateway.metrics import MAX_LABEL_VALUES, _Capped

    c = _Capped()
    c.known = frozenset({"gpt-4o-mini"})
    assert [c(f"junk-{i}") for i in range(MAX_LABEL_VALUES)] == [f"junk-{i}" for i in range(MAX_LABEL_VALUES)]
    assert c("junk-more") == "other" and c("gpt-4o-mini") == "gpt-4o-mini"
