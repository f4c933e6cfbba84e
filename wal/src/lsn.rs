//! Log sequence numbers.

use std::fmt;
use std::str::FromStr;

use crate::WalError;

/// A byte position in the logical WAL stream. A record's LSN is the position of its
/// first header byte; LSNs only grow. Displayed as PostgreSQL does: `X/X`, the high and
/// low 32 bits in uppercase hex (`0/16B3748`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// LSN 0, the start of a fresh log.
    pub const ZERO: Lsn = Lsn(0);

    /// The raw byte position.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(v: Lsn) -> Self {
        v.0
    }
}

impl FromStr for Lsn {
    type Err = WalError;

    /// Accepts `X/X` (each half 1–8 hex digits, zero padding allowed, any case) or a
    /// plain decimal integer.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = |why: &str| {
            WalError::InvalidArgument(format!(
                "cannot parse LSN {s:?}: {why} (expected \"X/X\" with hex halves like \"0/16B3748\", or a decimal integer)"
            ))
        };
        if let Some((hi, lo)) = t.split_once('/') {
            let half = |h: &str, which: &str| -> Result<u64, WalError> {
                if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(&format!("{which} half {h:?} is not 1-8 hex digits")));
                }
                u64::from_str_radix(h, 16).map_err(|_| bad("bad hex"))
            };
            let hi = half(hi, "high")?;
            let lo = half(lo, "low")?;
            Ok(Lsn((hi << 32) | lo))
        } else {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("not a decimal integer"));
            }
            t.parse::<u64>()
                .map(Lsn)
                .map_err(|_| bad("decimal value out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_postgres() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parse_forms() {
        assert_eq!("0/16B3748".parse::<Lsn>().unwrap(), Lsn(0x16B3748));
        assert_eq!("0/016B3748".parse::<Lsn>().unwrap(), Lsn(0x16B3748));
        assert_eq!("00000000/016b3748".parse::<Lsn>().unwrap(), Lsn(0x16B3748));
        assert_eq!("A/1".parse::<Lsn>().unwrap(), Lsn((10 << 32) | 1));
        assert_eq!("23803720".parse::<Lsn>().unwrap(), Lsn(23803720));
        assert_eq!(" 5 ".parse::<Lsn>().unwrap(), Lsn(5));
    }

    #[test]
    fn parse_errors_are_clear() {
        for bad in [
            "",
            "/",
            "0/",
            "/1",
            "x/1",
            "1/2/3",
            "123456789/0",
            "-1",
            "1.5",
            "0x10",
        ] {
            let e = bad.parse::<Lsn>().unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("cannot parse LSN"), "{bad}: {msg}");
        }
    }

    #[test]
    fn roundtrip() {
        for v in [
            0u64,
            1,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0xDEAD_BEEF_0000_0008,
            u64::MAX,
        ] {
            assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }
}
