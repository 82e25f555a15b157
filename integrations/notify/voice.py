"""Voice calls through Twilio's Calls API: the page is read out, and a key press answers it.

The TwiML is passed inline (`twiml=`), so no server has to host it. The key press
goes to the inbound router's voice endpoint, which needs RUNBOOK_PUBLIC_URL;
without it the call is read out only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from integrations.notify import choices, twilio_common
from integrations.notify.base import Channel, ChannelError, Message, register
from integrations.notify.config import NotifyConfig, secret
from integrations.notify.twilio_common import TwilioConfig

TWIML_MAX_CHARS = 4_000     # Twilio's limit for the inline `twiml` parameter
SAY_LANGUAGES = {"zh": "zh-CN", "en": "en-US"}
GATHER_TIMEOUT_SECONDS = 10  # how long Twilio waits for a key press after the prompt
SAY_LOOP = 2                 # read the page twice: the first time is often missed
VOICE_PATH = "/notify/twilio/voice"

_PHRASES = {
    "zh": {"drill": "这是一次演练。", "press": "请按 {n} 键{label}。", "nothing": "没有收到按键，再见。"},
    "en": {"drill": "This is a drill.", "press": "Press {n} to {label}.", "nothing": "No key was pressed. Goodbye."},
}


def spoken_text(message: Message) -> str:
    """What is read out: drill notice, title, severity, body. Links are useless on a phone call."""
    p = _PHRASES[message.language]
    parts = [p["drill"] if message.drill else "", message.title]
    if message.severity:
        parts.append(("级别 " if message.language == "zh" else "Severity ") + message.severity)
    parts.append(message.text)
    sep = "。" if message.language == "zh" else ". "
    return sep.join(x.strip().rstrip("。.") for x in parts if x and x.strip()) + sep.strip()


def gather_url(base: str, message: Message, options: list[str]) -> str:
    query = {"incident": message.incident_id, "options": ",".join(options), "lang": message.language}
    if message.step_id:
        query["step"] = message.step_id
    return base + "?" + urlencode(query)


def twiml(message: Message, action: str | None) -> str:
    """<Response><Gather numDigits=1 action=...><Say>page</Say><Say>press 1</Say></Gather><Say>goodbye</Say></Response>."""
    lang = SAY_LANGUAGES[message.language]
    p = _PHRASES[message.language]
    options = choices.options_of(message.answer_options, message.needs_answer)

    def build(text: str) -> str:
        root = ET.Element("Response")
        parent = root
        if options and action:
            parent = ET.SubElement(root, "Gather", numDigits="1", action=gather_url(action, message, options),
                                   method="POST", timeout=str(GATHER_TIMEOUT_SECONDS))
        ET.SubElement(parent, "Say", language=lang, loop=str(SAY_LOOP)).text = text
        if options and action:
            prompt = " ".join(p["press"].format(n=i, label=choices.label(o, message.language)) for i, o in enumerate(options, 1))
            ET.SubElement(parent, "Say", language=lang).text = prompt
            ET.SubElement(root, "Say", language=lang).text = p["nothing"]
        return ET.tostring(root, encoding="unicode")

    text = spoken_text(message)
    doc = build(text)
    while len(doc) > TWIML_MAX_CHARS and text:
        # Cut the spoken body by the overshoot (escaping may make it longer than the raw text).
        text = text[: max(0, len(text) - (len(doc) - TWIML_MAX_CHARS) - 1)]
        doc = build(text + "…")
    return doc


@register
class VoiceChannel(Channel):
    name = "voice"

    def __init__(self, config: TwilioConfig | None = None, notify: NotifyConfig | None = None):
        self.config = config or TwilioConfig()
        self.notify = notify or NotifyConfig()

    def secrets(self) -> list[str]:
        return [s for s in (secret(self.config.auth_token),) if s]

    def send(self, message: Message, to: str) -> str | None:
        twilio = twilio_common.client(self.config)
        # Without a public URL the call is still made: hearing the page matters more than answering by phone.
        action = self.notify.public(VOICE_PATH)
        doc = twiml(message, action)
        if len(doc) > TWIML_MAX_CHARS:
            raise ChannelError("the call script is too long even when shortened", permanent=True)
        call = twilio_common.call(twilio, lambda: twilio.calls.create(to=to, from_=self.config.from_number, twiml=doc), "call")
        return call.sid
