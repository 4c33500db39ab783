"""Explicit adapter registry: wire-format name → adapter class.

Vendor knowledge lives in exactly one module per vendor. Adding an OpenAI-compatible
server (Ollama, vLLM, Groq...) is a ``[providers.NAME]`` table in the TOML config with
``type = "openai"``: no code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .anthropic import AnthropicAdapter
from .base import Adapter
from .gemini import GeminiAdapter
from .mistral import MistralAdapter
from .mock import MockAdapter
from .openai import OpenAIAdapter

if TYPE_CHECKING:
    from ..settings import Settings

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "mistral": MistralAdapter,
    "mock": MockAdapter,
}


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter instance per provider (configured or not: /api/status lists all)."""
    return {name: ADAPTERS[p.kind](p, settings) for name, p in settings.providers.items()}
