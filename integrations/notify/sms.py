"""SMS through Twilio's Messages API, kept to a few segments so it arrives whole and is read at a glance."""

from __future__ import annotations

import math

from integrations.notify import asks, choices, twilio_common
from integrations.notify.base import Channel, Message, register
from integrations.notify.config import secret
from integrations.notify.twilio_common import TwilioConfig

# Segment sizes (3GPP TS 23.038 / Twilio docs). Text outside GSM-7 (Chinese) is sent as UCS-2.
GSM7_SINGLE = 160     # characters in one GSM-7 segment
GSM7_CONCAT = 153     # per segment once a message is split (the rest is the concatenation header)
UCS2_SINGLE = 70      # UTF-16 code units in one UCS-2 segment
UCS2_CONCAT = 67
MAX_BODY_CHARS = 1_600  # Twilio refuses longer bodies
MAX_SEGMENTS = 4        # our budget: longer pages get shortened; carriers reorder long chains

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")  # each costs two septets


def is_gsm7(text: str) -> bool:
    return all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text)


def segments(text: str) -> int:
    """How many SMS segments the text is billed and delivered as."""
    if is_gsm7(text):
        units, single, concat = sum(2 if c in _GSM7_EXTENDED else 1 for c in text), GSM7_SINGLE, GSM7_CONCAT
    else:
        units, single, concat = len(text.encode("utf-16-le")) // 2, UCS2_SINGLE, UCS2_CONCAT
    if units <= single:
        return 1
    return math.ceil(units / concat)


def _fits(text: str, max_segments: int) -> bool:
    return len(text) <= MAX_BODY_CHARS and segments(text) <= max_segments


def _shorten(text: str, fits) -> str:
    """The longest prefix of text, ending in '…', for which fits(prefix) holds (binary search)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(text[:mid] + "…"):
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""


def compose(message: Message, code: str | None = None, max_segments: int = MAX_SEGMENTS) -> str:
    """Headline, body, how to reply, link — shortening the body first, then dropping the link, never the reply hint."""
    head = message.headline()
    tail = []
    options = choices.options_of(message.answer_options, message.needs_answer)
    if options:
        tail.append(choices.reply_hint(options, message.language) + (f" [{code}]" if code else ""))
    link = message.answer_url or message.run_url
    if link:
        tail.append(link)

    def build(body: str, tail_lines: list[str], headline: str = head) -> str:
        return "\n".join(p for p in [headline, body, *tail_lines] if p)

    full = build(message.text, tail)
    if _fits(full, max_segments):
        return full
    for tail_lines in (tail, tail[:1] if options else []):
        if _fits(build("", tail_lines), max_segments):
            body = _shorten(message.text, lambda b: _fits(build(b, tail_lines), max_segments))
            return build(body, tail_lines)
    return _shorten(head, lambda h: _fits(build("", tail[:1] if options else [], h), max_segments)) or head[:UCS2_SINGLE]


@register
class SmsChannel(Channel):
    name = "sms"

    def __init__(self, config: TwilioConfig | None = None):
        self.config = config or TwilioConfig()

    def secrets(self) -> list[str]:
        return [s for s in (secret(self.config.auth_token),) if s]

    def send(self, message: Message, to: str) -> str | None:
        twilio = twilio_common.client(self.config)
        code = None
        options = choices.options_of(message.answer_options, message.needs_answer)
        if options:
            code = asks.code_for(message.incident_id, message.step_id)
        body = compose(message, code)
        sent = twilio_common.call(twilio, lambda: twilio.messages.create(to=to, from_=self.config.from_number, body=body), "SMS")
        if options:
            # Only after Twilio accepted it: a reply can then only answer a question that was really sent.
            asks.remember(to, message.incident_id, message.step_id, options, message.language)
        return sent.sid
