"""Delivery policy: each person's channels in order, falling back when one fails."""

from __future__ import annotations

from integrations.contacts import Person
from integrations.notify import log as _log  # noqa: F401  (registers the log channel)
from integrations.notify.base import CHANNELS, ChannelError, Delivery, Message


def deliver(message: Message, people: list[Person]) -> list[Delivery]:
    """Page every person; return every attempt. A person with no working channel gets a failed record."""
    deliveries: list[Delivery] = []
    for person in people:
        addresses = person.channels or []
        for address in addresses:
            channel_cls = CHANNELS.get(address.channel)
            if channel_cls is None:
                deliveries.append(Delivery(channel=address.channel, person=person.id, to=address.to, outcome="failed",
                                           error=f"no channel '{address.channel}' is installed"))
                continue
            try:
                provider_id = channel_cls().send(message, address.to)
            except ChannelError as exc:
                deliveries.append(Delivery(channel=address.channel, person=person.id, to=address.to, outcome="failed", error=str(exc)))
                continue
            deliveries.append(Delivery(channel=address.channel, person=person.id, to=address.to, outcome="sent", provider_id=provider_id))
            break
        if not addresses:
            deliveries.append(Delivery(channel="none", person=person.id, to="", outcome="failed", error="person has no channels"))
    return deliveries
