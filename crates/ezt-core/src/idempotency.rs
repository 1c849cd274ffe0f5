//! The default idempotency key: SHA-256 over tenant, method, url, body and, when the call
//! carries an upstream credential, that credential's fingerprint.
//!
//! Each part is length-prefixed so that no two different inputs hash alike by shifting bytes
//! from one part into the next. The fingerprint is the lane's (a keyed hash of the credential
//! headers, never the credential itself): two users calling the same URL with the same body but
//! different `Authorization` headers are two jobs, never one user's call answered with the
//! other's response. Calls without a credential hash exactly as before, so their keys did not
//! change.

use sha2::{Digest, Sha256};

use crate::lane::LaneKey;
use crate::TenantId;

/// The HASH strategy's key: hex SHA-256 of (tenant, method, url, body[, credential]), where
/// `credential` is the lane's credential fingerprint (see [`credential_fingerprint`]).
pub fn default_key(
    tenant: TenantId,
    credential: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    let tenant = tenant.to_string();
    let parts = [
        tenant.as_bytes(),
        method.as_bytes(),
        url.as_bytes(),
        body.unwrap_or("").as_bytes(),
    ];
    // A fifth part only when there is a credential: length prefixes make the 4- and 5-part
    // streams distinct, and credential-less keys stay what they were.
    for part in parts.into_iter().chain(credential.map(str::as_bytes)) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The credential fingerprint of a lane (`host:port#<fingerprint>`), if its calls carry one.
pub fn credential_fingerprint(lane: &LaneKey) -> Option<&str> {
    lane.0.split_once('#').map(|(_, fp)| fp)
}

#[cfg(test)]
mod tests {
    use super::{credential_fingerprint, Digest, LaneKey, Sha256, TenantId};
    use crate::lane::lane_for;

    fn default_key(t: TenantId, method: &str, url: &str, body: Option<&str>) -> String {
        super::default_key(t, None, method, url, body)
    }

    #[test]
    fn credential_free_key_is_unchanged() {
        // Pinned: keys of calls without credentials must not change across versions, or a
        // retried submission after an upgrade would run twice.
        assert_eq!(
            default_key(TenantId(1), "POST", "https://a/x", Some("b")),
            {
                let mut h = Sha256::new();
                for p in [TenantId(1).to_string().as_str(), "POST", "https://a/x", "b"] {
                    h.update((p.len() as u64).to_be_bytes());
                    h.update(p.as_bytes());
                }
                hex::encode(h.finalize())
            }
        );
    }

    #[test]
    fn different_credentials_never_share_a_key() {
        let t = TenantId(1);
        let a = lane_for(
            "api.x.com:443",
            &[("Authorization".into(), "Bearer A".into())],
            &[],
            b"s",
        );
        let b = lane_for(
            "api.x.com:443",
            &[("Authorization".into(), "Bearer B".into())],
            &[],
            b"s",
        );
        let none = lane_for("api.x.com:443", &[], &[], b"s");
        let key = |l: &LaneKey| {
            super::default_key(
                t,
                credential_fingerprint(l),
                "POST",
                "https://api.x.com/v1",
                Some("{}"),
            )
        };
        assert_ne!(key(&a), key(&b), "two credentials, two jobs");
        assert_ne!(key(&a), key(&none), "credential vs none");
        assert_eq!(
            key(&none),
            default_key(t, "POST", "https://api.x.com/v1", Some("{}"))
        );
        let a2 = lane_for(
            "api.x.com:443",
            &[("authorization".into(), "Bearer A".into())],
            &[],
            b"s",
        );
        assert_eq!(key(&a), key(&a2), "same credential, same key");
        assert_eq!(credential_fingerprint(&none), None);
    }

    #[test]
    fn differs_by_every_part_and_is_stable() {
        let t = TenantId(1);
        let base = default_key(t, "POST", "https://a/x", Some("b"));
        assert_eq!(base, default_key(t, "POST", "https://a/x", Some("b")));
        assert_ne!(
            base,
            default_key(TenantId(2), "POST", "https://a/x", Some("b")),
            "tenant"
        );
        assert_ne!(
            base,
            default_key(t, "PUT", "https://a/x", Some("b")),
            "method"
        );
        assert_ne!(
            base,
            default_key(t, "POST", "https://a/y", Some("b")),
            "url"
        );
        assert_ne!(
            base,
            default_key(t, "POST", "https://a/x", Some("c")),
            "body"
        );
        assert_ne!(
            default_key(t, "POST", "https://a/xb", None),
            default_key(t, "POST", "https://a/x", Some("b")),
            "no shifting"
        );
    }
}
