//! Durable vote store: the [`PersistentState`] in one small file, replaced atomically.
//!
//! File layout (big-endian):
//!
//! ```text
//! 0   8   magic "WSVOTE" 0x00 0x01 (format version 1)
//! 8   4   body_len (<= MAX_BODY)
//! 12  n   body:  u64 term
//!                u8  paused (0/1)
//!                opt voted_for     (u8 0 = none | 1 then u16 len + UTF-8)
//!                opt last_leader   (same)
//!                u16 count, then count x (u16 len + UTF-8)   sync_standbys
//! 12+n 4  CRC-32 (crc32fast, IEEE) of bytes [0, 12+n)
//! ```
//!
//! `save` writes `<path>.tmp`, fsyncs it, renames it over `<path>` and fsyncs the
//! directory, so a crash leaves either the old or the new state. A file that is short,
//! has a bad magic or length, or fails its CRC is reported as
//! [`FailoverError::Corrupt`] — never silently read as term 0, which could let the node
//! vote twice in a term.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use byteorder::{BigEndian, ByteOrder};

use crate::config::{MAX_ID_LEN, MAX_MEMBERS};
use crate::error::FailoverError;
use crate::types::PersistentState;

const MAGIC: &[u8; 8] = b"WSVOTE\x00\x01";
/// Largest body accepted (ids are at most 255 bytes, at most 64 of them).
const MAX_BODY: usize = 8 + 1 + 2 * (3 + MAX_ID_LEN) + 2 + MAX_MEMBERS * (2 + MAX_ID_LEN);

/// The vote store of one node. Not shared between processes.
#[derive(Debug)]
pub struct VoteStore {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl VoteStore {
    /// Binds the store to `path` (e.g. `<data_dir>/failover.state`). The parent
    /// directory must exist; a stale `<path>.tmp` from a crashed save is removed.
    pub fn open(path: impl AsRef<Path>) -> Result<VoteStore, FailoverError> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta = fs::metadata(&dir).map_err(|source| FailoverError::Io {
            path: dir.clone(),
            op: "stat",
            source,
        })?;
        if !meta.is_dir() {
            return Err(FailoverError::Io {
                path: dir,
                op: "stat",
                source: std::io::Error::other("not a directory"),
            });
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        match fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::info!(path = %tmp.display(), "removed leftover vote store temp file from an interrupted save")
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FailoverError::Io {
                    path: tmp,
                    op: "remove",
                    source,
                })
            }
        }
        Ok(VoteStore { path, tmp, dir })
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state. A missing file is a fresh node (term 0, no vote). A damaged file
    /// is an error naming the check that failed.
    pub fn load(&self) -> Result<PersistentState, FailoverError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(PersistentState::default()),
            Err(source) => {
                return Err(FailoverError::Io {
                    path: self.path.clone(),
                    op: "read",
                    source,
                })
            }
        };
        decode_state(&bytes).map_err(|reason| FailoverError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    /// Makes `state` durable: tmp file + fsync + rename + directory fsync. On error the
    /// previous state is still on disk (or the new one, if only the dir fsync failed);
    /// the caller must not send what depends on `state`.
    pub fn save(&self, state: &PersistentState) -> Result<(), FailoverError> {
        let bytes = encode_state(state);
        let io = |path: &Path, op: &'static str| {
            let path = path.to_path_buf();
            move |source| FailoverError::Io { path, op, source }
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(io(&self.tmp, "open"))?;
        f.write_all(&bytes).map_err(io(&self.tmp, "write"))?;
        f.sync_all().map_err(io(&self.tmp, "fsync"))?;
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(io(&self.path, "rename"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir, "fsync dir"))?;
        Ok(())
    }
}

/// Encodes a state file (layout in the module doc).
pub(crate) fn encode_state(s: &PersistentState) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&s.term.to_be_bytes());
    body.push(s.paused as u8);
    put_opt(&mut body, s.voted_for.as_deref());
    put_opt(&mut body, s.last_leader.as_deref());
    let list = &s.sync_standbys[..s.sync_standbys.len().min(MAX_MEMBERS)];
    body.extend_from_slice(&(list.len() as u16).to_be_bytes());
    for id in list {
        put_str(&mut body, id);
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Ids are validated to <= MAX_ID_LEN by Config::validate and the message decoder.
    let s = &s.as_bytes()[..s.len().min(MAX_ID_LEN)];
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s);
}

fn put_opt(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => b.push(0),
        Some(s) => {
            b.push(1);
            put_str(b, s);
        }
    }
}

/// Decodes a state file; the error says which check failed.
pub(crate) fn decode_state(bytes: &[u8]) -> Result<PersistentState, String> {
    if bytes.len() < 16 {
        return Err(format!(
            "file is {} bytes, shorter than the 16-byte minimum (torn write?)",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic (not a walship vote store, or an unknown version)".into());
    }
    let len = BigEndian::read_u32(&bytes[8..12]) as usize;
    if len > MAX_BODY || bytes.len() != 16 + len {
        return Err(format!(
            "body length {len} does not match file size {} (torn write?)",
            bytes.len()
        ));
    }
    let stored = BigEndian::read_u32(&bytes[12 + len..]);
    let crc = crc32fast::hash(&bytes[..12 + len]);
    if stored != crc {
        return Err(format!(
            "CRC mismatch: stored {stored:08x}, computed {crc:08x}"
        ));
    }
    let mut r = Cursor {
        b: &bytes[12..12 + len],
        pos: 0,
    };
    let term = BigEndian::read_u64(r.take(8)?);
    let paused = match r.take(1)?[0] {
        0 => false,
        1 => true,
        v => return Err(format!("paused flag is {v}, not 0/1")),
    };
    let voted_for = r.opt()?;
    let last_leader = r.opt()?;
    let n = BigEndian::read_u16(r.take(2)?) as usize;
    if n > MAX_MEMBERS {
        return Err(format!("{n} sync standbys, more than {MAX_MEMBERS}"));
    }
    let mut sync_standbys = Vec::with_capacity(n);
    for _ in 0..n {
        sync_standbys.push(r.string()?);
    }
    if r.pos != r.b.len() {
        return Err("trailing bytes in body".into());
    }
    Ok(PersistentState {
        term,
        voted_for,
        paused,
        last_leader,
        sync_standbys,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!("body truncated at byte {}", self.pos));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = BigEndian::read_u16(self.take(2)?) as usize;
        if len > MAX_ID_LEN {
            return Err(format!("id of {len} bytes, more than {MAX_ID_LEN}"));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "id is not UTF-8".to_string())
    }

    fn opt(&mut self) -> Result<Option<String>, String> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            v => Err(format!("option tag {v}, not 0/1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let s = PersistentState {
            term: 42,
            voted_for: Some("n2".into()),
            paused: true,
            last_leader: Some("n1".into()),
            sync_standbys: vec!["n2".into(), "n3".into()],
        };
        assert_eq!(decode_state(&encode_state(&s)).unwrap(), s);
        let d = PersistentState::default();
        assert_eq!(decode_state(&encode_state(&d)).unwrap(), d);
    }

    #[test]
    fn every_truncation_and_bit_flip_detected() {
        let s = PersistentState {
            term: 7,
            voted_for: Some("n3".into()),
            ..Default::default()
        };
        let b = encode_state(&s);
        for n in 0..b.len() {
            assert!(decode_state(&b[..n]).is_err(), "cut at {n}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode_state(&c).is_err(), "flip byte {i} bit {bit}");
            }
        }
    }
}
