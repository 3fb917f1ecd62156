"""KafkaHandoff without a broker: unreachable Kafka is a retryable refusal, never a hang."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.codec import has_zstd

from ingest.errors import Unavailable
from ingest.kafka import KafkaHandoff, default_compression
from ingest.service import IngestService
from schema.kafka import OTLP_TOPIC
from schema.messages import HandoffUnavailable, OtlpMessage
from schema.topics import max_message_bytes
from tests.ingest.helpers import KeyTable, free_port, make_spans, request_of


def message() -> OtlpMessage:
    return OtlpMessage("acme", 1, request_of(make_spans(2)), 2)


async def test_unreachable_kafka_is_unavailable_at_once_and_stop_is_quick() -> None:
    handoff = KafkaHandoff(f"127.0.0.1:{free_port()}", send_timeout_s=1.0)
    assert handoff.topic == OTLP_TOPIC
    started = time.monotonic()
    await handoff.start(wait_s=0.3)  # no error: it keeps trying in the background
    assert not handoff.connected
    with pytest.raises(HandoffUnavailable, match="not connected to the message bus"):
        await handoff.submit(message())
    await handoff.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(HandoffUnavailable, match="shutting down"):
        await handoff.submit(message())


async def test_the_receivers_answer_retry_later() -> None:
    handoff = KafkaHandoff(f"127.0.0.1:{free_port()}", send_timeout_s=1.0)
    await handoff.start()
    try:
        await asyncio.sleep(0.2)
        service = IngestService(handoff, KeyTable())
        with pytest.raises(Unavailable) as raised:
            await service.accept(request_of(make_spans(3)), None)
        assert raised.value.http_status == 503
        assert raised.value.retry_after_s == 1.0
        assert raised.value.refused_spans == 3
        assert "not connected to the message bus (Kafka)" in raised.value.message
    finally:
        await handoff.stop()


def test_compression_is_zstd_when_the_codec_is_installed() -> None:
    assert default_compression() == ("zstd" if has_zstd() else None)
    assert KafkaHandoff("localhost:9092").compression == default_compression()
    assert KafkaHandoff("localhost:9092", compression="gzip").compression == "gzip"
    assert KafkaHandoff("localhost:9092", compression=None).compression is None


def test_messages_may_be_as_large_as_ingest_allows() -> None:
    assert max_message_bytes(16 << 20) > 16 << 20
