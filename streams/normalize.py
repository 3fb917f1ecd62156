"""One OTLP trace export request -> rows of `otel_traces`, in `SPAN_COLUMNS` order.

This is the hot path (the product's budget is a few microseconds per span), so it avoids what
makes protobuf slow in Python: a wrapper object per attribute. The request is read through
"raw" message types that are wire-compatible with OTLP but declare `attributes`, `events` and
`links` as `repeated bytes`, so upb hands over each attribute as the bytes of its `KeyValue`.
Those bytes are the key of a process-wide cache of decoded `(key, string value)` pairs:
instrumentations repeat most attributes verbatim (operation, provider, model, temperature,
server address, token counts), so most attributes cost a dict lookup. Content attributes
(prompts, completions) are never cached; they are decoded and privacy-filtered every time.

Values follow the OpenTelemetry Collector's ClickHouse exporter (`pcommon.Value.AsString`):
strings as-is, bools "true"/"false", ints in decimal, doubles formatted like Go's
`strconv.FormatFloat(f, 'f', -1, 64)` (exponent form below 1e-6 and from 1e21), bytes as
standard base64, arrays and maps as compact JSON with sorted keys and HTML-escaped `<>&`.
Span kinds and status codes use pdata's names ("Client", "Error"), ids are lowercase hex (""
for empty or all-zero ids), timestamps and durations are integer nanoseconds.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Final, cast

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
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

__all__ = ["normalize", "normalize_payload", "attribute_value_string"]

# --- wire-compatible "raw" views of the OTLP trace messages ---------------------------------


def _raw_message_classes() -> dict[str, type[Message]]:
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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName("llmtel.raw." + name))
        for name in ("Request", "Event", "Link")
    }


_RAW = _raw_message_classes()
_RawRequest: Final = _RAW["Request"]
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
            return None  # Go's encoder fails on these; the collector writes nothing useful
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
        return _go_json(_raw_any(value))
    return ""


# --- the attribute cache --------------------------------------------------------------------

Entry = tuple[str, str]
ContentFilter = Callable[[str], "str | None"]

_MAX_CACHE: Final = 50_000  # entries per privacy policy
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


def _decode_kv(raw: bytes) -> Entry:
    """Decode one serialized KeyValue; a fast path for the common string and int shapes."""
    size = len(raw)
    if size > 3 and raw[0] == 0x0A and raw[1] < 0x80:
        end = 2 + raw[1]
        if end + 2 < size and raw[end] == 0x12 and raw[end + 1] == size - end - 2:
            tag = raw[end + 2]
            if tag == 0x0A and end + 3 < size and raw[end + 3] == size - end - 4:
                return _key(raw[2:end]), raw[end + 4 :].decode()
            if tag == 0x18 and raw[-1] < 0x80:
                number = 0
                shift = 0
                for byte in raw[end + 3 :]:
                    number |= (byte & 0x7F) << shift
                    shift += 7
                if number >= 1 << 63:
                    number -= 1 << 64
                return _key(raw[2:end]), str(number)
    kv = KeyValue.FromString(raw)
    return _key(kv.key.encode()), attribute_value_string(kv.value)


class _Entries(dict[bytes, Entry]):
    """Decoded attributes by their serialized `KeyValue`, for one privacy policy.

    Looking up a missing attribute decodes it; content is filtered by the policy and never
    cached (nor is anything large, nor the generic keys that are content inside GenAI message
    events), everything else is cached until the cache is full, when it starts over.
    """

    __slots__ = ("apply",)

    def __init__(self, apply: ContentFilter) -> None:
        super().__init__()
        self.apply = apply

    def __missing__(self, raw: bytes) -> Entry:
        entry = _decode_kv(raw)
        key = entry[0]
        if is_content(key):
            value = self.apply(entry[1])
            return (_DROP, "") if value is None else (key, value)
        if len(raw) <= _MAX_CACHED_KV_BYTES and key not in _MESSAGE_EVENT_CONTENT:
            if len(self) >= _MAX_CACHE:
                self.clear()
            self[raw] = entry
        return entry


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
Extracted = tuple[str, str, str, str, int, int, int, int, int, "str | None", "str | None", bool]
Extractor = Callable[[dict[str, str]], Extracted]
_extractors: dict[frozenset[str], Extractor] = {}


def _best_keys(present: frozenset[str]) -> list[str | None]:
    """For the LLM keys on a span: the key supplying each slot (highest precedence) or None."""
    best: dict[int, tuple[int, str]] = {}
    for key in present:
        slot, rank = _SLOT_OF[key]
        if slot not in best or rank < best[slot][0]:
            best[slot] = (rank, key)
    return [best[slot][1] if slot in best else None for slot in range(semconv.SLOT_COUNT)]


def _extractor(present: frozenset[str]) -> Extractor:
    """A function reading the LLM fields for spans carrying exactly these LLM keys.

    Instrumentations send the same set of keys on every span, so this is compiled once per
    set (the generated source only contains keys from `schema.semconv`, never span data). It
    raises ValueError for a token count that is not a non-negative integer; the caller then
    takes the tolerant path (`_extract_slowly`).
    """
    extractor = _extractors.get(present)
    if extractor is not None:
        return extractor
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
            lines.append(f"    if {name} < 0: raise ValueError")
    has_tokens = any(keys[slot] is not None for slot in semconv.TOKEN_SLOTS)
    fields = [
        text(_PROVIDER, '""'),
        text(_OPERATION, '""'),
        text(_REQUEST_MODEL, '""'),
        text(_RESPONSE_MODEL, '""'),
        *counts,
        text(_TTFT, "None"),
        text(_COST, "None"),
        repr(has_tokens),
    ]
    lines.append(f"    return ({', '.join(fields)})")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - keys are repr()s of our own constants
    extractor = cast(Extractor, namespace["extract"])
    if len(_extractors) >= 4096:
        _extractors.clear()
    _extractors[present] = extractor
    return extractor


def _extract_slowly(present: frozenset[str], attributes: dict[str, str]) -> Extracted:
    """The LLM fields when a token count is not a plain integer (0 when it is not a count)."""
    keys = _best_keys(present)

    def text(slot: int) -> str | None:
        key = keys[slot]
        return None if key is None else attributes[key]

    def count(slot: int) -> int:
        value = text(slot)
        return 0 if value is None else _count(value)

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
    )


def _count(text: str) -> int:
    """A token count attribute (int, integral double or numeric string); 0 if invalid."""
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
    return number if number >= 0 else 0


def _ttft_ms(present: frozenset[str], text: str) -> float | None:
    key = _best_keys(present)[_TTFT]
    assert key is not None
    return _ms(key, text)


def _ms(key: str, text: str) -> float | None:
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


def _events(
    raws: Iterable[bytes], entries: _Entries
) -> tuple[list[int], list[str], list[dict[str, str]]]:
    times: list[int] = []
    names: list[str] = []
    attributes: list[dict[str, str]] = []
    for raw in raws:
        event = _RawEvent.FromString(raw)
        name = event.name
        times.append(event.time_unix_nano)
        names.append(name)
        if is_message_event(name):
            attributes.append(_message_event_attributes(event.attributes[:], entries))
        else:
            attributes.append(_attributes(event.attributes[:], entries))
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
        kv = KeyValue.FromString(raw)
        if kv.key == semconv.SERVICE_NAME:
            name = kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else ""
    return name


Quote = tuple[PriceFn | None, str]


def _quote(
    pricer: Pricer,
    overrides: dict[str, ModelPriceOverride],
    provider: str,
    model: str,
    timestamp_ns: int,
) -> Quote:
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
    pricer.refresh()
    entries = _entries[settings.privacy]
    lookup = entries.__getitem__
    drops = settings.privacy is PrivacyPolicy.OFF
    overrides = settings.price_overrides
    quotes: dict[str, tuple[str, int, PriceFn | None, str]] = {}
    quotes_get = quotes.get
    llm_keys = _LLM_KEYS
    extractors_get = _extractors.get
    statuses_get = _statuses.get
    kinds_get = _KINDS.get
    zero_trace, zero_span = _ZERO_TRACE_ID, _ZERO_SPAN_ID
    rows: list[tuple[Any, ...]] = []
    add = rows.append
    unpriced = 0

    for resource_spans in request.resource_spans:
        resource_raws = resource_spans.resource.attributes
        resource_attributes = _attributes(resource_raws, entries)
        service_name = _service_name(resource_raws)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name = scope.name
            scope_version = scope.version
            for span in scope_spans.spans:
                attributes = dict(map(lookup, span.attributes[:]))
                if drops:
                    attributes.pop(_DROP, None)
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                status = span.status
                code, status_message = statuses_get(status) or _status(status)

                present = llm_keys.intersection(attributes)
                if present:
                    try:
                        (
                            provider,
                            operation,
                            request_model,
                            response_model,
                            inp,
                            out,
                            cache_read,
                            cache_write,
                            reasoning,
                            ttft_text,
                            cost_text,
                            has_tokens,
                        ) = (extractors_get(present) or _extractor(present))(attributes)
                    except ValueError:
                        (
                            provider,
                            operation,
                            request_model,
                            response_model,
                            inp,
                            out,
                            cache_read,
                            cache_write,
                            reasoning,
                            ttft_text,
                            cost_text,
                            has_tokens,
                        ) = _extract_slowly(present, attributes)
                    model = response_model or request_model
                    usd = None if cost_text is None else parse_cost(cost_text)
                    if usd is not None:
                        source = SOURCE_ATTRIBUTE
                    elif model:
                        when = start or received_at_ns
                        day = when // _NS_PER_DAY
                        quote = quotes_get(model)
                        if quote is None or quote[0] != provider or quote[1] != day:
                            quote = quotes[model] = (
                                provider,
                                day,
                                *_quote(pricer, overrides, provider, model, when),
                            )
                        fn = quote[2]
                        if fn is not None:
                            usd = fn(inp, out, cache_read, cache_write, reasoning, when)
                        if usd is None:
                            source = SOURCE_NONE
                            unpriced += 1
                        else:
                            source = quote[3]
                    else:
                        source = SOURCE_NONE
                        if has_tokens:
                            unpriced += 1
                    llm = (
                        bool(model or has_tokens or operation),
                        provider,
                        operation,
                        request_model,
                        response_model,
                        inp,
                        out,
                        cache_read,
                        reasoning,
                        usd,
                        source,
                        None if ttft_text is None else _ttft_ms(present, ttft_text),
                    )
                else:
                    llm = _NOT_LLM

                raw_events = span.events
                if raw_events:
                    event_times, event_names, event_attributes = _events(raw_events, entries)
                else:
                    event_times, event_names, event_attributes = [], [], []
                raw_links = span.links
                if raw_links:
                    link_traces, link_spans, link_states, link_attributes = _links(
                        raw_links, entries
                    )
                else:
                    link_traces, link_spans, link_states, link_attributes = [], [], [], []

                trace_id = span.trace_id.hex()
                span_id = span.span_id.hex()
                parent = span.parent_span_id.hex()
                add(
                    (
                        start,
                        "" if trace_id == zero_trace else trace_id,
                        "" if span_id == zero_span else span_id,
                        "" if parent == zero_span else parent,
                        span.trace_state,
                        span.name,
                        kinds_get(span.kind, ""),
                        service_name,
                        resource_attributes,
                        scope_name,
                        scope_version,
                        attributes,
                        end - start if end > start else 0,
                        code,
                        status_message,
                        event_times,
                        event_names,
                        event_attributes,
                        link_traces,
                        link_spans,
                        link_states,
                        link_attributes,
                        tenant_id,
                    )
                    + llm
                )

    batch = SpanBatch()
    if rows:
        batch.columns = [list(column) for column in zip(*rows, strict=True)]
    batch.unpriced = unpriced
    return batch


_NOT_LLM: Final = (False, "", "", "", "", 0, 0, 0, 0, None, SOURCE_NONE, None)
assert len(SPAN_COLUMNS) == 23 + len(_NOT_LLM)
