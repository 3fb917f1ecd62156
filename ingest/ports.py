"""What ingest needs from the outside, as protocols; the composition root supplies them."""

from __future__ import annotations

from typing import Protocol

from schema.messages import OtlpMessage
from schema.models import Principal


class Handoff(Protocol):
    async def submit(self, message: OtlpMessage) -> None:
        """Accept the message or raise `BusFull` / `HandoffUnavailable`; return means handed on."""
        ...

    def full(self) -> float | None:
        """Seconds to wait when nothing can be taken now, else None.

        A cheap check made before a request is decoded, so that at capacity the receivers
        answer 503 without paying for decoding and validating what they will refuse.
        """
        ...


class Authenticator(Protocol):
    async def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key."""
        ...
