//! Bounded field readers and writers shared by every message body.
//!
//! Invariant (enforced here, relied on by `message.rs`): no read allocates or
//! slices from a length that has not been checked against the bytes remaining
//! in the frame body. Byte fields are zero-copy slices of the frame (`Bytes`).

use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtoError, Result};

/// Reads big-endian fields from one frame body; every error names the message
/// and field.
pub(crate) struct Reader {
    buf: Bytes,
    message: &'static str,
}

impl Reader {
    pub(crate) fn new(body: Bytes, message: &'static str) -> Self {
        Reader { buf: body, message }
    }

    fn err(&self, field: &'static str, problem: &'static str) -> ProtoError {
        ProtoError::malformed(self.message, field, problem)
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes> {
        if self.buf.len() < n {
            return Err(self.err(field, "truncated"));
        }
        Ok(self.buf.split_to(n))
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(BigEndian::read_u16(&self.take(2, field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(BigEndian::read_u32(&self.take(4, field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(BigEndian::read_u64(&self.take(8, field)?))
    }

    pub(crate) fn array4(&mut self, field: &'static str) -> Result<[u8; 4]> {
        let b = self.take(4, field)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// A `u8` that must be 0 or 1.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err(field, "flag is neither 0 nor 1")),
        }
    }

    /// `u32` length + that many bytes; the length is checked against the rest
    /// of the body before slicing. Zero-copy.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Bytes> {
        let len = self.u32(field)? as usize;
        if len > self.buf.len() {
            return Err(self.err(field, "length exceeds frame"));
        }
        Ok(self.buf.split_to(len))
    }

    /// As [`Reader::bytes`], and the data must be UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String> {
        let b = self.bytes(field)?;
        match std::str::from_utf8(&b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err(field, "invalid utf-8")),
        }
    }

    /// Presence flag (`u8` 0/1), then a string if present.
    pub(crate) fn opt_string(&mut self, field: &'static str) -> Result<Option<String>> {
        if self.bool(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Presence flag (`u8` 0/1), then length-prefixed bytes if present.
    pub(crate) fn opt_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>> {
        if self.bool(field)? {
            self.bytes(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Everything left in the body (for messages whose last field runs to the
    /// end of the frame). Zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Fails if bytes are left over: every layout is exact.
    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("end of body", "trailing bytes"))
        }
    }
}

/// Encoded size of a length-prefixed byte/string field.
pub(crate) fn bytes_len(b: &[u8]) -> usize {
    4 + b.len()
}

/// Encoded size of an optional length-prefixed field.
pub(crate) fn opt_len<T: AsRef<[u8]>>(b: &Option<T>) -> usize {
    1 + b.as_ref().map_or(0, |b| bytes_len(b.as_ref()))
}

/// Writes `u32` length + data. The caller has checked (via the frame-size
/// check on the whole message) that the length fits in a `u32`.
pub(crate) fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u32(b.len() as u32);
    dst.put_slice(b);
}

/// Writes a presence flag and, if present, `u32` length + data.
pub(crate) fn put_opt<T: AsRef<[u8]>>(dst: &mut BytesMut, b: &Option<T>) {
    match b {
        Some(b) => {
            dst.put_u8(1);
            put_bytes(dst, b.as_ref());
        }
        None => dst.put_u8(0),
    }
}
