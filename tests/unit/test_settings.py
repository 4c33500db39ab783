from __future__ import annotations

import pytest

from llm_gateway.settings import ConfigError, Secret, load_settings


def test_defaults_and_mock_only():
    s = load_settings({}, {})
    assert (s.host, s.port, s.max_retries, s.cache_ttl) == ("127.0.0.1", 8080, 3, 300)
    assert s.mock_only and s.providers["mock"].configured
    assert s.providers["openai"].base_url == "https://api.openai.com/v1"


def test_precedence_flag_over_env(tmp_path, monkeypatch):
    env_file = tmp_path / "x.env"
    env_file.write_text("PORT=9001\nLOG_LEVEL=warning\nMAX_RETRIES=5\n")
    s = load_settings({"env_file": str(env_file), "port": 9003}, {"LOG_LEVEL": "error"})
    assert s.port == 9003  # flag
    assert s.log_level == "error"  # process env over .env
    assert s.max_retries == 5  # .env over default


def test_anthropic_alias_and_secret_masking():
    s = load_settings({}, {"ANTHROPIC_API_KEY": "sk-ant-very-secret", "GATEWAY_API_KEYS": "gk-secret:team"})
    assert s.providers["anthropic"].configured
    text = repr(s)
    assert "sk-ant-very-secret" not in text and "gk-secret" not in text
    assert repr(Secret("abc")) == "Secret('**********')"


@pytest.mark.parametrize("env, needle", [
    ({"PORT": "http"}, "PORT"),
    ({"MAX_RETRIES": "-1"}, "MAX_RETRIES"),
    ({"CACHE_BACKEND": "disk"}, "CACHE_BACKEND"),
    ({"LOG_QUERIES": "maybe"}, "LOG_QUERIES"),
    ({"GATEWAY_API_KEYS": "nokey"}, "GATEWAY_API_KEYS"),
    ({"INITIAL_BACKOFF": "5000", "MAX_BACKOFF": "100"}, "MAX_BACKOFF"),
])
def test_bad_values_are_clear_errors(env, needle):
    with pytest.raises(ConfigError) as ei:
        load_settings({}, env)
    assert needle in str(ei.value)


def test_open_bind_needs_keys_or_explicit_opt_in():
    with pytest.raises(ConfigError):
        load_settings({"host": "0.0.0.0"}, {})
    assert load_settings({"host": "0.0.0.0"}, {"GATEWAY_ALLOW_OPEN": "true"}).allow_open
    assert load_settings({"host": "0.0.0.0"}, {"GATEWAY_API_KEYS": "k:t"}).gateway_api_keys
    assert load_settings({"host": "::1"}, {}).host == "::1"


def test_env_example_lists_every_variable_and_loads():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    example = (root / ".env.example").read_text()
    source = (root / "llm_gateway" / "settings.py").read_text()
    read = (set(re.findall(r'g\("([A-Z_]+)"\)', source)) | set(re.findall(r'key\("([A-Z_]+)"', source))
            | set(re.findall(r'^    \("([A-Z_]+)", "', source, re.M)))
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M)) | set(
        re.findall(r"\b([A-Z][A-Z0-9_]+) is (?:an|accepted as an) alias", example))
    assert read and read <= listed, sorted(read - listed)
    s = load_settings({"env_file": str(root / ".env.example")}, {})
    assert s.mock_only and s.port == 8080


def test_unused_config_table_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[gateway]\nport = 1\n")
    with pytest.raises(ConfigError) as ei:
        load_settings({"config": str(cfg)}, {})
    assert ":1: unknown key 'gateway'" in str(ei.value)


def test_one_key_for_two_tenants_stops_the_start_up(tmp_path):
    """A key listed twice for different tenants would bill and limit one of them silently."""
    with pytest.raises(ConfigError, match="entry 2 repeats the key of entry 1") as e:
        load_settings({}, {"GATEWAY_API_KEYS": "key-alpha:acme,key-alpha:beta"})
    assert "key-alpha" not in str(e.value)
    assert load_settings({}, {"GATEWAY_API_KEYS": "key-alpha:acme, key-alpha:acme"}).gateway_api_keys == {
        Secret("key-alpha"): "acme"}
    import hashlib
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[[keys]]\nsha256 = "{hashlib.sha256(b"key-alpha").hexdigest()}"\ntenant = "other"\n')
    with pytest.raises(ConfigError, match="one key, one tenant") as e:
        load_settings({}, {"GATEWAY_API_KEYS": "key-alpha:acme", "GATEWAY_CONFIG": str(cfg)})
    assert "key-alpha" not in str(e.value)
    assert load_settings({}, {"GATEWAY_API_KEYS": "key-alpha:other", "GATEWAY_CONFIG": str(cfg)}).auth_enabled
