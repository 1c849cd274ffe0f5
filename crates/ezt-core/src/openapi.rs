//! OpenAPI schemas of the request shapes whose Rust types cannot say their own constraints (a map
//! kept as a list of entries, a duration that is a string or a number), for the `openapi`
//! feature. The limits are the defaults of `job::Limits` (a test there checks they agree; this
//! module does not import `job`, which uses it); an operator who changes them changes what the
//! server accepts, not this document.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;

/// The defaults of `job::Limits` that the schemas state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentedLimits {
    /// `max_headers`.
    pub max_headers: usize,
    /// `max_header_bytes`.
    pub max_header_bytes: usize,
    /// `max_metadata_keys`.
    pub max_metadata_keys: usize,
    /// `max_metadata_value_bytes`.
    pub max_metadata_value_bytes: usize,
    /// `max_timeout_ms`.
    pub max_timeout_ms: u64,
    /// `job::DEFAULT_TIMEOUT_MS`.
    pub default_timeout_ms: u64,
}

/// What the document states.
pub const LIMITS: DocumentedLimits = DocumentedLimits {
    max_headers: 64,
    max_header_bytes: 8 * 1024,
    max_metadata_keys: 32,
    max_metadata_value_bytes: 1024,
    max_timeout_ms: 30 * 24 * 3600 * 1000,
    default_timeout_ms: 24 * 3600 * 1000,
};

/// An RFC 9110 token: what a header name may be.
pub const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// A header value: no control character but tab (RFC 9110 §5.5).
pub const HEADER_VALUE_PATTERN: &str = r"^[^\x00-\x08\x0a-\x1f\x7f]*$";
/// A region name: 1-64 letters, digits, `-` or `_`.
pub const REGION_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";
/// The usual humantime forms of a timeout up to 30 days (`250ms`, `90s`, `15m`, `1h`, `30d`).
pub const TIMEOUT_TEXT_PATTERN: &str =
    r"^([1-9][0-9]{0,2}(ms|s|m)|[1-9][0-9]?h|[1-9]d|[12][0-9]d|30d)$";
/// An http(s) URL.
pub const HTTP_URL_PATTERN: &str = r"^[Hh][Tt][Tt][Pp][Ss]?://";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// An object that may also be `null` (the field is then absent).
fn nullable_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

/// `headers` of a job: header names to string values.
pub fn headers() -> impl Into<RefOr<Schema>> {
    let l = LIMITS;
    nullable_object()
        .description(Some(format!(
            "Sent to the target. Names are RFC 9110 tokens, unique case-insensitively, not one of the \
             connection's own (Host, Content-Length, Transfer-Encoding, Connection, Upgrade, TE, \
             Trailer, Keep-Alive); values have no control character but tab; name + value at most \
             {} bytes; at most {} headers. Authorization and API-key headers also pick the lane \
             and are shown as `[redacted]`.",
            l.max_header_bytes, l.max_headers
        )))
        .property_names(Some(
            string()
                .pattern(Some(HEADER_NAME_PATTERN))
                .min_length(Some(1))
                .max_length(Some(l.max_header_bytes)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            string()
                .pattern(Some(HEADER_VALUE_PATTERN))
                .max_length(Some(l.max_header_bytes - 1))
                .build(),
        )))))
        .max_properties(Some(l.max_headers))
        .examples([serde_json::json!({"Authorization": "Bearer sk_live_…", "Content-Type": "application/json"})])
        .build()
}

/// `metadata` of a job: string keys to string values, echoed in views and webhooks.
pub fn metadata() -> impl Into<RefOr<Schema>> {
    let l = LIMITS;
    nullable_object()
        .description(Some(format!(
            "Echoed in views and webhooks. At most {} keys; keys and values at most {} bytes.",
            l.max_metadata_keys, l.max_metadata_value_bytes
        )))
        .property_names(Some(string().max_length(Some(l.max_metadata_value_bytes))))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            string()
                .max_length(Some(l.max_metadata_value_bytes))
                .build(),
        )))))
        .max_properties(Some(l.max_metadata_keys))
        .examples([serde_json::json!({"order": "42"})])
        .build()
}

/// `timeout` of a job: integer milliseconds or a humantime string.
pub fn timeout() -> impl Into<RefOr<Schema>> {
    let l = LIMITS;
    let one_of = OneOfBuilder::new()
        .description(Some(format!(
            "How long to keep trying, from submission (default {} ms = 24h; 1 ms to {} ms = \
             30 days): integer milliseconds or a humantime string such as \"250ms\", \"90s\", \
             \"1h 30m\".",
            l.default_timeout_ms, l.max_timeout_ms
        )))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(l.max_timeout_ms)),
        )
        .item(
            string()
                .description(Some(
                    "A humantime duration; this pattern is the common subset (one number and \
                     unit, at most 30 days); compound forms such as \"1h 30m\" are accepted too.",
                ))
                .pattern(Some(TIMEOUT_TEXT_PATTERN)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .examples([serde_json::json!("1h")])
        .build();
    RefOr::T(Schema::OneOf(one_of))
}

fn enum_of(values: &[&str]) -> ObjectBuilder {
    string().enum_values(Some(values.iter().copied()))
}

/// The hosted `status` of a webhook body.
pub fn hosted_status() -> impl Into<RefOr<Schema>> {
    enum_of(&["success", "failed"])
        .description(Some(
            "`success` when the job succeeded, else `failed` (see `type` for which end).",
        ))
        .build()
}

/// The Standard Webhooks `type` of a webhook body.
pub fn event_type() -> impl Into<RefOr<Schema>> {
    enum_of(&[
        "job.succeeded",
        "job.failed",
        "job.expired",
        "job.cancelled",
    ])
    .description(Some("`job.` and the job's final state."))
    .build()
}

/// `error.code` of a job view and a webhook body.
pub fn job_error_code() -> impl Into<RefOr<Schema>> {
    enum_of(&[
        "http_status",
        "network_error",
        "retries_exhausted",
        "deadline",
        "cancelled",
        "ssrf_denied",
    ])
    .build()
}

/// `outcome` of a delivery attempt.
pub fn delivery_outcome() -> impl Into<RefOr<Schema>> {
    enum_of(&["delivered", "retry", "failed"]).build()
}

/// Headers as a list of `[name, value]` pairs (order and repeats kept).
pub fn header_pairs() -> impl Into<RefOr<Schema>> {
    ArrayBuilder::new()
        .items(
            ArrayBuilder::new()
                .items(string())
                .min_items(Some(2))
                .max_items(Some(2)),
        )
        .examples([serde_json::json!([["Content-Type", "application/json"]])])
        .build()
}

/// A region list (`null` is no list).
pub fn regions() -> impl Into<RefOr<Schema>> {
    ArrayBuilder::new()
        .description(Some(
            "Region names (1-64 letters, digits, `-` or `_`); empty or absent means any.",
        ))
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            string()
                .pattern(Some(REGION_PATTERN))
                .min_length(Some(1))
                .max_length(Some(64)),
        )
        .examples([serde_json::json!(["eu-west"])])
        .build()
}

/// Statuses of a retry policy: HTTP statuses 100-599 outside 2xx, at most 100.
pub fn status_codes() -> impl Into<RefOr<Schema>> {
    let code = |min: i32, max: i32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
    };
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            OneOfBuilder::new()
                .item(code(100, 199))
                .item(code(300, 599)),
        )
        .max_items(Some(100))
        .examples([serde_json::json!([429, 503])])
        .build()
}

/// A workflow field (`fallback_job`, `on_success`, `on_failure`): a job object of the same
/// shape as the submit body. Workflows are a later issue: any object is answered
/// `422 not_supported` today, anything but an object or `null` `400 invalid_field`.
pub fn workflow_job() -> impl Into<RefOr<Schema>> {
    nullable_object()
        .description(Some(
            "A job of the same shape as the submit body; null is the same as absent. In \
             `fallback_job` it also carries `trigger`: {\"type\": \"on_error\", \"codes\": [500]} \
             (run it when the previous link finally fails with one of those statuses) or \
             {\"type\": \"on_timeout\", \"timeout_ms\": 5000} (start it when the previous link has \
             not answered by then; the first 2xx wins and the other call is cancelled), may nest \
             its own `fallback_job`, and may not set `webhooks`, `timeout`, `retry_at`, \
             `on_success`, `on_failure`: the chain's first job sets those for the whole chain. \
             `on_success` / `on_failure` are full jobs (own webhooks and key; default key \
             `<parent job_id>:<relation>`) created in the transaction that records the parent's \
             outcome. Nesting depth at most 8.",
        ))
        .examples([serde_json::json!({"url": "https://api.example.com/fallback"})])
        .build()
}
