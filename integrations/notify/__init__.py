"""Notification channels and the delivery policy that uses them."""

from integrations.notify.asked import answered
from integrations.notify.base import CHANNELS, Answer, Channel, ChannelError, Delivery, EditableChannel, Message, register
from integrations.notify.dispatch import deliver

__all__ = ["CHANNELS", "Answer", "Channel", "ChannelError", "Delivery", "EditableChannel", "Message", "answered", "deliver",
           "register"]
