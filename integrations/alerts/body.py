"""Reading a webhook body: valid UTF-8 JSON within limits, or one exact reason why not.

Python's ``json`` accepts more than a sender should be allowed to send us: it guesses
UTF-16 and UTF-32, passes encoded surrogates through, reads ``NaN``, recurses until the
interpreter gives up, and raises ``ValueError`` on integers of more than 4,300 digits.
``decode`` turns each of those into a ``BodyError`` (400, or 413 for size) with the limit
named, so no body can reach the parsers in a shape they did not expect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What one webhook body may hold. Alertmanager groups of a few hundred alerts fit easily."""

    body_bytes: int = 1024 * 1024     # the whole body
    depth: int = 32                   # objects and arrays inside each other (Alertmanager's deepest is 4)
    string_chars: int = 64 * 1024     # one string, key or value
    number_chars: int = 64            # one number as written (a float's 17 digits plus sign and exponent fit)


LIMITS = Limits()


class BodyError(ValueError):
    """The body as sent can never be read; ``status`` is 400 or 413 and the message names the limit."""

    def __init__(self, message: str, status: int = 400, fix: str = "send the alert as a UTF-8 JSON object"):
        super().__init__(message)
        self.status, self.fix = status, fix


def decode(body: bytes, limits: Limits = LIMITS) -> Any:
    if len(body) > limits.body_bytes:
        raise BodyError(f"body of {len(body)} bytes is over the {limits.body_bytes} byte limit", 413,
                        "send fewer alerts per notification (Alertmanager: max_alerts)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8: byte {exc.start} ({body[exc.start:exc.start + 1]!r}) {exc.reason}") from None
    text = text.removeprefix("\ufeff")  # a byte order mark may be ignored (RFC 8259 section 8.1)
    if not text.strip():
        raise BodyError("body is empty; send a JSON object")

    def number(kind: type):
        def convert(written: str):
            if len(written) > limits.number_chars:
                raise BodyError(f"a number of {len(written)} characters is over the {limits.number_chars} character limit")
            value = kind(written)
            if isinstance(value, float) and not math.isfinite(value):
                raise BodyError(f"the number {written[:20]} is too large for a double")
            return value
        return convert

    def constant(name: str):
        raise BodyError(f"{name} is not JSON; send numbers as finite decimals")

    try:
        data = json.loads(text, parse_int=number(int), parse_float=number(float), parse_constant=constant)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"body is nested too deeply (the limit is {limits.depth} levels)") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"body is not JSON: {exc}") from None
    except ValueError as exc:  # anything else json itself refuses
        raise BodyError(f"body is not JSON: {exc}") from None
    check_shape(data, limits)
    return data


def check_shape(data: Any, limits: Limits = LIMITS) -> None:
    """Depth and string length, without recursion (the data may be as deep as json allowed)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if len(node) > limits.string_chars:
                raise BodyError(f"a string of {len(node)} characters is over the {limits.string_chars} character limit")
        elif isinstance(node, (dict, list)):
            if depth > limits.depth:
                raise BodyError(f"body is nested {depth} levels deep; the limit is {limits.depth}")
            if isinstance(node, dict):
                for key, value in node.items():
                    if len(key) > limits.string_chars:
                        raise BodyError(f"a key of {len(key)} characters is over the {limits.string_chars} character limit")
                    stack.append((value, depth + 1))
            else:
                stack.extend((value, depth + 1) for value in node)
