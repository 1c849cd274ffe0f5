//! Node-to-node authentication (issue 15): every call on `/internal/v1/…` carries
//! `X-EZT-Node-Auth: t=<unix seconds>,n=<nonce>,v1=<hex HMAC-SHA256>` keyed by the cluster
//! secret, over
//!
//! ```text
//! ezt-node-v1\n<METHOD>\n<path>\n<t>\n<nonce>\n<hex SHA-256 of the body>
//! ```
//!
//! The receiver accepts a timestamp within ±[`MAX_SKEW`] of its own clock and each nonce once
//! (a bounded cache remembers nonces for the whole window in which their timestamp is
//! acceptable, so a captured request cannot be replayed). The secret never leaves this
//! module: it is not logged, not shown in errors, and `Debug` prints nothing of it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header carrying the signature.
pub const HEADER: &str = "x-ezt-node-auth";
/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_SKEW_SECS: u64 = 30;
/// The same, as a duration.
pub const MAX_SKEW: std::time::Duration = std::time::Duration::from_secs(MAX_SKEW_SECS);
/// Nonces remembered at most; a receiver that would need more refuses (fails closed).
pub const NONCE_CAPACITY: usize = 200_000;

type HmacSha256 = Hmac<Sha256>;

/// Why a node-to-node request was refused (each answered 401; the text is for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `X-EZT-Node-Auth` header.
    #[error("no node signature")]
    Missing,
    /// The header is not `t=…,n=…,v1=…`.
    #[error("malformed node signature")]
    Malformed,
    /// The timestamp is more than 30 s from this node's clock.
    #[error("stale or future node signature timestamp")]
    Stale,
    /// The HMAC does not match (another secret, or a changed request).
    #[error("bad node signature")]
    Bad,
    /// This nonce was seen already: a replay.
    #[error("replayed node request")]
    Replayed,
    /// The nonce cache is full of live entries: refused rather than forget one.
    #[error("too many node requests in the replay window")]
    Overloaded,
}

/// Signs and verifies node-to-node requests with the cluster secret.
pub struct NodeAuth {
    key: Vec<u8>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeAuth(..)")
    }
}

/// Nonces with the time (unix seconds) after which they may be forgotten, oldest first.
#[derive(Default)]
struct Seen {
    by_nonce: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

fn canonical(method: &str, path: &str, t: u64, nonce: &str, body: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(body));
    format!(
        "ezt-node-v1\n{}\n{path}\n{t}\n{nonce}\n{digest}",
        method.to_ascii_uppercase()
    )
}

impl NodeAuth {
    /// A signer/verifier keyed by `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
            seen: Mutex::default(),
        }
    }

    fn mac(&self, msg: &str) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(msg.as_bytes());
        m
    }

    /// The header value for a request, at `now_secs`, with a fresh random nonce.
    pub fn sign(&self, method: &str, path: &str, body: &[u8], now_secs: u64) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        self.sign_with(method, path, body, now_secs, &nonce)
    }

    /// [`sign`](Self::sign) with a given nonce (tests).
    pub fn sign_with(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        now_secs: u64,
        nonce: &str,
    ) -> String {
        let tag = self
            .mac(&canonical(method, path, now_secs, nonce, body))
            .finalize()
            .into_bytes();
        format!("t={now_secs},n={nonce},v1={}", hex::encode(tag))
    }

    /// Checks `header` for a request, at `now_secs`; remembers its nonce when it is good.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: Option<&str>,
        now_secs: u64,
    ) -> Result<(), AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (mut t, mut n, mut v) = (None, None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", x)) => t = x.parse::<u64>().ok(),
                Some(("n", x)) => n = Some(x),
                Some(("v1", x)) => v = hex::decode(x).ok(),
                _ => return Err(AuthError::Malformed),
            }
        }
        let (Some(t), Some(nonce), Some(tag)) = (t, n, v) else {
            return Err(AuthError::Malformed);
        };
        if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(AuthError::Malformed);
        }
        if t.abs_diff(now_secs) > MAX_SKEW_SECS {
            return Err(AuthError::Stale);
        }
        // Constant-time comparison of the tag.
        self.mac(&canonical(method, path, t, nonce, body))
            .verify_slice(&tag)
            .map_err(|_| AuthError::Bad)?;
        self.remember(nonce, t + MAX_SKEW_SECS + 1, now_secs)
    }

    fn remember(&self, nonce: &str, forget_after: u64, now_secs: u64) -> Result<(), AuthError> {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((exp, _)) = s.order.front() {
            if *exp >= now_secs {
                break;
            }
            let (_, old) = s.order.pop_front().expect("front exists");
            s.by_nonce.remove(&old);
        }
        if s.by_nonce.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if s.by_nonce.len() >= NONCE_CAPACITY {
            return Err(AuthError::Overloaded);
        }
        s.by_nonce.insert(nonce.to_string(), forget_after);
        // Kept in insertion order; a later-expiring entry ahead of an earlier one only delays
        // forgetting the earlier one (never forgets a nonce too soon).
        s.order.push_back((forget_after, nonce.to_string()));
        Ok(())
    }

    /// Nonces remembered now (tests, metrics).
    pub fn remembered(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_nonce
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_request_verifies_once() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        let h = a.sign("POST", "/internal/v1/attempts", b"{}", NOW);
        assert_eq!(
            a.verify("POST", "/internal/v1/attempts", b"{}", Some(&h), NOW + 3),
            Ok(())
        );
        assert_eq!(
            a.verify("POST", "/internal/v1/attempts", b"{}", Some(&h), NOW + 4),
            Err(AuthError::Replayed)
        );
        assert_eq!(a.remembered(), 1);
    }

    #[test]
    fn every_signed_part_matters() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        let h = a.sign("POST", "/internal/v1/attempts", b"{\"a\":1}", NOW);
        for (m, p, b) in [
            ("GET", "/internal/v1/attempts", &b"{\"a\":1}"[..]),
            ("POST", "/internal/v1/other", &b"{\"a\":1}"[..]),
            ("POST", "/internal/v1/attempts", &b"{\"a\":2}"[..]),
        ] {
            assert_eq!(a.verify(m, p, b, Some(&h), NOW), Err(AuthError::Bad));
        }
        // Another secret.
        let other = NodeAuth::new("another-secret-0123456789");
        let forged = other.sign("POST", "/internal/v1/attempts", b"{\"a\":1}", NOW);
        assert_eq!(
            a.verify(
                "POST",
                "/internal/v1/attempts",
                b"{\"a\":1}",
                Some(&forged),
                NOW
            ),
            Err(AuthError::Bad)
        );
        // A changed timestamp breaks the tag.
        let moved = h.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(
            a.verify(
                "POST",
                "/internal/v1/attempts",
                b"{\"a\":1}",
                Some(&moved),
                NOW
            ),
            Err(AuthError::Bad)
        );
        // Nothing refused was remembered.
        assert_eq!(a.remembered(), 0);
    }

    #[test]
    fn skew_beyond_thirty_seconds_is_refused() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        for (t, ok) in [
            (NOW - 30, true),
            (NOW + 30, true),
            (NOW - 31, false),
            (NOW + 31, false),
        ] {
            let h = a.sign("POST", "/p", b"", t);
            let r = a.verify("POST", "/p", b"", Some(&h), NOW);
            assert_eq!(r.is_ok(), ok, "t - now = {}", t as i64 - NOW as i64);
            if !ok {
                assert_eq!(r, Err(AuthError::Stale));
            }
        }
    }

    #[test]
    fn malformed_and_missing_headers_are_refused() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        assert_eq!(
            a.verify("POST", "/p", b"", None, NOW),
            Err(AuthError::Missing)
        );
        for h in [
            "",
            "t=1",
            "garbage",
            &format!("t={NOW},n=short,v1=00"),
            &format!("t={NOW},n=0123456789abcdef0123,v1=zz"),
            &format!("t={NOW},n=0123456789abcdef0123,v1=00,x=1"),
            "t=x,n=0123456789abcdef0123,v1=00",
        ] {
            assert_eq!(
                a.verify("POST", "/p", b"", Some(h), NOW),
                Err(AuthError::Malformed),
                "{h:?}"
            );
        }
    }

    #[test]
    fn nonces_are_forgotten_only_after_their_window() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        let h = a.sign_with("POST", "/p", b"", NOW, "0123456789abcdef");
        assert!(a.verify("POST", "/p", b"", Some(&h), NOW).is_ok());
        // Still inside the acceptance window of t: remembered, refused.
        assert_eq!(
            a.verify("POST", "/p", b"", Some(&h), NOW + 30),
            Err(AuthError::Replayed)
        );
        // Past it the timestamp alone refuses it, and the cache lets it go.
        assert_eq!(
            a.verify("POST", "/p", b"", Some(&h), NOW + 32),
            Err(AuthError::Stale)
        );
        let fresh = a.sign("POST", "/p", b"", NOW + 33);
        assert!(a.verify("POST", "/p", b"", Some(&fresh), NOW + 33).is_ok());
        assert_eq!(a.remembered(), 1, "the old nonce was forgotten");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let a = NodeAuth::new("cluster-secret-0123456789");
        assert!(!format!("{a:?}").contains("secret"));
    }
}
