"""The model catalog: models, prices (Decimal per 1M tokens), task preferences, chains.

Loaded once at start-up from ``models.toml`` in this package, then merged with the
TOML config: ``[[models]]`` rows add or replace models, ``[prices."id"]`` overrides
prices, ``[tasks]`` and ``[fallbacks]`` replace preference lists and chains.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from ..settings import PROVIDER_ALIASES, ConfigError

TASK_TYPES = ("text_generation", "summarization", "sentiment_analysis", "question_answering")


@dataclass(slots=True)
class Price:
    input: Decimal
    output: Decimal
    cached_input: Decimal
    as_of: str | None = None
    source: str | None = None


@dataclass(slots=True)
class ModelEntry:
    id: str
    provider: str
    aliases: list[str] = field(default_factory=list)
    context_window: int | None = None
    max_output_tokens: int | None = None
    price: Price | None = None  # None: explicitly unpriced
    task_types: list[str] = field(default_factory=list)
    prefill: bool | None = None
    default: bool = False


@dataclass(slots=True)
class Catalog:
    models: dict[str, ModelEntry]
    tasks: dict[str, list[str]]
    fallbacks: dict[str, list[str]]  # model id or task type → chain
    _lookup: dict[str, ModelEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        look: dict[str, ModelEntry] = {}
        for m in self.models.values():
            for a in m.aliases:
                look[a] = m
        for m in self.models.values():
            look[m.id] = m
        self._lookup = look

    def get(self, model_id: str) -> ModelEntry | None:
        return self._lookup.get(model_id)

    def find(self, provider: str, model_id: str) -> ModelEntry | None:
        m = self._lookup.get(model_id)
        return m if m is not None and m.provider == provider else None

    def default_for(self, provider: str) -> ModelEntry | None:
        first = None
        for m in self.models.values():
            if m.provider == provider:
                if m.default:
                    return m
                first = first or m
        return first


def _dec(where: str, key: str, v: Any) -> Decimal:
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ConfigError(f"{where}: {key}={v!r} is not a number") from None
    if d < 0:
        raise ConfigError(f"{where}: {key} must not be negative")
    return d


def _price(where: str, row: dict[str, Any], base: Price | None = None) -> Price | None:
    if row.get("unpriced"):
        return None
    if "input_per_1m" not in row and "output_per_1m" not in row:
        if base is not None:
            return base
        raise ConfigError(f"{where}: give input_per_1m and output_per_1m, or unpriced = true")
    inp = _dec(where, "input_per_1m", row.get("input_per_1m", base.input if base else 0))
    out = _dec(where, "output_per_1m", row.get("output_per_1m", base.output if base else 0))
    cached = _dec(where, "cached_input_per_1m", row.get("cached_input_per_1m", inp))
    return Price(inp, out, cached, row.get("prices_as_of"), row.get("price_source"))


def _entry(row: dict[str, Any], where: str) -> ModelEntry:
    for k in ("id", "provider"):
        if not row.get(k):
            raise ConfigError(f"{where}: a model needs {k}")
    provider = PROVIDER_ALIASES.get(str(row["provider"]).lower(), str(row["provider"]).lower())
    tasks = [str(t) for t in row.get("task_types", [])]
    for t in tasks:
        if t not in TASK_TYPES:
            raise ConfigError(f"{where} ({row['id']}): unknown task type {t!r}")
    return ModelEntry(
        id=str(row["id"]),
        provider=provider,
        aliases=[str(a) for a in row.get("aliases", [])],
        context_window=row.get("context_window"),
        max_output_tokens=row.get("max_output_tokens"),
        price=_price(f"{where} ({row['id']})", row),
        task_types=tasks,
        prefill=row.get("prefill"),
        default=bool(row.get("default", False)),
    )


def load_catalog(config: dict[str, Any] | None = None) -> Catalog:
    raw = tomllib.loads(resources.files(__package__).joinpath("models.toml").read_text("utf-8"))
    models = {m.id: m for m in (_entry(r, "built-in catalog") for r in raw.get("models", []))}
    tasks = {k: list(v) for k, v in (raw.get("tasks") or {}).items()}
    chains = {k: list(v) for k, v in (raw.get("fallbacks") or {}).items()}
    config = config or {}
    for row in config.get("models") or []:
        e = _entry(row, "config [[models]]")
        if e.default:
            for m in models.values():
                if m.provider == e.provider:
                    m.default = False
        models[e.id] = e
    for mid, row in (config.get("prices") or {}).items():
        if mid not in models:
            raise ConfigError(f"config [prices.{mid!r}]: no such model in the catalog")
        models[mid].price = _price(f"config [prices.{mid!r}]", row, models[mid].price)
    for task, prefs in (config.get("tasks") or {}).items():
        if task not in TASK_TYPES:
            raise ConfigError(f"config [tasks]: unknown task type {task!r}")
        tasks[task] = [str(p) for p in prefs]
    for key, chain in (config.get("fallbacks") or {}).items():
        chains[str(key)] = [str(c) for c in chain]
    return Catalog(models, tasks, chains)
