"""Typed settings from CLI flags, the environment, a .env file and the TOML config.

Precedence (SPEC 2): CLI flag > process environment > .env file > built-in default.
Everything is read and validated once, at start-up; nothing inside the app reads the
environment afterwards. Secrets are wrapped in ``Secret`` so that no ``repr``, log
line or error message can show them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .config import ConfigError, KeyEntry, hashed_keys, key_digest, load_config_file

__all__ = ["ConfigError", "KeyEntry", "ProviderConfig", "Secret", "Settings", "load_settings"]


class Secret:
    """A string that never shows itself in repr/str (starlette's idea)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


BUILTIN_PROVIDERS = ("openai", "anthropic", "gemini", "mistral", "mock")
#: input aliases of canonical provider names (``claude`` is never emitted)
PROVIDER_ALIASES = {"claude": "anthropic"}


@dataclass(slots=True)
class ProviderConfig:
    name: str  # canonical name: openai, anthropic, gemini, mistral, mock, or a table name
    kind: str  # adapter / wire format: openai, anthropic, gemini, mistral, mock
    base_url: str
    api_key: Secret | None = None
    api_version: str | None = None
    models: list[str] = field(default_factory=list)  # extra providers: listed models
    supports_prefill: bool | None = None  # None: the adapter's default
    #: ask an OpenAI-compatible server for usage in streams (stream_options.include_usage);
    #: off for servers that refuse the field: their streams' usage is then estimated
    stream_usage: bool = True
    # An extra provider with no api_key_env needs no key (a local Ollama); the four
    # vendors are configured only when their key is set.
    needs_key: bool = True
    #: the variable that configures it (named in "not configured" errors)
    key_env: str | None = None

    @property
    def configured(self) -> bool:
        return self.kind == "mock" or not self.needs_key or bool(self.api_key)


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    env_file: str | None = None
    config_path: str | None = None
    log_level: str = "info"
    log_queries: bool = False
    cache_enabled: bool = True
    cache_ttl: int = 300
    cache_backend: str = "memory"
    #: memory cache bound (entries); past it the oldest entry is evicted
    cache_max_entries: int = 10000
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_retries: int = 3
    initial_backoff_ms: float = 1000.0
    max_backoff_ms: float = 30000.0
    backoff_factor: float = 2.0
    jitter: float = 0.1
    request_timeout: float = 60.0
    stream_first_token_timeout: float = 15.0
    stream_idle_timeout: float = 30.0
    #: a timed-out target is not retried; the chain moves on to the next target
    timeout_moves_on: bool = True
    #: upper bound for a whole request over all its targets (seconds)
    request_deadline: float = 180.0
    gateway_api_keys: dict[Secret, str] = field(default_factory=dict)
    #: keys from the config's ``[[keys]]`` tables: SHA-256 digest -> entry (no plaintext)
    hashed_keys: dict[bytes, KeyEntry] = field(default_factory=dict)
    allow_open: bool = False
    #: rate-limit store: memory (per process) or redis (shared via REDIS_URL)
    rate_limit_backend: str = "memory"
    #: when the redis store is unreachable: true = per-process limits, false = 503
    rate_limit_fail_open: bool = True
    #: output tokens reserved when a request sets no max_tokens (reconciled afterwards)
    rate_limit_default_output_tokens: int = 1024
    #: seconds a client may take to send its whole request body (then 408)
    client_body_timeout: float = 30.0
    #: origins allowed by CORS (exact ``scheme://host[:port]`` or ``*``); empty: no CORS
    cors_allow_origins: tuple[str, ...] = ()
    #: longest request line / header field accepted (bytes); longer: 400 from the HTTP parser
    max_header_bytes: int = 8190
    max_request_bytes: int = 10 * 1024 * 1024
    anthropic_default_max_tokens: int = 4096
    connect_timeout: float = 10.0
    upstream_connection_limit: int = 1000
    #: spend ledger (llm_gateway/ledger): SQLite file; None = disabled (LEDGER_PATH=off)
    ledger_path: str | None = "./llm-gateway-ledger.sqlite3"
    #: PostgreSQL ledger instead of SQLite (postgresql://...); may carry a password
    database_url: Secret | None = None
    #: rows waiting to be written; beyond it rows are dropped (logged), requests never wait
    ledger_queue_size: int = 10000
    #: seconds the ledger may take to write its last rows on shutdown
    ledger_flush_timeout: float = 10.0
    #: seconds requests in flight may take to finish after SIGTERM; streams still open
    #: then end with an SSE error event
    shutdown_timeout: float = 30.0
    #: seconds between budget syncs with the shared ledger (other workers' and replicas' spend)
    budget_sync_interval: float = 2.0
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    #: the parsed TOML config (validated), for the catalog and later features
    config: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name == "config":
                continue
            v = getattr(self, f.name)
            if f.name == "gateway_api_keys":
                v = [f"**********:{t}" for t in v.values()]  # one masked entry per key
            elif f.name == "hashed_keys":
                v = list(v.values())  # KeyEntry holds no key material; the digests stay out too
            elif f.name == "redis_url":
                v = mask_url(v)
            parts.append(f"{f.name}={v!r}")
        return "Settings(" + ", ".join(parts) + ")"

    def secrets(self) -> list[str]:
        """Every configured secret (vendor keys, gateway keys, the database URL): what logs,
        error bodies and /api/status must never show."""
        out = [p.api_key.get() for p in self.providers.values() if p.api_key]
        out += [k.get() for k in self.gateway_api_keys]
        if self.database_url:
            out.append(self.database_url.get())
        return [v for v in out if len(v) >= 4]

    @property
    def auth_enabled(self) -> bool:
        return bool(self.gateway_api_keys or self.hashed_keys)

    @property
    def mock_only(self) -> bool:
        return not any(p.configured for p in self.providers.values() if p.kind != "mock")


# ------------------------------------------------------------------------ parsing helpers
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _num(name: str, raw: str, typ: type, lo: float | None = None, hi: float | None = None) -> Any:
    try:
        v = typ(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a {'whole ' if typ is int else ''}number") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"from {lo}" + (f" to {hi}" if hi is not None else " up")
        raise ConfigError(f"{name}={raw!r}: out of range ({rng})")
    return v


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    v = raw.strip().lower()
    if v not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return v


def parse_api_keys(raw: str) -> dict[Secret, str]:
    """``key:tenant,key2:tenant2`` → {Secret(key): tenant}. Errors never echo a key."""
    out: dict[Secret, str] = {}
    where: dict[str, int] = {}
    for i, item in enumerate(p.strip() for p in raw.split(",")):
        if not item:
            continue
        key, sep, tenant = item.rpartition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ConfigError(f"GATEWAY_API_KEYS: entry {i + 1} is not a key:tenant pair")
        key, tenant = key.strip(), tenant.strip()
        if key in where and out[Secret(key)] != tenant:
            raise ConfigError(f"GATEWAY_API_KEYS: entry {i + 1} repeats the key of entry {where[key]} for "
                              f"another tenant ({out[Secret(key)]!r}, then {tenant!r})")
        where.setdefault(key, i + 1)
        out[Secret(key)] = tenant
    return out


def parse_origins(raw: str) -> tuple[str, ...]:
    """``https://a.example, http://localhost:3000`` -> exact origins (no path, no trailing /)."""
    out = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        if item != "*" and not re.fullmatch(r"https?://[^/\s]+", item):
            raise ConfigError(f"CORS_ALLOW_ORIGINS: {item!r} is not an origin (scheme://host[:port], or *)")
        out.append(item.rstrip("/").lower())
    return tuple(out)


def mask_url(url: str) -> str:
    """A URL with any password replaced (``redis://:***@host:6379/0``), for logs and repr."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _int(lo: float | None = None, hi: float | None = None) -> Callable[[str, str], Any]:
    return lambda name, raw: _num(name, raw, int, lo, hi)


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str, str], Any]:
    return lambda name, raw: _num(name, raw, float, lo, hi)


def _one_of(*choices: str) -> Callable[[str, str], str]:
    return lambda name, raw: _choice(name, raw, choices)


def _text(name: str, raw: str) -> str:
    return raw.strip()


_flag = _bool

#: environment variable → Settings attribute, with its parser (each names the variable in
#: its error). LEDGER_PATH and DATABASE_URL have rules of their own, below.
_ENV_FIELDS: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    ("HOST", "host", _text),
    ("PORT", "port", _int(0, 65535)),
    ("LOG_LEVEL", "log_level", _one_of("debug", "info", "warning", "error")),
    ("LOG_QUERIES", "log_queries", _flag),
    ("CACHE_ENABLED", "cache_enabled", _flag),
    ("CACHE_TTL", "cache_ttl", _int(0)),
    ("CACHE_BACKEND", "cache_backend", _one_of("memory", "redis")),
    ("CACHE_MAX_ENTRIES", "cache_max_entries", _int(1)),
    ("REDIS_URL", "redis_url", _text),
    ("MAX_RETRIES", "max_retries", _int(0, 100)),
    ("INITIAL_BACKOFF", "initial_backoff_ms", _float(0)),
    ("MAX_BACKOFF", "max_backoff_ms", _float(0)),
    ("BACKOFF_FACTOR", "backoff_factor", _float(1)),
    ("JITTER", "jitter", _float(0, 1)),
    ("REQUEST_TIMEOUT", "request_timeout", _float(0.001)),
    ("STREAM_FIRST_TOKEN_TIMEOUT", "stream_first_token_timeout", _float(0.001)),
    ("STREAM_IDLE_TIMEOUT", "stream_idle_timeout", _float(0.001)),
    ("TIMEOUT_MOVES_ON", "timeout_moves_on", _flag),
    ("REQUEST_DEADLINE", "request_deadline", _float(0.001)),
    ("GATEWAY_API_KEYS", "gateway_api_keys", lambda n, v: parse_api_keys(v)),
    ("GATEWAY_ALLOW_OPEN", "allow_open", _flag),
    ("MAX_REQUEST_BYTES", "max_request_bytes", _int(1024)),
    ("ANTHROPIC_DEFAULT_MAX_TOKENS", "anthropic_default_max_tokens", _int(1)),
    ("LEDGER_QUEUE_SIZE", "ledger_queue_size", _int(1)),
    ("LEDGER_FLUSH_TIMEOUT", "ledger_flush_timeout", _float(0)),
    ("SHUTDOWN_TIMEOUT", "shutdown_timeout", _float(0)),
    ("BUDGET_SYNC_INTERVAL", "budget_sync_interval", _float(0.01)),
    ("RATE_LIMIT_BACKEND", "rate_limit_backend", _one_of("memory", "redis")),
    ("RATE_LIMIT_FAIL_OPEN", "rate_limit_fail_open", _flag),
    ("RATE_LIMIT_DEFAULT_OUTPUT_TOKENS", "rate_limit_default_output_tokens", _int(0)),
    ("CLIENT_BODY_TIMEOUT", "client_body_timeout", _float(0.001)),
    ("CORS_ALLOW_ORIGINS", "cors_allow_origins", lambda n, v: parse_origins(v)),
    ("MAX_HEADER_BYTES", "max_header_bytes", _int(1024, 1024 * 1024)),
)


# ------------------------------------------------------------------------ loading
_DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai",
    "mock": "mock://local",
}
_DEFAULT_VERSIONS = {"anthropic": "2023-06-01", "gemini": "v1beta"}


#: [providers.NAME] keys and the TOML type each must have
_PROVIDER_TYPES: dict[str, tuple[type, str]] = {
    "type": (str, "a string"), "base_url": (str, "a string"), "api_key_env": (str, "a string"),
    "api_version": (str, "a string"), "prefill": (bool, "true or false"), "stream_usage": (bool, "true or false"),
}


def _check_provider_types(name: str, tbl: Any) -> None:
    """A value of the wrong TOML type is an error at start-up, not a silent misreading
    (``stream_usage = "false"`` is a string, and was truthy; ``models = "llama3.2"``
    became eight one-letter models)."""
    if not isinstance(tbl, dict):
        raise ConfigError(f"[providers.{name}] must be a table")
    for key, (want, what) in _PROVIDER_TYPES.items():
        if key in tbl and not isinstance(tbl[key], want):
            raise ConfigError(f"[providers.{name}] {key} = {tbl[key]!r}: must be {what}")
    models = tbl.get("models")
    if models is not None and not (isinstance(models, list) and all(isinstance(m, str) and m for m in models)):
        raise ConfigError(f"[providers.{name}] models = {models!r}: must be a list of model names (strings)")
    url = tbl.get("base_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        raise ConfigError(f"[providers.{name}] base_url = {url!r}: must start with http:// or https://")


def load_settings(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings. ``cli`` holds flags the user gave (None values are ignored)."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    environ = dict(os.environ if environ is None else environ)
    env_file = cli.get("env_file")
    if env_file is None and Path(".env").is_file():
        env_file = ".env"
    merged: dict[str, str] = {}
    if env_file:
        if not Path(env_file).is_file():
            raise ConfigError(f"--env-file {env_file}: no such file")
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(environ)
    env = merged

    s = Settings(env_file=env_file)
    g = env.get
    for var, attr, parse in _ENV_FIELDS:
        if (v := g(var)) is not None:
            setattr(s, attr, parse(var, v))
    if (v := g("LEDGER_PATH")) is not None:
        s.ledger_path = None if v.strip().lower() in ("", "off", "none", "false", "0") else v.strip()
    if (v := g("DATABASE_URL")) is not None and v.strip():
        if not v.strip().lower().startswith(("postgresql://", "postgres://")):
            raise ConfigError("DATABASE_URL: expected a postgresql://user:password@host:port/db URL "
                              "(leave it unset for the SQLite ledger at LEDGER_PATH)")
        s.database_url = Secret(v.strip())
    # CLI flags win over everything.
    if "host" in cli:
        s.host = str(cli["host"])
    if "port" in cli:
        s.port = _num("--port", str(cli["port"]), int, 0, 65535)
    if "workers" in cli:
        s.workers = _num("--workers", str(cli["workers"]), int, 1, 64)
    s.config_path = cli.get("config") or g("GATEWAY_CONFIG") or None

    if s.max_backoff_ms < s.initial_backoff_ms:
        raise ConfigError("MAX_BACKOFF must not be smaller than INITIAL_BACKOFF")

    s.config = load_config_file(s.config_path) if s.config_path else {}
    s.providers = _providers(env, s.config)
    s.hashed_keys = hashed_keys(s.config)
    for key, tenant in s.gateway_api_keys.items():
        entry = s.hashed_keys.get(key_digest(key.get()))
        if entry is not None and entry.tenant != tenant:
            raise ConfigError(f"a key in GATEWAY_API_KEYS (tenant {tenant!r}) is also a [[keys]] entry of the "
                              f"config for tenant {entry.tenant!r}: one key, one tenant")

    if not is_loopback(s.host) and not s.auth_enabled and not s.allow_open:
        raise ConfigError(
            f"refusing to listen on {s.host} without GATEWAY_API_KEYS: anyone who reaches "
            "this address could spend your provider credit. Set GATEWAY_API_KEYS "
            "(key:tenant pairs) or [[keys]] in the config, or GATEWAY_ALLOW_OPEN=true if the "
            "network already protects it."
        )
    return s


def _providers(env: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, ProviderConfig]:
    def key(*names: str) -> Secret | None:
        for n in names:
            v = (env.get(n) or "").strip()
            if v:
                return Secret(v)
        return None

    def url(default: str, *names: str) -> str:
        for n in names:
            v = (env.get(n) or "").strip()
            if v:
                return v.rstrip("/")
        return default

    out = {
        "openai": ProviderConfig(
            "openai", "openai", url(_DEFAULT_URLS["openai"], "OPENAI_BASE_URL"), key("OPENAI_API_KEY"),
            key_env="OPENAI_API_KEY",
        ),
        "anthropic": ProviderConfig(
            "anthropic",
            "anthropic",
            url(_DEFAULT_URLS["anthropic"], "CLAUDE_BASE_URL", "ANTHROPIC_BASE_URL"),
            key("CLAUDE_API_KEY", "ANTHROPIC_API_KEY"),
            api_version=(env.get("ANTHROPIC_VERSION") or _DEFAULT_VERSIONS["anthropic"]).strip(),
            key_env="CLAUDE_API_KEY",
        ),
        "gemini": ProviderConfig(
            "gemini",
            "gemini",
            url(_DEFAULT_URLS["gemini"], "GEMINI_BASE_URL"),
            key("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            api_version=(env.get("GEMINI_API_VERSION") or _DEFAULT_VERSIONS["gemini"]).strip(),
            key_env="GEMINI_API_KEY",
        ),
        "mistral": ProviderConfig(
            "mistral", "mistral", url(_DEFAULT_URLS["mistral"], "MISTRAL_BASE_URL"), key("MISTRAL_API_KEY"),
            key_env="MISTRAL_API_KEY",
        ),
        "mock": ProviderConfig("mock", "mock", _DEFAULT_URLS["mock"], needs_key=False),
    }
    for name, tbl in (config.get("providers") or {}).items():
        _check_provider_types(name, tbl)
        name = name.strip().lower()
        name = PROVIDER_ALIASES.get(name, name)
        kind = str(tbl.get("type", "openai" if name not in out else out[name].kind)).lower()
        if kind not in ("openai", "anthropic", "gemini", "mistral"):
            raise ConfigError(f"[providers.{name}] type={kind!r}: expected openai, anthropic, gemini or mistral")
        if name in out:
            p = out[name]  # a built-in vendor: the table adjusts it
            if "base_url" in tbl:
                p.base_url = str(tbl["base_url"]).rstrip("/")
        else:
            if "base_url" not in tbl:
                raise ConfigError(f"[providers.{name}] needs base_url")
            p = ProviderConfig(name, kind, str(tbl["base_url"]).rstrip("/"), needs_key=False)
            out[name] = p
        if "api_key_env" in tbl:
            p.api_key = key(str(tbl["api_key_env"]))
            p.key_env = str(tbl["api_key_env"])
        if "models" in tbl:
            p.models = [str(m) for m in tbl["models"]]
        if "api_version" in tbl:
            p.api_version = str(tbl["api_version"])
        if "prefill" in tbl:
            p.supports_prefill = bool(tbl["prefill"])
        if "stream_usage" in tbl:
            p.stream_usage = bool(tbl["stream_usage"])
    return out
