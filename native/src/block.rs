//! ClickHouse Native-format block writer for the span table's column types.
//!
//! Byte-identical to clickhouse-connect's Rust codec (`_ch_core.encode_native_block`) for the
//! same values, so the engine receives exactly what the Python path sends. The layout, as
//! that codec writes it (all fixed-width integers little-endian):
//!
//! - block: varint column count, varint row count, then per column: varint-prefixed name,
//!   varint-prefixed type name, column data.
//! - `String`: per value a varint length and the bytes. `UInt64`/`DateTime64(9)`: 8 bytes.
//!   `Bool`: 1 byte. `Nullable(T)`: one null-map byte per row (1 = NULL), then T's values
//!   with zero written for NULLs. `Decimal(38, S)`: the scaled value as a 16-byte integer.
//! - `Array(T)` and `Map(K, V)`: cumulative `UInt64` offsets per row, then the flattened
//!   elements (a map's keys, then its values).
//! - `LowCardinality(String)`: a `UInt64` keys-serialization version (1) written once, at the
//!   very start of the column that contains it (before any enclosing array or map offsets),
//!   then where the values go: `UInt64` flags (0x600 = has additional keys | needs dictionary
//!   update, plus the index width: 0 = UInt8 for up to 255 keys, 1 = UInt16 up to 65535,
//!   2 = UInt32), `UInt64` key count, the keys as `String`s in first-seen order (no default
//!   key is added), `UInt64` row count, the indices. When a nested LowCardinality holds no
//!   values at all (only empty maps or arrays), the version is still written but the
//!   dictionary part is not.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// Strings of one column, concatenated: value i is `data[ends[i-1]..ends[i]]` (ends[-1] = 0).
#[derive(Default, Clone, Debug)]
pub struct StrColumn {
    pub data: Vec<u8>,
    pub ends: Vec<usize>,
}

impl StrColumn {
    /// Room for `values` strings of `bytes` bytes in all.
    pub fn with_capacity(values: usize, bytes: usize) -> Self {
        StrColumn {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(values),
        }
    }
    pub fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.ends.push(self.data.len());
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let value = &self.data[start..end];
            start = end;
            value
        })
    }
}

/// Rows of `Map(K, V)`: row i holds entries `offsets[i-1]..offsets[i]` of keys/values
/// (cumulative, as ClickHouse stores array offsets).
#[derive(Default, Clone, Debug)]
pub struct MapColumn {
    pub offsets: Vec<u64>,
    pub keys: StrColumn,
    pub values: StrColumn,
}

impl MapColumn {
    /// One entry of the map being built (closed by `end_row`).
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.keys.push(key);
        self.values.push(value);
    }
    /// Close the current map (possibly empty).
    pub fn end_row(&mut self) {
        self.offsets.push(self.keys.len() as u64);
    }
    /// Number of maps (rows).
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// One Native block: columns are appended in order, then `finish` gives the bytes.
///
/// The writers panic on misuse (a value count that is not the block's row count, offsets
/// that do not end at the element count, a type name whose layout they do not write):
/// those are bugs in the caller, and a malformed block must never reach the engine.
pub struct Block {
    rows: usize,
    columns: usize,
    /// The whole block; byte 0 is reserved for the column count (rewritten by `finish`).
    body: Vec<u8>,
    /// Dictionary indices of the LowCardinality column being written (reused).
    indices: Vec<u32>,
}

const LC: &str = "LowCardinality(String)";
const LC_ARRAY: &str = "Array(LowCardinality(String))";
const LC_MAP: &str = "Map(LowCardinality(String), String)";
const LC_MAP_ARRAY: &str = "Array(Map(LowCardinality(String), String))";

/// KeysSerializationVersion::SharedDictionariesWithAdditionalKeys.
const LC_VERSION: u64 = 1;
/// HasAdditionalKeysBit | NeedUpdateDictionaryBit; the index width code is or-ed in.
const LC_FLAGS: u64 = (1 << 9) | (1 << 10);

impl Block {
    pub fn new(rows: usize) -> Self {
        Self::with_capacity(rows, 0)
    }
    /// A block expected to take about `bytes` bytes (saves regrowing the buffer).
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut body = Vec::with_capacity(bytes.max(16));
        body.push(0); // the column count, while it is one byte long
        put_varint(&mut body, rows as u64);
        Block {
            rows,
            columns: 0,
            body,
            indices: Vec::new(),
        }
    }
    /// Bytes written so far (about the size `finish` will return).
    pub fn bytes_written(&self) -> usize {
        self.body.len()
    }

    fn header(&mut self, name: &str, ty: &str, values: usize) {
        assert_eq!(
            values, self.rows,
            "column {name:?} has {values} values for {} rows",
            self.rows
        );
        self.columns += 1;
        put_bytes(&mut self.body, name.as_bytes());
        put_bytes(&mut self.body, ty.as_bytes());
    }

    /// `String` or `LowCardinality(String)`.
    pub fn strings(&mut self, name: &str, ty: &str, values: &StrColumn) {
        self.header(name, ty, values.len());
        match ty {
            "String" => put_strings(&mut self.body, values),
            LC => {
                put_u64(&mut self.body, LC_VERSION);
                if !values.is_empty() {
                    put_low_cardinality(&mut self.body, &mut self.indices, values);
                }
            }
            _ => panic!("column {name:?}: strings() writes String or {LC}, not {ty}"),
        }
    }
    /// `UInt64` or `DateTime64(9)` (both 8 bytes little-endian). DateTime64 is signed:
    /// values from 2**63 on read back as dates before 1970 (`_ch_core` refuses them).
    pub fn u64s(&mut self, name: &str, ty: &str, values: &[u64]) {
        self.header(name, ty, values.len());
        put_u64s(&mut self.body, values);
    }
    /// `Bool`.
    pub fn bools(&mut self, name: &str, ty: &str, values: &[bool]) {
        self.header(name, ty, values.len());
        self.body.extend(values.iter().map(|&v| u8::from(v)));
    }
    /// `Nullable(Float64)`.
    pub fn nullable_f64s(&mut self, name: &str, ty: &str, values: &[Option<f64>]) {
        self.header(name, ty, values.len());
        put_null_map(&mut self.body, values);
        let out = grow(&mut self.body, values.len() * 8);
        for (chunk, value) in out.chunks_exact_mut(8).zip(values) {
            chunk.copy_from_slice(&value.unwrap_or(0.0).to_le_bytes());
        }
    }
    /// `Nullable(Decimal(38, S))`: values are the decimals scaled by 10**S.
    pub fn nullable_decimal128s(&mut self, name: &str, ty: &str, values: &[Option<i128>]) {
        self.header(name, ty, values.len());
        put_null_map(&mut self.body, values);
        let out = grow(&mut self.body, values.len() * 16);
        for (chunk, value) in out.chunks_exact_mut(16).zip(values) {
            chunk.copy_from_slice(&value.unwrap_or(0).to_le_bytes());
        }
    }
    /// `Map(LowCardinality(String), String)`.
    pub fn maps(&mut self, name: &str, ty: &str, values: &MapColumn) {
        assert_eq!(ty, LC_MAP, "column {name:?}: maps() writes {LC_MAP}");
        self.header(name, ty, values.len());
        check_map(name, values);
        put_u64(&mut self.body, LC_VERSION);
        put_u64s(&mut self.body, &values.offsets);
        self.map_entries(values);
    }
    /// `Array(DateTime64(9))`: `offsets` cumulative per row.
    pub fn array_u64s(&mut self, name: &str, ty: &str, offsets: &[u64], values: &[u64]) {
        self.header(name, ty, offsets.len());
        check_offsets(name, offsets, values.len());
        put_u64s(&mut self.body, offsets);
        put_u64s(&mut self.body, values);
    }
    /// `Array(String)` or `Array(LowCardinality(String))`.
    pub fn array_strings(&mut self, name: &str, ty: &str, offsets: &[u64], values: &StrColumn) {
        self.header(name, ty, offsets.len());
        check_offsets(name, offsets, values.len());
        match ty {
            "Array(String)" => {
                put_u64s(&mut self.body, offsets);
                put_strings(&mut self.body, values);
            }
            LC_ARRAY => {
                put_u64(&mut self.body, LC_VERSION);
                put_u64s(&mut self.body, offsets);
                if !values.is_empty() {
                    put_low_cardinality(&mut self.body, &mut self.indices, values);
                }
            }
            _ => panic!("column {name:?}: array_strings() writes Array(String) or {LC_ARRAY}"),
        }
    }
    /// `Array(Map(LowCardinality(String), String))`.
    pub fn array_maps(&mut self, name: &str, ty: &str, offsets: &[u64], values: &MapColumn) {
        assert_eq!(
            ty, LC_MAP_ARRAY,
            "column {name:?}: array_maps() writes {LC_MAP_ARRAY}"
        );
        self.header(name, ty, offsets.len());
        check_offsets(name, offsets, values.len());
        check_map(name, values);
        put_u64(&mut self.body, LC_VERSION);
        put_u64s(&mut self.body, offsets);
        put_u64s(&mut self.body, &values.offsets);
        self.map_entries(values);
    }
    /// The block's bytes (the column count goes in front now that it is known).
    pub fn finish(self) -> Vec<u8> {
        let mut body = self.body;
        if self.columns < 0x80 {
            body[0] = self.columns as u8;
        } else {
            let mut count = Vec::with_capacity(10);
            put_varint(&mut count, self.columns as u64);
            body.splice(0..1, count);
        }
        body
    }

    /// A map column's keys (LowCardinality, when there are any) and values.
    fn map_entries(&mut self, values: &MapColumn) {
        if !values.keys.is_empty() {
            put_low_cardinality(&mut self.body, &mut self.indices, &values.keys);
        }
        put_strings(&mut self.body, &values.values);
    }
}

fn check_offsets(name: &str, offsets: &[u64], elements: usize) {
    let end = offsets.last().copied().unwrap_or(0);
    assert_eq!(
        end, elements as u64,
        "column {name:?}: offsets end at {end}, not at {elements}"
    );
}

fn check_map(name: &str, map: &MapColumn) {
    assert_eq!(
        map.keys.len(),
        map.values.len(),
        "column {name:?}: map keys and values differ"
    );
    check_offsets(name, &map.offsets, map.keys.len());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// `n` more zeroed bytes at the end of `out`, to be filled in.
fn grow(out: &mut Vec<u8>, n: usize) -> &mut [u8] {
    let start = out.len();
    out.resize(start + n, 0);
    &mut out[start..]
}

fn put_u64s(out: &mut Vec<u8>, values: &[u64]) {
    let dest = grow(out, values.len() * 8);
    for (chunk, value) in dest.chunks_exact_mut(8).zip(values) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
}

fn put_null_map<T>(out: &mut Vec<u8>, values: &[Option<T>]) {
    out.extend(values.iter().map(|v| u8::from(v.is_none())));
}

fn put_strings(out: &mut Vec<u8>, values: &StrColumn) {
    // Exact for strings shorter than 128 bytes, the usual case.
    out.reserve(values.data.len() + values.len());
    for value in values.iter() {
        put_bytes(out, value);
    }
}

/// The dictionary part of a LowCardinality(String) column holding `values` (not empty):
/// flags, first-seen dictionary, indices. `indices` is scratch space.
fn put_low_cardinality(out: &mut Vec<u8>, indices: &mut Vec<u32>, values: &StrColumn) {
    let count = values.len();
    assert!(count <= u32::MAX as usize, "LowCardinality column too long");
    indices.clear();
    indices.reserve(count);
    let mut slots: HashMap<Key<'_>, u32, SeededState> =
        HashMap::with_capacity_and_hasher(count.min(1024), SeededState::get());
    // The dictionary in first-seen order.
    let mut keys: Vec<&[u8]> = Vec::new();
    // Values mostly come in a repeating order (the attribute keys of one instrumentation,
    // one service's spans in a row), so the key that followed the previous value's key last
    // time is compared first, and the hash map is used only when that guess is wrong.
    // `follower[slot]` is that key's slot, or u32::MAX.
    let mut follower: Vec<u32> = Vec::new();
    let mut previous = u32::MAX;
    for value in values.iter() {
        let guess = if previous == u32::MAX {
            u32::MAX
        } else {
            follower[previous as usize]
        };
        let slot = if guess != u32::MAX && keys[guess as usize] == value {
            guess
        } else {
            let slot = match slots.entry(Key(value)) {
                Entry::Occupied(slot) => *slot.get(),
                Entry::Vacant(vacant) => {
                    let slot = keys.len() as u32;
                    keys.push(value);
                    follower.push(u32::MAX);
                    *vacant.insert(slot)
                }
            };
            if previous != u32::MAX {
                follower[previous as usize] = slot;
            }
            slot
        };
        indices.push(slot);
        previous = slot;
    }
    drop(slots);

    let (width, code) = match keys.len() {
        0..=0xFF => (1, 0),
        0x100..=0xFFFF => (2, 1),
        _ => (4, 2),
    };
    put_u64(out, LC_FLAGS | code);
    put_u64(out, keys.len() as u64);
    let key_bytes: usize = keys.iter().map(|key| key.len() + 1).sum();
    out.reserve(key_bytes + 8 + count * width);
    for key in &keys {
        put_bytes(out, key);
    }
    put_u64(out, count as u64);
    match width {
        1 => out.extend(indices.iter().map(|&i| i as u8)),
        2 => {
            let dest = grow(out, count * 2);
            for (chunk, &i) in dest.chunks_exact_mut(2).zip(indices.iter()) {
                chunk.copy_from_slice(&(i as u16).to_le_bytes());
            }
        }
        _ => {
            let dest = grow(out, count * 4);
            for (chunk, &i) in dest.chunks_exact_mut(4).zip(indices.iter()) {
                chunk.copy_from_slice(&i.to_le_bytes());
            }
        }
    }
}

/// A dictionary key: hashed in one call to the hasher (no length prefix, see `SeededHasher`).
#[derive(PartialEq, Eq)]
struct Key<'a>(&'a [u8]);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Hashing for dictionaries: keys are client-controlled (span attribute names), so the hash
/// is seeded per process like std's, but built from folded 64x64->128 multiplies (foldhash's
/// construction), several times faster than SipHash on short keys.
#[derive(Clone, Copy)]
struct SeededState {
    seeds: [u64; 3],
}

impl SeededState {
    fn get() -> Self {
        static SEEDS: OnceLock<[u64; 3]> = OnceLock::new();
        let seeds = *SEEDS.get_or_init(|| {
            let random = RandomState::new();
            [0u64, 1, 2].map(|i| random.hash_one(i) | 1)
        });
        SeededState { seeds }
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher {
            seeds: self.seeds,
            hash: self.seeds[0],
        }
    }
}

struct SeededHasher {
    seeds: [u64; 3],
    hash: u64,
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline(always)]
fn read8(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[inline(always)]
fn read4(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()))
}

const ARBITRARY: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344];

impl Hasher for SeededHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let [_, s1, s2] = self.seeds;
        let len = bytes.len();
        let mut hash = self.hash.wrapping_add(len as u64);
        // Every byte enters one (a, b) pair; overlapping tails are fine as the length is
        // mixed in.
        if len <= 16 {
            let (a, b) = if len >= 8 {
                (read8(bytes, 0), read8(bytes, len - 8))
            } else if len >= 4 {
                (read4(bytes, 0), read4(bytes, len - 4))
            } else if len > 0 {
                let bytes3 = u64::from(bytes[0])
                    | u64::from(bytes[len / 2]) << 8
                    | u64::from(bytes[len - 1]) << 16;
                (bytes3, 0)
            } else {
                (0, 0)
            };
            hash = fold(a ^ s1, b ^ hash);
        } else {
            let mut at = 0;
            while at + 16 < len {
                hash = fold(read8(bytes, at) ^ s1, read8(bytes, at + 8) ^ hash);
                hash = hash.wrapping_add(ARBITRARY[0]);
                at += 16;
            }
            hash = fold(read8(bytes, len - 16) ^ s2, read8(bytes, len - 8) ^ hash);
        }
        self.hash = hash;
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.hash ^ self.seeds[2], ARBITRARY[1])
    }
}

// ---- test-only Python entry points ---------------------------------------------------

fn str_column(values: &Bound<'_, PyList>) -> PyResult<StrColumn> {
    let mut column = StrColumn::with_capacity(values.len(), 0);
    for value in values.iter() {
        column.push(value.downcast::<PyString>()?.to_str()?.as_bytes());
    }
    Ok(column)
}

fn push_map(column: &mut MapColumn, value: &Bound<'_, PyAny>) -> PyResult<()> {
    for (key, value) in value.downcast::<PyDict>()?.iter() {
        column.push(
            key.downcast::<PyString>()?.to_str()?.as_bytes(),
            value.downcast::<PyString>()?.to_str()?.as_bytes(),
        );
    }
    column.end_row();
    Ok(())
}

fn map_column(values: &Bound<'_, PyList>) -> PyResult<MapColumn> {
    let mut column = MapColumn::default();
    for value in values.iter() {
        push_map(&mut column, &value)?;
    }
    Ok(column)
}

/// Array rows flattened: cumulative offsets and the elements as one list.
fn flatten<'py>(values: &Bound<'py, PyList>) -> PyResult<(Vec<u64>, Bound<'py, PyList>)> {
    let flat = PyList::empty(values.py());
    let mut offsets = Vec::with_capacity(values.len());
    for row in values.iter() {
        for item in row.downcast::<PyList>()?.iter() {
            flat.append(item)?;
        }
        offsets.push(flat.len() as u64);
    }
    Ok((offsets, flat))
}

/// `Decimal` (or int) values as integers scaled by 10**scale, exactly.
fn scaled_decimals(values: &Bound<'_, PyList>, scale: u32) -> PyResult<Vec<Option<i128>>> {
    let py = values.py();
    let unit = 10i128.pow(scale).into_pyobject(py)?;
    values
        .iter()
        .map(|value| {
            if value.is_none() {
                return Ok(None);
            }
            let (numerator, denominator): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                value.call_method0("as_integer_ratio")?.extract()?;
            let (scaled, rest): (i128, i128) =
                numerator.mul(&unit)?.divmod(denominator)?.extract()?;
            if rest != 0 {
                return Err(PyValueError::new_err(format!(
                    "{value} has more than {scale} decimals"
                )));
            }
            Ok(Some(scaled))
        })
        .collect()
}

fn decimal_scale(ty: &str) -> Option<u32> {
    ty.strip_prefix("Nullable(Decimal(38, ")?
        .strip_suffix("))")?
        .parse()
        .ok()
}

/// Python column values converted for `Block`, by type name.
enum Converted {
    Strings(StrColumn),
    U64s(Vec<u64>),
    Bools(Vec<bool>),
    F64s(Vec<Option<f64>>),
    Decimals(Vec<Option<i128>>),
    Maps(MapColumn),
    ArrayU64s(Vec<u64>, Vec<u64>),
    ArrayStrings(Vec<u64>, StrColumn),
    ArrayMaps(Vec<u64>, MapColumn),
}

impl Converted {
    fn new(ty: &str, values: &Bound<'_, PyList>) -> PyResult<Self> {
        Ok(match ty {
            "String" | LC => Converted::Strings(str_column(values)?),
            "UInt64" | "DateTime64(9)" => Converted::U64s(values.extract()?),
            "Bool" => Converted::Bools(values.extract()?),
            "Nullable(Float64)" => Converted::F64s(values.extract()?),
            LC_MAP => Converted::Maps(map_column(values)?),
            "Array(DateTime64(9))" => {
                let (offsets, flat) = flatten(values)?;
                Converted::ArrayU64s(offsets, flat.extract()?)
            }
            "Array(String)" | LC_ARRAY => {
                let (offsets, flat) = flatten(values)?;
                Converted::ArrayStrings(offsets, str_column(&flat)?)
            }
            LC_MAP_ARRAY => {
                let (offsets, flat) = flatten(values)?;
                Converted::ArrayMaps(offsets, map_column(&flat)?)
            }
            _ => match decimal_scale(ty) {
                Some(scale) => Converted::Decimals(scaled_decimals(values, scale)?),
                None => return Err(PyValueError::new_err(format!("no Block writer for {ty}"))),
            },
        })
    }

    fn write(&self, block: &mut Block, name: &str, ty: &str) {
        match self {
            Converted::Strings(v) => block.strings(name, ty, v),
            Converted::U64s(v) => block.u64s(name, ty, v),
            Converted::Bools(v) => block.bools(name, ty, v),
            Converted::F64s(v) => block.nullable_f64s(name, ty, v),
            Converted::Decimals(v) => block.nullable_decimal128s(name, ty, v),
            Converted::Maps(v) => block.maps(name, ty, v),
            Converted::ArrayU64s(o, v) => block.array_u64s(name, ty, o, v),
            Converted::ArrayStrings(o, v) => block.array_strings(name, ty, o, v),
            Converted::ArrayMaps(o, v) => block.array_maps(name, ty, o, v),
        }
    }
}

/// The columns converted, after checking the shape (a misuse raises, never panics).
fn convert_all(
    names: &[String],
    types: &[String],
    columns: &[Bound<'_, PyList>],
    rows: usize,
) -> PyResult<Vec<Converted>> {
    if names.len() != types.len() || names.len() != columns.len() {
        return Err(PyValueError::new_err(
            "names, types and columns differ in length",
        ));
    }
    let mut converted = Vec::with_capacity(columns.len());
    for ((name, ty), values) in names.iter().zip(types).zip(columns) {
        if values.len() != rows {
            return Err(PyValueError::new_err(format!(
                "column {name:?} is not {rows} rows"
            )));
        }
        converted.push(Converted::new(ty, values)?);
    }
    Ok(converted)
}

fn encode(names: &[String], types: &[String], columns: &[Converted], rows: usize) -> Vec<u8> {
    let mut block = Block::new(rows);
    for ((name, ty), column) in names.iter().zip(types).zip(columns) {
        column.write(&mut block, name, ty);
    }
    block.finish()
}

/// One Native block of Python column values through `Block` (for byte-identity tests).
#[pyfunction]
fn encode_block_for_test<'py>(
    py: Python<'py>,
    names: Vec<String>,
    types: Vec<String>,
    columns: Vec<Bound<'py, PyList>>,
    rows: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let converted = convert_all(&names, &types, &columns, rows)?;
    Ok(PyBytes::new(py, &encode(&names, &types, &converted, rows)))
}

/// Seconds per `Block` encode of already converted columns, best of `repeats` (benchmarks).
#[pyfunction]
fn time_block_for_test(
    names: Vec<String>,
    types: Vec<String>,
    columns: Vec<Bound<'_, PyList>>,
    rows: usize,
    repeats: usize,
) -> PyResult<f64> {
    let converted = convert_all(&names, &types, &columns, rows)?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        let block = std::hint::black_box(encode(&names, &types, &converted, rows));
        best = best.min(start.elapsed().as_secs_f64());
        drop(block);
    }
    Ok(best)
}

/// Test-only Python entry points (byte-identity tests against `_ch_core`).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_block_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(time_block_for_test, m)?)?;
    Ok(())
}
