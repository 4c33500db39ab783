"""Model string → ordered targets (SPEC 4).

``model`` may be a catalog id or alias, ``provider/model`` (an id outside the catalog
is still forwarded when the provider is known), a bare provider alias (that provider's
default model), or ``auto`` (task-type preferences). Fallbacks come from the request,
else the configured chain for the model, else for the task type. Targets whose provider
is not configured are skipped; ``mock`` joins ``auto`` only when no real provider is
configured (a simulated answer must never stand in for a real one silently).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..adapters.base import Adapter
from ..catalog import TASK_TYPES, Catalog, ModelEntry
from ..settings import PROVIDER_ALIASES, Settings


@dataclass(slots=True, frozen=True)
class Target:
    provider: str
    model: str
    adapter: Adapter
    entry: ModelEntry | None

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def context_window(self) -> int | None:
        return self.entry.context_window if self.entry else None

    @property
    def prefill(self) -> bool:
        if self.entry is not None and self.entry.prefill is not None:
            return self.entry.prefill
        return self.adapter.supports_prefill


class Resolver:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        adapters: dict[str, Adapter],
        is_available: Callable[[Target], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.adapters = adapters
        self.is_available = is_available or (lambda t: True)
        self.mock_only = settings.mock_only
        self._cache: dict[str, Target] = {}
        #: the candidate chain per (model, task_type, fallbacks): it depends only on the
        #: catalog and configuration, fixed for the app's life; availability is per request
        self._chains: dict[tuple[str, str | None, tuple[str, ...] | None], list[Target]] = {}

    def configured(self, provider: str) -> bool:
        p = self.settings.providers.get(provider)
        return p is not None and p.configured

    # ------------------------------------------------------------------ one model string
    def one(self, model: str) -> Target:
        """Resolve one explicit model string (not ``auto``). Raises ModelNotFound."""
        hit = self._cache.get(model)
        if hit is not None:
            return hit
        t = self._resolve(model)
        if len(self._cache) < 4096:
            self._cache[model] = t
        return t

    def _target(self, provider: str, model_id: str) -> Target:
        entry = self.catalog.find(provider, model_id)
        return Target(provider, entry.id if entry else model_id, self.adapters[provider], entry)

    def _resolve(self, model: str) -> Target:
        m = model.strip()
        low = m.lower()
        prov = PROVIDER_ALIASES.get(low, low)
        if prov in self.adapters:  # bare provider alias → its default model
            entry = self.catalog.default_for(prov)
            if entry is not None:
                return Target(prov, entry.id, self.adapters[prov], entry)
            listed = self.settings.providers[prov].models
            if listed:
                return self._target(prov, listed[0])
            raise errors.ModelNotFound(f"provider '{prov}' has no default model; name one as '{prov}/MODEL'",
                                       param="model")
        if "/" in m:
            head, _, rest = m.partition("/")
            p = PROVIDER_ALIASES.get(head.lower(), head.lower())
            if p in self.adapters and rest:
                return self._target(p, rest)
        entry = self.catalog.get(m)
        if entry is not None and entry.provider in self.adapters:
            return Target(entry.provider, entry.id, self.adapters[entry.provider], entry)
        for name, p in self.settings.providers.items():
            if m in p.models:
                return self._target(name, m)
        raise errors.ModelNotFound(
            f"The model '{model}' is not in the catalog. Use a catalog id (see GET /v1/models), "
            "'provider/model' (e.g. 'openai/gpt-4o'), a provider name, or 'auto'.",
            param="model",
        )

    # ------------------------------------------------------------------ a whole chain
    def targets(self, model: str, task_type: str | None, fallbacks: list[str] | None) -> list[Target]:
        key = (model, task_type, tuple(fallbacks) if fallbacks else None)
        out = self._chains.get(key)
        if out is None:
            out = self._candidates(model, task_type, fallbacks)
            if len(self._chains) < 4096:
                self._chains[key] = out
        # Targets cooling down after failures are skipped while another can serve; when
        # all are cooling down they are tried anyway rather than refusing outright.
        available = [t for t in out if self.is_available(t)]
        return available or list(out)

    def _candidates(self, model: str, task_type: str | None, fallbacks: list[str] | None) -> list[Target]:
        if task_type is not None and task_type not in TASK_TYPES:
            raise errors.BadRequest(
                f"task_type must be one of {', '.join(TASK_TYPES)}", param="task_type"
            )
        out: list[Target] = []
        seen: set[str] = set()

        def add(t: Target) -> None:
            if t.key not in seen and self.configured(t.provider):
                seen.add(t.key)
                out.append(t)

        auto = model.strip().lower() == "auto"
        if auto:
            for t in self.auto(task_type):
                add(t)
        else:
            primary = self.one(model)
            if not self.configured(primary.provider):
                pcfg = self.settings.providers[primary.provider]
                hint = f" (set {pcfg.key_env})" if pcfg.key_env else ""
                if not fallbacks and not self._chain(primary, task_type):
                    raise errors.BadRequest(
                        f"provider '{primary.provider}' is not configured{hint}",
                        param="model", code="provider_not_configured",
                    )
            add(primary)
        chain = fallbacks if fallbacks else ([] if auto else self._chain(out[0] if out else None, task_type))
        for f in chain:
            try:
                add(self.one(f))
            except errors.ModelNotFound:
                if fallbacks:  # the caller named it: say so
                    raise errors.ModelNotFound(f"fallback model '{f}' is not known", param="fallbacks") from None
        if not out:
            raise errors.BadRequest(
                "no configured provider can serve this request", param="model", code="provider_not_configured"
            )
        return out

    def _chain(self, primary: Target | None, task_type: str | None) -> list[str]:
        if primary is not None:
            for key in (primary.model, primary.key):
                if key in self.catalog.fallbacks:
                    return self.catalog.fallbacks[key]
        if task_type and task_type in self.catalog.fallbacks:
            return self.catalog.fallbacks[task_type]
        return []

    def auto(self, task_type: str | None) -> list[Target]:
        prefs = self.catalog.tasks.get(task_type or "text_generation", [])
        out = []
        for p in prefs:
            try:
                t = self.one(p)
            except errors.ModelNotFound:
                continue
            if self.configured(t.provider) and t.provider != "mock":
                out.append(t)
        if self.mock_only:
            mock = self.catalog.default_for("mock")
            if mock is not None:
                out.append(Target("mock", mock.id, self.adapters["mock"], mock))
        return out

    def explain(self, model: str, task_type: str | None, targets: list[Target]) -> dict[str, Any]:
        """Why these targets: logged with the choice (``event: route``)."""
        task = task_type or "text_generation"
        if model.strip().lower() != "auto":
            return {"reason": "explicit model" + (", then its fallbacks" if len(targets) > 1 else ""),
                    "skipped": {}}
        chosen = {t.model for t in targets}
        skipped = {}
        for p in self.catalog.tasks.get(task, []):
            if p in chosen:
                continue
            try:
                t = self.one(p)
            except errors.ModelNotFound:
                skipped[p] = "not in the catalog"
                continue
            skipped[p] = "provider not configured" if not self.configured(t.provider) else "cooling down"
        why = f"auto: the first available model in the '{task}' preference list"
        if self.mock_only:
            why += " (no provider key is set: the simulated mock provider)"
        return {"reason": why, "skipped": skipped}
