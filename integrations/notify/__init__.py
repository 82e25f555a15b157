"""Notification channels and the delivery policy that uses them."""

from integrations.notify.base import CHANNELS, Channel, ChannelError, Delivery, Message, register
from integrations.notify.dispatch import deliver

__all__ = ["CHANNELS", "Channel", "ChannelError", "Delivery", "Message", "deliver", "register"]
