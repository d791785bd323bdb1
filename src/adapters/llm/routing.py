"""Several providers behind one ``LlmClient``: each call goes to its model's client.

The core names a model in every ``LlmRequest`` and knows nothing of providers;
this adapter looks the model up and hands the call, untouched, to the client
of the provider that serves it. The stream it returns is that client's own, so
streaming, cancelling and closing early behave exactly as they do there.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import AsyncExitStack

from gemini_core.llm import LlmChunk, LlmClient, LlmRequest, Usage

__all__ = ["RoutingLlmClient"]


class RoutingLlmClient:
    """The ``LlmClient`` port over one client per provider. ``routes`` maps a
    model to the client that serves it; a model it does not name goes to
    ``fallback`` (the default provider's client)."""

    def __init__(self, routes: Mapping[str, LlmClient], *, fallback: LlmClient) -> None:
        self._routes = dict(routes)
        self._fallback = fallback

    def client_for(self, model: str) -> LlmClient:
        return self._routes.get(model, self._fallback)

    def stream(self, request: LlmRequest) -> AsyncGenerator[LlmChunk | Usage, None]:
        return self.client_for(request.model).stream(request)

    async def aclose(self) -> None:
        """Close every client once, each even if closing another failed."""
        clients = {id(client): client for client in (self._fallback, *self._routes.values())}
        async with AsyncExitStack() as stack:
            for client in clients.values():
                stack.push_async_callback(client.aclose)
