"""OTLP/HTTP bodies to `ExportTraceServiceRequest` and responses back (pure, no I/O).

Three steps, each refusing what it cannot handle with the status the OTLP spec names:
1. `encoding_for`: the Content-Type picks protobuf or OTLP/JSON (else 415);
2. `inflate`: Content-Encoding gzip/deflate is undone without ever holding more than
   `max_bytes` of output, so a gzip bomb is refused (413) before it is inflated;
3. `parse`: protobuf, or OTLP/JSON with its hex trace/span ids (else 400).
The response goes back in the request's encoding (`encode_response`, `encode_status`).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from enum import StrEnum
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

# Stands in for a span's trace/span/parent id that is not valid hex in OTLP/JSON: one byte is
# never a valid length for any of them, so `ingest.validate` rejects just that span (a partial
# success) instead of the whole request failing.
MALFORMED_ID = b"\xff"
_MALFORMED_ID_B64 = base64.b64encode(MALFORMED_ID).decode("ascii")


class Encoding(StrEnum):
    """The two OTLP/HTTP payload encodings; the value is the Content-Type to answer with."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


_ENCODINGS = {e.value: e for e in Encoding}
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # HTTP "deflate" is zlib-wrapped (RFC 9110)
_SUCCESS = {Encoding.PROTOBUF: b"", Encoding.JSON: b"{}"}


def encoding_for(content_type: str | None) -> Encoding:
    """The payload encoding named by a Content-Type header; parameters are ignored."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    encoding = _ENCODINGS.get(media_type)
    if encoding is None:
        shown = media_type or "none"
        raise UnsupportedMediaType(
            f"unsupported Content-Type {shown!r}: send OTLP as application/x-protobuf "
            "or application/json"
        )
    return encoding


def inflate(body: bytes, content_encoding: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Undo the Content-Encoding, refusing anything that is or would become over `max_bytes`."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {coding!r}: send the body uncompressed or with "
            "Content-Encoding: gzip"
        )
    return _inflate(body, coding, wbits, max_bytes)


def _inflate(body: bytes, coding: str, wbits: int, max_bytes: int) -> bytes:
    # `max_length` caps each call's output at one byte over the limit: a bomb costs at most
    # max_bytes of memory, never its inflated size.
    pieces: list[bytes] = []
    total = 0
    data = body
    while True:
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            piece = inflater.decompress(data, max_bytes - total + 1)
        except zlib.error as exc:
            raise BadRequest(
                f"the {coding} request body is corrupt ({exc}); send a valid {coding} stream "
                "or an uncompressed body"
            ) from exc
        total += len(piece)
        if total > max_bytes:
            raise PayloadTooLarge(max_bytes, inflated=True)
        pieces.append(piece)
        if not inflater.eof:
            # output stayed under max_length, so all input was used and the stream did not end
            raise BadRequest(
                f"the {coding} request body is truncated (the compressed stream ends early); "
                "send the complete body"
            )
        data = inflater.unused_data
        if not data:
            break
        if wbits != 31:  # only gzip allows several members back to back (RFC 1952)
            raise BadRequest(
                f"unexpected bytes after the end of the {coding} stream; send one {coding} stream"
            )
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def parse(data: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """An `ExportTraceServiceRequest` from an uncompressed body in the given encoding."""
    if encoding is Encoding.PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(data)
        except DecodeError as exc:
            raise BadRequest(
                f"the body is not a protobuf ExportTraceServiceRequest ({exc}); "
                "send OTLP trace data (over HTTP: to /v1/traces)"
            ) from exc
    return _parse_json(data)


def _parse_json(data: bytes) -> ExportTraceServiceRequest:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send OTLP/JSON") from exc
    if not isinstance(document, dict):
        raise BadRequest(
            "the body is JSON but not an object; send an OTLP/JSON ExportTraceServiceRequest "
            '({"resourceSpans": [...]})'
        )
    hex_ids_to_base64(document)
    try:
        return json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(
            f"the body is not an OTLP/JSON ExportTraceServiceRequest ({exc}); see "
            "https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding"
        ) from exc


def hex_ids_to_base64(document: dict[str, Any]) -> None:
    """Rewrite OTLP/JSON's hex ids as the base64 `json_format` expects for bytes (in place).

    OTLP/JSON deviates from the proto3 JSON mapping only here (and in integer enums, which
    `json_format` accepts as is). A span id that is not hex becomes `MALFORMED_ID` so the span
    alone is rejected; a link id that is not hex becomes empty (the link is kept, unlinked).
    """
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans", "spans"):
                _convert(span, "traceId", "trace_id", _MALFORMED_ID_B64)
                _convert(span, "spanId", "span_id", _MALFORMED_ID_B64)
                _convert(span, "parentSpanId", "parent_span_id", _MALFORMED_ID_B64)
                for link in _items(span, "links", "links"):
                    _convert(link, "traceId", "trace_id", "")
                    _convert(link, "spanId", "span_id", "")


def _items(obj: object, camel: str, snake: str) -> list[Any]:
    # OTLP/JSON keys are lowerCamelCase; proto field names are accepted too (as json_format does)
    if not isinstance(obj, dict):
        return []
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
    return value if isinstance(value, list) else []


def _convert(obj: dict[str, Any], camel: str, snake: str, malformed: str) -> None:
    for key in (camel, snake):
        value = obj.get(key)
        if value is None:
            continue
        try:
            raw = binascii.a2b_hex(value) if isinstance(value, str) else None
        except (binascii.Error, ValueError):  # odd length, non-hex or non-ASCII characters
            raw = None
        obj[key] = malformed if raw is None else base64.b64encode(raw).decode("ascii")


def decode_request(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[ExportTraceServiceRequest, Encoding]:
    """The request in an OTLP/HTTP body, and the encoding to answer in."""
    encoding = encoding_for(content_type)
    return parse(inflate(body, content_encoding, max_bytes), encoding), encoding


def encode_response(response: ExportTraceServiceResponse, encoding: Encoding) -> bytes:
    """The response body; a full success (nothing set) is a constant."""
    if not response.HasField("partial_success"):
        return _SUCCESS[encoding]
    return _encode(response, encoding)


def encode_status(status: status_pb2.Status, encoding: Encoding) -> bytes:
    """An error body: a `google.rpc.Status`, as the OTLP spec asks for every 4xx/5xx."""
    return _encode(status, encoding)


def _encode(message: ExportTraceServiceResponse | status_pb2.Status, encoding: Encoding) -> bytes:
    if encoding is Encoding.PROTOBUF:
        return message.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(message))
