"""``/models``: the models a chat may pick, and which provider serves each.

The list is the deployment's (``LLM_MODELS``, the default model first), the same for
every caller; a client shows it in its model picker and sends an ``id`` back as a chat's
or a message's ``model``.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide

from gemini_core.accounts import Principal
from web.container import Container
from web.principal import provide_principal
from web.settings import ModelOffer, Provider


class ModelOut(msgspec.Struct):
    id: str
    provider: Provider
    default: bool

    @classmethod
    def of(cls, offer: ModelOffer, *, default: bool) -> ModelOut:
        return cls(id=offer.id, provider=offer.provider, default=default)


class ModelsOut(msgspec.Struct):
    items: list[ModelOut]


class ModelsController(Controller):
    path = "/models"
    tags = ["chats"]  # noqa: RUF012  (Litestar reads class attributes)
    dependencies = {"principal": Provide(provide_principal)}  # noqa: RUF012

    @get("/", operation_id="listModels")
    async def list_models(
        self,
        # Asked for so that only a signed-in caller sees the list, though it is everyone's.
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> ModelsOut:
        """The models a chat may pick and the provider of each, the default (what a new
        chat uses) first."""
        settings = container.settings
        return ModelsOut(
            items=[
                ModelOut.of(offer, default=offer.id == settings.default_model)
                for offer in settings.models
            ]
        )
