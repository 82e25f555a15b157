"""Email over SMTP (smtplib). Named mail.py so it never shadows the standard library's `email`."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.notify import render
from integrations.notify.base import Channel, ChannelError, Message, register
from integrations.notify.config import secret

SUBJECT_MAX_CHARS = 200      # RFC 5322 recommends 78-char lines; headers fold, but long subjects get cut by clients
BODY_MAX_BYTES = 1_000_000   # our cap; mail servers commonly take 10-25 MB


class SmtpConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_SMTP_", extra="ignore")

    host: str | None = Field(None, description="SMTP server.")
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    sender: str | None = Field(None, description="From address (RUNBOOK_SMTP_SENDER).")
    starttls: bool = Field(True, description="Upgrade with STARTTLS when the server offers it.")
    ssl: bool = Field(False, description="Implicit TLS (port 465).")
    timeout: float = 10


def compose(message: Message, sender: str, to: str) -> EmailMessage:
    mail = EmailMessage()
    subject = message.headline()
    mail["Subject"] = subject if len(subject) <= SUBJECT_MAX_CHARS else subject[: SUBJECT_MAX_CHARS - 1] + "…"
    mail["From"] = sender
    mail["To"] = to
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    # Threading in mail clients: every page of one incident references the same made-up root id.
    mail["References"] = f"<incident-{message.incident_id}@runbook>"
    if message.severity in ("I", "1", "critical", "P1"):
        mail["X-Priority"] = "1"
    mail.set_content(render.cut_bytes(render.plain(message), BODY_MAX_BYTES))
    return mail


@register
class EmailChannel(Channel):
    name = "email"

    def __init__(self, config: SmtpConfig | None = None):
        self.config = config or SmtpConfig()

    def secrets(self) -> list[str]:
        return [s for s in (secret(self.config.password),) if s]

    def send(self, message: Message, to: str) -> str | None:
        c = self.config
        if not (c.host and c.sender):
            raise ChannelError("email is not configured: set RUNBOOK_SMTP_HOST and RUNBOOK_SMTP_SENDER", permanent=True)
        mail = compose(message, c.sender, to)
        try:
            if c.ssl:
                server = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=ssl.create_default_context())
            else:
                server = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            with server:
                if not c.ssl and c.starttls and server.has_extn("starttls"):
                    server.starttls(context=ssl.create_default_context())
                if c.username and c.password:
                    server.login(c.username, c.password.get_secret_value())
                server.send_message(mail)
        except smtplib.SMTPRecipientsRefused as e:
            raise ChannelError(f"mail server refused the address {to}", permanent=True) from e
        except smtplib.SMTPAuthenticationError as e:
            raise ChannelError(f"mail server refused the login (code {e.smtp_code})", permanent=True) from e
        except smtplib.SMTPResponseException as e:
            # 4xx is "try again later", 5xx is final.
            raise ChannelError(f"mail server said {e.smtp_code}", permanent=e.smtp_code >= 500) from e
        except (smtplib.SMTPException, OSError) as e:
            raise ChannelError(f"could not send mail via {c.host}:{c.port}: {type(e).__name__}") from e
        return mail["Message-ID"]
