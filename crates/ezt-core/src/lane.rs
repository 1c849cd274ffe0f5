//! Lanes: one queue per target host and per upstream credential.
//!
//! Two tenants calling `api.openai.com` with the same key share one lane and one rate limit;
//! calls with different keys get different lanes, because the provider counts per key. The
//! credential is represented by a keyed hash (HMAC with a per-installation secret), so neither
//! logs nor the lane list ever reveal it, and a fingerprint cannot be brute-forced offline.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Request headers that carry an upstream credential, compared case-insensitively.
pub const DEFAULT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// A lane's name: `host:port` or `host:port#<fingerprint>`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct LaneKey(pub String);

impl LaneKey {
    /// The `host:port` part (where per-host limits apply).
    pub fn authority(&self) -> &str {
        self.0.split('#').next().unwrap_or(&self.0)
    }
}

impl std::fmt::Display for LaneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a header name carries a credential under `extra` (configured, lowercase) names.
pub fn is_credential_header(name: &str, extra: &[String]) -> bool {
    DEFAULT_CREDENTIAL_HEADERS
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        || extra.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The lane for a call to `authority` carrying `headers`.
pub fn lane_for(
    authority: &str,
    headers: &[(String, String)],
    extra_credential_headers: &[String],
    secret: &[u8],
) -> LaneKey {
    let mut creds: Vec<(String, &str)> = headers
        .iter()
        .filter(|(n, _)| is_credential_header(n, extra_credential_headers))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    if creds.is_empty() {
        return LaneKey(authority.to_ascii_lowercase());
    }
    creds.sort();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    for (n, v) in &creds {
        mac.update(&(n.len() as u64).to_be_bytes());
        mac.update(n.as_bytes());
        mac.update(&(v.len() as u64).to_be_bytes());
        mac.update(v.as_bytes());
    }
    let fp = mac.finalize().into_bytes();
    LaneKey(format!(
        "{}#{}",
        authority.to_ascii_lowercase(),
        hex::encode(&fp[..8])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn credential_picks_the_lane_without_revealing_it() {
        let s = b"secret";
        let plain = lane_for("api.x.com:443", &[h("Content-Type", "a")], &[], s);
        assert_eq!(plain.0, "api.x.com:443");
        let a = lane_for(
            "api.x.com:443",
            &[h("Authorization", "Bearer sk-A")],
            &[],
            s,
        );
        let a2 = lane_for(
            "API.x.com:443",
            &[h("authorization", "Bearer sk-A")],
            &[],
            s,
        );
        let b = lane_for(
            "api.x.com:443",
            &[h("Authorization", "Bearer sk-B")],
            &[],
            s,
        );
        assert_eq!(a, a2, "header and host case do not matter");
        assert_ne!(a, b, "different keys, different lanes");
        assert!(!a.0.contains("sk-A"), "fingerprint, not the secret");
        assert_eq!(a.authority(), "api.x.com:443");
        assert_ne!(
            a,
            lane_for(
                "api.x.com:443",
                &[h("Authorization", "Bearer sk-A")],
                &[],
                b"other"
            ),
            "keyed"
        );
        let custom = lane_for(
            "h:1",
            &[h("X-Shop-Token", "t")],
            &["x-shop-token".into()],
            s,
        );
        assert!(
            custom.0.contains('#'),
            "configured credential headers count"
        );
    }
}
