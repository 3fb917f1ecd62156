//! Protocol Buffers wire format: just enough to walk OTLP trace messages field by field.
//!
//! Semantics follow what upb (the Python protobuf runtime) does for these messages: a field
//! whose wire type does not match its declaration is an unknown field and is skipped, groups
//! are skipped, truncated input is an error.

pub type Result<T> = std::result::Result<T, String>;

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const START_GROUP: u8 = 3;
pub const END_GROUP: u8 = 4;
pub const FIXED32: u8 = 5;

/// One field: its number, wire type and payload (varint value, fixed bits, or bytes).
pub enum Value<'a> {
    Int(u64),
    Bytes(&'a [u8]),
    Other,
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or("DecodeError: truncated varint")?;
            self.pos += 1;
            if shift < 64 {
                value |= u64::from(byte & 0x7F) << shift;
            }
            if byte < 0x80 {
                return Ok(value);
            }
            shift += 7;
            if shift >= 70 {
                return Err("DecodeError: malformed varint".into());
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or("DecodeError: length overflow")?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or("DecodeError: truncated field")?;
        self.pos = end;
        Ok(out)
    }

    /// The next field as (number, wire type, value); groups and fixed32 come back as Other.
    pub fn field(&mut self) -> Result<(u32, u8, Value<'a>)> {
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        let wire = (key & 7) as u8;
        if number == 0 {
            return Err("DecodeError: field number 0".into());
        }
        let value = match wire {
            VARINT => Value::Int(self.varint()?),
            FIXED64 => {
                let raw = self.take(8)?;
                Value::Int(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
            }
            LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| "DecodeError: length overflow")?;
                Value::Bytes(self.take(n)?)
            }
            FIXED32 => {
                self.take(4)?;
                Value::Other
            }
            START_GROUP => {
                self.skip_group(number)?;
                Value::Other
            }
            _ => return Err(format!("DecodeError: invalid wire type {wire}")),
        };
        Ok((number, wire, value))
    }

    fn skip_group(&mut self, number: u32) -> Result<()> {
        loop {
            if self.done() {
                return Err("DecodeError: unterminated group".into());
            }
            let key = self.varint()?;
            let (inner, wire) = ((key >> 3) as u32, (key & 7) as u8);
            match wire {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                LEN => {
                    let n = usize::try_from(self.varint()?)
                        .map_err(|_| "DecodeError: length overflow")?;
                    self.take(n)?;
                }
                FIXED32 => {
                    self.take(4)?;
                }
                START_GROUP => self.skip_group(inner)?,
                END_GROUP if inner == number => return Ok(()),
                _ => return Err("DecodeError: malformed group".into()),
            }
        }
    }
}

/// A `string` field's bytes as UTF-8 (upb rejects invalid UTF-8 in proto3 strings).
pub fn utf8(raw: &[u8]) -> Result<&str> {
    std::str::from_utf8(raw).map_err(|_| "DecodeError: invalid UTF-8 in a string field".to_string())
}
