"""One OTLP trace export request -> rows of `otel_traces`, in `SPAN_COLUMNS` order.

    normalize(message, settings, pricer) -> SpanBatch
    normalize_payload(payload_bytes, tenant_id, received_at_ns, settings, pricer) -> SpanBatch

This is the hot path, so it avoids what makes protobuf slow in Python: a wrapper object per
field and per attribute. The serialized request is parsed (by upb, in C) through two views
that are wire-compatible with OTLP:

- a row view whose `attributes`, `events` and `links` are `repeated bytes`, so each attribute
  arrives as the bytes of its `KeyValue`;
- a columnar view that declares `ScopeSpans.spans` as ONE message: parsing merges all spans
  of a scope, so each repeated field lists that field of every span, in order. Fields present
  in every span (ids, times, names, kinds) come out as whole columns built in C; a field some
  spans omit (proto3 drops defaults) does not line up and is read span by span instead.

Attribute bytes key a process-wide cache (one per privacy policy) of decoded
`(key, string value)` pairs: instrumentations repeat most attributes verbatim (operation,
provider, model, temperature, server address), so most attributes cost a dict lookup made in
C. Each key caches at most a bounded number of values (ids never repeat); content attributes
(prompts, completions) are never cached, they are decoded and privacy-filtered every time.
The LLM fields are read by a small function compiled once per set of attribute keys.

Values follow the OpenTelemetry Collector's ClickHouse exporter (`pcommon.Value.AsString`):
strings as-is, bools "true"/"false", ints in decimal, doubles formatted like Go's
`strconv.FormatFloat(f, 'f', -1, 64)` (exponent form below 1e-6 and from 1e21), bytes as
standard base64, arrays and maps as compact JSON with sorted keys and HTML-escaped `<>&`
("" if Go's encoder would refuse them, e.g. a NaN inside). Span kinds and status codes use
pdata's names ("Client", "Error"), ids are lowercase hex ("" for empty or all-zero ids),
timestamps and durations are integer nanoseconds.

Values in a batch are shared where they are equal (the resource attributes of a resource, a
repeated event's attributes, the empty list of a span without events or links): treat every
value as read-only.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from itertools import islice, repeat
from operator import attrgetter, itemgetter
from typing import Any, Final, cast

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from schema import semconv
from schema.messages import OtlpMessage
from schema.models import ModelPriceOverride, PrivacyPolicy, TenantSettings
from schema.spans import SPAN_COLUMNS, SpanBatch
from streams.pricing import (
    SOURCE_ATTRIBUTE,
    SOURCE_GENAI_PRICES,
    SOURCE_NONE,
    SOURCE_OVERRIDE,
    PriceFn,
    Pricer,
    parse_cost,
)
from streams.redact import content_filter, is_content, is_message_event

__all__ = [
    "normalize",
    "normalize_payload",
    "attribute_value_string",
    "decode_key_value",
    "service_name_entry",
    "token_count",
    "ttft_ms",
    "price_quote",
]

# --- wire-compatible "raw" views of the OTLP trace messages ---------------------------------


def _raw_message_classes() -> dict[str, Any]:
    fd = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="llmtel/raw_trace.proto", package="llmtel.raw", syntax="proto3"
    )
    optional, repeated = fd.LABEL_OPTIONAL, fd.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = ".llmtel.raw." + type_name

    b, s, msg = fd.TYPE_BYTES, fd.TYPE_STRING, fd.TYPE_MESSAGE
    message(
        "Span",
        ("trace_id", 1, b, optional, ""),
        ("span_id", 2, b, optional, ""),
        ("trace_state", 3, s, optional, ""),
        ("parent_span_id", 4, b, optional, ""),
        ("name", 5, s, optional, ""),
        ("kind", 6, fd.TYPE_INT32, optional, ""),
        ("start_time_unix_nano", 7, fd.TYPE_FIXED64, optional, ""),
        ("end_time_unix_nano", 8, fd.TYPE_FIXED64, optional, ""),
        ("attributes", 9, b, repeated, ""),
        ("events", 11, b, repeated, ""),
        ("links", 13, b, repeated, ""),
        ("status", 15, b, optional, ""),
    )
    message(
        "Event",
        ("time_unix_nano", 1, fd.TYPE_FIXED64, optional, ""),
        ("name", 2, s, optional, ""),
        ("attributes", 3, b, repeated, ""),
    )
    message(
        "Link",
        ("trace_id", 1, b, optional, ""),
        ("span_id", 2, b, optional, ""),
        ("trace_state", 3, s, optional, ""),
        ("attributes", 4, b, repeated, ""),
    )
    message("Scope", ("name", 1, s, optional, ""), ("version", 2, s, optional, ""))
    message(
        "ScopeSpans",
        ("scope", 1, msg, optional, "Scope"),
        ("spans", 2, msg, repeated, "Span"),
    )
    message("Resource", ("attributes", 1, b, repeated, ""))
    message(
        "ResourceSpans",
        ("resource", 1, msg, optional, "Resource"),
        ("scope_spans", 2, msg, repeated, "ScopeSpans"),
    )
    message("Request", ("resource_spans", 1, msg, repeated, "ResourceSpans"))

    # The columnar view: `ScopeSpans.spans` declared as ONE message, so parsing merges every
    # span of a scope into it and each repeated field collects that field of all spans, in
    # order. A field present in every span yields a list aligned with the spans (a column
    # built in C); one absent from some spans (proto3 omits defaults) does not, and is then
    # read span by span from the view above.
    message(
        "SpanColumns",
        ("trace_id", 1, b, repeated, ""),
        ("span_id", 2, b, repeated, ""),
        ("trace_state", 3, s, repeated, ""),
        ("parent_span_id", 4, b, repeated, ""),
        ("name", 5, s, repeated, ""),
        ("kind", 6, fd.TYPE_INT32, repeated, ""),
        ("start_time_unix_nano", 7, fd.TYPE_FIXED64, repeated, ""),
        ("end_time_unix_nano", 8, fd.TYPE_FIXED64, repeated, ""),
        ("attributes", 9, b, repeated, ""),  # of all spans: split by per-span counts
        ("events", 11, b, repeated, ""),
        ("links", 13, b, repeated, ""),
        ("status", 15, b, repeated, ""),
    )
    message("ScopeColumns", ("spans", 2, msg, optional, "SpanColumns"))
    message("ResourceColumns", ("scope_spans", 2, msg, repeated, "ScopeColumns"))
    message("ColumnsRequest", ("resource_spans", 1, msg, repeated, "ResourceColumns"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName("llmtel.raw." + name))
        for name in ("Request", "ColumnsRequest", "Event", "Link")
    }


_RAW = _raw_message_classes()
_RawRequest: Final = _RAW["Request"]
_ColumnsRequest: Final = _RAW["ColumnsRequest"]
_RawEvent: Final = _RAW["Event"]
_RawLink: Final = _RAW["Link"]

# --- attribute values as strings, as the collector's AsString() writes them -----------------


def _go_float(value: float) -> str:
    """Go's float64AsString (pcommon): shortest repr, 'f' format unless |x| < 1e-6 or >= 1e21."""
    if math.isinf(value) or math.isnan(value):
        go = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        return "json: unsupported value: " + go
    text = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # Python and Go both write the shortest digits; Go drops the exponent's leading zero.
        mantissa, _, exponent = text.partition("e")
        sign = exponent[0]
        digits = exponent[1:].lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    if "e" in text:
        return format(Decimal(text), "f")
    if text.endswith(".0"):
        return text[:-2]
    return text


class _Unencodable(Exception):
    """A value Go's encoding/json refuses (NaN, ±Inf)."""


class _GoFloat:
    """Marks a double inside an array/map so JSON writes it the way Go's encoder does."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _raw_any(value: AnyValue) -> Any:
    """AnyValue as the collector's AsRaw(): Python values for JSON encoding."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        number = value.double_value
        if math.isinf(number) or math.isnan(number):
            raise _Unencodable  # Go's encoder fails; the collector then stores ""
        return _GoFloat(_go_float(number))
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "array_value":
        return [_raw_any(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _raw_any(kv.value) for kv in value.kvlist_value.values}
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, _GoFloat):
        return orjson.Fragment(value.text)
    raise TypeError


_GO_HTML_ESCAPES: Final = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def _go_json(value: Any) -> str:
    """Compact JSON like Go's encoding/json: sorted map keys, HTML-escaped <, > and &."""
    text = orjson.dumps(value, default=_json_default, option=orjson.OPT_SORT_KEYS).decode()
    for char, escaped in _GO_HTML_ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return text


def attribute_value_string(value: AnyValue) -> str:
    """An OTLP attribute value as the collector's ClickHouse exporter stores it."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return str(value.int_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "double_value":
        return _go_float(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which in ("array_value", "kvlist_value"):
        try:
            return _go_json(_raw_any(value))
        except _Unencodable:
            return ""
    return ""


# --- the attribute cache --------------------------------------------------------------------

Entry = tuple[str, str]
ContentFilter = Callable[[str], "str | None"]

_MAX_CACHE: Final = 100_000  # entries per privacy policy (~20 MB)
_MAX_CACHED_KV_BYTES: Final = 256
_MAX_KEYS: Final = 65_536
_keys: dict[bytes, str] = {}  # interned attribute keys by their UTF-8 bytes
_DROP: Final = cast(str, object())  # the key of content dropped by the "off" policy


def _key(raw: bytes) -> str:
    key = _keys.get(raw)
    if key is None:
        if len(_keys) >= _MAX_KEYS:
            _keys.clear()
        key = _keys[raw] = raw.decode()
    return key


_prefixes: dict[bytes, str] = {}  # b"\\x0a<len><key>\\x12" -> interned key


def _decode_kv(raw: bytes) -> Entry:
    """Decode one serialized KeyValue; fast paths for string and int values.

    A KeyValue is `0x0A len key 0x12 len AnyValue`; for keys shorter than 128 bytes the part
    before the value's length is a fixed prefix per key, looked up in `_prefixes` (a match
    also validates those bytes). Short strings and small ints are decoded with a handful of
    byte reads; other lengths up to 16383 by the general path below; the rest through upb.
    """
    at = raw[1] + 3
    key = _prefixes.get(raw[:at])
    if key is None and raw[0] == 0x0A and raw[1] < 0x80 and raw[at - 1] == 0x12:
        key = _intern_prefix(raw[:at])
    if key is not None:
        size = len(raw) - at  # the value: varint length, then the AnyValue
        if size > 2 and raw[at] == size - 1:  # a one-byte length
            tag = raw[at + 1]
            if tag == 0x0A and raw[at + 2] == size - 3:  # a short string
                return key, raw[at + 3 :].decode()
            if tag == 0x18:  # int_value
                if size == 3:
                    return key, _SMALL_INTS[raw[at + 2]]
                if size == 4 and raw[at + 2] & 0x80 and raw[at + 3] < 0x80:
                    return key, str((raw[at + 2] & 0x7F) | (raw[at + 3] << 7))
                if size == 5 and raw[at + 2] & raw[at + 3] & 0x80 and raw[at + 4] < 0x80:
                    return key, str(
                        (raw[at + 2] & 0x7F) | ((raw[at + 3] & 0x7F) << 7) | (raw[at + 4] << 14)
                    )
        return _decode_value(key, raw[at:], raw)
    return _decode_slowly(raw)


_SMALL_INTS: Final = tuple(str(i) for i in range(128))


def _decode_slowly(raw: bytes) -> Entry:
    """Any KeyValue, through the protobuf runtime; the key interned."""
    key, value = decode_key_value(raw)
    return _key(key.encode()), value


def _decode_value(key: str, value: bytes, raw: bytes) -> Entry:
    """The general path of `_decode_kv`: two-byte lengths, longer ints, other types."""
    size = len(value)
    if size > 2:
        head = value[0]
        if head < 0x80:
            start = 1
        elif value[1] < 0x80:
            head = (head & 0x7F) | (value[1] << 7)
            start = 2
        else:
            start = 0
        if start and head == size - start:
            tag = value[start]
            if tag == 0x0A and size > start + 1:  # string_value
                length = value[start + 1]
                if length == size - start - 2:
                    return key, value[start + 2 :].decode()
                if length >= 0x80 and size > start + 2 and value[start + 2] < 0x80:
                    length = (length & 0x7F) | (value[start + 2] << 7)
                    if length == size - start - 3:
                        return key, value[start + 3 :].decode()
            elif tag == 0x18 and value[-1] < 0x80:  # int_value
                number = 0
                shift = 0
                for byte in value[start + 1 :]:
                    number |= (byte & 0x7F) << shift
                    shift += 7
                if number >= 1 << 63:
                    number -= 1 << 64
                return key, str(number)
    return _decode_slowly(raw)


def _intern_prefix(prefix: bytes) -> str:
    if len(_prefixes) >= _MAX_KEYS:
        _prefixes.clear()
    key = _prefixes[prefix] = _key(prefix[2:-1])
    return key


class _Entries(dict[bytes, Entry]):
    """Decoded attributes by their serialized `KeyValue`, for one privacy policy.

    Looking up a missing attribute decodes it. Content is filtered by the policy and never
    cached, nor is anything large, nor the generic keys that are content inside GenAI
    message events. Other attributes are cached, at most `_MAX_VALUES_PER_KEY` values per
    key (ids and other unique values would only fill the cache and evict the repeated ones),
    until the cache is full, when it starts over.
    """

    __slots__ = ("apply", "budget")

    def __init__(self, apply: ContentFilter) -> None:
        super().__init__()
        self.apply = apply
        self.budget: dict[str, int] = {}  # key -> values it may still cache, or _CONTENT

    def __missing__(self, raw: bytes) -> Entry:
        entry = _decode_kv(raw)
        key = entry[0]
        budget = self.budget.get(key)
        if budget is None:
            budget = self._first_sight(key)
        if budget > 0:
            if len(raw) <= _MAX_CACHED_KV_BYTES:
                if len(self) >= _MAX_CACHE:
                    self.clear()
                    self.budget.clear()
                self[raw] = entry
                self.budget[key] = budget - 1
            return entry
        if budget == 0:
            return entry
        value = self.apply(entry[1])  # content
        return (_DROP, "") if value is None else (key, value)

    def _first_sight(self, key: str) -> int:
        if len(self.budget) >= _MAX_KEYS:
            self.budget.clear()
        if is_content(key):
            budget = _CONTENT
        elif key in _MESSAGE_EVENT_CONTENT:
            budget = 0  # content inside GenAI message events: never cached
        else:
            budget = _MAX_VALUES_PER_KEY
        self.budget[key] = budget
        return budget


_CONTENT: Final = -1  # budget mark: filtered by the policy, never cached
_MAX_VALUES_PER_KEY: Final = 8192
_UNKNOWN_SIGNATURE: Final = cast(Any, object())


_entries: dict[PrivacyPolicy, _Entries] = {
    policy: _Entries(content_filter(policy)) for policy in PrivacyPolicy
}


def _attributes(raws: Iterable[bytes], entries: _Entries) -> dict[str, str]:
    attributes = dict(map(entries.__getitem__, raws))
    attributes.pop(_DROP, None)
    return attributes


_MESSAGE_EVENT_CONTENT: Final = semconv.MESSAGE_EVENT_CONTENT_ATTRIBUTES


def _message_event_attributes(raws: Iterable[bytes], entries: _Entries) -> dict[str, str]:
    """A GenAI message event's attributes: generic keys like `content` are content too."""
    attributes = _attributes(raws, entries)
    for key in _MESSAGE_EVENT_CONTENT.intersection(attributes):
        value = entries.apply(attributes[key])
        if value is None:
            del attributes[key]
        else:
            attributes[key] = value
    return attributes


# --- LLM fields -----------------------------------------------------------------------------

_SLOT_OF: Final[dict[str, tuple[int, int]]] = {
    key: (slot, rank)
    for slot, keys in semconv.SLOT_ATTRIBUTES.items()
    for rank, key in enumerate(keys)
}
_LLM_KEYS: Final = frozenset(_SLOT_OF)
_PROVIDER, _OPERATION = semconv.PROVIDER, semconv.OPERATION
_REQUEST_MODEL, _RESPONSE_MODEL = semconv.REQUEST_MODEL, semconv.RESPONSE_MODEL
_INPUT, _OUTPUT = semconv.INPUT_TOKENS, semconv.OUTPUT_TOKENS
_CACHE_READ, _CACHE_WRITE = semconv.CACHE_READ_TOKENS, semconv.CACHE_WRITE_TOKENS
_REASONING, _TTFT, _COST = semconv.REASONING_TOKENS, semconv.TIME_TO_FIRST_TOKEN, semconv.COST_USD
# provider, operation, request model, response model, input, output, cache read, cache write,
# reasoning, time-to-first-token text, cost text, any token count present, input or output
# count present (usage that can be priced)
Extracted = tuple[
    str, str, str, str, int, int, int, int, int, "str | None", "str | None", bool, bool
]
Extractor = Callable[[dict[str, str]], Extracted]
_extractors: dict[tuple[str, ...], Extractor | None] = {}  # by the span's attribute keys
_compiled: dict[frozenset[str], Extractor] = {}  # by the span's LLM keys


def _best_keys(present: frozenset[str]) -> list[str | None]:
    """For the LLM keys on a span: the key supplying each slot (highest precedence) or None."""
    best: dict[int, tuple[int, str]] = {}
    for key in present:
        slot, rank = _SLOT_OF[key]
        if slot not in best or rank < best[slot][0]:
            best[slot] = (rank, key)
    return [best[slot][1] if slot in best else None for slot in range(semconv.SLOT_COUNT)]


def _extractor(signature: tuple[str, ...]) -> Extractor | None:
    """The LLM field reader for spans whose attribute keys are `signature` (None: not LLM).

    Instrumentations send the same keys in the same order on every span, so readers are
    cached by the key tuple (cheap to build and compare: keys are interned) and compiled once
    per set of LLM keys. The generated source only contains keys from `schema.semconv`, never
    span data. A reader raises ValueError for a token count that is not a non-negative
    integer; the caller then takes the tolerant path (`_extract_slowly`).
    """
    present = _LLM_KEYS.intersection(signature)
    extractor = _compiled.get(present) if present else None
    if present and extractor is None:
        extractor = _compiled[present] = _compile_extractor(present)
    if len(_extractors) >= 4096:
        _extractors.clear()
    _extractors[signature] = extractor
    return extractor


def _compile_extractor(present: frozenset[str]) -> Extractor:
    keys = _best_keys(present)

    def text(slot: int, default: str) -> str:
        key = keys[slot]
        return default if key is None else f"a[{key!r}]"

    lines = ["def extract(a):"]
    counts = []
    for slot in (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _REASONING):
        name = f"t{slot}"
        counts.append(name)
        if keys[slot] is None:
            lines.append(f"    {name} = 0")
        else:
            lines.append(f"    {name} = int({text(slot, '')})")
            lines.append(f"    if not 0 <= {name} < {_MAX_COUNT}: raise ValueError")
    has_tokens = any(keys[slot] is not None for slot in semconv.TOKEN_SLOTS)
    has_usage = keys[_INPUT] is not None or keys[_OUTPUT] is not None
    fields = [
        text(_PROVIDER, '""'),
        text(_OPERATION, '""'),
        text(_REQUEST_MODEL, '""'),
        text(_RESPONSE_MODEL, '""'),
        *counts,
        text(_TTFT, "None"),
        text(_COST, "None"),
        repr(has_tokens),
        repr(has_usage),
    ]
    lines.append(f"    return ({', '.join(fields)})")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - keys are repr()s of our own constants
    return cast(Extractor, namespace["extract"])


def _extract_slowly(present: frozenset[str], attributes: dict[str, str]) -> Extracted:
    """The LLM fields when a token count is not a plain integer (0 when it is not a count)."""
    keys = _best_keys(present)

    def text(slot: int) -> str | None:
        key = keys[slot]
        return None if key is None else attributes[key]

    def count(slot: int) -> int:
        value = text(slot)
        return 0 if value is None else token_count(value)

    return (
        text(_PROVIDER) or "",
        text(_OPERATION) or "",
        text(_REQUEST_MODEL) or "",
        text(_RESPONSE_MODEL) or "",
        count(_INPUT),
        count(_OUTPUT),
        count(_CACHE_READ),
        count(_CACHE_WRITE),
        count(_REASONING),
        text(_TTFT),
        text(_COST),
        any(keys[slot] is not None for slot in semconv.TOKEN_SLOTS),
        keys[_INPUT] is not None or keys[_OUTPUT] is not None,
    )


def token_count(text: str) -> int:
    """A token count attribute (int, integral double or numeric string); 0 if invalid.

    Invalid includes negative and beyond UInt64 (the column's type): one absurd count must
    not make the whole batch unstorable."""
    try:
        number = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            return 0
        if not as_float.is_integer():
            return 0
        number = int(as_float)
    return number if 0 <= number < _MAX_COUNT else 0


_MAX_COUNT: Final = 2**64


def _ttft_ms(signature: tuple[str, ...], text: str) -> float | None:
    key = _best_keys(_LLM_KEYS.intersection(signature))[_TTFT]
    assert key is not None
    return ttft_ms(key, text)


def ttft_ms(key: str, text: str) -> float | None:
    """A time-to-first-token attribute of `key` in milliseconds, None if not a duration."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value * semconv.TTFT_TO_MS[key]


# --- core fields ----------------------------------------------------------------------------

_KINDS: Final = dict(enumerate(semconv.SPAN_KIND_NAMES))
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16
_NS_PER_DAY: Final = 86_400 * 10**9
_statuses: dict[bytes, tuple[str, str]] = {b"": (semconv.STATUS_CODE_NAMES[0], "")}
_MAX_STATUSES: Final = 4096


def _status(raw: bytes) -> tuple[str, str]:
    status = Status.FromString(raw)
    code = int(status.code)
    names = semconv.STATUS_CODE_NAMES
    decoded = (names[code] if 0 <= code < len(names) else "", status.message)
    if len(raw) <= _MAX_CACHED_KV_BYTES:
        if len(_statuses) >= _MAX_STATUSES:
            _statuses.clear()
            _statuses[b""] = (names[0], "")
        _statuses[raw] = decoded
    return decoded


def _hex_id(raw: bytes, zero: str) -> str:
    text = raw.hex()
    return "" if text == zero else text


# Events without content by their bytes after the timestamp (name and attributes): span
# events repeat (`gen_ai.choice` with the same finish reason, retries...), so most cost a
# lookup. Shared dicts, read-only like every value in a batch.
_event_cache: dict[bytes, tuple[str, dict[str, str]]] = {}
_MAX_EVENTS: Final = 16_384
_MAX_CACHED_EVENT_BYTES: Final = 512
_TIME_TAG: Final = 0x09  # field 1 (time_unix_nano), fixed64: 1 tag byte + 8 bytes


def _events(
    raws: Iterable[bytes], entries: _Entries
) -> tuple[list[int], list[str], list[dict[str, str]]]:
    times: list[int] = []
    names: list[str] = []
    attributes: list[dict[str, str]] = []
    for raw in raws:
        timed = raw[0] == _TIME_TAG and len(raw) >= 9
        cached = _event_cache.get(raw[9:]) if timed else None
        if cached is not None:
            times.append(int.from_bytes(raw[1:9], "little"))
            names.append(cached[0])
            attributes.append(cached[1])
            continue
        event = _RawEvent.FromString(raw)
        name = event.name
        raw_attributes = event.attributes[:]
        if is_message_event(name):
            decoded = _message_event_attributes(raw_attributes, entries)
        else:
            decoded = _attributes(raw_attributes, entries)
        times.append(event.time_unix_nano)
        names.append(name)
        attributes.append(decoded)
        if (
            timed
            and len(raw) <= _MAX_CACHED_EVENT_BYTES
            and event.time_unix_nano == int.from_bytes(raw[1:9], "little")
            and len(decoded) == len(raw_attributes)
            and all(raw_kv in entries for raw_kv in raw_attributes)  # no content
        ):
            if len(_event_cache) >= _MAX_EVENTS:
                _event_cache.clear()
            _event_cache[raw[9:]] = (name, decoded)
    return times, names, attributes


def _links(
    raws: Iterable[bytes], entries: _Entries
) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    trace_ids: list[str] = []
    span_ids: list[str] = []
    states: list[str] = []
    attributes: list[dict[str, str]] = []
    for raw in raws:
        link = _RawLink.FromString(raw)
        trace_ids.append(_hex_id(link.trace_id, _ZERO_TRACE_ID))
        span_ids.append(_hex_id(link.span_id, _ZERO_SPAN_ID))
        states.append(link.trace_state)
        attributes.append(_attributes(link.attributes, entries))
    return trace_ids, span_ids, states, attributes


def _service_name(raws: Iterable[bytes]) -> str:
    """`service.name` if it is a string attribute (the collector uses Value.Str())."""
    name = ""
    for raw in raws:
        key, value = service_name_entry(raw)
        if key == semconv.SERVICE_NAME:
            name = value
    return name


def service_name_entry(raw: bytes) -> tuple[str, str]:
    """A resource attribute's key and its string value ("" if the value is not a string)."""
    kv = KeyValue.FromString(raw)
    return kv.key, kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else ""


def decode_key_value(raw: bytes) -> tuple[str, str]:
    """One serialized KeyValue as (key, value string), through the protobuf runtime."""
    kv = KeyValue.FromString(raw)
    return kv.key, attribute_value_string(kv.value)


Quote = tuple[PriceFn | None, str]


def price_quote(
    pricer: Pricer,
    overrides: dict[str, ModelPriceOverride],
    provider: str,
    model: str,
    timestamp_ns: int,
) -> Quote:
    """The price function and its source: the tenant's override of `model`, else genai-prices."""
    override = overrides.get(model)
    if override is not None:
        return pricer.override_quote(override), SOURCE_OVERRIDE
    return pricer.quote(provider, model, timestamp_ns), SOURCE_GENAI_PRICES


# --- the normaliser -------------------------------------------------------------------------


def normalize(message: OtlpMessage, settings: TenantSettings, pricer: Pricer) -> SpanBatch:
    """Rows for every span of one validated export request, in `SPAN_COLUMNS` order."""
    return normalize_payload(
        message.request.SerializeToString(),
        message.tenant_id,
        message.received_at_ns,
        settings,
        pricer,
    )


def normalize_payload(
    payload: bytes,
    tenant_id: str,
    received_at_ns: int,
    settings: TenantSettings,
    pricer: Pricer,
) -> SpanBatch:
    """`normalize` for a serialized `ExportTraceServiceRequest` (skips re-serialising it)."""
    request = _RawRequest.FromString(payload)
    columns_view = _ColumnsRequest.FromString(payload)
    pricer.refresh()
    entries = _entries[settings.privacy]
    lookup = entries.__getitem__
    drops = settings.privacy is PrivacyPolicy.OFF
    overrides = settings.price_overrides
    quotes: dict[str, tuple[str, int, PriceFn | None, str]] = {}
    quotes_get = quotes.get
    extractors_get = _extractors.get
    batch = SpanBatch()
    out = batch.columns
    # Rows without events or links share one empty list (read-only, like every value here):
    # a fresh list per row would be ~7 GC-tracked objects per span.
    empty: list[Any] = []
    unpriced = 0

    for resource_spans, resource_columns in zip(
        request.resource_spans, columns_view.resource_spans, strict=True
    ):
        resource_raws = resource_spans.resource.attributes
        resource_attributes = _attributes(resource_raws[:], entries)
        service_name = _service_name(resource_raws)
        for scope_spans, scope_columns in zip(
            resource_spans.scope_spans, resource_columns.scope_spans, strict=True
        ):
            spans = scope_spans.spans
            n = len(spans)
            if not n:
                continue
            columns = scope_columns.spans
            starts = _column(columns.start_time_unix_nano, spans, n, "start_time_unix_nano", 0)
            ends = _column(columns.end_time_unix_nano, spans, n, "end_time_unix_nano", 0)

            span_attributes: list[dict[str, str]] = []
            add_attributes = span_attributes.append
            llm_rows: list[tuple[Any, ...]] = []
            add_llm = llm_rows.append
            # All attributes of the scope decoded in one C-level pass, then split per span;
            # one pass over the spans fetches what only they can tell (counts, statuses...).
            decoded = map(lookup, columns.attributes[:])
            has_status, has_events, has_links = (
                bool(columns.status),
                bool(columns.events),
                bool(columns.links),
            )
            statuses: Sequence[bytes] = ()
            raw_events: Sequence[Any] = ()
            raw_links: Sequence[Any] = ()
            if has_status or has_events or has_links:
                wanted = _PER_SPAN[has_status, has_events, has_links]
                per_span = iter(zip(*map(wanted, spans), strict=True))
                counts: Iterable[int] = map(len, next(per_span))
                if has_status:
                    statuses = next(per_span)
                if has_events:
                    raw_events = next(per_span)
                if has_links:
                    raw_links = next(per_span)
            else:
                counts = map(len, map(_GET_ATTRIBUTES, spans))
            for count, start in zip(counts, starts, strict=True):
                attributes = dict(islice(decoded, count))
                if drops:
                    attributes.pop(_DROP, None)
                add_attributes(attributes)
                signature = tuple(attributes)
                extract = extractors_get(signature, _UNKNOWN_SIGNATURE)
                if extract is _UNKNOWN_SIGNATURE:
                    extract = _extractor(signature)
                if extract is None:
                    add_llm(_NOT_LLM)
                    continue
                try:
                    fields = extract(attributes)
                except ValueError:
                    fields = _extract_slowly(_LLM_KEYS.intersection(signature), attributes)
                (
                    provider,
                    operation,
                    request_model,
                    response_model,
                    inp,
                    out_tokens,
                    cache_read,
                    cache_write,
                    reasoning,
                    ttft_text,
                    cost_text,
                    has_tokens,
                    has_usage,
                ) = fields
                model = response_model or request_model
                usd = None if cost_text is None else parse_cost(cost_text)
                if usd is not None:
                    source = SOURCE_ATTRIBUTE
                elif model and has_usage:
                    when = start or received_at_ns
                    day = when // _NS_PER_DAY
                    quote = quotes_get(model)
                    if quote is None or quote[0] != provider or quote[1] != day:
                        quote = quotes[model] = (
                            provider,
                            day,
                            *price_quote(pricer, overrides, provider, model, when),
                        )
                    fn = quote[2]
                    if fn is not None:
                        usd = fn(inp, out_tokens, cache_read, cache_write, reasoning, when)
                    if usd is None:
                        source = SOURCE_NONE
                        unpriced += 1
                    else:
                        source = quote[3]
                else:
                    # Nothing to price: no model, or no input/output counts (a total alone
                    # is not split by guessing). Usage without a model is unpriced.
                    source = SOURCE_NONE
                    if has_usage:
                        unpriced += 1
                add_llm(
                    (
                        bool(model or has_tokens or operation),
                        provider,
                        operation,
                        request_model,
                        response_model,
                        inp,
                        out_tokens,
                        cache_read,
                        reasoning,
                        usd,
                        source,
                        None if ttft_text is None else _ttft_ms(signature, ttft_text),
                    )
                )

            out[_TIMESTAMP].extend(starts)
            out[_TRACE_ID].extend(_ids(columns.trace_id, spans, n, "trace_id", _ZERO_TRACE_ID))
            out[_SPAN_ID].extend(_ids(columns.span_id, spans, n, "span_id", _ZERO_SPAN_ID))
            out[_PARENT_SPAN_ID].extend(
                _ids(columns.parent_span_id, spans, n, "parent_span_id", _ZERO_SPAN_ID)
            )
            out[_TRACE_STATE].extend(_column(columns.trace_state, spans, n, "trace_state", ""))
            out[_SPAN_NAME].extend(_column(columns.name, spans, n, "name", ""))
            kinds = _column(columns.kind, spans, n, "kind", 0)
            out[_SPAN_KIND].extend([_KINDS.get(kind, "") for kind in kinds])
            out[_SERVICE_NAME].extend(repeat(service_name, n))
            out[_RESOURCE_ATTRIBUTES].extend(repeat(resource_attributes, n))
            out[_SCOPE_NAME].extend(repeat(scope_spans.scope.name, n))
            out[_SCOPE_VERSION].extend(repeat(scope_spans.scope.version, n))
            out[_SPAN_ATTRIBUTES].extend(span_attributes)
            out[_DURATION].extend(
                [end - start if end > start else 0 for start, end in zip(starts, ends, strict=True)]
            )
            if has_status:
                cached_statuses = list(map(_statuses.get, statuses))
                decoded_statuses = (
                    list(map(_status_of, statuses))
                    if None in cached_statuses
                    else cast(list[tuple[str, str]], cached_statuses)
                )
                out[_STATUS_CODE].extend(map(_FIRST, decoded_statuses))
                out[_STATUS_MESSAGE].extend(map(_SECOND, decoded_statuses))
            else:
                out[_STATUS_CODE].extend(repeat(_UNSET, n))
                out[_STATUS_MESSAGE].extend(repeat("", n))
            if has_events:
                times, names, event_attributes = out[_EVENTS : _EVENTS + _EVENT_COLUMNS]
                for raws in raw_events:
                    if raws:
                        event = _events(raws, entries)
                        times.append(event[0])
                        names.append(event[1])
                        event_attributes.append(event[2])
                    else:
                        times.append(empty)
                        names.append(empty)
                        event_attributes.append(empty)
            else:
                for index in range(_EVENT_COLUMNS):
                    out[_EVENTS + index].extend(repeat(empty, n))
            if has_links:
                link_columns = out[_LINKS : _LINKS + _LINK_COLUMNS]
                for raws in raw_links:
                    links = _links(raws, entries) if raws else (empty, empty, empty, empty)
                    for column, values in zip(link_columns, links, strict=True):
                        column.append(values)
            else:
                for index in range(_LINK_COLUMNS):
                    out[_LINKS + index].extend(repeat(empty, n))
            out[_TENANT_ID].extend(repeat(tenant_id, n))
            for index, llm_values in enumerate(zip(*llm_rows, strict=True)):
                out[_IS_LLM + index].extend(llm_values)

    batch.unpriced = unpriced
    return batch


def _column(values: Any, spans: Any, n: int, field: str, default: Any) -> list[Any]:
    """A span field for all spans: the columnar view's list if aligned, else span by span."""
    if len(values) == n:
        return values[:]  # type: ignore[no-any-return]
    if not values:
        return [default] * n
    return list(map(attrgetter(field), spans))


def _ids(values: Any, spans: Any, n: int, field: str, zero: str) -> list[str]:
    """Ids as lowercase hex, "" for empty or all-zero ids (the collector's convention)."""
    if len(values) == n:
        ids = list(map(bytes.hex, values[:]))
    elif not values:
        return [""] * n
    else:
        ids = list(map(bytes.hex, map(attrgetter(field), spans)))
    if zero in ids:
        ids = ["" if hex_id == zero else hex_id for hex_id in ids]
    return ids


def _status_of(raw: bytes) -> tuple[str, str]:
    return _statuses.get(raw) or _status(raw)


_GET_ATTRIBUTES: Final = attrgetter("attributes")
# What to read span by span, by (any status, any events, any links) in the scope.
_PER_SPAN: Final = {
    (status, events, links): attrgetter(
        "attributes",
        *(["status"] if status else []),
        *(["events"] if events else []),
        *(["links"] if links else []),
    )
    for status in (False, True)
    for events in (False, True)
    for links in (False, True)
    if status or events or links
}
_FIRST: Final = itemgetter(0)
_SECOND: Final = itemgetter(1)
_UNSET: Final = semconv.STATUS_CODE_NAMES[0]
_COLUMN: Final = {name: index for index, name in enumerate(SPAN_COLUMNS)}
_TIMESTAMP: Final = _COLUMN["Timestamp"]
_TRACE_ID: Final = _COLUMN["TraceId"]
_SPAN_ID: Final = _COLUMN["SpanId"]
_PARENT_SPAN_ID: Final = _COLUMN["ParentSpanId"]
_TRACE_STATE: Final = _COLUMN["TraceState"]
_SPAN_NAME: Final = _COLUMN["SpanName"]
_SPAN_KIND: Final = _COLUMN["SpanKind"]
_SERVICE_NAME: Final = _COLUMN["ServiceName"]
_RESOURCE_ATTRIBUTES: Final = _COLUMN["ResourceAttributes"]
_SCOPE_NAME: Final = _COLUMN["ScopeName"]
_SCOPE_VERSION: Final = _COLUMN["ScopeVersion"]
_SPAN_ATTRIBUTES: Final = _COLUMN["SpanAttributes"]
_DURATION: Final = _COLUMN["Duration"]
_STATUS_CODE: Final = _COLUMN["StatusCode"]
_STATUS_MESSAGE: Final = _COLUMN["StatusMessage"]
_EVENTS: Final = _COLUMN["Events.Timestamp"]
_EVENT_COLUMNS: Final = 3
_LINKS: Final = _COLUMN["Links.TraceId"]
_LINK_COLUMNS: Final = 4
_TENANT_ID: Final = _COLUMN["TenantId"]
_IS_LLM: Final = _COLUMN["IsLlm"]
assert _COLUMN["Events.Attributes"] == _EVENTS + 2 and _COLUMN["Links.Attributes"] == _LINKS + 3
assert list(_COLUMN)[_IS_LLM:] == [
    "IsLlm",
    "LlmProvider",
    "LlmOperation",
    "LlmRequestModel",
    "LlmResponseModel",
    "LlmInputTokens",
    "LlmOutputTokens",
    "LlmCacheReadTokens",
    "LlmReasoningTokens",
    "LlmCostUsd",
    "LlmCostSource",
    "LlmTimeToFirstTokenMs",
]


_NOT_LLM: Final = (False, "", "", "", "", 0, 0, 0, 0, None, SOURCE_NONE, None)
assert len(SPAN_COLUMNS) == _IS_LLM + len(_NOT_LLM)
