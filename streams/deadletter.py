"""Embedded mode's dead-letter store: requests that could not be processed, kept on disk.

Ingest validated these requests, so one landing here is a bug in llmtel, not bad input.
Keeping the protobuf bytes means the data can be replayed once the bug is fixed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from schema.messages import OtlpMessage

log = logging.getLogger(__name__)


class DeadLetterDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: OtlpMessage, error: BaseException) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        stem = f"{message.received_at_ns}-{message.tenant_id}-{id(message):x}"
        (self.path / f"{stem}.pb").write_bytes(message.request.SerializeToString())
        (self.path / f"{stem}.txt").write_text(f"{type(error).__name__}: {error}\n")
        log.error("dead letter written", extra={"file": str(self.path / f"{stem}.pb")})
