"""HTTP bodies to requests: encodings, compression, limits, OTLP/JSON's hex ids."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.decode import (
    MALFORMED_ID,
    Encoding,
    decode_request,
    encode_response,
    encode_status,
    encoding_for,
    inflate,
)
from ingest.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from tests.ingest.helpers import make_spans, request_of, to_otlp_json

PB = "application/x-protobuf"
JSON = "application/json"

TRACE_HEX = "5B8EFFF798038103D269B633813FC60C"
SPAN_HEX = "EEE19B7EC3C1B174"
PARENT_HEX = "EEE19B7EC3C1B173"


def sdk_request() -> ExportTraceServiceRequest:
    return request_of(make_spans(3))


def test_protobuf_round_trip() -> None:
    request = sdk_request()
    decoded, encoding = decode_request(request.SerializeToString(), PB, None)
    assert encoding is Encoding.PROTOBUF
    assert decoded == request


@pytest.mark.parametrize(
    "content_type",
    ["application/x-protobuf", "Application/X-Protobuf; charset=utf-8", " application/x-protobuf"],
)
def test_content_type_parameters_and_case_are_ignored(content_type: str) -> None:
    assert encoding_for(content_type) is Encoding.PROTOBUF
    assert encoding_for("application/json; charset=utf-8") is Encoding.JSON


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/grpc", "json"])
def test_other_content_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        encoding_for(content_type)
    assert refused.value.http_status == 415
    assert "application/x-protobuf" in refused.value.message


def test_gzip_body_is_inflated() -> None:
    request = sdk_request()
    body = gzip.compress(request.SerializeToString())
    decoded, _ = decode_request(body, PB, "gzip")
    assert decoded == request
    decoded, _ = decode_request(body, PB, " GZIP ")
    assert decoded == request


def test_deflate_and_identity() -> None:
    request = sdk_request()
    raw = request.SerializeToString()
    assert decode_request(zlib.compress(raw), PB, "deflate")[0] == request
    assert decode_request(raw, PB, "identity")[0] == request


def test_concatenated_gzip_members_are_one_body() -> None:
    raw = sdk_request().SerializeToString()
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert inflate(body, "gzip") == raw


def test_unknown_content_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        inflate(b"abc", "br")
    assert "'br'" in refused.value.message


def test_truncated_gzip_is_400_naming_it() -> None:
    body = gzip.compress(sdk_request().SerializeToString())
    with pytest.raises(BadRequest) as refused:
        inflate(body[: len(body) // 2], "gzip")
    assert "truncated" in refused.value.message


def test_corrupt_gzip_is_400() -> None:
    with pytest.raises(BadRequest) as refused:
        inflate(b"this is not gzip at all", "gzip")
    assert "corrupt" in refused.value.message


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    limit = 1024 * 1024
    bomb = gzip.compress(bytes(200 * 1024 * 1024), compresslevel=9)  # 200 MiB of zeros
    assert len(bomb) < limit  # the compressed body itself is small
    with pytest.raises(PayloadTooLarge) as refused:
        inflate(bomb, "gzip", max_bytes=limit)
    assert refused.value.http_status == 413
    assert "after decompression" in refused.value.message


def test_inflated_size_exactly_at_the_limit_is_accepted() -> None:
    data = bytes(1000)
    assert inflate(gzip.compress(data), "gzip", max_bytes=1000) == data
    with pytest.raises(PayloadTooLarge):
        inflate(gzip.compress(data), "gzip", max_bytes=999)


def test_raw_body_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        inflate(bytes(101), None, max_bytes=100)
    assert inflate(bytes(100), None, max_bytes=100) == bytes(100)


def test_garbage_protobuf_is_400() -> None:
    with pytest.raises(BadRequest) as refused:
        decode_request(b"\xff\xff\xff\xff garbage", PB, None)
    assert "protobuf" in refused.value.message


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b""])
def test_garbage_json_is_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        decode_request(body, JSON, None)


def test_json_that_is_not_otlp_is_400_with_the_reason() -> None:
    span = {"startTimeUnixNano": "soon"}
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    with pytest.raises(BadRequest) as refused:
        decode_request(body, JSON, None)
    assert "OTLP/JSON" in refused.value.message
    assert "soon" in refused.value.message


def test_json_from_sdk_spans_equals_the_protobuf() -> None:
    request = sdk_request()
    decoded, encoding = decode_request(to_otlp_json(request), JSON, None)
    assert encoding is Encoding.JSON
    assert decoded == request


def test_spec_otlp_json_hex_ids_integer_enums_and_string_int64() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": TRACE_HEX,
                                "spanId": SPAN_HEX.lower(),  # hex is case-insensitive
                                "parentSpanId": PARENT_HEX,
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "attributes": [
                                    {"key": "tokens", "value": {"intValue": "42"}},
                                ],
                                "links": [{"traceId": TRACE_HEX, "spanId": PARENT_HEX}],
                                "status": {"code": 2, "message": "boom"},
                                "unknownFutureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    decoded, _ = decode_request(orjson.dumps(body), "application/json; charset=utf-8", None)
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX)
    assert span.span_id == bytes.fromhex(SPAN_HEX)
    assert span.parent_span_id == bytes.fromhex(PARENT_HEX)
    assert span.kind == 3
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert span.attributes[0].value.int_value == 42
    assert span.links[0].trace_id == bytes.fromhex(TRACE_HEX)
    assert span.links[0].span_id == bytes.fromhex(PARENT_HEX)
    assert span.status.code == 2


def test_proto_field_names_are_accepted_too() -> None:
    body = {
        "resource_spans": [
            {"scope_spans": [{"spans": [{"trace_id": TRACE_HEX, "span_id": SPAN_HEX}]}]}
        ]
    }
    decoded, _ = decode_request(orjson.dumps(body), JSON, None)
    span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_HEX)
    assert span.span_id == bytes.fromhex(SPAN_HEX)


@pytest.mark.parametrize("bad", ["XYZ", "abc", "W47/95gDgQPSabYzgT/GDA==", "é" * 16, 12])
def test_invalid_hex_ids_mark_the_span_not_the_request(bad: object) -> None:
    spans = [
        {"traceId": bad, "spanId": SPAN_HEX},
        {"traceId": TRACE_HEX, "spanId": bad},
        {"traceId": TRACE_HEX, "spanId": SPAN_HEX, "parentSpanId": bad},
        {"traceId": TRACE_HEX, "spanId": SPAN_HEX, "links": [{"traceId": bad, "spanId": bad}]},
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    decoded, _ = decode_request(orjson.dumps(body), JSON, None)
    got = decoded.resource_spans[0].scope_spans[0].spans
    assert got[0].trace_id == MALFORMED_ID
    assert got[1].span_id == MALFORMED_ID
    assert got[2].parent_span_id == MALFORMED_ID
    assert got[3].links[0].trace_id == b""
    assert got[3].links[0].span_id == b""


def test_empty_parent_span_id_stays_empty() -> None:
    body = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE_HEX, "parentSpanId": ""}]}]}]
    }
    decoded, _ = decode_request(orjson.dumps(body), JSON, None)
    assert decoded.resource_spans[0].scope_spans[0].spans[0].parent_span_id == b""


def test_success_response_is_empty_in_both_encodings() -> None:
    assert encode_response(ExportTraceServiceResponse(), Encoding.PROTOBUF) == b""
    assert encode_response(ExportTraceServiceResponse(), Encoding.JSON) == b"{}"


def test_partial_success_response_in_both_encodings() -> None:
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="why")
    )
    pb = encode_response(response, Encoding.PROTOBUF)
    assert ExportTraceServiceResponse.FromString(pb) == response
    assert orjson.loads(encode_response(response, Encoding.JSON)) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "why"}
    }


def test_status_in_both_encodings() -> None:
    status = status_pb2.Status(code=3, message="bad")
    assert status_pb2.Status.FromString(encode_status(status, Encoding.PROTOBUF)) == status
    assert orjson.loads(encode_status(status, Encoding.JSON)) == {"code": 3, "message": "bad"}
