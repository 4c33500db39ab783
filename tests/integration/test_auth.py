"""Gateway keys: accepted and refused in every form; the tenant comes from the key.

Keys come from GATEWAY_API_KEYS (``key:tenant``) and from ``[[keys]]`` tables holding
only SHA-256 digests. Also: start-up refusal on an open bind, masked settings repr,
config errors naming their line.
"""

from __future__ import annotations

import asyncio
import hashlib

import openai
import orjson
import pytest

from llm_gateway.settings import ConfigError, load_settings

ENV_KEY = "gw-env-key-0123456789abcdef"
HASHED_KEY = "gw-hashed-key-fedcba9876543210"
HASHED_DIGEST = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
CONFIG = f"""
[[keys]]
sha256 = "{HASHED_DIGEST}"
tenant = "beta"
name = "beta-ci"
"""
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hello"}]}


def envelope(body: dict, rid: str) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code", "request_id"}
    assert err["request_id"] == rid
    return err


@pytest.fixture
async def gw(gateway):
    return await gateway({"GATEWAY_API_KEYS": f"{ENV_KEY}:alpha"}, config=CONFIG)


@pytest.mark.parametrize("headers, tenant", [
    ({"Authorization": f"Bearer {ENV_KEY}"}, "alpha"),
    ({"Authorization": f"bearer   {ENV_KEY}  "}, "alpha"),  # scheme is case-insensitive
    ({"x-api-key": ENV_KEY}, "alpha"),
    ({"Authorization": f"Bearer {HASHED_KEY}"}, "beta"),
    ({"X-API-Key": HASHED_KEY}, "beta"),
])
async def test_key_accepted(gw, headers, tenant):
    async with gw.http.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200, await r.text()
    req = [e for e in gw.events("request") if e.get("path") == "/v1/chat/completions"]
    assert req[-1]["tenant"] == tenant


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"),
    ({"Authorization": "Bearer wrong-key"}, "invalid_api_key"),
    ({"x-api-key": "wrong-key"}, "invalid_api_key"),
    ({"x-api-key": ""}, "missing_api_key"),
    ({"Authorization": f"Basic {ENV_KEY}"}, "invalid_authorization_header"),
    ({"Authorization": "Bearer"}, "invalid_authorization_header"),
    ({"Authorization": "Bearer "}, "invalid_authorization_header"),
    ({"Authorization": f"Bearer {ENV_KEY} extra"}, "invalid_authorization_header"),
    ({"Authorization": ENV_KEY}, "invalid_authorization_header"),
    ({"Authorization": f"Bearer {HASHED_DIGEST}"}, "invalid_api_key"),  # the digest is not the key
    ({"Authorization": f"Bearer {ENV_KEY}x"}, "invalid_api_key"),
    ({"Authorization": f"Bearer {ENV_KEY[:-1]}"}, "invalid_api_key"),
])
async def test_key_refused(gw, headers, code):
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/api/status"),
                         ("POST", "/v1/gateway/query"), ("GET", "/api/no-such-route")):
        async with gw.http.request(method, gw.url + path, json=CHAT, headers=headers) as r:
            assert r.status == 401, (path, await r.text())
            assert r.content_type == "application/json"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            err = envelope(await r.json(), r.headers["X-Request-ID"])
            assert err["type"] == "authentication_error" and err["code"] == code
            text = orjson.dumps(err).decode()
            assert ENV_KEY not in text and HASHED_KEY not in text


async def test_bad_authorization_with_good_x_api_key(gw):
    # a malformed Authorization does not hide a valid x-api-key (some proxies add their own)
    async with gw.http.get(gw.url + "/v1/models", headers={"Authorization": "Basic Zm9vOmJhcg==",
                                                           "x-api-key": ENV_KEY}) as r:
        assert r.status == 200


async def test_open_paths_need_no_key(gw):
    for path in ("/healthz", "/metrics", "/openapi.json", "/", "/ui/app.js"):
        async with gw.http.get(gw.url + path) as r:
            assert r.status == 200, path


async def test_undecodable_key_bytes_are_a_401_not_a_crash(gw):
    host, port = gw.server.host, gw.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80key\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    assert status in (400, 401)
    async with gw.http.get(gw.url + "/healthz") as r:
        assert r.status == 200


async def test_openai_sdk_authentication_error(gw):
    with pytest.raises(openai.AuthenticationError) as ei:
        await gw.sdk(api_key="not-a-gateway-key").chat.completions.create(**CHAT)
    assert ei.value.status_code == 401
    assert ei.value.body["code"] == "invalid_api_key"
    resp = await gw.sdk(api_key=HASHED_KEY).chat.completions.create(**CHAT)
    assert resp.choices[0].message.content
    models = await gw.sdk(api_key=ENV_KEY).models.list()
    assert models.data


async def test_no_keys_means_no_auth(gateway):
    gw = await gateway({})
    async with gw.http.post(gw.url + "/v1/chat/completions", json=CHAT) as r:
        assert r.status == 200


async def test_tenant_in_body_cannot_override_the_key(gw):
    """SPEC 5: with keys, a body naming another tenant is refused (403); its own is fine."""
    hdr = {"Authorization": f"Bearer {ENV_KEY}"}
    body = {"query": "hi", "model": "mock", "dry_run": True}
    async with gw.http.post(gw.url + "/v1/gateway/query", json={**body, "tenant": "alpha"}, headers=hdr) as r:
        if r.status == 404:
            pytest.skip("POST /v1/gateway/query is not implemented yet")
        assert r.status == 200, await r.text()
    async with gw.http.post(gw.url + "/v1/gateway/query", json={**body, "tenant": "beta"}, headers=hdr) as r:
        assert r.status == 403
        err = envelope(await r.json(), r.headers["X-Request-ID"])
        assert err["type"] == "permission_error"


# ---------------------------------------------------------------- settings (unit level)
def test_refuses_non_loopback_without_keys():
    with pytest.raises(ConfigError, match="GATEWAY_ALLOW_OPEN"):
        load_settings({}, {"HOST": "0.0.0.0"})
    with pytest.raises(ConfigError):
        load_settings({"host": "192.168.1.10"}, {})
    assert load_settings({}, {"HOST": "0.0.0.0", "GATEWAY_ALLOW_OPEN": "true"}).allow_open
    assert load_settings({}, {"HOST": "0.0.0.0", "GATEWAY_API_KEYS": "k1234567:t"}).auth_enabled
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert not load_settings({}, {"HOST": host}).auth_enabled


def test_hashed_keys_alone_allow_an_open_bind(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG)
    s = load_settings({}, {"HOST": "0.0.0.0", "GATEWAY_CONFIG": str(cfg)})
    entry = s.hashed_keys[bytes.fromhex(HASHED_DIGEST)]
    assert (entry.tenant, entry.id) == ("beta", "beta-ci")


def test_settings_repr_masks_every_key(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG)
    s = load_settings({}, {"GATEWAY_API_KEYS": f"{ENV_KEY}:alpha,second-secret-key:beta",
                           "OPENAI_API_KEY": "sk-vendor-secret-123456", "GATEWAY_CONFIG": str(cfg)})
    for text in (repr(s), str(s)):
        for secret in (ENV_KEY, "second-secret-key", "sk-vendor-secret-123456", HASHED_DIGEST):
            assert secret not in text
        assert "**********:alpha" in text and "**********:beta" in text


@pytest.mark.parametrize("toml, needle", [
    (CONFIG + "bogus = 1\n", ":6: unknown key 'bogus' in [[keys]]"),
    ('[[keys]]\nsha256 = "abc"\ntenant = "t"\n', "64 hex digits"),
    ('[[keys]]\nsha256 = "' + "a" * 64 + '"\n', "tenant must be"),
    ('[[keys]]\nsha256 = "' + "a" * 64 + '"\ntenant = "t"\nrequests_per_minute = 0\n', "at least 1"),
    ('[tenants.acme]\nrequests_per_minute = 10\nrequests_per_hour = 5\n', ":3: unknown key 'requests_per_hour'"),
    ('[tenants.acme]\ntokens_per_minute = "lots"\n', "whole number"),
    (CONFIG + CONFIG, "appears twice"),
])
def test_config_errors(tmp_path, toml, needle):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as ei:
        load_settings({}, {"GATEWAY_CONFIG": str(cfg)})
    assert needle in str(ei.value)


def test_tenant_table_accepts_limits_and_budgets(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[tenants.acme]\nrequests_per_minute = 60\ntokens_per_minute = 100000\n'
                   'budget_usd_per_day = 5.0\nbudget_usd_per_month = 100.0\n')
    s = load_settings({}, {"GATEWAY_CONFIG": str(cfg)})
    assert s.config["tenants"]["acme"]["requests_per_minute"] == 60
