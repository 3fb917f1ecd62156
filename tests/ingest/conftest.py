"""Fixtures for ingest tests."""

from __future__ import annotations

import pytest

from ingest.service import IngestService
from tests.ingest.helpers import KeyTable, RecordingHandoff


@pytest.fixture
def handoff() -> RecordingHandoff:
    return RecordingHandoff()


@pytest.fixture
def service(handoff: RecordingHandoff) -> IngestService:
    return IngestService(handoff, KeyTable(), clock=lambda: 1_700_000_000_000_000_000)
