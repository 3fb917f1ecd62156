//! Attribute values as strings, the way the collector's ClickHouse exporter writes them
//! (`pcommon.Value.AsString`), for the common shapes; `streams.normalize` is the reference.
//!
//! Handled here: a `KeyValue` with its key and one value of type string, bool, int, double
//! or bytes, each field once. Anything else (arrays, maps, repeated or merged fields, an
//! empty value) is `Shape::Other`: the caller asks the Python reference for it.

use crate::wire::{utf8, Reader, Result, Value, FIXED64, LEN, VARINT};

pub enum Shape<'a> {
    /// key, value text (borrowed when it is a string value)
    Str(&'a str, &'a str),
    Owned(&'a str, String),
    Other,
}

type Field<'a> = (u32, u8, Value<'a>);
/// A `KeyValue`'s key, and its value's bytes if it has one.
type KeyAndValue<'a> = (&'a str, Option<&'a [u8]>);

/// A `KeyValue`'s key and value bytes, each field at most once; None for any other shape.
fn key_value_fields(raw: &[u8]) -> Result<Option<KeyAndValue<'_>>> {
    let mut reader = Reader::new(raw);
    let (mut key, mut value): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    while !reader.done() {
        match reader.field()? {
            (1, LEN, Value::Bytes(bytes)) if key.is_none() => key = Some(bytes),
            (2, LEN, Value::Bytes(bytes)) if value.is_none() => value = Some(bytes),
            _ => return Ok(None),
        }
    }
    Ok(Some((utf8(key.unwrap_or(b""))?, value)))
}

/// The one field of an `AnyValue`: Ok(None) when it is empty, Err(()) inside when it holds
/// more than one field (merged or repeated: the Python reference decides those).
fn only_field(raw: &[u8]) -> Result<std::result::Result<Option<Field<'_>>, ()>> {
    let mut reader = Reader::new(raw);
    if reader.done() {
        return Ok(Ok(None));
    }
    let field = reader.field()?;
    Ok(if reader.done() {
        Ok(Some(field))
    } else {
        Err(())
    })
}

/// Decode one serialized `KeyValue`.
pub fn key_value(raw: &[u8]) -> Result<Shape<'_>> {
    let Some((key, Some(value))) = key_value_fields(raw)? else {
        return Ok(Shape::Other);
    };
    let Ok(Some(field)) = only_field(value)? else {
        return Ok(Shape::Other);
    };
    Ok(match field {
        (1, LEN, Value::Bytes(text)) => Shape::Str(key, utf8(text)?),
        (2, VARINT, Value::Int(flag)) => Shape::Str(key, if flag != 0 { "true" } else { "false" }),
        (3, VARINT, Value::Int(number)) => Shape::Owned(key, (number as i64).to_string()),
        (4, FIXED64, Value::Int(bits)) => match go_float(f64::from_bits(bits)) {
            Some(text) => Shape::Owned(key, text),
            None => Shape::Other,
        },
        (7, LEN, Value::Bytes(bytes)) => Shape::Owned(key, base64(bytes)),
        (5 | 6, LEN, Value::Bytes(_)) => {
            let mut json = Vec::with_capacity(value.len() + 8);
            match any_json(value, &mut json, 0)? {
                Json::Written => Shape::Owned(key, go_html_escape(json)),
                Json::Unencodable => Shape::Owned(key, String::new()),
                Json::Other => Shape::Other,
            }
        }
        _ => Shape::Other,
    })
}

/// How writing a value as JSON went.
enum Json {
    Written,
    /// NaN or an infinity inside: Go's encoder refuses, the collector stores "".
    Unencodable,
    /// A shape left to the Python reference (repeated or merged fields, deep nesting).
    Other,
}

const MAX_DEPTH: usize = 32;

/// An AnyValue as JSON the way `streams.normalize._go_json(_raw_any(...))` writes it
/// (before the HTML escapes): orjson's compact form with sorted keys.
fn any_json(raw: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<Json> {
    if depth > MAX_DEPTH {
        return Ok(Json::Other);
    }
    let field = match only_field(raw)? {
        Ok(Some(field)) => field,
        Ok(None) => {
            out.extend_from_slice(b"null");
            return Ok(Json::Written);
        }
        Err(()) => return Ok(Json::Other),
    };
    match field {
        (1, LEN, Value::Bytes(text)) => json_string(utf8(text)?, out),
        (2, VARINT, Value::Int(flag)) => {
            out.extend_from_slice(if flag != 0 { b"true" } else { b"false" })
        }
        (3, VARINT, Value::Int(number)) => {
            out.extend_from_slice((number as i64).to_string().as_bytes())
        }
        (4, FIXED64, Value::Int(bits)) => match go_float(f64::from_bits(bits)) {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            None => return Ok(Json::Unencodable),
        },
        (7, LEN, Value::Bytes(bytes)) => json_string(&base64(bytes), out),
        (5, LEN, Value::Bytes(array)) => {
            out.push(b'[');
            let mut items = Reader::new(array);
            let mut first = true;
            while !items.done() {
                let (1, LEN, Value::Bytes(item)) = items.field()? else {
                    return Ok(Json::Other);
                };
                if !first {
                    out.push(b',');
                }
                first = false;
                match any_json(item, out, depth + 1)? {
                    Json::Written => {}
                    other => return Ok(other),
                }
            }
            out.push(b']');
        }
        (6, LEN, Value::Bytes(list)) => {
            // a Python dict: the last value of a repeated key wins; keys sorted by bytes
            let mut entries: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut items = Reader::new(list);
            while !items.done() {
                let (1, LEN, Value::Bytes(kv)) = items.field()? else {
                    return Ok(Json::Other);
                };
                let Some((key, value)) = key_value_fields(kv)? else {
                    return Ok(Json::Other);
                };
                let mut text = Vec::new();
                match any_json(value.unwrap_or(b""), &mut text, depth + 1)? {
                    Json::Written => {}
                    other => return Ok(other),
                }
                match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = text,
                    None => entries.push((key, text)),
                }
            }
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, text)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(key, out);
                out.push(b':');
                out.extend_from_slice(text);
            }
            out.push(b'}');
        }
        _ => return Ok(Json::Other),
    }
    Ok(Json::Written)
}

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as \b \t
/// \n \f \r or \u00XX, everything else (DEL, non-ASCII) as is.
fn json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1F => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 15) as usize]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// Go's encoding/json HTML escapes over the whole text: <, >, &, U+2028 and U+2029.
fn go_html_escape(json: Vec<u8>) -> String {
    let text = String::from_utf8(json).expect("JSON of valid UTF-8");
    if !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` switching to exponent form below 1e-6 and
/// from 1e21 (pcommon's float64AsString). None for NaN and infinities (the reference says).
pub fn go_float(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        // Rust's `{:e}` writes the shortest digits like Python's repr: "1.5e-7", "1e21".
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').expect("exponent form");
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        let padded = if sign == '+' && digits.len() < 2 {
            format!("0{digits}")
        } else {
            digits.to_string()
        };
        return Some(format!("{mantissa}e{sign}{padded}"));
    }
    // Rust's Display writes the shortest round-trip digits without an exponent.
    Some(format!("{value}"))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(BASE64[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        let cases = [
            (1.0, "1"),
            (0.7, "0.7"),
            (-0.0, "-0"),
            (1e16, "10000000000000000"),
            (1.5e-5, "0.000015"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (1e21, "1e+21"),
            (1.25e300, "1.25e+300"),
        ];
        for (value, expected) in cases {
            assert_eq!(go_float(value).unwrap(), expected, "{value}");
        }
        assert!(go_float(f64::NAN).is_none());
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
