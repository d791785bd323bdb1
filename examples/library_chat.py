"""The chat backend as a Python library: no web server, no Litestar.

Signs a user up with the code from the mail, opens a chat and prints the
offline model's answer as it streams::

    python examples/library_chat.py                                  # in memory
    DATABASE_URL=postgresql://localhost/gemini python examples/library_chat.py

With ``DATABASE_URL`` the same runs on PostgreSQL (migrated on the way in).
"""

from __future__ import annotations

import asyncio
import os
import secrets

from adapters.bootstrap import (
    CoreConfig,
    DatabaseConfig,
    RecordingMailer,
    Services,
    memory_services,
    open_services,
)
from gemini_core import AnswerDelta, AnswerDone, Client, OtpPurpose, Registration


async def converse(services: Services, mailer: RecordingMailer) -> None:
    email = f"ada-{secrets.token_hex(4)}@example.com"
    await services.accounts.send_code(email, OtpPurpose.EMAIL_VERIFICATION)
    signed_up = await services.accounts.register(
        email,
        mailer.last_code(email),
        Registration(email=email, username=email.split("@")[0], password="a library passphrase"),
        Client(user_agent="examples/library_chat.py"),
    )
    user = signed_up.user
    print(f"signed up {user.email} (user {user.id})")

    chat = await services.chats.create_chat(user.id, title="From Python")
    exchange = await services.chats.send_message(user.id, chat.id, "Hello from a script!")
    print("answer: ", end="", flush=True)
    async for event in exchange.events:
        if isinstance(event, AnswerDelta):
            print(event.text, end="", flush=True)
        elif isinstance(event, AnswerDone):
            print(f"\nstored as message {event.message.id} ({event.message.status})")


async def main() -> None:
    mailer = RecordingMailer()
    secret_key = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32)
    url = os.environ.get("DATABASE_URL")
    if url:
        config = CoreConfig(secret_key=secret_key, database=DatabaseConfig(url=url))
        async with open_services(config, mailer=mailer) as services:
            await converse(services, mailer)
        return
    services = memory_services(CoreConfig(secret_key=secret_key), mailer=mailer)
    try:
        await converse(services, mailer)
    finally:
        await services.chats.aclose()


if __name__ == "__main__":
    asyncio.run(main())
