"""Parsing and formatting of query-string values: times, cursors, decimals."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

NS_PER_S = 1_000_000_000
COST_SCALE = Decimal("1e-12")  # Decimal(38, 12), as stored

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}:\d{2})?$"
)
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")


class InvalidParameter(ValueError):
    """A query parameter that cannot be understood; the message says what to send."""


def parse_time(value: str, name: str) -> int:
    """Unix nanoseconds (all digits) or RFC 3339 (no zone means UTC) -> ns since the epoch."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _RFC3339.match(text)
    if not match:
        raise InvalidParameter(
            f"{name}={value!r} is not a time: use RFC 3339 (2024-05-01T12:00:00Z) "
            "or unix nanoseconds"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
        if zone in (None, "Z", "z"):
            moment = moment.replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(moment.isoformat() + zone)
    except ValueError as exc:
        raise InvalidParameter(f"{name}={value!r} is not a valid time: {exc}") from exc
    seconds = int(moment.timestamp())
    nanos = int((fraction or "0").ljust(9, "0"))
    return seconds * NS_PER_S + nanos


def format_ns(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, e.g. 2024-05-01T12:00:00.123456789Z."""
    seconds, nanos = divmod(ns, NS_PER_S)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def format_seconds(seconds: int) -> str:
    """RFC 3339 in UTC, whole seconds."""
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%SZ}"


def format_day(seconds: int) -> str:
    """YYYY-MM-DD of a UTC time."""
    return datetime.fromtimestamp(seconds, tz=UTC).date().isoformat()


def format_cost(value: Decimal) -> str:
    """The stored Decimal(38, 12) as a fixed-point string with all 12 places."""
    return format(value.quantize(COST_SCALE), "f")


def trace_id(value: str) -> str:
    """A trace id as stored: 32 lowercase hex digits."""
    if not _TRACE_ID.match(value) or value == "0" * 32:
        raise InvalidParameter(
            f"trace id {value!r} is malformed: expected 32 hexadecimal digits, not all zero"
        )
    return value.lower()


def encode_cursor(timestamp_ns: int, span_id: str, trace_id_: str) -> str:
    raw = json.dumps([timestamp_ns, span_id, trace_id_], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, str]:
    """The position a cursor from `encode_cursor` names; InvalidParameter if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        timestamp_ns, span_id, trace_id_ = json.loads(raw)
        if not (
            isinstance(timestamp_ns, int)
            and isinstance(span_id, str)
            and isinstance(trace_id_, str)
            and len(span_id) <= 64
            and len(trace_id_) <= 64
        ):
            raise ValueError("unexpected cursor content")
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidParameter(
            "cursor is invalid: pass next_cursor from the previous page unchanged"
        ) from exc
    return timestamp_ns, span_id, trace_id_
