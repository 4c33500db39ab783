"""The TOML config file (``--config`` / ``GATEWAY_CONFIG``): read and validated at start-up.

For what environment variables cannot say: catalog rows and prices, task preferences,
fallback chains, extra providers, tenants (limits, budgets) and hashed gateway keys.
Parsed with the standard library's ``tomllib``; every table's keys are checked, and an
unknown key stops the start-up naming the file and line.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """Bad configuration: the message says what and where; the gateway refuses to start."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """A gateway key's identity. ``id`` names it in rate-limit buckets and logs (never the key)."""

    tenant: str
    id: str  # the config's ``name``, else the first 16 hex digits of its SHA-256
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


# Allowed keys per table; ``*`` means a table of named sub-tables with the given keys.
_PROVIDER_KEYS = {"type", "base_url", "api_key_env", "models", "api_version", "prefill", "stream_usage"}
_MODEL_KEYS = {
    "id", "provider", "aliases", "context_window", "max_output_tokens", "input_per_1m",
    "output_per_1m", "cached_input_per_1m", "prices_as_of", "price_source", "unpriced",
    "task_types", "prefill", "default",
}
_PRICE_KEYS = {"input_per_1m", "output_per_1m", "cached_input_per_1m", "prices_as_of", "price_source"}
_TOP_KEYS = {"providers", "models", "prices", "tasks", "fallbacks", "tenants", "keys"}
#: [[keys]]: gateway keys stored as SHA-256 hex digests (never the key itself)
_KEY_KEYS = {"sha256", "tenant", "name", "requests_per_minute", "tokens_per_minute"}
#: [tenants.NAME]: rate limits (issue 6) and budgets (the ledger)
_TENANT_LIMIT_KEYS = {"requests_per_minute", "tokens_per_minute"}
_TENANT_KEYS = _TENANT_LIMIT_KEYS | {"budget_usd_per_day", "budget_usd_per_month"}


def _line_of(text: str, key: str) -> int | None:
    pat = re.compile(r"^\s*(\[+\s*)?[\w.\"' -]*\b" + re.escape(key) + r"\b")
    for n, line in enumerate(text.splitlines(), 1):
        if pat.search(line):
            return n
    return None


def _unknown(path: Path, text: str, where: str, key: str, allowed: set[str]) -> ConfigError:
    line = _line_of(text, key)
    at = f"{path}:{line}" if line else str(path)
    return ConfigError(
        f"{at}: unknown key {key!r} in {where} (allowed: {', '.join(sorted(allowed))})"
    )


def load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    for k in data:
        if k not in _TOP_KEYS:
            raise _unknown(p, text, "the top level", k, _TOP_KEYS)
    for name, tbl in (data.get("providers") or {}).items():
        if not isinstance(tbl, dict):
            raise ConfigError(f"{path}: [providers.{name}] must be a table")
        for k in tbl:
            if k not in _PROVIDER_KEYS:
                raise _unknown(p, text, f"[providers.{name}]", k, _PROVIDER_KEYS)
    models = data.get("models") or []
    if not isinstance(models, list):
        raise ConfigError(f"{path}: models must be an array of tables ([[models]])")
    for m in models:
        for k in m:
            if k not in _MODEL_KEYS:
                raise _unknown(p, text, "[[models]]", k, _MODEL_KEYS)
    for name, tbl in (data.get("prices") or {}).items():
        for k in tbl:
            if k not in _PRICE_KEYS:
                raise _unknown(p, text, f"[prices.{name}]", k, _PRICE_KEYS)
    _check_keys_and_tenants(p, text, data)
    return data


def _per_minute(where: str, tbl: Mapping[str, Any]) -> None:
    for k in _TENANT_LIMIT_KEYS:
        v = tbl.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{where}: {k} must be a whole number of at least 1")


def _budget_amounts(p: Path, text: str, name: str, tbl: Mapping[str, Any]) -> None:
    """budget_usd_per_day / _per_month: a non-negative USD amount ("5.00" or 5)."""
    for k in ("budget_usd_per_day", "budget_usd_per_month"):
        if k not in tbl:
            continue
        v = tbl[k]
        try:
            ok = not isinstance(v, bool) and isinstance(v, str | int | float) and Decimal(str(v).strip()) >= 0
        except InvalidOperation:
            ok = False
        if not ok or not Decimal(str(v).strip()).is_finite():
            line = _line_of(text, k)
            raise ConfigError(f"{p}{f':{line}' if line else ''}: [tenants.{name}] {k}={v!r}: expected "
                              'an amount in USD such as "5.00" (a string or a number, not negative)')


def _check_keys_and_tenants(p: Path, text: str, data: Mapping[str, Any]) -> None:
    tenants = data.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ConfigError(f"{p}: tenants must be a table of [tenants.NAME] tables")
    for name, tbl in tenants.items():
        if not isinstance(tbl, dict):
            raise ConfigError(f"{p}: [tenants.{name}] must be a table")
        for k in tbl:
            if k not in _TENANT_KEYS:
                raise _unknown(p, text, f"[tenants.{name}]", k, _TENANT_KEYS)
        _per_minute(f"{p}: [tenants.{name}]", tbl)
        _budget_amounts(p, text, name, tbl)
    keys = data.get("keys") or []
    if not isinstance(keys, list):
        raise ConfigError(f"{p}: keys must be an array of tables ([[keys]])")
    for i, tbl in enumerate(keys, 1):
        where = f"{p}: [[keys]] entry {i}"
        if not isinstance(tbl, dict):
            raise ConfigError(f"{where} must be a table")
        for k in tbl:
            if k not in _KEY_KEYS:
                raise _unknown(p, text, "[[keys]]", k, _KEY_KEYS)
        digest = tbl.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest.strip()):
            raise ConfigError(f"{where}: sha256 must be the 64 hex digits of the key's SHA-256 digest "
                              "(e.g. printf %s \"$KEY\" | sha256sum); never put the key itself here")
        tenant = tbl.get("tenant")
        if not isinstance(tenant, str) or not tenant.strip():
            raise ConfigError(f"{where}: tenant must be a non-empty string")
        if "name" in tbl and (not isinstance(tbl["name"], str) or not tbl["name"].strip()):
            raise ConfigError(f"{where}: name must be a non-empty string")
        _per_minute(where, tbl)


def key_digest(key: str) -> bytes:
    """The SHA-256 a key is known by (``[[keys]] sha256``); surrogateescape: a header with
    undecodable bytes hashes to *some* digest, never a 500."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def hashed_keys(config: Mapping[str, Any]) -> dict[bytes, KeyEntry]:
    """The validated ``[[keys]]`` tables as digest -> KeyEntry (duplicates are an error)."""
    out: dict[bytes, KeyEntry] = {}
    for i, tbl in enumerate(config.get("keys") or [], 1):
        hexd = tbl["sha256"].strip().lower()
        digest = bytes.fromhex(hexd)
        if digest in out:
            raise ConfigError(f"[[keys]] entry {i}: the same sha256 appears twice")
        out[digest] = KeyEntry(tbl["tenant"].strip(), str(tbl.get("name") or hexd[:16]).strip(),
                               tbl.get("requests_per_minute"), tbl.get("tokens_per_minute"))
    return out
