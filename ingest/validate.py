"""Drop spans whose ids are unusable and count them, so the client gets a partial success.

A span is kept when its trace id is 16 bytes and its span id 8 bytes, neither all zero, and
its parent span id is empty (a root) or 8 bytes. Everything else about a span is left to
downstream: this runs on every request (hundreds of spans, hundreds of requests a second), so
it is one pass with three length/zero checks per span and mutates only when it must.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


@dataclass(frozen=True, slots=True)
class Checked:
    """A request after validation; `request` is the input, with bad spans removed."""

    request: ExportTraceServiceRequest
    accepted_spans: int
    rejected_spans: int
    error_message: str  # empty when nothing was rejected

    def response(self) -> ExportTraceServiceResponse:
        """Full success, or partial success naming how many spans were rejected and why."""
        if not self.rejected_spans:
            return ExportTraceServiceResponse()  # the spec: partial_success stays unset
        return ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(
                rejected_spans=self.rejected_spans, error_message=self.error_message
            )
        )


def check_spans(request: ExportTraceServiceRequest) -> Checked:
    """Remove invalid spans (in place) and then-empty scope and resource spans; count both."""
    accepted = bad_trace = bad_span = bad_parent = 0
    empty_resources: list[int] = []
    for r_index, resource_spans in enumerate(request.resource_spans):
        empty_scopes: list[int] = []
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            spans = scope_spans.spans
            bad: list[int] = []
            for index, span in enumerate(spans):
                trace_id = span.trace_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
                    bad_trace += 1
                    bad.append(index)
                    continue
                span_id = span.span_id
                if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
                    bad_span += 1
                    bad.append(index)
                    continue
                if len(span.parent_span_id) not in (0, 8):
                    bad_parent += 1
                    bad.append(index)
            for index in reversed(bad):
                del spans[index]
            kept = len(spans)
            accepted += kept
            if not kept:
                empty_scopes.append(s_index)
        for s_index in reversed(empty_scopes):
            del resource_spans.scope_spans[s_index]
        if not resource_spans.scope_spans:
            empty_resources.append(r_index)
    for r_index in reversed(empty_resources):
        del request.resource_spans[r_index]
    rejected = bad_trace + bad_span + bad_parent
    message = _explain(bad_trace, bad_span, bad_parent, accepted) if rejected else ""
    return Checked(request, accepted, rejected, message)


def _explain(bad_trace: int, bad_span: int, bad_parent: int, accepted: int) -> str:
    reasons = []
    if bad_trace:
        reasons.append(
            f"{bad_trace} with an invalid trace id (it must be 16 bytes, not all zero; "
            "32 hex characters in OTLP/JSON)"
        )
    if bad_span:
        reasons.append(
            f"{bad_span} with an invalid span id (it must be 8 bytes, not all zero; "
            "16 hex characters in OTLP/JSON)"
        )
    if bad_parent:
        reasons.append(
            f"{bad_parent} with an invalid parent span id (it must be empty for a root span "
            "or 8 bytes; 16 hex characters in OTLP/JSON)"
        )
    total = bad_trace + bad_span + bad_parent
    kept = f"the other {accepted} were accepted" if accepted else "no span was accepted"
    return (
        f"rejected {total} span{'s' if total != 1 else ''}: {'; '.join(reasons)}. "
        f"Fix the instrumentation or exporter that produces these ids; {kept}."
    )
