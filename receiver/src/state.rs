//! The replicated state machine and walship's built-in key-value map.
//!
//! Every node applies the same committed records in LSN order, so every node's
//! state is a prefix of the same history (consistent prefix). Record payloads of
//! the application kinds are laid out here:
//!
//! | kind | name | payload |
//! |---|---|---|
//! | 16 | `PUT` | `u32` big-endian key length, key bytes, value bytes |
//! | 17 | `DELETE` | key bytes |
//! | 18 | `LOG` | opaque bytes (`POST /v1/log`); the map ignores it |
//!
//! Kinds below 16 belong to the WAL (padding, term start) and are ignored.

use std::collections::HashMap;

use bytes::Bytes;

/// Record kind of a key-value put.
pub const KIND_PUT: u8 = 16;
/// Record kind of a key-value delete.
pub const KIND_DELETE: u8 = 17;
/// Record kind of an opaque log record.
pub const KIND_LOG: u8 = 18;

/// Largest key accepted by the encoder (and by the API).
pub const MAX_KEY_BYTES: usize = 4096;

/// One committed record handed to a state machine.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// LSN of the record's first byte.
    pub lsn: u64,
    /// LSN of the first byte after the record (what a write returns).
    pub end: u64,
    /// Term of the leader that wrote it.
    pub term: u64,
    /// Record kind.
    pub kind: u8,
    /// Record payload.
    pub payload: &'a [u8],
}

/// A deterministic state machine fed committed records in LSN order.
///
/// Implementations must be deterministic: the same records in the same order
/// give the same state on every node.
pub trait StateMachine: Send + Sync + 'static {
    /// Apply one committed record. Called exactly once per record, in LSN order.
    fn apply(&mut self, record: &Applied<'_>);
    /// End LSN of the last record applied (0 before any).
    fn applied_lsn(&self) -> u64;
}

/// A malformed application record payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// A PUT payload shorter than its key length says.
    #[error("put record payload of {len} bytes is too short for its key length {key_len}")]
    Truncated {
        /// Payload length.
        len: usize,
        /// Declared key length.
        key_len: usize,
    },
}

/// Encode a PUT payload.
pub fn encode_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + key.len() + value.len());
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

/// Decode a PUT payload into (key, value).
pub fn decode_put(payload: &[u8]) -> Result<(&[u8], &[u8]), PayloadError> {
    if payload.len() < 4 {
        return Err(PayloadError::Truncated {
            len: payload.len(),
            key_len: 0,
        });
    }
    let key_len = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    if payload.len() - 4 < key_len {
        return Err(PayloadError::Truncated {
            len: payload.len(),
            key_len,
        });
    }
    Ok((&payload[4..4 + key_len], &payload[4 + key_len..]))
}

/// The built-in key-value map.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: HashMap<Bytes, Bytes>,
    applied_lsn: u64,
    applied_term: u64,
    records_applied: u64,
    malformed: u64,
}

impl KvStore {
    /// An empty map.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is present.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A map restored from a checkpoint: `map` as of `applied_lsn` (the record
    /// ending there has term `applied_term`), built by `records_applied` records
    /// (see [`crate::checkpoint`]).
    pub fn restore(
        map: HashMap<Bytes, Bytes>,
        applied_lsn: u64,
        applied_term: u64,
        records_applied: u64,
    ) -> KvStore {
        KvStore {
            map,
            applied_lsn,
            applied_term,
            records_applied,
            malformed: 0,
        }
    }

    /// Term of the last record applied (0 before any): what a checkpoint of this
    /// state records as its term.
    pub fn applied_term(&self) -> u64 {
        self.applied_term
    }

    /// Records applied to build this state (including those counted in the
    /// checkpoint it was restored from, if any).
    pub fn records_applied(&self) -> u64 {
        self.records_applied
    }

    /// Application records whose payload could not be decoded (never expected:
    /// payloads are checked by CRC and built by the leader's encoder).
    pub fn malformed_records(&self) -> u64 {
        self.malformed
    }

    /// An order-independent digest of the contents: two maps with the same
    /// key/value pairs have the same digest on every node.
    pub fn digest(&self) -> u64 {
        let mut keys: Vec<&Bytes> = self.map.keys().collect();
        keys.sort();
        let mut h = crc32fast::Hasher::new();
        let mut h2 = crc32fast::Hasher::new_with_initial(0x5741_4C53);
        for k in keys {
            let v = &self.map[k];
            for hh in [&mut h, &mut h2] {
                hh.update(&(k.len() as u32).to_be_bytes());
                hh.update(k);
                hh.update(&(v.len() as u32).to_be_bytes());
                hh.update(v);
            }
        }
        ((h.finalize() as u64) << 32) | h2.finalize() as u64
    }

    /// Iterate over all pairs (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.map.iter()
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, r: &Applied<'_>) {
        debug_assert!(r.end > self.applied_lsn || self.applied_lsn == 0);
        match r.kind {
            KIND_PUT => match decode_put(r.payload) {
                Ok((k, v)) => {
                    self.map
                        .insert(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
                }
                Err(e) => {
                    self.malformed += 1;
                    tracing::error!(lsn = r.lsn, error = %e, "skipping a malformed put record; the record passed its CRC, so the writer encoded it wrongly");
                }
            },
            KIND_DELETE => {
                self.map.remove(r.payload);
            }
            _ => {}
        }
        self.records_applied += 1;
        self.applied_lsn = r.end;
        self.applied_term = r.term;
    }

    fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(lsn: u64, kind: u8, payload: &'a [u8]) -> Applied<'a> {
        Applied {
            lsn,
            end: lsn + 40,
            term: 1,
            kind,
            payload,
        }
    }

    #[test]
    fn put_delete_get() {
        let mut kv = KvStore::new();
        let p = encode_put(b"k", b"v1");
        kv.apply(&rec(0, KIND_PUT, &p));
        assert_eq!(kv.get(b"k").as_deref(), Some(&b"v1"[..]));
        assert_eq!(kv.applied_lsn(), 40);
        kv.apply(&rec(40, KIND_DELETE, b"k"));
        assert_eq!(kv.get(b"k"), None);
        kv.apply(&rec(80, KIND_LOG, b"anything"));
        assert_eq!(kv.applied_lsn(), 120);
        assert_eq!(kv.records_applied(), 3);
    }

    #[test]
    fn put_codec_round_trip_and_errors() {
        let p = encode_put(b"key", b"");
        assert_eq!(decode_put(&p).unwrap(), (&b"key"[..], &b""[..]));
        assert!(decode_put(&[0, 0, 0]).is_err());
        assert!(decode_put(&[0, 0, 0, 9, 1]).is_err());
    }

    #[test]
    fn digest_is_order_independent_and_sensitive() {
        let mut a = KvStore::new();
        let mut b = KvStore::new();
        a.apply(&rec(0, KIND_PUT, &encode_put(b"x", b"1")));
        a.apply(&rec(40, KIND_PUT, &encode_put(b"y", b"2")));
        b.apply(&rec(0, KIND_PUT, &encode_put(b"y", b"2")));
        b.apply(&rec(40, KIND_PUT, &encode_put(b"x", b"1")));
        assert_eq!(a.digest(), b.digest());
        b.apply(&rec(80, KIND_PUT, &encode_put(b"x", b"3")));
        assert_ne!(a.digest(), b.digest());
    }
}
