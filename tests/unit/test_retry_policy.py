"""Property tests for the backoff schedule: bounds, jitter range, Retry-After precedence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.settings import Settings

policies = st.builds(
    lambda initial, extra, factor, jitter, retries: Settings(
        initial_backoff_ms=initial, max_backoff_ms=initial + extra, backoff_factor=factor,
        jitter=jitter, max_retries=retries),
    st.floats(0, 5000), st.floats(0, 60000), st.floats(1, 10), st.floats(0, 1), st.integers(0, 12))


@given(policies, st.floats(0, 1))
def test_delays_within_bounds(settings, draw):
    delays = list(RetryPolicy(settings, lambda: draw).delays())
    assert len(delays) == settings.max_retries
    for n, d in enumerate(delays):
        nominal = min(settings.initial_backoff_ms * settings.backoff_factor ** n, settings.max_backoff_ms)
        assert 0 <= d * 1000 <= settings.max_backoff_ms + 1e-6
        # the JITTER fraction of each delay is random: d in [nominal * (1 - J), nominal]
        assert nominal * (1 - settings.jitter) - 1e-6 <= d * 1000 <= nominal + 1e-6


@given(policies)
def test_jitter_spans_its_range(settings):
    low = list(RetryPolicy(settings, lambda: 1.0).delays())
    high = list(RetryPolicy(settings, lambda: 0.0).delays())
    for n, (lo, hi) in enumerate(zip(low, high)):
        nominal = min(settings.initial_backoff_ms * settings.backoff_factor ** n, settings.max_backoff_ms) / 1000
        assert abs(hi - nominal) < 1e-9
        assert abs(lo - nominal * (1 - settings.jitter)) < 1e-9


@given(policies, st.floats(0, 3600), st.floats(0, 100))
def test_retry_after_wins_up_to_the_cap(settings, retry_after, computed):
    p = RetryPolicy(settings)
    got = p.delay_for(computed, retry_after)
    if retry_after * 1000 > settings.max_backoff_ms:
        assert got is None  # beyond the cap: move to the next fallback instead of sleeping
    else:
        assert got == retry_after
    assert p.delay_for(computed, None) == computed


def test_delays_grow_exponentially_without_jitter():
    s = Settings(initial_backoff_ms=1000, max_backoff_ms=30000, backoff_factor=2.0, jitter=0.0, max_retries=6)
    assert list(RetryPolicy(s).delays()) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_health_table_is_bounded_and_keeps_cooling_targets() -> None:
    from llm_gateway import errors
    from llm_gateway.routing import health as H

    clock = [0.0]
    h = H.Health(clock=lambda: clock[0])
    for _ in range(3):  # three failures in a row: this one cools down
        h.begin("openai/gpt-4o")
        h.failure("openai/gpt-4o", errors.UpstreamUnavailable("down"))
    assert not h.available("openai/gpt-4o")
    for i in range(H.MAX_TARGETS + 500):  # a client inventing model names
        h.begin(f"mock/junk-{i}")
        h.success(f"mock/junk-{i}", 1.0)
    assert len(h.targets) <= H.MAX_TARGETS
    assert "openai/gpt-4o" in h.targets and not h.available("openai/gpt-4o")
