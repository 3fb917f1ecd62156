//! OTLP trace export requests -> one Native block of `otel_traces` rows, plus window sums.
//!
//! The compiled twin of `streams.prepare.prepare_block` over `streams.normalize`, which stay
//! the reference: the tests require byte-identical blocks. Everything that is policy or data
//! lives in Python and is handed in (semantic-convention tables, privacy filters, prices);
//! this file only walks the wire format and applies those rules at C speed. Rare shapes
//! (array and map attribute values, unusual token-count or latency text, cost attributes,
//! prices that are not a linear integer form) call back into the Python reference.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::block::{Block, MapColumn, StrColumn};
use crate::values::{key_value, Shape};
use crate::wire::{utf8, Reader, Result as WireResult, Value, FIXED64, LEN, VARINT};

const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;
const SLOT_COUNT: usize = 12;
const PROVIDER: usize = 0;
const OPERATION: usize = 1;
const REQUEST_MODEL: usize = 2;
const RESPONSE_MODEL: usize = 3;
const INPUT: usize = 4;
const OUTPUT: usize = 5;
const TOTAL: usize = 6;
const CACHE_READ: usize = 7;
const CACHE_WRITE: usize = 8;
const REASONING: usize = 9;
const TTFT: usize = 10;
const COST: usize = 11;
const COUNT_SLOTS: [usize; 5] = [INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, REASONING];
const TOKEN_SLOTS: [usize; 6] = [INPUT, OUTPUT, TOTAL, CACHE_READ, CACHE_WRITE, REASONING];
const EXACT_LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000; // 10**27
const MAX_CACHED_KEYS: usize = 65_536;
const COLUMNS: usize = 35;

type Error = String;
type Result<T> = std::result::Result<T, Error>;

fn py_err(err: PyErr) -> Error {
    format!("{err}")
}

// --- the rows of one batch, column by column ------------------------------------------------

/// `Array(...)` offsets: cumulative element counts per row.
#[derive(Default)]
struct Offsets(Vec<u64>);

impl Offsets {
    fn close_row(&mut self, total: usize) {
        self.0.push(total as u64);
    }
}

#[derive(Default)]
struct Rows {
    timestamp: Vec<u64>,
    trace_id: StrColumn,
    span_id: StrColumn,
    parent_span_id: StrColumn,
    trace_state: StrColumn,
    span_name: StrColumn,
    span_kind: StrColumn,
    service_name: StrColumn,
    resource_attributes: MapColumn,
    scope_name: StrColumn,
    scope_version: StrColumn,
    span_attributes: MapColumn,
    duration: Vec<u64>,
    status_code: StrColumn,
    status_message: StrColumn,
    event_offsets: Offsets,
    event_time: Vec<u64>,
    event_name: StrColumn,
    event_attributes: MapColumn,
    link_offsets: Offsets,
    link_trace_id: StrColumn,
    link_span_id: StrColumn,
    link_trace_state: StrColumn,
    link_attributes: MapColumn,
    tenant: StrColumn,
    is_llm: Vec<bool>,
    provider: StrColumn,
    operation: StrColumn,
    request_model: StrColumn,
    response_model: StrColumn,
    input_tokens: Vec<u64>,
    output_tokens: Vec<u64>,
    cache_read_tokens: Vec<u64>,
    reasoning_tokens: Vec<u64>,
    cost: Vec<Option<i128>>,
    cost_source: StrColumn,
    ttft_ms: Vec<Option<f64>>,
}

/// A mark to roll a failed request's rows back to.
struct Mark {
    rows: usize,
    events: usize,
    links: usize,
    maps: [usize; 4], // entries of resource, span, event and link attribute maps
}

fn truncate_str(column: &mut StrColumn, len: usize) {
    column.ends.truncate(len);
    let end = column.ends.last().copied().unwrap_or(0);
    column.data.truncate(end);
}

fn truncate_map(column: &mut MapColumn, rows: usize, entries: usize) {
    column.offsets.truncate(rows);
    truncate_str(&mut column.keys, entries);
    truncate_str(&mut column.values, entries);
}

fn map_close_row(column: &mut MapColumn) {
    column.offsets.push(column.keys.len() as u64);
}

impl Rows {
    fn len(&self) -> usize {
        self.timestamp.len()
    }

    fn mark(&self) -> Mark {
        Mark {
            rows: self.len(),
            events: self.event_time.len(),
            links: self.link_trace_id.len(),
            maps: [
                self.resource_attributes.keys.len(),
                self.span_attributes.keys.len(),
                self.event_attributes.keys.len(),
                self.link_attributes.keys.len(),
            ],
        }
    }

    fn rollback(&mut self, mark: &Mark) {
        let r = mark.rows;
        self.timestamp.truncate(r);
        for column in [
            &mut self.trace_id,
            &mut self.span_id,
            &mut self.parent_span_id,
            &mut self.trace_state,
            &mut self.span_name,
            &mut self.span_kind,
            &mut self.service_name,
            &mut self.scope_name,
            &mut self.scope_version,
            &mut self.status_code,
            &mut self.status_message,
            &mut self.tenant,
            &mut self.provider,
            &mut self.operation,
            &mut self.request_model,
            &mut self.response_model,
            &mut self.cost_source,
        ] {
            truncate_str(column, r);
        }
        truncate_map(&mut self.resource_attributes, r, mark.maps[0]);
        truncate_map(&mut self.span_attributes, r, mark.maps[1]);
        self.duration.truncate(r);
        self.event_offsets.0.truncate(r);
        self.event_time.truncate(mark.events);
        truncate_str(&mut self.event_name, mark.events);
        truncate_map(&mut self.event_attributes, mark.events, mark.maps[2]);
        self.link_offsets.0.truncate(r);
        for column in [
            &mut self.link_trace_id,
            &mut self.link_span_id,
            &mut self.link_trace_state,
        ] {
            truncate_str(column, mark.links);
        }
        truncate_map(&mut self.link_attributes, mark.links, mark.maps[3]);
        self.is_llm.truncate(r);
        for column in [
            &mut self.input_tokens,
            &mut self.output_tokens,
            &mut self.cache_read_tokens,
            &mut self.reasoning_tokens,
        ] {
            column.truncate(r);
        }
        self.cost.truncate(r);
        self.ttft_ms.truncate(r);
    }

    fn encode(&self, names: &[String], types: &[String]) -> Vec<u8> {
        let mut block = Block::new(self.len());
        let n = |i: usize| names[i].as_str();
        let t = |i: usize| types[i].as_str();
        block.u64s(n(0), t(0), &self.timestamp);
        block.strings(n(1), t(1), &self.trace_id);
        block.strings(n(2), t(2), &self.span_id);
        block.strings(n(3), t(3), &self.parent_span_id);
        block.strings(n(4), t(4), &self.trace_state);
        block.strings(n(5), t(5), &self.span_name);
        block.strings(n(6), t(6), &self.span_kind);
        block.strings(n(7), t(7), &self.service_name);
        block.maps(n(8), t(8), &self.resource_attributes);
        block.strings(n(9), t(9), &self.scope_name);
        block.strings(n(10), t(10), &self.scope_version);
        block.maps(n(11), t(11), &self.span_attributes);
        block.u64s(n(12), t(12), &self.duration);
        block.strings(n(13), t(13), &self.status_code);
        block.strings(n(14), t(14), &self.status_message);
        block.array_u64s(n(15), t(15), &self.event_offsets.0, &self.event_time);
        block.array_strings(n(16), t(16), &self.event_offsets.0, &self.event_name);
        block.array_maps(n(17), t(17), &self.event_offsets.0, &self.event_attributes);
        block.array_strings(n(18), t(18), &self.link_offsets.0, &self.link_trace_id);
        block.array_strings(n(19), t(19), &self.link_offsets.0, &self.link_span_id);
        block.array_strings(n(20), t(20), &self.link_offsets.0, &self.link_trace_state);
        block.array_maps(n(21), t(21), &self.link_offsets.0, &self.link_attributes);
        block.strings(n(22), t(22), &self.tenant);
        block.bools(n(23), t(23), &self.is_llm);
        block.strings(n(24), t(24), &self.provider);
        block.strings(n(25), t(25), &self.operation);
        block.strings(n(26), t(26), &self.request_model);
        block.strings(n(27), t(27), &self.response_model);
        block.u64s(n(28), t(28), &self.input_tokens);
        block.u64s(n(29), t(29), &self.output_tokens);
        block.u64s(n(30), t(30), &self.cache_read_tokens);
        block.u64s(n(31), t(31), &self.reasoning_tokens);
        block.nullable_decimal128s(n(32), t(32), &self.cost);
        block.strings(n(33), t(33), &self.cost_source);
        block.nullable_f64s(n(34), t(34), &self.ttft_ms);
        block.finish()
    }
}

// --- per-batch state ------------------------------------------------------------------------

/// A price for one (provider, model, day) of a request, as the Python adapter quotes it.
#[allow(clippy::large_enum_variant)] // a handful per request
enum Quote {
    Unknown,
    Priced {
        source: String,
        linear: Option<Linear>,
        exact: Py<PyAny>,
    },
}

/// `streams.pricing.LinearPrice`: cost in 1e-12 USD = factor * (sum of coefficient * count).
#[derive(Clone, Copy)]
struct Linear {
    c: [i128; 5], // input, output, cache read, cache write, reasoning
    split: [i128; 3],
    constant: i128,
    factor: i128,
}

impl Linear {
    /// Some(Some(e12)), Some(None) when refused, None when only the exact path can say.
    fn e12(&self, usage: &[u64; 5]) -> Option<Option<i128>> {
        let [inp, out, cr, cw, rs] = usage.map(i128::from);
        let rest_in = inp - cr - cw;
        let rest_out = out - rs;
        if inp - cr * self.split[0] - cw * self.split[1] < 0
            || rest_out + rs * (1 - self.split[2]) < 0
        {
            return Some(None);
        }
        let terms = [
            self.c[0].checked_mul(rest_in)?,
            self.c[1].checked_mul(rest_out)?,
            self.c[2].checked_mul(cr)?,
            self.c[3].checked_mul(cw)?,
            self.c[4].checked_mul(rs)?,
            self.constant,
        ];
        let mut n: i128 = 0;
        for term in terms {
            n = n.checked_add(term)?;
        }
        if n >= EXACT_LIMIT {
            return None;
        }
        Some(Some(n.checked_mul(self.factor)?))
    }
}

struct Window {
    tenant: String,
    start: u64,
    model: String,
    service: String,
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: Option<i128>,
    unpriced: u64,
    durations: Vec<u64>,
}

/// One attribute: its key and its (privacy-filtered) value.
type Entry<'a> = (Cow<'a, str>, Cow<'a, str>);

struct Job<'py> {
    tenant: String,
    received_at_ns: u64,
    filter: Bound<'py, PyAny>,
    quote: Bound<'py, PyAny>,
    quotes: HashMap<(String, String, u64), Quote>,
    unpriced: u64,
    windows: Vec<Window>, // kept only if the whole request succeeds
    window_index: HashMap<(u64, String, String), usize>,
}

#[pyclass(module = "llmtel_native")]
pub struct Normalizer {
    slot_of: HashMap<String, (usize, usize)>,
    ttft_factor: HashMap<String, f64>,
    kind_names: Vec<String>,
    status_names: Vec<String>,
    service_key: String,
    message_event_prefix: String,
    message_event_keys: Vec<String>,
    names: Vec<String>,
    types: Vec<String>,
    window_ns: u64,
    is_content: Py<PyAny>,
    decode_kv: Py<PyAny>,
    count: Py<PyAny>,
    ms: Py<PyAny>,
    parse_cost: Py<PyAny>,
    service_name_entry: Py<PyAny>,
    /// `is_content` answers by key; not held across calls into Python (threads share this)
    content_keys: Mutex<HashMap<String, bool>>,
}

struct Batch<'py, 'n> {
    py: Python<'py>,
    n: &'n Normalizer,
    rows: Rows,
    unpriced: u64,
    windows: Vec<Window>,
    window_index: HashMap<(String, u64, String, String), usize>,
}

// --- the walk over one request --------------------------------------------------------------

struct SpanFields<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a [u8],
    parent_span_id: &'a [u8],
    name: &'a [u8],
    kind: u64,
    start: u64,
    end: u64,
    attributes: Vec<&'a [u8]>,
    events: Vec<&'a [u8]>,
    links: Vec<&'a [u8]>,
    status: &'a [u8],
}

fn parse_span(raw: &[u8]) -> WireResult<SpanFields<'_>> {
    let mut span = SpanFields {
        trace_id: b"",
        span_id: b"",
        trace_state: b"",
        parent_span_id: b"",
        name: b"",
        kind: 0,
        start: 0,
        end: 0,
        attributes: Vec::with_capacity(16),
        events: Vec::new(),
        links: Vec::new(),
        status: b"",
    };
    let mut reader = Reader::new(raw);
    while !reader.done() {
        match reader.field()? {
            (1, LEN, Value::Bytes(b)) => span.trace_id = b,
            (2, LEN, Value::Bytes(b)) => span.span_id = b,
            (3, LEN, Value::Bytes(b)) => span.trace_state = b,
            (4, LEN, Value::Bytes(b)) => span.parent_span_id = b,
            (5, LEN, Value::Bytes(b)) => span.name = b,
            (6, VARINT, Value::Int(v)) => span.kind = v,
            (7, FIXED64, Value::Int(v)) => span.start = v,
            (8, FIXED64, Value::Int(v)) => span.end = v,
            (9, LEN, Value::Bytes(b)) => span.attributes.push(b),
            (11, LEN, Value::Bytes(b)) => span.events.push(b),
            (13, LEN, Value::Bytes(b)) => span.links.push(b),
            (15, LEN, Value::Bytes(b)) => span.status = b,
            _ => {}
        }
    }
    utf8(span.trace_state)?;
    utf8(span.name)?;
    Ok(span)
}

fn push_hex(column: &mut StrColumn, id: &[u8], zero_len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if id.len() * 2 == zero_len && id.iter().all(|&b| b == 0) {
        column.push(b"");
        return;
    }
    for &byte in id {
        column.data.push(HEX[(byte >> 4) as usize]);
        column.data.push(HEX[(byte & 15) as usize]);
    }
    column.ends.push(column.data.len());
}

/// Token count text as Python's `int()` reads plain digits; None: ask the reference.
fn plain_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A latency as digits with at most one '.', as Python's `float()` reads it; else None.
fn plain_float(text: &str) -> Option<f64> {
    let mut dots = 0;
    let mut digits = 0;
    for b in text.bytes() {
        match b {
            b'.' => dots += 1,
            b'0'..=b'9' => digits += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    text.parse().ok()
}

impl<'py, 'n> Batch<'py, 'n> {
    fn is_content(&mut self, key: &str) -> Result<bool> {
        if let Some(&known) = self.n.content_keys.lock().expect("not poisoned").get(key) {
            return Ok(known);
        }
        let known: bool = self
            .n
            .is_content
            .bind(self.py)
            .call1((key,))
            .and_then(|v| v.extract())
            .map_err(py_err)?;
        let mut keys = self.n.content_keys.lock().expect("not poisoned");
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(key.to_string(), known);
        Ok(known)
    }

    fn filter(&self, job: &Job<'py>, value: &str) -> Result<Option<String>> {
        job.filter
            .call1((value,))
            .and_then(|v| v.extract())
            .map_err(py_err)
    }

    /// Decoded, privacy-filtered attributes with dict semantics: first position, last value.
    fn attributes<'a>(
        &mut self,
        job: &Job<'py>,
        raws: &[&'a [u8]],
        message_event: bool,
    ) -> Result<Vec<Entry<'a>>> {
        let mut out: Vec<Entry<'a>> = Vec::with_capacity(raws.len());
        let mut dropped: Vec<Cow<'a, str>> = Vec::new();
        for raw in raws {
            let (key, value): Entry<'a> = match key_value(raw)? {
                Shape::Str(k, v) => (Cow::Borrowed(k), Cow::Borrowed(v)),
                Shape::Owned(k, v) => (Cow::Borrowed(k), Cow::Owned(v)),
                Shape::Other => {
                    let (k, v): (String, String) = self
                        .n
                        .decode_kv
                        .bind(self.py)
                        .call1((PyBytes::new(self.py, raw),))
                        .and_then(|v| v.extract())
                        .map_err(py_err)?;
                    (Cow::Owned(k), Cow::Owned(v))
                }
            };
            let value = if self.is_content(&key)? {
                match self.filter(job, &value)? {
                    Some(filtered) => Cow::Owned(filtered),
                    None => {
                        dropped.push(key);
                        continue;
                    }
                }
            } else {
                value
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => out.push((key, value)),
            }
        }
        if !dropped.is_empty() {
            // Python keeps a dropped key's slot only as `_DROP`, then removes it: a key
            // dropped anywhere is gone, whatever other occurrences held.
            out.retain(|(k, _)| !dropped.contains(k));
        }
        if message_event {
            let mut kept = Vec::with_capacity(out.len());
            for (key, value) in out {
                if self.n.message_event_keys.iter().any(|k| k == key.as_ref()) {
                    if let Some(filtered) = self.filter(job, &value)? {
                        kept.push((key, Cow::Owned(filtered)));
                    }
                } else {
                    kept.push((key, value));
                }
            }
            out = kept;
        }
        Ok(out)
    }

    fn request(&mut self, job: &mut Job<'py>, payload: &[u8]) -> Result<()> {
        let mut reader = Reader::new(payload);
        while !reader.done() {
            if let (1, LEN, Value::Bytes(resource_spans)) = reader.field()? {
                self.resource_spans(job, resource_spans)?;
            }
        }
        Ok(())
    }

    fn resource_spans(&mut self, job: &mut Job<'py>, raw: &[u8]) -> Result<()> {
        let mut resource_raws: Vec<&[u8]> = Vec::new();
        let mut scopes: Vec<&[u8]> = Vec::new();
        let mut reader = Reader::new(raw);
        while !reader.done() {
            match reader.field()? {
                (1, LEN, Value::Bytes(resource)) => {
                    let mut inner = Reader::new(resource);
                    while !inner.done() {
                        if let (1, LEN, Value::Bytes(kv)) = inner.field()? {
                            resource_raws.push(kv);
                        }
                    }
                }
                (2, LEN, Value::Bytes(scope_spans)) => scopes.push(scope_spans),
                _ => {}
            }
        }
        let resource = self.attributes(job, &resource_raws, false)?;
        let mut service = String::new();
        for raw in &resource_raws {
            match key_value(raw)? {
                Shape::Str(key, value) if key == self.n.service_key => {
                    service = if is_string_value(raw)? {
                        value.to_string()
                    } else {
                        String::new()
                    };
                }
                Shape::Owned(key, _) if key == self.n.service_key => service = String::new(),
                Shape::Other => {
                    // merged or repeated fields: the reference's own reading
                    let (key, value): (String, String) = self
                        .n
                        .service_name_entry
                        .bind(self.py)
                        .call1((PyBytes::new(self.py, raw),))
                        .and_then(|v| v.extract())
                        .map_err(py_err)?;
                    if key == self.n.service_key {
                        service = value;
                    }
                }
                _ => {}
            }
        }
        for scope_spans in scopes {
            self.scope_spans(job, scope_spans, &resource, &service)?;
        }
        Ok(())
    }

    fn scope_spans(
        &mut self,
        job: &mut Job<'py>,
        raw: &[u8],
        resource: &[Entry<'_>],
        service: &str,
    ) -> Result<()> {
        let mut scope_name: &[u8] = b"";
        let mut scope_version: &[u8] = b"";
        let mut spans: Vec<&[u8]> = Vec::new();
        let mut reader = Reader::new(raw);
        while !reader.done() {
            match reader.field()? {
                (1, LEN, Value::Bytes(scope)) => {
                    let mut inner = Reader::new(scope);
                    while !inner.done() {
                        match inner.field()? {
                            (1, LEN, Value::Bytes(b)) => scope_name = b,
                            (2, LEN, Value::Bytes(b)) => scope_version = b,
                            _ => {}
                        }
                    }
                }
                (2, LEN, Value::Bytes(span)) => spans.push(span),
                _ => {}
            }
        }
        let scope_name = utf8(scope_name)?;
        let scope_version = utf8(scope_version)?;
        for span in spans {
            self.span(job, span, resource, service, scope_name, scope_version)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        job: &mut Job<'py>,
        raw: &[u8],
        resource: &[Entry<'_>],
        service: &str,
        scope_name: &str,
        scope_version: &str,
    ) -> Result<()> {
        let span = parse_span(raw)?;
        let attributes = self.attributes(job, &span.attributes, false)?;
        let (status_code, status_message) = self.status(span.status)?;

        let rows = &mut self.rows;
        rows.timestamp.push(span.start);
        push_hex(&mut rows.trace_id, span.trace_id, 32);
        push_hex(&mut rows.span_id, span.span_id, 16);
        push_hex(&mut rows.parent_span_id, span.parent_span_id, 16);
        rows.trace_state.push(span.trace_state);
        rows.span_name.push(span.name);
        let kind = span.kind as u32 as i32; // upb reads an int32 enum from the low 32 bits
        let kind_name = usize::try_from(kind)
            .ok()
            .and_then(|k| self.n.kind_names.get(k));
        rows.span_kind
            .push(kind_name.map_or(&b""[..], |k| k.as_bytes()));
        rows.service_name.push(service.as_bytes());
        for (key, value) in resource {
            rows.resource_attributes.keys.push(key.as_bytes());
            rows.resource_attributes.values.push(value.as_bytes());
        }
        map_close_row(&mut rows.resource_attributes);
        rows.scope_name.push(scope_name.as_bytes());
        rows.scope_version.push(scope_version.as_bytes());
        for (key, value) in &attributes {
            rows.span_attributes.keys.push(key.as_bytes());
            rows.span_attributes.values.push(value.as_bytes());
        }
        map_close_row(&mut rows.span_attributes);
        let duration = span.end.saturating_sub(span.start);
        rows.duration.push(duration);
        rows.status_code.push(status_code.as_bytes());
        rows.status_message.push(status_message.as_bytes());
        self.events(job, &span.events)?;
        self.links(job, &span.links)?;
        self.rows.tenant.push(job.tenant.as_bytes());
        self.llm(
            job,
            &attributes,
            span.start,
            duration,
            &status_code,
            service,
        )
    }

    fn status(&self, raw: &[u8]) -> Result<(String, String)> {
        let mut code: u64 = 0;
        let mut message: &[u8] = b"";
        let mut reader = Reader::new(raw);
        while !reader.done() {
            match reader.field()? {
                (2, LEN, Value::Bytes(b)) => message = b,
                (3, VARINT, Value::Int(v)) => code = v,
                _ => {}
            }
        }
        let code = code as u32 as i32;
        let name = usize::try_from(code)
            .ok()
            .and_then(|c| self.n.status_names.get(c));
        Ok((
            name.cloned().unwrap_or_default(),
            utf8(message)?.to_string(),
        ))
    }

    fn events(&mut self, job: &Job<'py>, raws: &[&[u8]]) -> Result<()> {
        for raw in raws {
            let mut time: u64 = 0;
            let mut name: &[u8] = b"";
            let mut attribute_raws: Vec<&[u8]> = Vec::new();
            let mut reader = Reader::new(raw);
            while !reader.done() {
                match reader.field()? {
                    (1, FIXED64, Value::Int(v)) => time = v,
                    (2, LEN, Value::Bytes(b)) => name = b,
                    (3, LEN, Value::Bytes(b)) => attribute_raws.push(b),
                    _ => {}
                }
            }
            let name = utf8(name)?;
            let message_event = name.starts_with(self.n.message_event_prefix.as_str());
            let attributes = self.attributes(job, &attribute_raws, message_event)?;
            let rows = &mut self.rows;
            rows.event_time.push(time);
            rows.event_name.push(name.as_bytes());
            for (key, value) in &attributes {
                rows.event_attributes.keys.push(key.as_bytes());
                rows.event_attributes.values.push(value.as_bytes());
            }
            map_close_row(&mut rows.event_attributes);
        }
        let total = self.rows.event_time.len();
        self.rows.event_offsets.close_row(total);
        Ok(())
    }

    fn links(&mut self, job: &Job<'py>, raws: &[&[u8]]) -> Result<()> {
        for raw in raws {
            let (mut trace_id, mut span_id, mut state): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
            let mut attribute_raws: Vec<&[u8]> = Vec::new();
            let mut reader = Reader::new(raw);
            while !reader.done() {
                match reader.field()? {
                    (1, LEN, Value::Bytes(b)) => trace_id = b,
                    (2, LEN, Value::Bytes(b)) => span_id = b,
                    (3, LEN, Value::Bytes(b)) => state = b,
                    (4, LEN, Value::Bytes(b)) => attribute_raws.push(b),
                    _ => {}
                }
            }
            utf8(state)?;
            let attributes = self.attributes(job, &attribute_raws, false)?;
            let rows = &mut self.rows;
            push_hex(&mut rows.link_trace_id, trace_id, 32);
            push_hex(&mut rows.link_span_id, span_id, 16);
            rows.link_trace_state.push(state);
            for (key, value) in &attributes {
                rows.link_attributes.keys.push(key.as_bytes());
                rows.link_attributes.values.push(value.as_bytes());
            }
            map_close_row(&mut rows.link_attributes);
        }
        let total = self.rows.link_trace_id.len();
        self.rows.link_offsets.close_row(total);
        Ok(())
    }

    fn count(&self, text: &str) -> Result<u64> {
        if let Some(value) = plain_count(text) {
            return Ok(value);
        }
        let value: u128 = self
            .n
            .count
            .bind(self.py)
            .call1((text,))
            .and_then(|v| v.extract())
            .map_err(py_err)?;
        u64::try_from(value).map_err(|_| format!("token count {value} is out of range"))
    }

    /// The typed LLM columns of one span, its price, and its share of the window sums.
    fn llm(
        &mut self,
        job: &mut Job<'py>,
        attributes: &[Entry<'_>],
        start: u64,
        duration: u64,
        status_code: &str,
        service: &str,
    ) -> Result<()> {
        // the attribute supplying each slot: the one of highest precedence (lowest rank)
        let mut best: [Option<(usize, usize)>; SLOT_COUNT] = [None; SLOT_COUNT]; // (rank, entry)
        let mut any = false;
        for (index, (key, _)) in attributes.iter().enumerate() {
            if let Some(&(slot, rank)) = self.n.slot_of.get(key.as_ref()) {
                any = true;
                if best[slot].is_none_or(|(r, _)| rank < r) {
                    best[slot] = Some((rank, index));
                }
            }
        }
        if !any {
            let rows = &mut self.rows;
            rows.is_llm.push(false);
            for column in [
                &mut rows.provider,
                &mut rows.operation,
                &mut rows.request_model,
                &mut rows.response_model,
                &mut rows.cost_source,
            ] {
                column.push(b"");
            }
            for column in [
                &mut rows.input_tokens,
                &mut rows.output_tokens,
                &mut rows.cache_read_tokens,
                &mut rows.reasoning_tokens,
            ] {
                column.push(0);
            }
            rows.cost.push(None);
            rows.ttft_ms.push(None);
            return Ok(());
        }
        let text = |slot: usize| best[slot].map(|(_, index)| attributes[index].1.as_ref());
        let mut usage = [0u64; 5];
        for (i, slot) in COUNT_SLOTS.into_iter().enumerate() {
            if let Some(t) = text(slot) {
                usage[i] = self.count(t)?;
            }
        }
        let provider = text(PROVIDER).unwrap_or("");
        let operation = text(OPERATION).unwrap_or("");
        let request_model = text(REQUEST_MODEL).unwrap_or("");
        let response_model = text(RESPONSE_MODEL).unwrap_or("");
        let has_tokens = TOKEN_SLOTS.iter().any(|&slot| best[slot].is_some());
        let has_usage = best[INPUT].is_some() || best[OUTPUT].is_some();
        let model = if response_model.is_empty() {
            request_model
        } else {
            response_model
        };
        let ttft = match best[TTFT] {
            None => None,
            Some((_, index)) => self.ttft_ms(&attributes[index])?,
        };
        let (cost, source) =
            self.price(job, text(COST), provider, model, has_usage, usage, start)?;
        let is_llm = !model.is_empty() || has_tokens || !operation.is_empty();
        let rows = &mut self.rows;
        rows.is_llm.push(is_llm);
        rows.provider.push(provider.as_bytes());
        rows.operation.push(operation.as_bytes());
        rows.request_model.push(request_model.as_bytes());
        rows.response_model.push(response_model.as_bytes());
        rows.input_tokens.push(usage[0]);
        rows.output_tokens.push(usage[1]);
        rows.cache_read_tokens.push(usage[2]);
        rows.reasoning_tokens.push(usage[4]);
        rows.cost.push(cost);
        rows.cost_source.push(source.as_bytes());
        rows.ttft_ms.push(ttft);
        if is_llm && self.n.window_ns > 0 {
            // window_ns 0: the caller keeps no windows
            let errored = status_code == "Error";
            add_to_window(
                job,
                self.n.window_ns,
                start,
                duration,
                model,
                service,
                errored,
                usage,
                cost,
            );
        }
        Ok(())
    }

    fn ttft_ms(&self, (key, value): &Entry<'_>) -> Result<Option<f64>> {
        if let Some(v) = plain_float(value) {
            if v.is_finite() {
                let factor = self.n.ttft_factor.get(key.as_ref()).copied().unwrap_or(1.0);
                return Ok(Some(v * factor));
            }
        }
        self.n
            .ms
            .bind(self.py)
            .call1((key.as_ref(), value.as_ref()))
            .and_then(|v| v.extract())
            .map_err(py_err)
    }

    /// (cost in 1e-12 USD, its source): the span's cost attribute, else the quoted price.
    #[allow(clippy::too_many_arguments)]
    fn price(
        &mut self,
        job: &mut Job<'py>,
        cost_text: Option<&str>,
        provider: &str,
        model: &str,
        has_usage: bool,
        usage: [u64; 5],
        start: u64,
    ) -> Result<(Option<i128>, String)> {
        if let Some(text) = cost_text {
            let cost: Option<i128> = self
                .n
                .parse_cost
                .bind(self.py)
                .call1((text,))
                .and_then(|v| v.extract())
                .map_err(py_err)?;
            if cost.is_some() {
                return Ok((cost, "attribute".to_string()));
            }
        }
        if model.is_empty() || !has_usage {
            // nothing to price: no model, or no input/output counts; usage without a model
            // is unpriced
            if has_usage {
                job.unpriced += 1;
            }
            return Ok((None, String::new()));
        }
        let when = if start != 0 {
            start
        } else {
            job.received_at_ns
        };
        let key = (provider.to_string(), model.to_string(), when / NS_PER_DAY);
        if !job.quotes.contains_key(&key) {
            let quote = quote_of(job.quote.call1((provider, model, when)).map_err(py_err)?)?;
            job.quotes.insert(key.clone(), quote);
        }
        if let Quote::Priced {
            source,
            linear,
            exact,
        } = &job.quotes[&key]
        {
            let cost = match linear.and_then(|l| l.e12(&usage)) {
                Some(value) => value,
                None => {
                    let [i, o, cr, cw, rs] = usage;
                    exact
                        .bind(self.py)
                        .call1((i, o, cr, cw, rs, when))
                        .and_then(|v| v.extract())
                        .map_err(py_err)?
                }
            };
            if cost.is_some() {
                return Ok((cost, source.clone()));
            }
        }
        job.unpriced += 1;
        Ok((None, String::new()))
    }
}

#[allow(clippy::too_many_arguments)]
fn add_to_window(
    job: &mut Job<'_>,
    window_ns: u64,
    start: u64,
    duration: u64,
    model: &str,
    service: &str,
    errored: bool,
    usage: [u64; 5],
    cost: Option<i128>,
) {
    let ended = start.wrapping_add(duration);
    let window_start = ended - ended % window_ns;
    let key = (window_start, model.to_string(), service.to_string());
    let index = match job.window_index.get(&key) {
        Some(&index) => index,
        None => {
            job.windows.push(Window {
                tenant: job.tenant.clone(),
                start: window_start,
                model: key.1.clone(),
                service: key.2.clone(),
                requests: 0,
                errors: 0,
                input_tokens: 0,
                output_tokens: 0,
                cost: None,
                unpriced: 0,
                durations: Vec::new(),
            });
            job.window_index.insert(key, job.windows.len() - 1);
            job.windows.len() - 1
        }
    };
    let w = &mut job.windows[index];
    w.requests += 1;
    w.errors += u64::from(errored);
    w.input_tokens += usage[0];
    w.output_tokens += usage[1];
    match cost {
        None => w.unpriced += 1,
        Some(c) => w.cost = Some(w.cost.unwrap_or(0) + c),
    }
    w.durations.push(duration);
}

impl Batch<'_, '_> {
    /// A request that went through: its rows stay, its sums join the batch's.
    fn keep(&mut self, job: Job<'_>) {
        self.unpriced += job.unpriced;
        for w in job.windows {
            let key = (
                w.tenant.clone(),
                w.start,
                w.model.clone(),
                w.service.clone(),
            );
            match self.window_index.get(&key) {
                Some(&index) => {
                    let into = &mut self.windows[index];
                    into.requests += w.requests;
                    into.errors += w.errors;
                    into.input_tokens += w.input_tokens;
                    into.output_tokens += w.output_tokens;
                    into.unpriced += w.unpriced;
                    if let Some(c) = w.cost {
                        into.cost = Some(into.cost.unwrap_or(0) + c);
                    }
                    into.durations.extend(w.durations);
                }
                None => {
                    self.window_index.insert(key, self.windows.len());
                    self.windows.push(w);
                }
            }
        }
    }
}

fn is_string_value(raw: &[u8]) -> WireResult<bool> {
    let mut reader = Reader::new(raw);
    while !reader.done() {
        if let (2, LEN, Value::Bytes(value)) = reader.field()? {
            let mut inner = Reader::new(value);
            if !inner.done() {
                return Ok(matches!(inner.field()?, (1, LEN, _)));
            }
        }
    }
    Ok(false)
}

fn quote_of(quote: Bound<'_, PyAny>) -> Result<Quote> {
    if quote.is_none() {
        return Ok(Quote::Unknown);
    }
    let (source, linear, exact): (String, Option<Vec<i128>>, Py<PyAny>) =
        quote.extract().map_err(py_err)?;
    let linear = match linear {
        None => None,
        Some(v) if v.len() == 10 => Some(Linear {
            c: [v[0], v[1], v[2], v[3], v[4]],
            split: [v[5], v[6], v[7]],
            constant: v[8],
            factor: v[9],
        }),
        Some(_) => return Err("a linear price has 10 integers".into()),
    };
    Ok(Quote::Priced {
        source,
        linear,
        exact,
    })
}

#[pymethods]
impl Normalizer {
    /// See `streams.native_prepare`, which builds one from the Python reference's tables.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        slot_of: HashMap<String, (usize, usize)>,
        ttft_factor: HashMap<String, f64>,
        kind_names: Vec<String>,
        status_names: Vec<String>,
        service_key: String,
        message_event_prefix: String,
        message_event_keys: Vec<String>,
        names: Vec<String>,
        types: Vec<String>,
        window_ns: u64,
        is_content: Py<PyAny>,
        decode_kv: Py<PyAny>,
        count: Py<PyAny>,
        ms: Py<PyAny>,
        parse_cost: Py<PyAny>,
        service_name_entry: Py<PyAny>,
    ) -> PyResult<Self> {
        if names.len() != COLUMNS || types.len() != COLUMNS {
            return Err(PyValueError::new_err(format!(
                "expected {COLUMNS} span columns"
            )));
        }
        if slot_of.values().any(|&(slot, _)| slot >= SLOT_COUNT) {
            return Err(PyValueError::new_err(
                "a slot number in the slot table is out of range",
            ));
        }
        Ok(Normalizer {
            slot_of,
            ttft_factor,
            kind_names,
            status_names,
            service_key,
            message_event_prefix,
            message_event_keys,
            names,
            types,
            window_ns,
            is_content,
            decode_kv,
            count,
            ms,
            parse_cost,
            service_name_entry,
            content_keys: Mutex::new(HashMap::new()),
        })
    }

    /// jobs: (tenant, received_at_ns, payload, content filter, quote) per export request.
    /// Returns (block, rows, unpriced, windows, failures); see `streams.native_prepare`.
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        jobs: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let mut batch = Batch {
            py,
            n: self,
            rows: Rows::default(),
            unpriced: 0,
            windows: Vec::new(),
            window_index: HashMap::new(),
        };
        let mut failures: Vec<(usize, String)> = Vec::new();
        for (index, item) in jobs.iter().enumerate() {
            #[allow(clippy::type_complexity)]
            let (tenant, received_at_ns, payload, filter, quote): (
                String,
                u64,
                Bound<'py, PyBytes>,
                Bound<'py, PyAny>,
                Bound<'py, PyAny>,
            ) = item.extract()?;
            let mut job = Job {
                tenant,
                received_at_ns,
                filter,
                quote,
                quotes: HashMap::new(),
                unpriced: 0,
                windows: Vec::new(),
                window_index: HashMap::new(),
            };
            let mark = batch.rows.mark();
            match batch.request(&mut job, payload.as_bytes()) {
                Ok(()) => batch.keep(job),
                Err(reason) => {
                    batch.rows.rollback(&mark);
                    failures.push((index, reason));
                }
            }
        }
        let rows = batch.rows.len();
        let (encoded, names, types) = (&batch.rows, &batch.n.names, &batch.n.types);
        // pure Rust: without the GIL
        let block = if rows > 0 {
            py.allow_threads(|| encoded.encode(names, types))
        } else {
            Vec::new()
        };
        let windows = PyList::empty(py);
        for w in &batch.windows {
            let item = (
                w.tenant.as_str(),
                w.start,
                w.model.as_str(),
                w.service.as_str(),
                w.requests,
                w.errors,
                w.input_tokens,
                w.output_tokens,
                w.cost,
                w.unpriced,
                PyList::new(py, &w.durations)?,
            )
                .into_pyobject(py)?;
            windows.append(item)?;
        }
        let failures = PyList::new(py, failures)?;
        (
            PyBytes::new(py, &block),
            rows,
            batch.unpriced,
            windows,
            failures,
        )
            .into_pyobject(py)
    }
}
