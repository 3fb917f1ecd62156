"""Calendar months in UTC, as budgets and invoices count them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from api.params import NS_PER_S, InvalidParameter

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
# ClickHouse `Date` holds 1970-01-01 .. 2149-06-06
_FIRST_YEAR, _LAST_YEAR = 1970, 2148


def parse_month(value: str) -> date:
    """`YYYY-MM` -> the month's first day; InvalidParameter saying what to send otherwise."""
    match = _MONTH.match(value.strip())
    year, month = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= month <= 12 or not _FIRST_YEAR <= year <= _LAST_YEAR:
        raise InvalidParameter(
            f"month={value!r} is not a month: use YYYY-MM between "
            f"{_FIRST_YEAR}-01 and {_LAST_YEAR}-12, e.g. 2024-05"
        )
    return date(year, month, 1)


def month_of(now_ns: int) -> date:
    """The first day of the UTC month containing `now_ns`."""
    moment = datetime.fromtimestamp(now_ns // NS_PER_S, tz=UTC)
    return date(moment.year, moment.month, 1)


def next_month(first: date) -> date:
    """The first day of the month after the one starting on `first`."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def month_name(first: date) -> str:
    return f"{first.year:04d}-{first.month:02d}"
