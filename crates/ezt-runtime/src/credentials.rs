//! Upstream credentials at rest: the request headers of a job that carry a credential (the
//! ones that pick the lane: Authorization, X-Api-Key, Api-Key and `lanes.credential_headers`,
//! plus `outbound.sealed_headers`) are sealed with the server key before the job is stored,
//! and opened only to make the call. A copied database file (or its WAL) then holds no usable
//! upstream key.
//!
//! A sealed value is `ezt-sealed:v1:` followed by base64 of the sealed bytes (bound to the
//! tenant, see `sealing`). Only values with that prefix are opened, so jobs stored in
//! plaintext by older versions keep working; a submitted value that happens to start with the
//! prefix is sealed too, so every prefixed value in the store is one we made.

use base64::Engine as _;
use ezt_core::TenantId;

use crate::config::Config;
use crate::sealing::{SealError, Sealer};

/// Marks a header value sealed at rest.
pub(crate) const SEALED_PREFIX: &str = "ezt-sealed:v1:";

/// Whether the header `name` is sealed at rest under `cfg`.
pub(crate) fn is_sealed_header(name: &str, cfg: &Config) -> bool {
    ezt_core::lane::is_credential_header(name, &cfg.lanes.credential_headers)
        || cfg
            .outbound
            .sealed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a stored value is sealed.
pub(crate) fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// Seals, in place, the values of the headers that must not be stored in clear.
pub(crate) fn seal_headers(
    sealer: &Sealer,
    tenant: TenantId,
    cfg: &Config,
    headers: &mut [(String, String)],
) {
    for (name, value) in headers.iter_mut() {
        if is_sealed_header(name, cfg) || is_sealed(value) {
            let sealed = sealer.seal(tenant, value);
            *value = format!(
                "{SEALED_PREFIX}{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(sealed)
            );
        }
    }
}

/// The headers to send: sealed values opened, the others as stored (`None` when nothing was
/// sealed, so the common case copies nothing).
pub(crate) fn open_headers(
    sealer: &Sealer,
    tenant: TenantId,
    headers: &[(String, String)],
) -> Result<Option<Vec<(String, String)>>, SealError> {
    if !headers.iter().any(|(_, v)| is_sealed(v)) {
        return Ok(None);
    }
    headers
        .iter()
        .map(|(n, v)| {
            let Some(b64) = v.strip_prefix(SEALED_PREFIX) else {
                return Ok((n.clone(), v.clone()));
            };
            let sealed = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .map_err(|_| SealError::Open)?;
            Ok((n.clone(), sealer.open(tenant, &sealed)?))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Shows sealed values as `[redacted]` (views must not print even the sealed form).
pub(crate) fn hide_sealed(mut spec: ezt_core::job::JobSpec) -> ezt_core::job::JobSpec {
    spec.for_each_mut(&mut |s| hide_sealed_values(&mut s.headers));
    spec
}

fn hide_sealed_values(headers: &mut [(String, String)]) {
    for (_, v) in headers.iter_mut() {
        if is_sealed(v) {
            *v = "[redacted]".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn credential_and_configured_headers_are_sealed_and_open_again() {
        let mut cfg = Config::default();
        cfg.lanes.credential_headers = vec!["x-team-key".into()];
        cfg.outbound.sealed_headers = vec!["X-Signature".into()];
        let s = Sealer::new([3; 32]);
        let t = TenantId(7);
        let plain = vec![
            h("Authorization", "Bearer sk-live-123"),
            h("x-api-key", "k-456"),
            h("X-Team-Key", "team-789"),
            h("x-signature", "sig-000"),
            h("Content-Type", "application/json"),
            h("X-Trick", "ezt-sealed:v1:AAAA"),
        ];
        let mut stored = plain.clone();
        seal_headers(&s, t, &cfg, &mut stored);
        for (i, (n, v)) in stored.iter().enumerate() {
            if n == "Content-Type" {
                assert_eq!(v, "application/json", "others stay in clear");
            } else {
                assert!(is_sealed(v), "{n} sealed");
                assert!(!v.contains(&plain[i].1), "{n} not in clear");
            }
        }
        assert_eq!(open_headers(&s, t, &stored).unwrap().unwrap(), plain);
        assert!(
            open_headers(&s, TenantId(8), &stored).is_err(),
            "bound to the tenant"
        );
        assert_eq!(
            open_headers(&s, t, &plain[4..5]).unwrap(),
            None,
            "old plaintext jobs"
        );
        hide_sealed_values(&mut stored);
        assert!(stored
            .iter()
            .all(|(_, v)| v == "[redacted]" || v == "application/json"));
    }
}
