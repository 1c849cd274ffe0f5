//! Bearer-key authentication with a short-lived cache.
//!
//! Admission runs tens of thousands of times a second; looking the key up in the store each
//! time would put a read on the hot path. Digests are cached for `state::AUTH_TTL`, so a
//! revocation (which may come from the CLI in another process) takes effect within that bound.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ezt_store::Tenant;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Their tenant.
    pub tenant: Tenant,
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1: `BEARER`, `bearer` and `Bearer` are one scheme) and may be followed by any
/// run of spaces or tabs.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        if !ezt_core::api_key::looks_valid(key) {
            return Err(ApiError::unauthorized());
        }
        let digest = ezt_core::api_key::digest(key);
        if let Some(tenant) = state.auth.get(&digest) {
            return Ok(Caller { tenant });
        }
        // Store and forward in progress (the database was found unreachable): a key verified
        // on this node within `STALE_AUTH` is taken without waiting out the store deadline on
        // every request.
        if state.rt.jobs.spooling() {
            if let Some(tenant) = state.auth.get_within(&digest, crate::state::STALE_AUTH) {
                return Ok(Caller { tenant });
            }
        }
        let looked_up = match state.rt.jobs.store_deadline() {
            None => state.rt.store.authenticate(digest).await,
            Some(d) => tokio::time::timeout(d, state.rt.store.authenticate(digest))
                .await
                .unwrap_or_else(|_| {
                    Err(ezt_store::Error::Unavailable {
                        message: "the database did not answer in time".into(),
                    })
                }),
        };
        let found = match looked_up {
            Ok(found) => found,
            // Store and forward: while the database is unreachable, a key verified on this
            // node within `STALE_AUTH` still admits (into the spool).
            Err(e @ ezt_store::Error::Unavailable { .. })
                if state.rt.jobs.store_deadline().is_some() =>
            {
                if let Some(tenant) = state.auth.get_within(&digest, crate::state::STALE_AUTH) {
                    return Ok(Caller { tenant });
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let (tenant, _key_id) = found.ok_or_else(ApiError::unauthorized)?;
        state.auth.insert(digest, tenant.clone());
        Ok(Caller { tenant })
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn scheme_is_case_insensitive() {
        for v in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "BeArEr  k ",
            "Bearer\tk",
        ] {
            assert_eq!(bearer_token(v), Some("k"), "{v:?}");
        }
        for v in ["Basic k", "Bearerk", "Bearer ", "Bearer", "", "Token k"] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
