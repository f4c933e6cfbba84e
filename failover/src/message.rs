//! Election messages and their byte encoding (layout in the crate doc).

use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{MAX_ID_LEN, MAX_MEMBERS};
use crate::error::FailoverError;
use crate::types::Refusal;

/// Encoding version written as the first byte of every message.
pub const MESSAGE_VERSION: u8 = 1;

const TAG_VOTE_REQUEST: u8 = 1;
const TAG_VOTE_RESPONSE: u8 = 2;
const TAG_HEARTBEAT: u8 = 3;
const TAG_HEARTBEAT_ACK: u8 = 4;
const TAG_TIMEOUT_NOW: u8 = 5;
const TAG_SET_PAUSED: u8 = 6;

const FLAG_PRE_VOTE: u8 = 1;
const FLAG_TRANSFER: u8 = 2;
const FLAG_FORCE: u8 = 4;

/// A message between election cores. Every message carries the sender's `term`
/// (the fencing token): a receiver that sees a higher term adopts it and steps down
/// (except for pre-vote requests and vote requests refused under a leader lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Vote for me in `term`". For a pre-vote, `term` is the sender's term + 1 and
    /// nobody changes state.
    VoteRequest {
        /// Term asked for.
        term: u64,
        /// Candidate id (must equal the transport-level sender).
        candidate: String,
        /// Term of the candidate's last flushed record.
        last_term: u64,
        /// End LSN of the candidate's flushed log.
        last_lsn: u64,
        /// Pre-vote: a probe that changes no state.
        pre_vote: bool,
        /// Leadership transfer or manual failover: voters skip the leader-lease check.
        transfer: bool,
        /// Forced manual failover: voters skip the log and mode checks.
        force: bool,
    },
    /// Answer to a `VoteRequest`.
    VoteResponse {
        /// The request's term when granted; the voter's term when refused.
        term: u64,
        /// Vote granted.
        granted: bool,
        /// Answer to a pre-vote.
        pre_vote: bool,
        /// Why it was refused (None when granted).
        reject_reason: Option<Refusal>,
    },
    /// Leader → followers every heartbeat interval.
    Heartbeat {
        /// Leader's term.
        term: u64,
        /// Leader id.
        leader: String,
        /// Leader's flushed end of log (async max-lag rule, lost-write reporting).
        leader_flush_lsn: u64,
        /// Cluster-wide pause flag.
        paused: bool,
        /// Current synchronous standbys (sync mode).
        sync_standbys: Vec<String>,
        /// Preferred order of successors (most up-to-date first); followers derive
        /// their election-timeout rank from it.
        succession: Vec<String>,
    },
    /// Follower → leader reply to a heartbeat.
    HeartbeatAck {
        /// Follower's term.
        term: u64,
        /// Term of the follower's last flushed record.
        last_term: u64,
        /// Follower's flushed end of log.
        last_lsn: u64,
    },
    /// Leader → transfer target: campaign now (skip pre-vote, `transfer = true`).
    TimeoutNow {
        /// Leader's term.
        term: u64,
    },
    /// Any node → all: the operator paused/resumed automatic failover.
    SetPaused {
        /// Sender's term.
        term: u64,
        /// New value of the cluster-wide pause flag.
        paused: bool,
    },
}

impl Message {
    /// The term the message carries.
    pub fn term(&self) -> u64 {
        match self {
            Message::VoteRequest { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Heartbeat { term, .. }
            | Message::HeartbeatAck { term, .. }
            | Message::TimeoutNow { term }
            | Message::SetPaused { term, .. } => *term,
        }
    }

    /// Stable lower-case name of the message kind (logs, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::VoteRequest { pre_vote: true, .. } => "pre_vote_request",
            Message::VoteRequest { .. } => "vote_request",
            Message::VoteResponse { pre_vote: true, .. } => "pre_vote_response",
            Message::VoteResponse { .. } => "vote_response",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::TimeoutNow { .. } => "timeout_now",
            Message::SetPaused { .. } => "set_paused",
        }
    }

    /// Encodes the message (layout in the crate doc).
    ///
    /// Panics (programmer error) if an id is longer than `MAX_ID_LEN` or a list longer
    /// than `MAX_MEMBERS`: `Config::validate` guarantees neither happens for member ids,
    /// and decode refuses the same limits, so encode and decode stay paired.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(MESSAGE_VERSION);
        match self {
            Message::VoteRequest {
                term,
                candidate,
                last_term,
                last_lsn,
                pre_vote,
                transfer,
                force,
            } => {
                b.put_u8(TAG_VOTE_REQUEST);
                b.put_u64(*term);
                put_str(&mut b, candidate);
                b.put_u64(*last_term);
                b.put_u64(*last_lsn);
                let mut flags = 0;
                if *pre_vote {
                    flags |= FLAG_PRE_VOTE;
                }
                if *transfer {
                    flags |= FLAG_TRANSFER;
                }
                if *force {
                    flags |= FLAG_FORCE;
                }
                b.put_u8(flags);
            }
            Message::VoteResponse {
                term,
                granted,
                pre_vote,
                reject_reason,
            } => {
                b.put_u8(TAG_VOTE_RESPONSE);
                b.put_u64(*term);
                b.put_u8(*granted as u8);
                b.put_u8(*pre_vote as u8);
                b.put_u8(reject_reason.map_or(0, Refusal::code));
            }
            Message::Heartbeat {
                term,
                leader,
                leader_flush_lsn,
                paused,
                sync_standbys,
                succession,
            } => {
                b.put_u8(TAG_HEARTBEAT);
                b.put_u64(*term);
                put_str(&mut b, leader);
                b.put_u64(*leader_flush_lsn);
                b.put_u8(*paused as u8);
                put_list(&mut b, sync_standbys);
                put_list(&mut b, succession);
            }
            Message::HeartbeatAck {
                term,
                last_term,
                last_lsn,
            } => {
                b.put_u8(TAG_HEARTBEAT_ACK);
                b.put_u64(*term);
                b.put_u64(*last_term);
                b.put_u64(*last_lsn);
            }
            Message::TimeoutNow { term } => {
                b.put_u8(TAG_TIMEOUT_NOW);
                b.put_u64(*term);
            }
            Message::SetPaused { term, paused } => {
                b.put_u8(TAG_SET_PAUSED);
                b.put_u64(*term);
                b.put_u8(*paused as u8);
            }
        }
        b.freeze()
    }

    /// Decodes one message occupying all of `buf`. Never panics: every length is checked
    /// against the input and the limits before use; trailing bytes, unknown versions,
    /// tags, flags or reason codes, non-0/1 booleans and invalid UTF-8 are errors.
    pub fn decode(buf: &[u8]) -> Result<Message, FailoverError> {
        let mut r = Reader { buf, pos: 0 };
        if r.u8()? != MESSAGE_VERSION {
            return Err(r.err_at(0, "unknown message version"));
        }
        let tag = r.u8()?;
        let msg = match tag {
            TAG_VOTE_REQUEST => {
                let term = r.u64()?;
                let candidate = r.string()?;
                let last_term = r.u64()?;
                let last_lsn = r.u64()?;
                let flags = r.u8()?;
                if flags & !(FLAG_PRE_VOTE | FLAG_TRANSFER | FLAG_FORCE) != 0 {
                    return Err(r.err_at(r.pos - 1, "unknown vote request flag"));
                }
                Message::VoteRequest {
                    term,
                    candidate,
                    last_term,
                    last_lsn,
                    pre_vote: flags & FLAG_PRE_VOTE != 0,
                    transfer: flags & FLAG_TRANSFER != 0,
                    force: flags & FLAG_FORCE != 0,
                }
            }
            TAG_VOTE_RESPONSE => {
                let term = r.u64()?;
                let granted = r.bool()?;
                let pre_vote = r.bool()?;
                let code = r.u8()?;
                let reject_reason = match code {
                    0 => None,
                    c => Some(
                        Refusal::from_code(c)
                            .ok_or_else(|| r.err_at(r.pos - 1, "unknown reject reason"))?,
                    ),
                };
                Message::VoteResponse {
                    term,
                    granted,
                    pre_vote,
                    reject_reason,
                }
            }
            TAG_HEARTBEAT => {
                let term = r.u64()?;
                let leader = r.string()?;
                let leader_flush_lsn = r.u64()?;
                let paused = r.bool()?;
                let sync_standbys = r.list()?;
                let succession = r.list()?;
                Message::Heartbeat {
                    term,
                    leader,
                    leader_flush_lsn,
                    paused,
                    sync_standbys,
                    succession,
                }
            }
            TAG_HEARTBEAT_ACK => Message::HeartbeatAck {
                term: r.u64()?,
                last_term: r.u64()?,
                last_lsn: r.u64()?,
            },
            TAG_TIMEOUT_NOW => Message::TimeoutNow { term: r.u64()? },
            TAG_SET_PAUSED => Message::SetPaused {
                term: r.u64()?,
                paused: r.bool()?,
            },
            _ => return Err(r.err_at(1, "unknown message tag")),
        };
        if r.pos != buf.len() {
            return Err(r.err_at(r.pos, "trailing bytes after message"));
        }
        Ok(msg)
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    assert!(
        s.len() <= MAX_ID_LEN,
        "id longer than MAX_ID_LEN: {} bytes",
        s.len()
    );
    b.put_u16(s.len() as u16);
    b.put_slice(s.as_bytes());
}

fn put_list(b: &mut BytesMut, list: &[String]) {
    assert!(
        list.len() <= MAX_MEMBERS,
        "id list longer than MAX_MEMBERS: {}",
        list.len()
    );
    b.put_u16(list.len() as u16);
    for s in list {
        put_str(b, s);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err_at(&self, offset: usize, reason: &'static str) -> FailoverError {
        FailoverError::Malformed { offset, reason }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FailoverError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err_at(self.pos, "truncated message")),
        }
    }

    fn u8(&mut self) -> Result<u8, FailoverError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FailoverError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }

    fn u64(&mut self) -> Result<u64, FailoverError> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }

    fn bool(&mut self) -> Result<bool, FailoverError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err_at(self.pos - 1, "boolean is not 0 or 1")),
        }
    }

    fn string(&mut self) -> Result<String, FailoverError> {
        let start = self.pos;
        let len = self.u16()? as usize;
        if len > MAX_ID_LEN {
            return Err(self.err_at(start, "id longer than MAX_ID_LEN"));
        }
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err_at(start + 2, "id is not UTF-8")),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, FailoverError> {
        let start = self.pos;
        let n = self.u16()? as usize;
        if n > MAX_MEMBERS {
            return Err(self.err_at(start, "id list longer than MAX_MEMBERS"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::VoteRequest {
                term: 7,
                candidate: "n2".into(),
                last_term: 6,
                last_lsn: 0x16B_3748,
                pre_vote: true,
                transfer: false,
                force: true,
            },
            Message::VoteResponse {
                term: 7,
                granted: false,
                pre_vote: false,
                reject_reason: Some(Refusal::LogBehind),
            },
            Message::Heartbeat {
                term: 3,
                leader: "n1".into(),
                leader_flush_lsn: 99,
                paused: true,
                sync_standbys: vec!["n2".into()],
                succession: vec!["n2".into(), "n3".into()],
            },
            Message::HeartbeatAck {
                term: 3,
                last_term: 3,
                last_lsn: 90,
            },
            Message::TimeoutNow { term: 4 },
            Message::SetPaused {
                term: 4,
                paused: false,
            },
        ]
    }

    #[test]
    fn round_trip_each_kind() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(Message::decode(&b[..n]).is_err(), "{m:?} cut at {n}");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert!(Message::decode(&long).is_err());
        }
    }

    #[test]
    fn layout_of_timeout_now_is_fixed() {
        let b = Message::TimeoutNow { term: 0x0102 }.encode();
        assert_eq!(&b[..], &[1, 5, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn bad_bool_and_flags_rejected() {
        assert!(Message::decode(&[1, 6, 0, 0, 0, 0, 0, 0, 0, 1, 2]).is_err());
        let mut b = samples()[0].encode().to_vec();
        *b.last_mut().unwrap() = 0x80;
        assert!(Message::decode(&b).is_err());
    }
}
