"""A local SMTP server (aiosmtpd) on a loopback port, in the test's event loop, keeping what it receives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP

TOKEN = re.compile(r"^    (supe_[A-Za-z0-9_-]+|supi_[A-Za-z0-9_-]+)$", re.MULTILINE)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.delay = 0.0  # seconds each delivery takes: a slow mail server
        self.port = 0
        self._server: asyncio.Server | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"

    async def start(self) -> Mailbox:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="mail.test"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def env(self, **extra: str) -> dict[str, str]:
        """The SUP_* settings of a server that sends its mail here."""
        return {
            "SUP_EMAIL_SMTP_HOST": "127.0.0.1",
            "SUP_EMAIL_SMTP_PORT": str(self.port),
            "SUP_EMAIL_SMTP_SECURITY": "none",
            "SUP_EMAIL_FROM_ADDRESS": "SUP <sup@example.test>",
            **extra,
        }

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def next_to(self, address: str, already: int = 0, timeout: float = 10.0) -> EmailMessage:
        """The first mail to `address` after the `already` ones it had."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.to(address)) <= already:
            assert asyncio.get_running_loop().time() < deadline, f"no mail to {address}"
            await asyncio.sleep(0.02)
        return self.to(address)[already]


def token_in(message: EmailMessage) -> str:
    match = TOKEN.search(message.get_content().replace("\r\n", "\n"))
    assert match, message.get_content()
    return match.group(1)
