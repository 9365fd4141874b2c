"""The built-in mailer: the `send_email` hook over SMTP (aiosmtplib), on when `email.smtp_host` is set.

A plugin that sends mail another way (an HTTP API) implements the same hook instead.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from sup.config import EmailConfig
from sup.plugins.hookspecs import OutgoingEmail, hookimpl


class SmtpMailer:
    def __init__(self, config: EmailConfig) -> None:
        self._config = config
        domain = parseaddr(config.from_address)[1].rpartition("@")[2]
        self._domain = domain or "sup.invalid"

    def compose(self, message: OutgoingEmail) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self._config.from_address
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=self._domain)
        # Automated mail: no out-of-office answers (RFC 3834).
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(message.text)
        return mail

    @hookimpl
    async def send_email(self, message: OutgoingEmail) -> bool:
        config = self._config
        await aiosmtplib.send(
            self.compose(message),
            hostname=config.smtp_host,
            port=config.smtp_port,
            username=config.smtp_username or None,
            password=config.smtp_password or None,
            use_tls=config.smtp_security == "tls",
            start_tls=config.smtp_security == "starttls",
            timeout=config.timeout_seconds,
        )
        return True
