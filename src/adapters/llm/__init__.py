"""``LlmClient`` adapters: Gemini (google-genai), any OpenAI-compatible server,
the offline echo model, and a router that sends each call to its model's provider.

Each is imported on first use (``from adapters.llm import GeminiLlmClient``
loads google-genai then, not before), so a program using only the offline
model never pays for the SDKs it does not use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.llm.echo import EchoLlmClient
    from adapters.llm.gemini import GeminiLlmClient
    from adapters.llm.openai import OpenAiCompatibleLlmClient
    from adapters.llm.routing import RoutingLlmClient

__all__ = ["EchoLlmClient", "GeminiLlmClient", "OpenAiCompatibleLlmClient", "RoutingLlmClient"]

_MODULES = {
    "EchoLlmClient": "adapters.llm.echo",
    "GeminiLlmClient": "adapters.llm.gemini",
    "OpenAiCompatibleLlmClient": "adapters.llm.openai",
    "RoutingLlmClient": "adapters.llm.routing",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'adapters.llm' has no attribute {name!r}")
    return getattr(import_module(_MODULES[name]), name)
