//! The default idempotency key: SHA-256 over tenant, method, url and body.
//!
//! Each part is length-prefixed so that no two different inputs hash alike by shifting bytes
//! from one part into the next.

use sha2::{Digest, Sha256};

use crate::TenantId;

/// The HASH strategy's key: hex SHA-256 of (tenant, method, url, body).
pub fn default_key(tenant: TenantId, method: &str, url: &str, body: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [
        tenant.to_string().as_bytes(),
        method.as_bytes(),
        url.as_bytes(),
        body.unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

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
