//! Validation errors that name the field and the reason, as the API's error body does.

use serde::Serialize;

/// One rejected input: which field (a dotted path such as `retry_policy.max_retries`), a stable
/// machine-readable code, and a human sentence. Handlers turn it into the API error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Stable code: `invalid_field`, `missing_field`, `unknown_field`, `not_supported`, `ssrf_denied`.
    pub code: &'static str,
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    /// A field whose value is out of range or malformed.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_field",
            field: field.into(),
            message: message.into(),
        }
    }
    /// A required field that is absent.
    pub fn missing(field: impl Into<String>) -> Self {
        Self {
            code: "missing_field",
            field: field.into(),
            message: "is required".into(),
        }
    }
    /// A field this node understands but cannot honour yet (answered 422).
    pub fn not_supported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "not_supported",
            field: field.into(),
            message: message.into(),
        }
    }
    /// A target or webhook address refused by the SSRF rules (answered 422).
    pub fn ssrf(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "ssrf_denied",
            field: field.into(),
            message: message.into(),
        }
    }
    /// Prefixes the field path, for errors raised inside nested objects or arrays.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}
