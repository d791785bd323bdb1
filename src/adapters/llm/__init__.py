"""``LlmClient`` adapters: Gemini (google-genai), any OpenAI-compatible server,
and the offline echo model."""

from adapters.llm.echo import EchoLlmClient
from adapters.llm.gemini import GeminiLlmClient
from adapters.llm.openai import OpenAiCompatibleLlmClient

__all__ = ["EchoLlmClient", "GeminiLlmClient", "OpenAiCompatibleLlmClient"]
