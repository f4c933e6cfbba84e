//! Input layouts of the fuzz targets that need more than one blob, shared by the
//! targets (decode) and the seed generator `fuzz/seed` (encode). Std only: the seed
//! generator includes this file with `#[path]`.
//!
//! Every decoder here accepts any byte string (libFuzzer mutates freely): missing
//! bytes read as zero, lengths are clamped to what is left.

/// Size of every segment the `wal_record` and `wal_recovery` targets use: the
/// smallest the WAL accepts, so a whole segment costs 1 MiB of tmpfs per run.
pub const SEGMENT_SIZE: u64 = 1 << 20;

/// Where the `wal_record` target's WAL ends before each `append_raw`: 256 bytes
/// before the end of segment 0, so small inputs reach the segment rules (padding,
/// the next segment).
pub const APPEND_BASE: u64 = SEGMENT_SIZE - 256;

/// Term of the records the `wal_record` target's WAL holds below [`APPEND_BASE`].
pub const APPEND_BASE_TERM: u64 = 3;

/// Number of segment files the `wal_recovery` target may write (bounds its cost).
pub const MAX_SEGMENTS: u8 = 4;

/// Header of a `wal_record` input (16 bytes, little-endian), then record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInput {
    /// LSN the first record is validated at.
    pub lsn: u64,
    /// Bytes left in the segment at `lsn`; 0 means "the rest of the input".
    pub seg_rem: u32,
    /// Record size limit; 0 means half of [`SEGMENT_SIZE`].
    pub max_record: u32,
}

impl RecordInput {
    /// Length of the encoded header.
    pub const LEN: usize = 16;

    /// Splits an input into its header and the record bytes.
    pub fn decode(data: &[u8]) -> (RecordInput, &[u8]) {
        let mut h = [0u8; Self::LEN];
        let n = data.len().min(Self::LEN);
        h[..n].copy_from_slice(&data[..n]);
        let r = RecordInput {
            lsn: u64::from_le_bytes(h[0..8].try_into().unwrap_or([0; 8])),
            seg_rem: u32::from_le_bytes(h[8..12].try_into().unwrap_or([0; 4])),
            max_record: u32::from_le_bytes(h[12..16].try_into().unwrap_or([0; 4])),
        };
        (r, &data[n..])
    }

    /// Encodes the header followed by `records`.
    pub fn encode(&self, records: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN + records.len());
        v.extend_from_slice(&self.lsn.to_le_bytes());
        v.extend_from_slice(&self.seg_rem.to_le_bytes());
        v.extend_from_slice(&self.max_record.to_le_bytes());
        v.extend_from_slice(records);
        v
    }
}

/// One file of a `wal_recovery` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryFile {
    /// Segment `index` (file `index * SEGMENT_SIZE` as 16 hex digits + `.wal`):
    /// `data` at offset 0, zero-extended to [`SEGMENT_SIZE`] unless `exact_size`
    /// (then the file is exactly `data`, a wrong size unless it is 1 MiB).
    Segment {
        /// 0..MAX_SEGMENTS.
        index: u8,
        /// Write the file with exactly `data.len()` bytes.
        exact_size: bool,
        /// The file's first bytes.
        data: Vec<u8>,
    },
    /// Overwrite bytes of the last segment given, at `offset` (mod its size).
    Patch {
        /// Byte offset.
        offset: u32,
        /// New bytes.
        data: Vec<u8>,
    },
    /// Content of the `term_history` file.
    TermHistory(Vec<u8>),
    /// Content of the `wal_start` file.
    WalStart(Vec<u8>),
}

/// A `wal_recovery` input: flags byte (bit 0: open with `repair = true`), then
/// sections `[tag u8][len u32 LE][len bytes]`. Tags: `0x00..=0x03` segment index
/// (`| 0x10`: exact size), `0x04` term_history, `0x05` wal_start, `0x06` patch
/// (`[offset u32 LE]` then bytes). Unknown tags are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryInput {
    /// Open with `repair = true`.
    pub repair: bool,
    /// The files, in order.
    pub files: Vec<RecoveryFile>,
}

impl RecoveryInput {
    /// Parses any byte string.
    pub fn decode(data: &[u8]) -> RecoveryInput {
        let mut out = RecoveryInput {
            repair: data.first().is_some_and(|f| f & 1 != 0),
            files: Vec::new(),
        };
        let mut rest = data.get(1..).unwrap_or(&[]);
        while let Some((&tag, r)) = rest.split_first() {
            let mut len = [0u8; 4];
            let n = r.len().min(4);
            len[..n].copy_from_slice(&r[..n]);
            let r = &r[n..];
            let len = (u32::from_le_bytes(len) as usize).min(r.len());
            let (body, r) = r.split_at(len);
            rest = r;
            let file = match tag & 0x0F {
                i @ 0..=3 => RecoveryFile::Segment {
                    index: i,
                    exact_size: tag & 0x10 != 0,
                    data: body.to_vec(),
                },
                4 => RecoveryFile::TermHistory(body.to_vec()),
                5 => RecoveryFile::WalStart(body.to_vec()),
                6 => {
                    let mut off = [0u8; 4];
                    let k = body.len().min(4);
                    off[..k].copy_from_slice(&body[..k]);
                    RecoveryFile::Patch {
                        offset: u32::from_le_bytes(off),
                        data: body[k..].to_vec(),
                    }
                }
                _ => continue,
            };
            out.files.push(file);
        }
        out
    }

    /// Encodes (the inverse of [`RecoveryInput::decode`] for well-formed values).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![u8::from(self.repair)];
        let mut section = |tag: u8, body: &[u8]| {
            v.push(tag);
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(body);
        };
        for f in &self.files {
            match f {
                RecoveryFile::Segment {
                    index,
                    exact_size,
                    data,
                } => section(index | if *exact_size { 0x10 } else { 0 }, data),
                RecoveryFile::TermHistory(t) => section(4, t),
                RecoveryFile::WalStart(t) => section(5, t),
                RecoveryFile::Patch { offset, data } => {
                    let mut b = offset.to_le_bytes().to_vec();
                    b.extend_from_slice(data);
                    section(6, &b)
                }
            }
        }
        v
    }
}

/// First byte of a `frame_decoder` input: which codec decodes the stream.
/// `0`: a fresh codec in the handshake phase (as a listener's), `1..=3`: an
/// established codec with a 64 KiB, 1 MiB or 16 MiB limit. The second byte seeds
/// the chunk sizes the stream is split into; the rest is the stream.
pub fn frame_limit_mode(b: u8) -> (bool, usize) {
    match b & 3 {
        0 => (true, 64 << 20),
        1 => (false, 64 << 10),
        2 => (false, 1 << 20),
        _ => (false, 16 << 20),
    }
}

/// Chunk sizes (1..=max) from a small deterministic generator (xorshift), so one
/// byte of input picks a whole split of the stream.
pub struct Splitter {
    state: u32,
}

impl Splitter {
    /// A splitter seeded by `seed`.
    pub fn new(seed: u8) -> Splitter {
        Splitter {
            state: 0x9E37_79B9 ^ u32::from(seed).wrapping_mul(0x0101_0101),
        }
    }

    /// The next chunk size: mostly small (1..=16), sometimes up to 4 KiB.
    pub fn next_len(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        if x & 7 == 0 {
            1 + (x >> 8) as usize % 4096
        } else {
            1 + (x >> 8) as usize % 16
        }
    }
}

/// First byte of a `handshake` input. Bit 0: play the client (the input is the
/// server's answer) instead of the server (the input is the peer's first bytes).
/// Bit 1: the server requires the token [`HANDSHAKE_TOKEN`]. Bits 2..=5: read
/// chunk size (0 = everything at once, else that many bytes per read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeMode {
    /// Play the connecting side.
    pub client: bool,
    /// The server checks a token.
    pub token: bool,
    /// Bytes per read (0: all).
    pub read_chunk: usize,
}

/// Cluster id of the `handshake` target's server.
pub const HANDSHAKE_CLUSTER: &str = "prod-eu";
/// Token of the `handshake` target's server (when it requires one).
pub const HANDSHAKE_TOKEN: &str = "s3cret-token";
/// Members of the `handshake` target's cluster.
pub const HANDSHAKE_MEMBERS: [&str; 3] = ["n1", "n2", "n3"];

impl HandshakeMode {
    /// Decodes the flags byte.
    pub fn decode(b: u8) -> HandshakeMode {
        HandshakeMode {
            client: b & 1 != 0,
            token: b & 2 != 0,
            read_chunk: usize::from((b >> 2) & 0x0F),
        }
    }

    /// Encodes the flags byte.
    pub fn encode(&self) -> u8 {
        u8::from(self.client) | u8::from(self.token) << 1 | ((self.read_chunk as u8) & 0x0F) << 2
    }
}
