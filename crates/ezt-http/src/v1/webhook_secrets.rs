//! `/api/v1/webhook-secrets`: the tenant's signing secrets (primary, and the previous one kept
//! as secondary during a rotation). They are sealed at rest and never shown again in full.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ezt_core::webhook::{MAX_SECRET_LEN, MIN_SECRET_LEN};
use ezt_core::FieldError;
use ezt_runtime::webhook_secrets::{Opened, SecretsError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::{parse_json, read_limited};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/webhook-secrets",
            post(create).get(get_masked).delete(delete),
        )
        .route("/api/v1/webhook-secrets/rotate", post(rotate))
}

/// Body of `POST /api/v1/webhook-secrets` (camelCase `primarySecret`, `secondarySecret` are
/// accepted too). A secret is 16-256 characters, no control characters, not only whitespace;
/// a `whsec_…` secret is used base64-decoded by Standard Webhooks verifiers.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"primary_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))]
#[serde(deny_unknown_fields)]
pub struct SecretsIn {
    /// Signs every delivery.
    #[serde(alias = "primarySecret")]
    #[schema(
        min_length = 16,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub primary_secret: String,
    /// Also signs every delivery, second (e.g. the old secret while receivers switch); must
    /// differ from `primary_secret`.
    #[serde(alias = "secondarySecret")]
    #[schema(
        min_length = 16,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub secondary_secret: Option<String>,
}

/// Body of `POST /api/v1/webhook-secrets/rotate` (`newSecret` is accepted too).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"new_secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}))]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// Becomes the primary (16-256 characters, as `primary_secret`; not the current primary);
    /// the old primary becomes the secondary.
    #[serde(alias = "newSecret")]
    #[schema(
        min_length = 16,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub new_secret: String,
}

/// Answer to a delete.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedOut {
    /// Always true.
    pub deleted: bool,
}

/// The secrets as shown: masked.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"primary_secret": "****LaSw", "secondary_secret": null, "has_secondary": false, "updated_at": 1767323045678u64}))]
pub struct SecretsView {
    /// `****` and the last characters: at most 4, at most a quarter of the secret (`****wxyz`).
    pub primary_secret: String,
    /// Masked secondary, if any.
    pub secondary_secret: Option<String>,
    /// Whether a secondary is set (deliveries then carry two signatures).
    pub has_secondary: bool,
    /// Last change, ms since epoch.
    pub updated_at: u64,
}

/// How a secret is shown: `****` and its last few characters, never more than 4 and never more
/// than a quarter of it (a 16-character secret shows 4; the rest must stay a brute-force
/// problem). Enough to tell two secrets apart, not enough to help guess one.
fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let shown = (chars.len() / 4).min(4);
    let tail: String = chars[chars.len() - shown..].iter().collect();
    format!("****{tail}")
}

fn check(field: &str, s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&n) {
        return Err(FieldError::invalid(
            field,
            format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters (got {n})"),
        )
        .into());
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::invalid(field, "may not contain control characters").into());
    }
    if s.trim().is_empty() {
        return Err(FieldError::invalid(field, "may not be only whitespace").into());
    }
    Ok(())
}

fn view(s: &Opened) -> SecretsView {
    SecretsView {
        primary_secret: mask(&s.primary),
        has_secondary: s.secondary.is_some(),
        secondary_secret: s.secondary.as_deref().map(mask),
        updated_at: s.updated_at,
    }
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        match e {
            SecretsError::NotFound => ApiError::not_found("webhook secret"),
            SecretsError::AlreadyPrimary => FieldError::invalid("new_secret", e.to_string()).into(),
            SecretsError::Unopenable => ApiError::new(ErrorCode::Internal, e.to_string()),
            SecretsError::Store(s) => s.into(),
        }
    }
}

/// Set the tenant's secrets (replacing any).
#[utoipa::path(post, path = "/api/v1/webhook-secrets", operation_id = "setWebhookSecrets", tag = "webhook-secrets", request_body = SecretsIn,
    responses((status = 201, description = "created", body = SecretsView), (status = 200, description = "replaced", body = SecretsView),
              (status = 400, description = "a bad field (`invalid_field`, `missing_field`, `unknown_field`, `invalid_json`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 408, description = "the body did not arrive in time (`request_timeout`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (`payload_too_large`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn create(
    State(st): State<AppState>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let input: SecretsIn = parse_json(&read_limited(&st, body).await?)?;
    check("primary_secret", &input.primary_secret)?;
    if let Some(s) = &input.secondary_secret {
        check("secondary_secret", s)?;
        if *s == input.primary_secret {
            return Err(
                FieldError::invalid("secondary_secret", "is the same as primary_secret").into(),
            );
        }
    }
    let (opened, existed) = st
        .rt
        .secrets
        .set(
            caller.tenant.id,
            &input.primary_secret,
            input.secondary_secret.as_deref(),
        )
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view(&opened))).into_response())
}

/// The tenant's secrets, masked.
#[utoipa::path(get, path = "/api/v1/webhook-secrets", operation_id = "getWebhookSecrets", tag = "webhook-secrets",
    responses((status = 200, description = "masked", body = SecretsView), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "the tenant has no webhook secret (`not_found`): webhooks go unsigned", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn get_masked(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<SecretsView>, ApiError> {
    let s = st.rt.secrets.get(caller.tenant.id).await?;
    Ok(Json(view(&s)))
}

/// Make a new secret primary; the old primary stays as secondary, so receivers that still
/// verify with it keep accepting deliveries until they switch.
#[utoipa::path(post, path = "/api/v1/webhook-secrets/rotate", operation_id = "rotateWebhookSecret", tag = "webhook-secrets", request_body = RotateIn,
    responses((status = 200, description = "rotated", body = SecretsView), (status = 400, description = "a bad field (`invalid_field`, `missing_field`, `unknown_field`, `invalid_json`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "the tenant has no webhook secret (`not_found`): webhooks go unsigned", body = ErrorBody), (status = 408, description = "the body did not arrive in time (`request_timeout`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (`payload_too_large`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn rotate(
    State(st): State<AppState>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Json<SecretsView>, ApiError> {
    let input: RotateIn = parse_json(&read_limited(&st, body).await?)?;
    check("new_secret", &input.new_secret)?;
    let s = st
        .rt
        .secrets
        .rotate(caller.tenant.id, &input.new_secret)
        .await
        .map_err(|e| match e {
            SecretsError::NotFound => ApiError::new(
                ErrorCode::NotFound,
                "no webhook secret to rotate: create one with POST /api/v1/webhook-secrets",
            ),
            e => e.into(),
        })?;
    Ok(Json(view(&s)))
}

/// Delete the tenant's secrets: webhooks go unsigned from then on.
#[utoipa::path(delete, path = "/api/v1/webhook-secrets", operation_id = "deleteWebhookSecrets", tag = "webhook-secrets",
    responses((status = 200, description = "deleted", body = DeletedOut), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "the tenant has no webhook secret (`not_found`): webhooks go unsigned", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn delete(State(st): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    st.rt.secrets.delete(caller.tenant.id).await?;
    Ok(Json(DeletedOut { deleted: true }).into_response())
}

#[cfg(test)]
mod tests {
    use super::{check, mask};

    #[test]
    fn masks_show_at_most_four_characters_and_a_quarter() {
        assert_eq!(mask("abcdefghijklmnopwxyz"), "****wxyz");
        assert_eq!(
            mask("0123456789abcdef"),
            "****cdef",
            "16 characters: a quarter is 4"
        );
        assert_eq!(mask("ключ-секрет-0123456"), "****3456");
        assert_eq!(mask(&"x".repeat(256)), "****xxxx");
        for n in 1..=300 {
            let s: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let shown = mask(&s).chars().count() - 4;
            assert!(shown <= 4 && shown * 4 <= n, "{n} characters show {shown}");
        }
    }

    #[test]
    fn whitespace_secrets_are_refused() {
        assert!(check("primary_secret", &" ".repeat(16)).is_err());
        assert!(check("primary_secret", &" \u{3000}".repeat(8)).is_err());
        assert!(check("primary_secret", "  a secret with spaces ").is_ok());
    }
}
