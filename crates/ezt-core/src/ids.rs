//! Typed, prefixed identifiers.
//!
//! Ids are 128-bit ULIDs (48-bit millisecond time + 80 random bits) rendered as a prefix plus 26
//! Crockford base32 characters, e.g. `job_01JD3X…`. Time-ordered ids make "newest first" listing
//! an index scan, and the prefix tells a human (and a secret scanner) what kind of id it is.
//! Public signatures take these newtypes, never raw strings.

use std::fmt;
use std::str::FromStr;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes 128 bits as 26 Crockford base32 characters (the ULID text form).
fn encode(v: u128) -> String {
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as i32;
        let idx = if shift >= 0 {
            (v >> shift) & 0x1f
        } else {
            (v << (-shift)) & 0x1f
        };
        *slot = CROCKFORD[idx as usize];
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

fn decode(s: &str) -> Option<u128> {
    if s.len() != 26 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in s.bytes().enumerate() {
        let c = c.to_ascii_uppercase();
        let d = CROCKFORD.iter().position(|&x| x == c)? as u128;
        if i == 0 && d > 7 {
            return None; // would overflow 128 bits
        }
        v = (v << 5) | d;
    }
    Some(v)
}

/// Builds a ULID from a millisecond timestamp and 80 random bits.
pub fn ulid(now_ms: u64, random: u128) -> u128 {
    ((now_ms as u128 & 0xffff_ffff_ffff) << 80) | (random & ((1u128 << 80) - 1))
}

/// Error for a string that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct IdParseError {
    /// The id kind expected, e.g. "job".
    pub kind: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u128);

        impl $name {
            /// The text prefix of this id kind.
            pub const PREFIX: &'static str = $prefix;
            /// A new time-ordered id.
            pub fn new(now_ms: u64, random: u128) -> Self {
                Self(ulid(now_ms, random))
            }
            /// Milliseconds since the epoch encoded in the id.
            pub fn timestamp_ms(&self) -> u64 {
                (self.0 >> 80) as u64
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, encode(self.0))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix($prefix)
                    .and_then(decode)
                    .map(Self)
                    .ok_or(IdParseError { kind: $prefix.trim_end_matches('_') })
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A job (one HTTP call made reliably).
    JobId,
    "job_"
);
id_type!(
    /// A tenant: the unit of isolation and of fair sharing.
    TenantId,
    "ten_"
);
id_type!(
    /// An API key's public, non-secret id (shown in lists and logs).
    ApiKeyId,
    "key_"
);
id_type!(
    /// One webhook delivery: a job outcome to one URL. Stable across retries and redeliveries
    /// (sent as `X-EZThrottle-Delivery-Id` and `webhook-id`), so receivers can de-duplicate.
    DeliveryId,
    "dlv_"
);

id_type!(
    /// A workflow run: a DAG of steps, each a job.
    WorkflowId,
    "wf_"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(ms in 0u64..(1u64 << 48), r in any::<u128>()) {
            let id = JobId::new(ms, r);
            let s = id.to_string();
            prop_assert_eq!(s.len(), 4 + 26);
            prop_assert_eq!(s.parse::<JobId>().unwrap(), id);
            prop_assert_eq!(id.timestamp_ms(), ms);
        }

        #[test]
        fn time_orders_text(a in 0u64..(1u64 << 48), b in 0u64..(1u64 << 48)) {
            let (x, y) = (JobId::new(a, 0).to_string(), JobId::new(b, 0).to_string());
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
        }
    }

    #[test]
    fn rejects_wrong_prefix_and_garbage() {
        let id = JobId::new(1, 2).to_string();
        assert!(
            id.replace("job_", "ten_").parse::<JobId>().is_err(),
            "prefix is checked"
        );
        assert!("job_short".parse::<JobId>().is_err(), "length is checked");
        assert!(
            "job_ZZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<JobId>().is_err(),
            "overflow is checked"
        );
    }
}
