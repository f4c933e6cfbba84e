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

use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// [`StateMachine::apply`] for a record read from this node's WAL, whose payload
    /// is also given as a zero-copy share of the WAL's mapping (`shared.bytes` holds
    /// the same bytes as `record.payload`). An implementation may keep slices of it
    /// instead of copying; the default copies (calls `apply`).
    fn apply_shared(&mut self, record: &Applied<'_>, shared: &wal::SharedPayload) {
        let _ = shared;
        self.apply(record);
    }
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

/// A value in the map, and where its bytes live.
#[derive(Debug, Clone)]
pub(crate) struct Value {
    bytes: Bytes,
    /// `Some(start)`: a share of the mapping of the WAL segment starting at
    /// `start` (applied from this node's WAL without a copy); `None`: its own
    /// allocation (loaded from a checkpoint, applied from a copy, or released).
    segment: Option<u64>,
}

impl Value {
    /// A value in its own allocation.
    pub(crate) fn owned(bytes: Bytes) -> Value {
        Value {
            bytes,
            segment: None,
        }
    }
}

/// The map type a checkpoint is loaded into.
pub(crate) type ValueMap = HashMap<Bytes, Value>;

/// What [`KvStore::release_segments_below`] did and left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// Values copied out of sparse removed segments into their own allocations.
    pub copied_values: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Removed segments still held because they are at least half live values.
    pub pinned_segments: u64,
    /// Live value bytes in those segments.
    pub pinned_live_bytes: u64,
}

/// The built-in key-value map.
///
/// # Where values live
///
/// A put applied from this node's WAL ([`StateMachine::apply_shared`]) keeps its
/// value as a share of the WAL segment's mapping: no copy, no fresh memory (the
/// bytes are the segment's page cache, clean once flushed, so the kernel may evict
/// and re-read them). A share keeps its segment file's disk blocks allocated after
/// the WAL removes the segment (unlinked, like an open file), so the map counts the
/// live value bytes of every segment it shares and the node calls
/// [`KvStore::release_segments_below`] when retention removes segments: a removed
/// segment less than half live has its remaining values copied out and is let go;
/// one at least half live stays held (the disk it holds is at most twice the live
/// values in it) until overwrites and deletes bring it under half.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: ValueMap,
    /// Live value bytes per shared WAL segment (by start LSN); no zero entries.
    segment_live: BTreeMap<u64, u64>,
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
        self.map.get(key).map(|v| v.bytes.clone())
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
    pub(crate) fn restore(
        map: ValueMap,
        applied_lsn: u64,
        applied_term: u64,
        records_applied: u64,
    ) -> KvStore {
        debug_assert!(map.values().all(|v| v.segment.is_none()));
        KvStore {
            map,
            segment_live: BTreeMap::new(),
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
            let v = &self.map[k].bytes;
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
        self.map.iter().map(|(k, v)| (k, &v.bytes))
    }

    /// Live value bytes held in shares of each WAL segment, by segment start LSN
    /// (only segments holding at least one non-empty value).
    pub fn shared_segments(&self) -> &BTreeMap<u64, u64> {
        &self.segment_live
    }

    /// Let go of WAL segments below `first` (removed from the WAL) that are less
    /// than half live: each value still sharing one is copied into its own
    /// allocation, so the segment's mapping, and its unlinked file's disk blocks,
    /// are freed once nothing else holds them. Removed segments at least half live
    /// (`2 * live >= segment_size`) stay shared and are reported as pinned. Values
    /// and the digest are unchanged. One pass over the map when anything is
    /// copied; none otherwise.
    pub fn release_segments_below(&mut self, first: u64, segment_size: u64) -> Released {
        let mut out = Released::default();
        let mut sparse = HashSet::new();
        for (&seg, &live) in self.segment_live.range(..first) {
            if live.saturating_mul(2) < segment_size {
                sparse.insert(seg);
            } else {
                out.pinned_segments += 1;
                out.pinned_live_bytes += live;
            }
        }
        if sparse.is_empty() {
            return out;
        }
        for v in self.map.values_mut() {
            if let Some(seg) = v.segment {
                if sparse.contains(&seg) {
                    out.copied_values += 1;
                    out.copied_bytes += v.bytes.len() as u64;
                    *v = Value::owned(Bytes::copy_from_slice(&v.bytes));
                }
            }
        }
        for seg in sparse {
            self.segment_live.remove(&seg);
        }
        out
    }

    /// Insert `key`, keeping the live-byte count of shared segments exact.
    fn insert(&mut self, key: &[u8], value: Value) {
        if let Some(seg) = value.segment {
            *self.segment_live.entry(seg).or_insert(0) += value.bytes.len() as u64;
        }
        if let Some(old) = self.map.insert(Bytes::copy_from_slice(key), value) {
            self.unaccount(&old);
        }
    }

    fn unaccount(&mut self, old: &Value) {
        if let Some(seg) = old.segment {
            if let Some(live) = self.segment_live.get_mut(&seg) {
                *live -= old.bytes.len() as u64;
                if *live == 0 {
                    self.segment_live.remove(&seg);
                }
            }
        }
    }

    fn apply_with(&mut self, r: &Applied<'_>, shared: Option<&wal::SharedPayload>) {
        debug_assert!(r.end > self.applied_lsn || self.applied_lsn == 0);
        match r.kind {
            KIND_PUT => match decode_put(r.payload) {
                Ok((k, v)) => {
                    let value = match shared {
                        // An empty value holds no share (Bytes::slice of nothing).
                        Some(sh) if !v.is_empty() => {
                            debug_assert_eq!(&sh.bytes[..], r.payload);
                            let from = r.payload.len() - v.len();
                            Value {
                                bytes: sh.bytes.slice(from..),
                                segment: Some(sh.segment.0),
                            }
                        }
                        _ => Value::owned(Bytes::copy_from_slice(v)),
                    };
                    self.insert(k, value);
                }
                Err(e) => {
                    self.malformed += 1;
                    tracing::error!(lsn = r.lsn, error = %e, "skipping a malformed put record; the record passed its CRC, so the writer encoded it wrongly");
                }
            },
            KIND_DELETE => {
                if let Some(old) = self.map.remove(r.payload) {
                    self.unaccount(&old);
                }
            }
            _ => {}
        }
        self.records_applied += 1;
        self.applied_lsn = r.end;
        self.applied_term = r.term;
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, r: &Applied<'_>) {
        self.apply_with(r, None);
    }

    fn apply_shared(&mut self, r: &Applied<'_>, shared: &wal::SharedPayload) {
        self.apply_with(r, Some(shared));
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

    /// A shared payload of `payload` in "segment" `seg`, whose owner is counted by
    /// `owner` (so a test can see when the last share is let go).
    fn shared(payload: &[u8], seg: u64, owner: &std::sync::Arc<()>) -> wal::SharedPayload {
        struct Owned(Vec<u8>, #[allow(dead_code)] std::sync::Arc<()>);
        impl AsRef<[u8]> for Owned {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        wal::SharedPayload {
            bytes: Bytes::from_owner(Owned(payload.to_vec(), owner.clone())),
            segment: wal::Lsn(seg),
        }
    }

    #[test]
    fn shared_values_are_kept_without_a_copy_and_counted_per_segment() {
        let owner = std::sync::Arc::new(());
        let mut kv = KvStore::new();
        let p = encode_put(b"k", &[7u8; 100]);
        let sh = shared(&p, 0, &owner);
        kv.apply_shared(&rec(0, KIND_PUT, &p), &sh);
        let v = kv.get(b"k").unwrap();
        assert_eq!(&v[..], &[7u8; 100][..]);
        let base = sh.bytes.as_ptr() as usize;
        assert_eq!(
            v.as_ptr() as usize,
            base + 5,
            "the value is a slice of the payload"
        );
        assert_eq!(kv.shared_segments().get(&0), Some(&100));
        // An empty value holds no share.
        let p2 = encode_put(b"e", b"");
        kv.apply_shared(&rec(40, KIND_PUT, &p2), &shared(&p2, 64, &owner));
        assert_eq!(kv.shared_segments().get(&64), None);
        // Overwrite and delete take the bytes off their segment.
        let p3 = encode_put(b"k", &[8u8; 30]);
        kv.apply_shared(&rec(80, KIND_PUT, &p3), &shared(&p3, 64, &owner));
        assert_eq!(kv.shared_segments().get(&0), None);
        assert_eq!(kv.shared_segments().get(&64), Some(&30));
        kv.apply(&rec(120, KIND_DELETE, b"k"));
        assert!(kv.shared_segments().is_empty());
        drop((sh, v));
        assert_eq!(std::sync::Arc::strong_count(&owner), 1, "no share is left");
    }

    #[test]
    fn release_copies_sparse_removed_segments_out_and_keeps_half_live_ones() {
        let owner_a = std::sync::Arc::new(());
        let owner_b = std::sync::Arc::new(());
        let owner_c = std::sync::Arc::new(());
        let seg_size = 1000;
        let mut kv = KvStore::new();
        let mut lsn = 0;
        let mut put =
            |kv: &mut KvStore, key: &[u8], len: usize, seg: u64, o: &std::sync::Arc<()>| {
                let p = encode_put(key, &vec![key[0]; len]);
                kv.apply_shared(&rec(lsn, KIND_PUT, &p), &shared(&p, seg, o));
                lsn += 40;
            };
        put(&mut kv, b"a", 100, 0, &owner_a); // segment 0: 10 % live
        put(&mut kv, b"b", 600, 1000, &owner_b); // segment 1000: 60 % live
        put(&mut kv, b"c", 100, 2000, &owner_c); // segment 2000: still in the WAL
        let digest = kv.digest();
        let r = kv.release_segments_below(2000, seg_size);
        assert_eq!(
            r,
            Released {
                copied_values: 1,
                copied_bytes: 100,
                pinned_segments: 1,
                pinned_live_bytes: 600,
            }
        );
        assert_eq!(kv.digest(), digest, "values unchanged");
        assert_eq!(
            std::sync::Arc::strong_count(&owner_a),
            1,
            "segment 0 let go"
        );
        assert_eq!(
            std::sync::Arc::strong_count(&owner_b),
            2,
            "segment 1000 held"
        );
        assert_eq!(
            kv.shared_segments().keys().copied().collect::<Vec<_>>(),
            vec![1000, 2000]
        );
        // Overwriting most of segment 1000 makes it sparse: the next release lets it go.
        put(&mut kv, b"b", 10, 2000, &owner_c);
        put(&mut kv, b"d", 450, 1000, &owner_b);
        let r = kv.release_segments_below(2000, seg_size);
        assert_eq!(
            (r.copied_values, r.copied_bytes, r.pinned_segments),
            (1, 450, 0)
        );
        assert_eq!(
            std::sync::Arc::strong_count(&owner_b),
            1,
            "segment 1000 let go"
        );
        assert_eq!(&kv.get(b"d").unwrap()[..], &[b'd'; 450][..]);
        assert_eq!(&kv.get(b"b").unwrap()[..], &[b'b'; 10][..]);
    }

    proptest::proptest! {
        /// Applying from shares or from copies builds the same map, and the live
        /// count of every shared segment is exactly the bytes of the values in it,
        /// before and after releases.
        #[test]
        fn shared_and_copied_application_agree(
            ops in proptest::collection::vec((0u8..3, 0u8..8, 0usize..50, 0u64..4), 1..200),
            release_at in 0u64..5,
        ) {
            let owner = std::sync::Arc::new(());
            let mut a = KvStore::new();
            let mut b = KvStore::new();
            for (i, (op, key, len, seg)) in ops.iter().enumerate() {
                let lsn = i as u64 * 40;
                let key = [b'k', *key];
                if *op < 2 {
                    let p = encode_put(&key, &vec![i as u8; *len]);
                    a.apply_shared(&rec(lsn, KIND_PUT, &p), &shared(&p, seg * 100, &owner));
                    b.apply(&rec(lsn, KIND_PUT, &p));
                } else {
                    a.apply(&rec(lsn, KIND_DELETE, &key));
                    b.apply(&rec(lsn, KIND_DELETE, &key));
                }
                if i % 17 == 16 {
                    a.release_segments_below(release_at * 100, 100);
                }
                let mut want = BTreeMap::new();
                for v in a.map.values() {
                    if let (Some(s), false) = (v.segment, v.bytes.is_empty()) {
                        *want.entry(s).or_insert(0u64) += v.bytes.len() as u64;
                    }
                }
                proptest::prop_assert_eq!(a.shared_segments(), &want);
            }
            proptest::prop_assert_eq!(a.digest(), b.digest());
            proptest::prop_assert_eq!(a.len(), b.len());
        }
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
