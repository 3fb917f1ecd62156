"""Spans with unusable ids are removed and counted; the rest goes on untouched."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ingest.decode import MALFORMED_ID
from ingest.validate import check_spans
from tests.ingest.helpers import make_spans, request_of

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def span(name: str, trace_id: bytes = TRACE, span_id: bytes = SPAN, parent: bytes = b"") -> Span:
    return Span(name=name, trace_id=trace_id, span_id=span_id, parent_span_id=parent)


def request(*scopes: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=s) for s in scopes])]
    )


def names(req: ExportTraceServiceRequest) -> list[str]:
    return [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_sdk_spans_are_all_accepted_unchanged() -> None:
    req = request_of(make_spans(5))
    before = req.SerializeToString()
    checked = check_spans(req)
    assert (checked.accepted_spans, checked.rejected_spans) == (5, 0)
    assert checked.error_message == ""
    assert req.SerializeToString() == before
    assert not checked.response().HasField("partial_success")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (span("bad", trace_id=b""), "invalid trace id"),
        (span("bad", trace_id=TRACE[:15]), "invalid trace id"),
        (span("bad", trace_id=TRACE + b"\x01"), "invalid trace id"),
        (span("bad", trace_id=bytes(16)), "invalid trace id"),
        (span("bad", trace_id=MALFORMED_ID), "invalid trace id"),
        (span("bad", span_id=b""), "invalid span id"),
        (span("bad", span_id=SPAN[:7]), "invalid span id"),
        (span("bad", span_id=bytes(8)), "invalid span id"),
        (span("bad", span_id=MALFORMED_ID), "invalid span id"),
        (span("bad", parent=PARENT[:4]), "invalid parent span id"),
        (span("bad", parent=PARENT + b"\x00"), "invalid parent span id"),
        (span("bad", parent=MALFORMED_ID), "invalid parent span id"),
    ],
)
def test_each_invalid_id_rejects_only_its_span(bad: Span, reason: str) -> None:
    req = request([span("ok-root"), bad, span("ok-child", parent=PARENT)])
    checked = check_spans(req)
    assert (checked.accepted_spans, checked.rejected_spans) == (2, 1)
    assert names(req) == ["ok-root", "ok-child"]
    assert f"1 with an {reason}" in checked.error_message
    partial = checked.response().partial_success
    assert partial.rejected_spans == 1
    assert partial.error_message == checked.error_message
    assert "the other 2 were accepted" in partial.error_message


def test_counts_add_up_across_scopes_and_resources_and_reasons() -> None:
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(spans=[span("a"), span("x", trace_id=b""), span("b")]),
                    ScopeSpans(spans=[span("x", span_id=b""), span("x", span_id=bytes(8))]),
                ]
            ),
            ResourceSpans(scope_spans=[ScopeSpans(spans=[span("c"), span("x", parent=b"1")])]),
        ]
    )
    checked = check_spans(req)
    assert (checked.accepted_spans, checked.rejected_spans) == (3, 4)
    assert names(req) == ["a", "b", "c"]
    assert "rejected 4 spans" in checked.error_message
    assert "1 with an invalid trace id" in checked.error_message
    assert "2 with an invalid span id" in checked.error_message
    assert "1 with an invalid parent span id" in checked.error_message
    # the scope that lost all its spans is gone; the resources both keep a scope
    assert [len(rs.scope_spans) for rs in req.resource_spans] == [1, 1]


def test_envelopes_left_empty_are_dropped() -> None:
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(scope_spans=[ScopeSpans(spans=[span("x", trace_id=b"")])]),
            ResourceSpans(scope_spans=[ScopeSpans(spans=[span("kept")]), ScopeSpans()]),
            ResourceSpans(),
        ]
    )
    checked = check_spans(req)
    assert (checked.accepted_spans, checked.rejected_spans) == (1, 1)
    assert len(req.resource_spans) == 1
    assert len(req.resource_spans[0].scope_spans) == 1
    assert names(req) == ["kept"]


def test_all_rejected_leaves_an_empty_request() -> None:
    req = request([span("x", trace_id=b""), span("y", span_id=b"")])
    checked = check_spans(req)
    assert (checked.accepted_spans, checked.rejected_spans) == (0, 2)
    assert len(req.resource_spans) == 0
    assert "no span was accepted" in checked.error_message


def test_empty_request_is_a_plain_success() -> None:
    checked = check_spans(ExportTraceServiceRequest())
    assert (checked.accepted_spans, checked.rejected_spans) == (0, 0)
    assert not checked.response().HasField("partial_success")
