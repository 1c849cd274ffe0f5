//! The job spec: what a client may send, how it is checked, and the normalised form we store.
//!
//! Parsing goes through `serde_path_to_error`, so a type error deep inside the body is reported
//! with its full path (`retry_policy.retry_codes[2]`). Unknown fields are refused (they are
//! usually typos such as `webhook_url`), and every field also accepts its camelCase spelling,
//! because the hosted Node and Go SDKs send that.
//!
//! Input is strict: the body is exactly one JSON object (no trailing data), every nested object
//! is an object (serde would otherwise accept `[…]` as a positional struct, so a JSON array was
//! once run as a job), and `headers` keeps every entry as sent so that a name given twice (`X-A`
//! and `x-a`, or the same key twice) is refused instead of silently keeping the last.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::DurationIn;
use crate::error::FieldError;
use crate::retry::RetryPolicy;
use crate::ssrf::{self, SsrfPolicy, TargetUrl};
use crate::webhook::Webhook;

/// Methods a job may use.
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Headers of the connection itself (set by the HTTP client); a job may not override them.
pub const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// Size limits on a job (defaults from the API contract; operators may change them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest job `body`, bytes.
    pub max_body_bytes: usize,
    /// Most headers on one job.
    pub max_headers: usize,
    /// Largest header (name + value), bytes.
    pub max_header_bytes: usize,
    /// Longest `url`, bytes.
    pub max_url_bytes: usize,
    /// Most metadata keys.
    pub max_metadata_keys: usize,
    /// Largest metadata key or value, bytes.
    pub max_metadata_value_bytes: usize,
    /// Longest `idempotent_key`, bytes.
    pub max_idempotent_key_bytes: usize,
    /// Longest `timeout`, ms.
    pub max_timeout_ms: u64,
    /// Most webhooks on one job.
    pub max_webhooks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_headers: 64,
            max_header_bytes: 8 * 1024,
            max_url_bytes: 8 * 1024,
            max_metadata_keys: 32,
            max_metadata_value_bytes: 1024,
            max_idempotent_key_bytes: 256,
            max_timeout_ms: 30 * 24 * 3600 * 1000,
            max_webhooks: 10,
        }
    }
}

/// A JSON object and nothing else: derived structs also accept a JSON array as a positional
/// struct, which for an API is a typo waiting to run. Deserializing through `Obj` asks for a map
/// and hands it to `T`'s own visitor, so field names, aliases, unknown-field checks and error
/// paths all stay `T`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// The `headers` object exactly as sent: every entry in order, repeats included, so that
/// validation can refuse a name given twice (a map would keep only the last one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersIn(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeadersIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(HeadersIn(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Retry policy as a client sends it; absent fields take the defaults. Every field also
/// accepts its camelCase spelling (`maxRetries`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"max_retries": 5, "retry_codes": [429, 503]})))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyIn {
    /// Retries in the same region after the first attempt (default 3). Network errors are
    /// always retried.
    #[serde(alias = "maxRetries")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    max_retries: Option<u32>,
    /// Moves to another region (default 2; on one node they are retried locally).
    #[serde(alias = "maxReroutes")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    max_reroutes: Option<u32>,
    /// Statuses retried after backoff (default `[429, 503]`): HTTP statuses outside 2xx.
    #[serde(alias = "retryCodes")]
    #[cfg_attr(feature = "openapi", schema(max_items = 100, schema_with = crate::openapi::status_codes))]
    retry_codes: Option<Vec<u16>>,
    /// Statuses that move the call to another region (default `[500, 502, 504]`).
    #[serde(alias = "rerouteCodes")]
    #[cfg_attr(feature = "openapi", schema(max_items = 100, schema_with = crate::openapi::status_codes))]
    reroute_codes: Option<Vec<u16>>,
}

/// A webhook as a client sends it (`hasQuorumVote` is accepted too).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"url": "https://hooks.example.com/ezthrottle"})))]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Receiver (http or https, at most 8,192 bytes, unique within the job); the outcome is
    /// POSTed to it, signed. Checked against the SSRF rules at submit and at connect time.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 8192,
            pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(([A-Za-z0-9_-]{1,63}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}\.?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:[1-9][0-9]{0,3})?(/[!$&'()*+,;=:@%._~/A-Za-z0-9-]*)?$"
        )
    )]
    url: String,
    /// Regions allowed to deliver it (one node delivers from its own).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::regions))]
    regions: Option<Vec<String>>,
    /// Counts towards `webhook_quorum` (default true).
    #[serde(alias = "hasQuorumVote")]
    has_quorum_vote: Option<bool>,
}

/// The body of `POST /api/v1/jobs`, exactly as received. Only `url` is required. Every field
/// also accepts its camelCase spelling (`retryPolicy`, `idempotentKey`, …), as the hosted Node
/// and Go SDKs send; unknown fields are refused (`unknown_field`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "url": "https://api.example.com/orders",
    "method": "POST",
    "headers": {"Authorization": "Bearer sk_live_…", "Content-Type": "application/json"},
    "body": "{\"order\": 42}",
    "metadata": {"order": "42"},
    "webhooks": [{"url": "https://hooks.example.com/ezthrottle"}],
    "retry_policy": {"max_retries": 5},
    "timeout": "1h",
    "idempotent_key": "order-42"
})))]
#[serde(deny_unknown_fields)]
pub struct JobSpecIn {
    /// The target: an http or https URL, at most 8,192 bytes; checked against the SSRF rules
    /// (private, loopback and link-local addresses are refused with `ssrf_denied` unless
    /// allowed by `allow_cidrs`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true, max_length = 8192, pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(([A-Za-z0-9_-]{1,63}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}\.?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:[1-9][0-9]{0,3})?(/[!$&'()*+,;=:@%._~/A-Za-z0-9-]*)?$", example = "https://api.example.com/orders"))]
    url: Option<String>,
    /// HTTP method (default GET), any case.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$",
            example = "POST"
        )
    )]
    method: Option<String>,
    /// Headers sent to the target.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::headers))]
    headers: Option<HeadersIn>,
    /// Request body sent as is, at most 262,144 bytes (`payload_too_large` above).
    #[cfg_attr(feature = "openapi", schema(max_length = 262144))]
    body: Option<String>,
    /// Echoed in views and webhooks.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::metadata))]
    metadata: Option<BTreeMap<String, String>>,
    /// Where the outcome is POSTed, signed (at most 10, unique URLs).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<WebhookIn>>, max_items = 10))]
    webhooks: Option<Vec<Obj<WebhookIn>>>,
    /// Voting webhooks that must acknowledge (0-10; default 1 when a webhook votes). With voting
    /// webhooks it must be 1 to their number; 0 is what views show when none votes; ignored
    /// without webhooks.
    #[serde(alias = "webhookQuorum")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10))]
    webhook_quorum: Option<u32>,
    /// Regions allowed to make the call (default: any).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::regions))]
    regions: Option<Vec<String>>,
    /// `fallback` (default: run elsewhere when no listed region can) or `strict` (never
    /// outside `regions`: `region_unavailable` when none of them is live).
    #[serde(alias = "regionPolicy")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::job::RegionPolicy>))]
    region_policy: Option<String>,
    /// `race` (default: the first 2xx wins) or `fanout` (every listed region; needs cluster
    /// mode: `not_supported` on a node running alone).
    #[serde(alias = "executionMode")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::job::ExecutionMode>))]
    execution_mode: Option<String>,
    /// When a failed attempt is tried again.
    #[serde(alias = "retryPolicy")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<RetryPolicyIn>))]
    retry_policy: Option<Obj<RetryPolicyIn>>,
    /// How long to keep trying.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::timeout))]
    timeout: Option<DurationIn>,
    /// Earliest first attempt, ms since the epoch (at most a year from now; a past time means
    /// now).
    #[serde(alias = "retryAt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 4102444800000i64, format = Int64))]
    retry_at: Option<u64>,
    /// Dedup key (1-256 bytes, no control characters); else the `Idempotency-Key` header;
    /// else SHA-256 of tenant, lane credential, method, url and body.
    #[serde(alias = "idempotentKey")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]+$",
            example = "order-42"
        )
    )]
    idempotent_key: Option<String>,
    /// A fallback chain: a job (plus `trigger`) run when this one fails with one of the
    /// trigger's codes, or raced against it when it is slow; one logical job.
    #[serde(alias = "fallbackJob")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_job))]
    fallback_job: Option<serde_json::Value>,
    /// A job created when this one (with its fallbacks) succeeds.
    #[serde(alias = "onSuccess")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_job))]
    on_success: Option<serde_json::Value>,
    /// A job created when this one (with its fallbacks) fails or expires.
    #[serde(alias = "onFailure")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_job))]
    on_failure: Option<serde_json::Value>,
    /// Needs `on_failure`: if the job has not succeeded this many ms after submission it ends
    /// `expired` and `on_failure` runs.
    #[serde(alias = "onFailureTimeoutMs")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, format = Int64))]
    on_failure_timeout_ms: Option<u64>,
}

/// The normalised, validated job: what the store keeps and the executor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    /// Target URL (normalised by the WHATWG parser).
    pub url: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Headers sent to the target, sorted by name (names as given); credentials shown as
    /// `[redacted]`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::header_pairs))]
    pub headers: Vec<(String, String)>,
    /// Request body, sent as is.
    pub body: Option<String>,
    /// Echoed in views and webhooks.
    pub metadata: BTreeMap<String, String>,
    /// Regions allowed to make the call.
    pub regions: Vec<String>,
    /// Retry behaviour.
    pub retry_policy: RetryPolicy,
    /// How long to keep trying, from submission.
    pub timeout_ms: u64,
    /// Earliest first attempt (ms since epoch), if delayed.
    pub retry_at: Option<u64>,
    /// Where the outcome is delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Voting webhooks that must acknowledge for the outcome to count as delivered (0 when the
    /// job has no voting webhook: there is nothing to wait for).
    #[serde(default = "default_quorum")]
    pub webhook_quorum: u32,
    /// Whether the call may run outside `regions`. Kept so the view shows what was asked, and
    /// for cluster mode, which will act on it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub region_policy: RegionPolicy,
    /// How several regions share the call.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub execution_mode: ExecutionMode,
    /// The next link of this job's fallback chain, if any (runs when this link fails with one
    /// of its trigger's codes, or races it when this link is slow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub fallback: Option<Box<Fallback>>,
    /// A job created when this one (the whole chain) succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub on_success: Option<Box<Child>>,
    /// A job created when this one (the whole chain) fails or expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub on_failure: Option<Box<Child>>,
    /// The job ends `expired` (and `on_failure` runs) if it has not succeeded this many ms
    /// after submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure_timeout_ms: Option<u64>,
    /// The job whose outcome created this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// The workflow step (or compensation) this job runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<StepRef>,
    /// A child whose `{{parent.response…}}` templates could not be rendered from its parent's
    /// answer: why (`template_unresolved: …`, `template_invalid: …`). It ends failed with that
    /// code, unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_error: Option<String>,
}

/// What a step's job knows of its workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRef {
    /// The run.
    pub workflow_id: String,
    /// Index of the step in the definition.
    pub step: u32,
    /// True for the step's compensation job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensation: bool,
    /// Page number (from 1) of a paginated step's job; 0 for other steps.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub page: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// When a fallback link starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// The link before it failed for good with one of these statuses.
    OnError {
        /// HTTP statuses.
        codes: Vec<u16>,
    },
    /// The link before it has not answered after this long: both run, the first 2xx wins and
    /// the other call is cancelled.
    OnTimeout {
        /// Milliseconds after the previous link's call started.
        timeout_ms: u64,
    },
}

/// One fallback link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fallback {
    /// When it starts.
    pub trigger: Trigger,
    /// The call (its own `fallback` continues the chain).
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub spec: JobSpec,
    /// Sent as its `Idempotency-Key` (else the chain's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_key: Option<String>,
}

/// A job created by another job's outcome (`on_success`, `on_failure`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Child {
    /// Its spec.
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub spec: JobSpec,
    /// Its lane (set at admission, where lanes are computed).
    #[serde(default)]
    pub lane: String,
    /// Its dedup key; else `<parent id>:<relation>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_key: Option<String>,
}

/// Which outcome of the parent created a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The parent succeeded.
    OnSuccess,
    /// The parent failed or expired.
    OnFailure,
}

impl Relation {
    /// As written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::OnSuccess => "on_success",
            Relation::OnFailure => "on_failure",
        }
    }
}

/// A child's link to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParentRef {
    /// The parent job's id.
    pub job_id: String,
    /// Which outcome created it.
    pub relation: Relation,
}

/// The id of the child `relation` of `parent`'s attempt series `series` (a replayed parent
/// makes a new child): derived, not random, so whoever knows the parent finds the child.
pub fn child_id(parent: crate::JobId, relation: Relation, series: u32) -> crate::JobId {
    let salt: u128 = match relation {
        Relation::OnSuccess => 0x5a17_c0de_0001_9e3f_77b1,
        Relation::OnFailure => 0xfa11_c0de_0002_6a09_e667,
    };
    // Multiplied, not only XORed: with XOR alone a child's child of the same relation got
    // its grandparent's id back (x ^ s ^ s == x), so it was never created.
    let mixed = (parent.0 ^ salt ^ (u128::from(series) << 40))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let random = (mixed ^ (mixed >> 64)) & ((1u128 << 80) - 1);
    crate::JobId::new(parent.timestamp_ms(), random)
}

/// Most nested jobs (fallback links, children) below one job.
pub const MAX_NESTING: usize = 8;

impl JobSpec {
    /// The chain's links in order: this spec, then each fallback (with its trigger and key).
    pub fn links(&self) -> Vec<(&JobSpec, Option<&Trigger>, Option<&str>)> {
        let mut out = vec![(self, None, None)];
        let mut cur = self.fallback.as_deref();
        while let Some(f) = cur {
            out.push((&f.spec, Some(&f.trigger), f.idempotent_key.as_deref()));
            cur = f.spec.fallback.as_deref();
        }
        out
    }

    /// The child this final state creates, if any.
    pub fn child_for(&self, state: crate::JobState) -> Option<(Relation, &Child)> {
        use crate::JobState as S;
        match state {
            S::Succeeded => self.on_success.as_deref().map(|c| (Relation::OnSuccess, c)),
            S::Failed | S::Expired => self.on_failure.as_deref().map(|c| (Relation::OnFailure, c)),
            _ => None,
        }
    }

    /// Every spec of the tree (this one, fallback links, children, recursively), mutably: for
    /// sealing credential headers at admission.
    pub fn for_each_mut(&mut self, f: &mut dyn FnMut(&mut JobSpec)) {
        f(self);
        if let Some(fb) = self.fallback.as_deref_mut() {
            fb.spec.for_each_mut(f);
        }
        for c in [
            self.on_success.as_deref_mut(),
            self.on_failure.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        {
            c.spec.for_each_mut(f);
        }
    }
}

/// `region_policy` of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RegionPolicy {
    /// Use another region when none of the listed ones can run it.
    #[default]
    Fallback,
    /// Fail rather than run outside the listed regions.
    Strict,
}

/// `execution_mode` of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Several regions may try; the first 2xx wins.
    #[default]
    Race,
    /// Run in every listed region (cluster mode).
    Fanout,
}

fn default_quorum() -> u32 {
    1
}

/// Default `timeout`: 24 h.
pub const DEFAULT_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// Parses a job from JSON bytes, naming the path of any bad field. The body must be one JSON
/// object with nothing after it.
pub fn parse(bytes: &[u8]) -> Result<JobSpecIn, FieldError> {
    parse_object(bytes, "one job as a JSON object")
}

/// Parses a request body that must be exactly one JSON object of type `T` (nothing before or
/// after it but whitespace), naming the path of any bad field. `what` names the object in the
/// error for a body of another type ("one job as a JSON object").
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: Obj<T> = serde_path_to_error::deserialize(&mut *de)
        .map_err(|e| top_level(map_serde_error(e.path().to_string(), e.inner()), what))?;
    de.end().map_err(|e| FieldError {
        code: "invalid_json",
        field: String::new(),
        message: format!(
            "trailing data after the JSON object ({})",
            e.to_string().split(" at line ").next().unwrap_or("")
        ),
    })?;
    Ok(value.0)
}

/// Parses a job from an already-parsed JSON value (batch elements).
pub fn from_value(value: serde_json::Value) -> Result<JobSpecIn, FieldError> {
    serde_path_to_error::deserialize::<_, Obj<JobSpecIn>>(value)
        .map(|o| o.0)
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            top_level(map_serde_error(path, &inner), "one job as a JSON object")
        })
}

/// A type error at the root (an array, a string, a number where the object belongs) is a body
/// that is not the JSON the endpoint takes: `invalid_json`, like a syntax error.
fn top_level(e: FieldError, what: &str) -> FieldError {
    if e.field.is_empty() && e.code == "invalid_field" && e.message.starts_with("invalid type") {
        return FieldError {
            code: "invalid_json",
            field: String::new(),
            message: format!("the body must be {what}; {}", e.message),
        };
    }
    e
}

/// Turns a serde error into the API's field error.
pub fn map_serde_error(path: String, e: &serde_json::Error) -> FieldError {
    use serde_json::error::Category;
    let path = if path == "." { String::new() } else { path };
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return FieldError {
            code: "invalid_json",
            field: String::new(),
            message: msg,
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let field = if path.is_empty() {
            name.to_string()
        } else {
            path.clone()
        };
        let field = if field.ends_with(name) {
            field
        } else {
            format!("{field}.{name}")
        };
        return FieldError {
            code: "unknown_field",
            field,
            message: format!("unknown field; {msg}"),
        };
    }
    if let Some(rest) = msg.strip_prefix("duplicate field `") {
        // A field given twice (maybe once under its camelCase alias): serde names it, the
        // path is the object around it.
        let name = rest.split('`').next().unwrap_or("");
        let field = if path.is_empty() || path.ends_with(name) {
            if path.is_empty() {
                name.to_string()
            } else {
                path
            }
        } else {
            format!("{path}.{name}")
        };
        return FieldError::invalid(field, "given more than once");
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        let field = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        return FieldError::missing(field);
    }
    FieldError::invalid(path, msg)
}

/// What validation needs to know about this node.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Size limits.
    pub limits: &'a Limits,
    /// SSRF allow-list.
    pub ssrf: &'a SsrfPolicy,
    /// This node's region.
    pub local_region: &'a str,
    /// Cluster mode: other regions' nodes may run a job (a strict job outside this node's
    /// region is placed at each attempt; alone, it is refused here).
    pub clustered: bool,
    /// Now, ms since epoch.
    pub now_ms: u64,
}

/// A valid job plus what admission needs next.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The normalised spec.
    pub spec: JobSpec,
    /// The parsed target (domains still to be resolved and checked).
    pub target: TargetUrl,
    /// The caller's idempotency key, if given.
    pub idempotent_key: Option<String>,
    /// The parsed webhook URLs, in order (domains still to be resolved and checked).
    pub webhook_targets: Vec<TargetUrl>,
    /// The targets and webhooks of nested jobs (fallback links, children), with their field
    /// paths (domains still to be resolved and checked).
    pub nested_targets: Vec<(String, TargetUrl)>,
}

/// A validated nested job: its spec, key and (for a fallback link) trigger.
type NestedJob = (JobSpec, Option<String>, Option<Trigger>);

/// A nested job field: absent or null, else it must be an object.
fn take_object(
    v: Option<serde_json::Value>,
    name: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, FieldError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(FieldError::invalid(name, "must be a job object")),
    }
}

/// A nested job's error, named from the top (`fallback_job.url`).
fn prefixed(mut e: FieldError, prefix: &str) -> FieldError {
    if e.code == "invalid_json" {
        e.code = "invalid_field";
    }
    e.field = if e.field.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{}", e.field)
    };
    e
}

/// `{"type": "on_error", "codes": [...]}` or `{"type": "on_timeout", "timeout_ms": N}`
/// (`timeoutMs` too).
fn parse_trigger(v: serde_json::Value, field: &str) -> Result<Trigger, FieldError> {
    let serde_json::Value::Object(mut o) = v else {
        return Err(FieldError::invalid(field, "must be an object with a type"));
    };
    if let Some(t) = o.remove("timeoutMs") {
        if o.insert("timeout_ms".into(), t).is_some() {
            return Err(FieldError::invalid(
                format!("{field}.timeout_ms"),
                "given more than once",
            ));
        }
    }
    let t: Trigger = serde_json::from_value(serde_json::Value::Object(o)).map_err(|e| {
        FieldError::invalid(
            field,
            format!("{e}; expected {{\"type\": \"on_error\", \"codes\": [500]}} or {{\"type\": \"on_timeout\", \"timeout_ms\": 5000}}"),
        )
    })?;
    match &t {
        Trigger::OnError { codes } => {
            if codes.is_empty() || codes.len() > 100 {
                return Err(FieldError::invalid(
                    format!("{field}.codes"),
                    "1 to 100 HTTP statuses",
                ));
            }
            for (i, c) in codes.iter().enumerate() {
                if !(100..=599).contains(c) || (200..300).contains(c) {
                    return Err(FieldError::invalid(
                        format!("{field}.codes[{i}]"),
                        "must be an HTTP status 100-599 outside 2xx",
                    ));
                }
            }
        }
        Trigger::OnTimeout { timeout_ms } => {
            if *timeout_ms < 1 || *timeout_ms > 24 * 3600 * 1000 {
                return Err(FieldError::invalid(
                    format!("{field}.timeout_ms"),
                    "must be between 1 and 86400000",
                ));
            }
        }
    }
    Ok(t)
}

/// A header field value under RFC 9110 §5.5: visible characters, space, tab and obs-text; no
/// other control character (CR, LF, NUL, DEL, \u{1}…), which the HTTP client would refuse at
/// call time, failing every attempt of an already-accepted job.
fn header_value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn check_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl JobSpecIn {
    /// Takes the `Idempotency-Key` request header as `idempotent_key`. The same key in both
    /// places is fine; two different keys are refused, because either choice would surprise
    /// whoever set the other one.
    pub fn take_header_key(&mut self, header: &str) -> Result<(), FieldError> {
        match &self.idempotent_key {
            Some(body) if body != header => Err(FieldError::invalid(
                "idempotent_key",
                "differs from the Idempotency-Key header; send one of them, or the same key in both",
            )),
            Some(_) => Ok(()),
            None => {
                self.idempotent_key = Some(header.to_string());
                Ok(())
            }
        }
    }

    /// Checks every field and normalises the job. Fields whose feature has not landed yet are
    /// answered `not_supported` rather than silently ignored.
    pub fn validate(self, cx: &Context<'_>) -> Result<Validated, FieldError> {
        self.validate_at(cx, 0)
    }

    fn validate_at(self, cx: &Context<'_>, depth: usize) -> Result<Validated, FieldError> {
        let l = cx.limits;
        let (webhooks, webhook_targets) = validate_webhooks(self.webhooks, cx)?;
        let voters = webhooks.iter().filter(|w| w.has_quorum_vote).count() as u32;
        // 0 means "no vote to wait for", which is what a view shows when no webhook votes, so a
        // spec read back from a view can be submitted again. With voting webhooks, 0 would make
        // their votes meaningless: `has_quorum_vote: false` is the way to say that.
        let webhook_quorum = match self.webhook_quorum {
            None => voters.min(1),
            Some(q) if q > l.max_webhooks as u32 => {
                return Err(FieldError::invalid(
                    "webhook_quorum",
                    format!("must be between 0 and {}", l.max_webhooks),
                ))
            }
            // A quorum with no webhooks at all is ignored (SDKs send the default).
            Some(_) if webhooks.is_empty() => 0,
            Some(0) if voters == 0 => 0,
            Some(0) => {
                return Err(FieldError::invalid(
                    "webhook_quorum",
                    format!("is 0 but {voters} webhooks have has_quorum_vote; it must be 1 to {voters} (set has_quorum_vote false on webhooks that should not count)"),
                ))
            }
            Some(q) if q > voters => {
                return Err(FieldError::invalid(
                    "webhook_quorum",
                    format!("is {q} but only {voters} webhooks have has_quorum_vote"),
                ))
            }
            Some(q) => q,
        };
        let fallback_in = take_object(self.fallback_job, "fallback_job")?;
        let on_success_in = take_object(self.on_success, "on_success")?;
        let on_failure_in = take_object(self.on_failure, "on_failure")?;
        if self.on_failure_timeout_ms.is_some() && on_failure_in.is_none() {
            return Err(FieldError::invalid(
                "on_failure_timeout_ms",
                "needs on_failure: it says when on_failure runs",
            ));
        }
        if let Some(ms) = self.on_failure_timeout_ms {
            if ms < 1 || ms > l.max_timeout_ms {
                return Err(FieldError::invalid(
                    "on_failure_timeout_ms",
                    format!("must be between 1 and {}", l.max_timeout_ms),
                ));
            }
        }
        let nested_allowed = depth < MAX_NESTING;
        let mut nested_targets = Vec::new();
        let mut nest = |name: &str,
                        v: Option<serde_json::Map<String, serde_json::Value>>,
                        link: bool|
         -> Result<Option<NestedJob>, FieldError> {
            let Some(mut obj) = v else { return Ok(None) };
            if !nested_allowed {
                return Err(FieldError::invalid(
                    name,
                    format!("nested more than {MAX_NESTING} levels deep"),
                ));
            }
            let trigger = if link {
                let t = obj
                    .remove("trigger")
                    .ok_or_else(|| FieldError::missing(format!("{name}.trigger")))?;
                Some(parse_trigger(t, &format!("{name}.trigger"))?)
            } else {
                None
            };
            // A child may read its parent's answer (`{{parent.response…}}`, checked and
            // rendered by `workflow`): its own checks see the placeholders masked.
            let raw = (!link).then(|| crate::template::mask_job(&mut obj));
            let input =
                from_value(serde_json::Value::Object(obj)).map_err(|e| prefixed(e, name))?;
            if link {
                for (field, given) in [
                    (
                        "webhooks",
                        input.webhooks.as_ref().is_some_and(|w| !w.is_empty()),
                    ),
                    (
                        "on_success",
                        input.on_success.as_ref().is_some_and(|v| !v.is_null()),
                    ),
                    (
                        "on_failure",
                        input.on_failure.as_ref().is_some_and(|v| !v.is_null()),
                    ),
                    (
                        "on_failure_timeout_ms",
                        input.on_failure_timeout_ms.is_some(),
                    ),
                    ("timeout", input.timeout.is_some()),
                    ("retry_at", input.retry_at.is_some()),
                ] {
                    if given {
                        return Err(FieldError::invalid(
                            format!("{name}.{field}"),
                            "not allowed on a fallback link: the chain's first job sets it for the whole chain",
                        ));
                    }
                }
            }
            let mut v = input
                .validate_at(cx, depth + 1)
                .map_err(|e| prefixed(e, name))?;
            if let Some(raw) = raw {
                raw.restore(&mut v.spec.url, &mut v.spec.headers, &mut v.spec.body);
            }
            nested_targets.push((format!("{name}.url"), v.target));
            for (i, t) in v.webhook_targets.into_iter().enumerate() {
                nested_targets.push((format!("{name}.webhooks[{i}].url"), t));
            }
            for (f, t) in v.nested_targets {
                nested_targets.push((format!("{name}.{f}"), t));
            }
            Ok(Some((v.spec, v.idempotent_key, trigger)))
        };
        let fallback = nest("fallback_job", fallback_in, true)?.map(|(spec, key, trigger)| {
            Box::new(Fallback {
                trigger: trigger.expect("links have triggers"),
                spec,
                idempotent_key: key,
            })
        });
        let child = |v: Option<NestedJob>| {
            v.map(|(spec, key, _)| {
                Box::new(Child {
                    spec,
                    lane: String::new(),
                    idempotent_key: key,
                })
            })
        };
        let on_success = child(nest("on_success", on_success_in, false)?);
        let on_failure = child(nest("on_failure", on_failure_in, false)?);
        let execution_mode =
            match self.execution_mode.as_deref() {
                None | Some("race") => ExecutionMode::Race,
                Some("fanout") if cx.clustered => ExecutionMode::Fanout,
                Some("fanout") => return Err(FieldError::not_supported(
                    "execution_mode",
                    "fanout needs cluster mode (nodes of the listed regions); this node runs alone",
                )),
                Some(_) => {
                    return Err(FieldError::invalid(
                        "execution_mode",
                        "must be \"race\" or \"fanout\"",
                    ))
                }
            };
        let region_policy = match self.region_policy.as_deref() {
            None | Some("fallback") => RegionPolicy::Fallback,
            Some("strict") => RegionPolicy::Strict,
            Some(_) => {
                return Err(FieldError::invalid(
                    "region_policy",
                    "must be \"fallback\" or \"strict\"",
                ))
            }
        };
        let regions = self.regions.unwrap_or_default();
        check_regions(&regions, "regions")?;
        if execution_mode == ExecutionMode::Fanout && regions.is_empty() {
            return Err(FieldError::invalid(
                "regions",
                "execution_mode fanout runs the call in every listed region: list at least one",
            ));
        }
        if region_policy == RegionPolicy::Strict
            && !cx.clustered
            && !regions.is_empty()
            && !regions.iter().any(|r| r == cx.local_region)
        {
            return Err(FieldError {
                code: "region_unavailable",
                field: "regions".into(),
                message: format!("region_policy strict needs a node in {regions:?}; this node runs alone in region {:?}", cx.local_region),
            });
        }

        let url = self.url.ok_or_else(|| FieldError::missing("url"))?;
        let target = check_outbound_url(&url, "url", cx)?;

        let method = self
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(FieldError::invalid(
                "method",
                format!("must be one of {}", METHODS.join(" ")),
            ));
        }

        let headers_in = self.headers.unwrap_or_default().0;
        if headers_in.len() > l.max_headers {
            return Err(FieldError::invalid(
                "headers",
                format!("at most {} headers", l.max_headers),
            ));
        }
        let mut headers: Vec<(String, String)> = Vec::with_capacity(headers_in.len());
        for (name, value) in headers_in {
            let field = format!("headers.{name}");
            if !check_token(&name) {
                return Err(FieldError::invalid(
                    field,
                    "not a valid header name (RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~)",
                ));
            }
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                return Err(FieldError::invalid(
                    field,
                    "header given more than once (names are case-insensitive); join repeated values with \", \"",
                ));
            }
            if RESERVED_HEADERS
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r))
            {
                return Err(FieldError::invalid(
                    field,
                    "set by EZThrottle; may not be overridden",
                ));
            }
            if name.len() + value.len() > l.max_header_bytes {
                return Err(FieldError::invalid(
                    field,
                    format!("header larger than {} bytes", l.max_header_bytes),
                ));
            }
            if !header_value_ok(&value) {
                return Err(FieldError::invalid(
                    field,
                    "value may not contain control characters other than tab (RFC 9110)",
                ));
            }
            headers.push((name, value));
        }
        // Stored (and shown) sorted by name, as they always were when a map held them.
        headers.sort_by(|a, b| a.0.cmp(&b.0));

        if let Some(b) = &self.body {
            if b.len() > l.max_body_bytes {
                return Err(FieldError {
                    code: "payload_too_large",
                    field: "body".into(),
                    message: format!("job body larger than {} bytes", l.max_body_bytes),
                });
            }
        }

        let metadata = self.metadata.unwrap_or_default();
        if metadata.len() > l.max_metadata_keys {
            return Err(FieldError::invalid(
                "metadata",
                format!("at most {} keys", l.max_metadata_keys),
            ));
        }
        for (k, v) in &metadata {
            if k.len() > l.max_metadata_value_bytes || v.len() > l.max_metadata_value_bytes {
                return Err(FieldError::invalid(
                    format!("metadata.{k}"),
                    format!(
                        "keys and values are at most {} bytes",
                        l.max_metadata_value_bytes
                    ),
                ));
            }
        }

        let rp = self.retry_policy.unwrap_or_default().0;
        let d = RetryPolicy::default();
        let retry_policy = RetryPolicy {
            max_retries: rp.max_retries.unwrap_or(d.max_retries),
            max_reroutes: rp.max_reroutes.unwrap_or(d.max_reroutes),
            retry_codes: rp.retry_codes.unwrap_or(d.retry_codes),
            reroute_codes: rp.reroute_codes.unwrap_or(d.reroute_codes),
        };
        if retry_policy.max_retries > 100 {
            return Err(FieldError::invalid(
                "retry_policy.max_retries",
                "must be between 0 and 100",
            ));
        }
        if retry_policy.max_reroutes > 100 {
            return Err(FieldError::invalid(
                "retry_policy.max_reroutes",
                "must be between 0 and 100",
            ));
        }
        for (name, codes) in [
            ("retry_codes", &retry_policy.retry_codes),
            ("reroute_codes", &retry_policy.reroute_codes),
        ] {
            if codes.len() > 100 {
                return Err(FieldError::invalid(
                    format!("retry_policy.{name}"),
                    "at most 100 codes",
                ));
            }
            for (i, c) in codes.iter().enumerate() {
                if !(100..=599).contains(c) || (200..300).contains(c) {
                    return Err(FieldError::invalid(
                        format!("retry_policy.{name}[{i}]"),
                        "must be an HTTP status 100-599 outside 2xx",
                    ));
                }
            }
        }

        let timeout_ms = match &self.timeout {
            None => DEFAULT_TIMEOUT_MS,
            Some(t) => t
                .to_millis()
                .map_err(|m| FieldError::invalid("timeout", m))?,
        };
        if timeout_ms < 1 || timeout_ms > l.max_timeout_ms {
            return Err(FieldError::invalid(
                "timeout",
                format!("must be between 1ms and {}ms", l.max_timeout_ms),
            ));
        }
        if let Some(at) = self.retry_at {
            if at > cx.now_ms.saturating_add(365 * 24 * 3600 * 1000) {
                return Err(FieldError::invalid(
                    "retry_at",
                    "more than a year away (it is milliseconds since the epoch)",
                ));
            }
        }

        if let Some(k) = &self.idempotent_key {
            if k.is_empty()
                || k.len() > l.max_idempotent_key_bytes
                || k.chars().any(char::is_control)
            {
                return Err(FieldError::invalid(
                    "idempotent_key",
                    format!(
                        "must be 1-{} printable characters",
                        l.max_idempotent_key_bytes
                    ),
                ));
            }
        }

        Ok(Validated {
            spec: JobSpec {
                url: target.url.to_string(),
                method,
                headers,
                body: self.body,
                metadata,
                regions,
                retry_policy,
                timeout_ms,
                retry_at: self.retry_at.filter(|&at| at > cx.now_ms),
                webhooks,
                webhook_quorum,
                region_policy,
                execution_mode,
                fallback,
                on_success,
                on_failure,
                on_failure_timeout_ms: self.on_failure_timeout_ms,
                parent: None,
                workflow: None,
                template_error: None,
            },
            target,
            idempotent_key: self.idempotent_key,
            webhook_targets,
            nested_targets,
        })
    }
}

fn check_regions(regions: &[String], field: &str) -> Result<(), FieldError> {
    for (i, r) in regions.iter().enumerate() {
        if r.is_empty()
            || r.len() > 64
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(FieldError::invalid(
                format!("{field}[{i}]"),
                "region names are 1-64 letters, digits, '-' or '_'",
            ));
        }
    }
    Ok(())
}

/// Checks a URL the server will call (a job's target or a webhook) against the size limit and
/// the SSRF rules for IP literals; names are resolved and checked by the caller.
fn check_outbound_url(url: &str, field: &str, cx: &Context<'_>) -> Result<TargetUrl, FieldError> {
    if url.len() > cx.limits.max_url_bytes {
        return Err(FieldError::invalid(
            field,
            format!("longer than {} bytes", cx.limits.max_url_bytes),
        ));
    }
    ssrf::check_url(cx.ssrf, url).map_err(|e| match e {
        ssrf::SsrfError::Url(u) => FieldError::invalid(field, u.to_string()),
        ssrf::SsrfError::Denied { addr, class } => FieldError::ssrf(
            field,
            format!("address {addr} is {} and not allowed", class.as_str()),
        ),
    })
}

/// Checks a list of webhooks given outside a job (a workflow's `webhooks`) by the job's rules
/// (at most `max_webhooks`, unique URLs, the SSRF rules, regions); answers them and their
/// targets (still to be resolved).
pub fn validate_webhook_values(
    values: Vec<serde_json::Value>,
    cx: &Context<'_>,
) -> Result<(Vec<Webhook>, Vec<TargetUrl>), FieldError> {
    let mut parsed = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let h: Obj<WebhookIn> = serde_json::from_value(v)
            .map_err(|e| FieldError::invalid(format!("webhooks[{i}]"), e.to_string()))?;
        parsed.push(h);
    }
    validate_webhooks(Some(parsed), cx)
}

fn validate_webhooks(
    input: Option<Vec<Obj<WebhookIn>>>,
    cx: &Context<'_>,
) -> Result<(Vec<Webhook>, Vec<TargetUrl>), FieldError> {
    let input = input.unwrap_or_default();
    if input.len() > cx.limits.max_webhooks {
        return Err(FieldError::invalid(
            "webhooks",
            format!("at most {} webhooks", cx.limits.max_webhooks),
        ));
    }
    let mut hooks: Vec<Webhook> = Vec::with_capacity(input.len());
    let mut targets = Vec::with_capacity(input.len());
    for (i, Obj(h)) in input.into_iter().enumerate() {
        let target = check_outbound_url(&h.url, &format!("webhooks[{i}].url"), cx)?;
        let url = target.url.to_string();
        if let Some(j) = hooks.iter().position(|o| o.url == url) {
            return Err(FieldError::invalid(
                format!("webhooks[{i}].url"),
                format!("same URL as webhooks[{j}]"),
            ));
        }
        let regions = h.regions.unwrap_or_default();
        check_regions(&regions, &format!("webhooks[{i}].regions"))?;
        hooks.push(Webhook {
            url,
            regions,
            has_quorum_vote: h.has_quorum_vote.unwrap_or(true),
        });
        targets.push(target);
    }
    Ok((hooks, targets))
}

impl JobSpec {
    /// The spec as shown to clients: credential header values replaced by `[redacted]`.
    pub fn redacted(&self, extra_credential_headers: &[String]) -> JobSpec {
        let mut out = self.clone();
        out.for_each_mut(&mut |spec| {
            for (n, v) in spec.headers.iter_mut() {
                if is_sensitive_header(n, extra_credential_headers) {
                    *v = "[redacted]".into();
                }
            }
        });
        out
    }
}

/// Parts of a header name that mark it as carrying a secret (`X-Auth-Token`, `Proxy-Authorization`,
/// `X-Session-Id`, `Set-Cookie`, `X-Api-Key`, …). Views err on the side of hiding: a header shown
/// as `[redacted]` costs nothing, a leaked token costs a rotation.
pub const SENSITIVE_HEADER_PARTS: [&str; 6] =
    ["token", "secret", "key", "auth", "session", "cookie"];

/// Whether a job header's value is hidden in views: the lane's credential headers (default and
/// configured) and any name containing one of `SENSITIVE_HEADER_PARTS`, case-insensitively.
pub fn is_sensitive_header(name: &str, extra_credential_headers: &[String]) -> bool {
    if crate::lane::is_credential_header(name, extra_credential_headers) {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    SENSITIVE_HEADER_PARTS.iter().any(|p| lower.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx_validate(json: &str) -> Result<Validated, FieldError> {
        let limits = Limits::default();
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: false,
            now_ms: 1_000,
        };
        parse(json.as_bytes())?.validate(&cx)
    }

    fn err(json: &str) -> FieldError {
        cx_validate(json).expect_err(json)
    }

    #[cfg(feature = "openapi")]
    #[test]
    fn the_openapi_document_states_the_default_limits() {
        let l = Limits::default();
        let d = crate::openapi::LIMITS;
        assert_eq!(
            (d.max_headers, d.max_header_bytes, d.max_metadata_keys),
            (l.max_headers, l.max_header_bytes, l.max_metadata_keys)
        );
        assert_eq!(
            (
                d.max_metadata_value_bytes,
                d.max_timeout_ms,
                d.default_timeout_ms
            ),
            (
                l.max_metadata_value_bytes,
                l.max_timeout_ms,
                DEFAULT_TIMEOUT_MS
            )
        );
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let v = cx_validate(r#"{"url":"http://127.0.0.1:9/x"}"#).unwrap();
        assert_eq!(v.spec.method, "GET");
        assert_eq!(v.spec.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(v.spec.retry_policy, RetryPolicy::default());
    }

    #[test]
    fn camel_case_aliases_at_every_level() {
        let v = cx_validate(r#"{"url":"http://127.0.0.1/","retryPolicy":{"maxRetries":7,"retryCodes":[500]},"idempotentKey":"k","retryAt":5000}"#).unwrap();
        assert_eq!(v.spec.retry_policy.max_retries, 7);
        assert_eq!(v.spec.retry_policy.retry_codes, vec![500]);
        assert_eq!(v.idempotent_key.as_deref(), Some("k"));
        assert_eq!(v.spec.retry_at, Some(5000));
    }

    #[test]
    fn errors_name_field_and_code() {
        let e = err(r#"{"url":"http://127.0.0.1/","webhook_url":"x"}"#);
        assert_eq!((e.code, e.field.as_str()), ("unknown_field", "webhook_url"));
        let e = err(r#"{"url":"http://127.0.0.1/","retry_policy":{"max_retries":101}}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("invalid_field", "retry_policy.max_retries")
        );
        let e = err(r#"{"url":"http://127.0.0.1/","retry_policy":{"retry_codes":[429,"x"]}}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("invalid_field", "retry_policy.retry_codes[1]")
        );
        let e = err(r#"{"url":"http://127.0.0.1/","retry_policy":{"bogus":1}}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("unknown_field", "retry_policy.bogus")
        );
        let e = err(r#"{"method":"GET"}"#);
        assert_eq!((e.code, e.field.as_str()), ("missing_field", "url"));
        let e = err(r#"{"url":"http://127.0.0.1/","method":"FETCH"}"#);
        assert_eq!(e.field, "method");
        let e = err(r#"{"url":"http://127.0.0.1/","timeout":"soon"}"#);
        assert_eq!(e.field, "timeout");
        let e = err(r#"{"url": "#);
        assert_eq!(e.code, "invalid_json");
        let e = err(r#"{"url":"http://127.0.0.1/","headers":{"Host":"x"}}"#);
        assert_eq!(e.field, "headers.Host");
        let e = err(r#"{"url":"ftp://127.0.0.1/"}"#);
        assert_eq!((e.code, e.field.as_str()), ("invalid_field", "url"));
        let e = err(r#"{"url":"http://10.0.0.1/"}"#);
        assert_eq!((e.code, e.field.as_str()), ("ssrf_denied", "url"));
        assert!(e.message.contains("private"), "{}", e.message);
    }

    #[test]
    fn later_features_are_refused_not_ignored() {
        let e = err(r#"{"url":"http://127.0.0.1/","execution_mode":"fanout"}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("not_supported", "execution_mode")
        );
        // In a cluster fanout is accepted, with regions to fan out to.
        let limits = Limits::default();
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: true,
            now_ms: 1_000,
        };
        let v =
            parse(br#"{"url":"http://127.0.0.1/","execution_mode":"fanout","regions":["a","b"]}"#)
                .unwrap()
                .validate(&cx)
                .unwrap();
        assert_eq!(v.spec.execution_mode, ExecutionMode::Fanout);
        let e = parse(br#"{"url":"http://127.0.0.1/","execution_mode":"fanout"}"#)
            .unwrap()
            .validate(&cx)
            .unwrap_err();
        assert_eq!((e.code, e.field.as_str()), ("invalid_field", "regions"));
        assert!(
            cx_validate(r#"{"url":"http://127.0.0.1/","webhooks":[],"regions":["fra"]}"#).is_ok(),
            "empty/fallback is fine"
        );
        let e = err(r#"{"url":"http://127.0.0.1/","regions":["fra"],"region_policy":"strict"}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("region_unavailable", "regions")
        );
        assert!(e.message.contains("runs alone"), "{}", e.message);
    }

    #[test]
    fn webhooks_are_validated_with_field_paths() {
        let v = cx_validate(
            r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1:9/a"},{"url":"https://example.com/h","hasQuorumVote":false,"regions":["fra"]}]}"#,
        )
        .unwrap();
        assert_eq!(v.spec.webhooks.len(), 2);
        assert!(v.spec.webhooks[0].has_quorum_vote && !v.spec.webhooks[1].has_quorum_vote);
        assert_eq!(v.spec.webhook_quorum, 1, "default: one voting webhook");
        assert_eq!(v.webhook_targets.len(), 2);
        for (json, code, field) in [
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/"},{"url":"http://10.1.2.3/h"}]}"#,
                "ssrf_denied",
                "webhooks[1].url",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"ftp://127.0.0.1/"}]}"#,
                "invalid_field",
                "webhooks[0].url",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a"},{"url":"http://127.0.0.1/a"}]}"#,
                "invalid_field",
                "webhooks[1].url",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a","regions":["a b"]}]}"#,
                "invalid_field",
                "webhooks[0].regions[0]",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a","secret":"x"}]}"#,
                "unknown_field",
                "webhooks[0].secret",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a"},{"url":"http://127.0.0.1/b","has_quorum_vote":false}],"webhook_quorum":2}"#,
                "invalid_field",
                "webhook_quorum",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a"}],"webhook_quorum":0}"#,
                "invalid_field",
                "webhook_quorum",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhook_quorum":11}"#,
                "invalid_field",
                "webhook_quorum",
            ),
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                (code, field),
                "{json}: {}",
                e.message
            );
        }
        let many: Vec<String> = (0..11)
            .map(|i| format!(r#"{{"url":"http://127.0.0.1/{i}"}}"#))
            .collect();
        let e = err(&format!(
            r#"{{"url":"http://127.0.0.1/","webhooks":[{}]}}"#,
            many.join(",")
        ));
        assert_eq!(e.field, "webhooks");
        // SDKs send the default quorum even without webhooks.
        let v = cx_validate(r#"{"url":"http://127.0.0.1/","webhook_quorum":1}"#).unwrap();
        assert_eq!(v.spec.webhook_quorum, 0);
    }

    #[test]
    fn chains_parse_as_the_hosted_sdks_send_them() {
        let v = cx_validate(
            r#"{"url":"http://127.0.0.1/a","webhooks":[{"url":"http://127.0.0.1/h"}],
                "fallback_job":{"url":"http://127.0.0.1/b","method":"POST","trigger":{"type":"on_error","codes":[500,502]},
                   "fallbackJob":{"url":"http://127.0.0.1/c","trigger":{"type":"on_timeout","timeoutMs":500}}},
                "onSuccess":{"url":"http://127.0.0.1/s","idempotentKey":"s-1","webhooks":[{"url":"http://127.0.0.1/h2"}]},
                "on_failure":{"url":"http://127.0.0.1/f"},"on_failure_timeout_ms":9000}"#,
        )
        .unwrap();
        let links = v.spec.links();
        assert_eq!(links.len(), 3);
        assert_eq!(links[1].0.method, "POST");
        assert_eq!(
            links[1].1,
            Some(&Trigger::OnError {
                codes: vec![500, 502]
            })
        );
        assert_eq!(links[2].1, Some(&Trigger::OnTimeout { timeout_ms: 500 }));
        let (rel, child) = v.spec.child_for(crate::JobState::Succeeded).unwrap();
        assert_eq!(rel, Relation::OnSuccess);
        assert_eq!(child.idempotent_key.as_deref(), Some("s-1"));
        assert_eq!(child.spec.webhooks.len(), 1);
        assert_eq!(
            v.spec.child_for(crate::JobState::Expired).unwrap().0,
            Relation::OnFailure
        );
        assert!(v.spec.child_for(crate::JobState::Cancelled).is_none());
        assert_eq!(v.spec.on_failure_timeout_ms, Some(9000));
        assert_eq!(v.nested_targets.len(), 5, "{:?}", v.nested_targets);
        // The stored form reads back (a spec without chains keeps its old JSON).
        let json = serde_json::to_string(&v.spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), v.spec);
        let plain = cx_validate(r#"{"url":"http://127.0.0.1/a"}"#).unwrap().spec;
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("\"fallback\":") && !json.contains("parent"),
            "{json}"
        );
        // Children ids are derived from the parent, distinct per relation.
        let p = crate::JobId::new(5_000, 42);
        assert_eq!(
            child_id(p, Relation::OnSuccess, 1),
            child_id(p, Relation::OnSuccess, 1)
        );
        assert_ne!(
            child_id(p, Relation::OnSuccess, 1),
            child_id(p, Relation::OnFailure, 1)
        );
        assert_eq!(child_id(p, Relation::OnFailure, 1).timestamp_ms(), 5_000);
        assert_ne!(
            child_id(p, Relation::OnFailure, 1),
            child_id(p, Relation::OnFailure, 2)
        );
        // A child's child of the same relation is a new job, not its grandparent.
        for r in [Relation::OnSuccess, Relation::OnFailure] {
            let grandchild = child_id(child_id(p, r, 1), r, 1);
            assert_ne!(grandchild, p);
            assert_ne!(grandchild, child_id(p, r, 1));
        }
    }

    #[test]
    fn bad_chains_name_the_nested_field() {
        for (json, code, field) in [
            (
                r#"{"url":"http://127.0.0.1/","fallback_job":{"url":"http://127.0.0.1/b"}}"#,
                "missing_field",
                "fallback_job.trigger",
            ),
            (
                r#"{"url":"http://127.0.0.1/","fallback_job":{"url":"http://127.0.0.1/b","trigger":{"type":"sometimes"}}}"#,
                "invalid_field",
                "fallback_job.trigger",
            ),
            (
                r#"{"url":"http://127.0.0.1/","fallback_job":{"url":"http://127.0.0.1/b","trigger":{"type":"on_error","codes":[200]}}}"#,
                "invalid_field",
                "fallback_job.trigger.codes[0]",
            ),
            (
                r#"{"url":"http://127.0.0.1/","fallback_job":{"url":"http://10.0.0.1/b","trigger":{"type":"on_error","codes":[500]}}}"#,
                "ssrf_denied",
                "fallback_job.url",
            ),
            (
                r#"{"url":"http://127.0.0.1/","fallback_job":{"url":"http://127.0.0.1/b","trigger":{"type":"on_error","codes":[500]},"webhooks":[{"url":"http://127.0.0.1/h"}]}}"#,
                "invalid_field",
                "fallback_job.webhooks",
            ),
            (
                r#"{"url":"http://127.0.0.1/","on_success":{"url":"http://127.0.0.1/b","bogus":1}}"#,
                "unknown_field",
                "on_success.bogus",
            ),
            (
                r#"{"url":"http://127.0.0.1/","on_success":{"url":"http://127.0.0.1/b","on_failure":{"method":"GET"}}}"#,
                "missing_field",
                "on_success.on_failure.url",
            ),
            (
                r#"{"url":"http://127.0.0.1/","on_success":[1]}"#,
                "invalid_field",
                "on_success",
            ),
            (
                r#"{"url":"http://127.0.0.1/","on_failure_timeout_ms":5}"#,
                "invalid_field",
                "on_failure_timeout_ms",
            ),
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                (code, field),
                "{json}: {}",
                e.message
            );
        }
        // Nesting depth 8 is fine, 9 is refused.
        let mut job = r#"{"url":"http://127.0.0.1/z"}"#.to_string();
        for _ in 0..MAX_NESTING {
            job = format!(r#"{{"url":"http://127.0.0.1/","on_success":{job}}}"#);
        }
        assert!(cx_validate(&job).is_ok());
        let deeper = format!(r#"{{"url":"http://127.0.0.1/","on_success":{job}}}"#);
        let e = err(&deeper);
        assert!(
            e.field.ends_with("on_success") && e.message.contains("nested"),
            "{e:?}"
        );
        // Credentials are hidden at every level of a view.
        let v = cx_validate(r#"{"url":"http://127.0.0.1/","on_success":{"url":"http://127.0.0.1/b","headers":{"Authorization":"Bearer x"}}}"#).unwrap();
        let r = v.spec.redacted(&[]);
        assert_eq!(r.on_success.unwrap().spec.headers[0].1, "[redacted]");
    }

    #[test]
    fn redaction_hides_credentials() {
        let v = cx_validate(
            r#"{"url":"http://127.0.0.1/","headers":{"Authorization":"Bearer s","X-Other":"ok"}}"#,
        )
        .unwrap();
        let r = v.spec.redacted(&[]);
        assert!(r
            .headers
            .contains(&("Authorization".into(), "[redacted]".into())));
        assert!(r.headers.contains(&("X-Other".into(), "ok".into())));
    }

    #[test]
    fn quorum_zero_is_what_views_show_without_votes() {
        // No webhooks, or none voting: 0 is the value a view shows, so it can be posted back.
        let v = cx_validate(r#"{"url":"http://127.0.0.1/","webhook_quorum":0}"#).unwrap();
        assert_eq!(v.spec.webhook_quorum, 0);
        let v = cx_validate(
            r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1:9/a","has_quorum_vote":false}],"webhook_quorum":0}"#,
        )
        .unwrap();
        assert_eq!(v.spec.webhook_quorum, 0);
        let round_trip = serde_json::to_value(&v.spec).unwrap();
        assert_eq!(round_trip["webhook_quorum"], 0);
    }

    #[test]
    fn body_is_one_json_object() {
        for json in [
            r#"["http://127.0.0.1/x","GET"]"#,
            r#""http://127.0.0.1/x""#,
            "42",
            "null",
            r#"{"url":"http://127.0.0.1/"} trailing"#,
            r#"{"url":"http://127.0.0.1/"}{"url":"http://127.0.0.1/"}"#,
            r#"{"url":"http://127.0.0.1/"}]"#,
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                ("invalid_json", ""),
                "{json}: {e:?}"
            );
        }
        assert!(
            cx_validate(" {\"url\":\"http://127.0.0.1/\"}\n\t ").is_ok(),
            "whitespace is fine"
        );
        let e = err(r#"[1]"#);
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = err(r#"{"url":"http://127.0.0.1/","url":"http://127.0.0.1/"}"#);
        assert_eq!(
            (e.code, e.field.as_str()),
            ("invalid_field", "url"),
            "{e:?}"
        );
        let e = from_value(serde_json::json!(["http://127.0.0.1/x"])).unwrap_err();
        assert_eq!(e.code, "invalid_json", "batch element: {e:?}");
    }

    #[test]
    fn nested_objects_must_be_objects() {
        for (json, field) in [
            (
                r#"{"url":"http://127.0.0.1/","retry_policy":[3,2]}"#,
                "retry_policy",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[["http://127.0.0.1/a"]]}"#,
                "webhooks[0]",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":[["a","b"]]}"#,
                "headers",
            ),
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                ("invalid_field", field),
                "{json}: {e:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_named_at_every_level() {
        for (json, field) in [
            (r#"{"url":"http://127.0.0.1/","urll":"x"}"#, "urll"),
            (
                r#"{"url":"http://127.0.0.1/","retryPolicy":{"maxRetries":1,"max_retry":2}}"#,
                "retryPolicy.max_retry",
            ),
            (
                r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a"},{"url":"http://127.0.0.1/b","quorum":1}]}"#,
                "webhooks[1].quorum",
            ),
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                ("unknown_field", field),
                "{json}: {e:?}"
            );
        }
        // The aliases still work through the object-only wrapper.
        let v = cx_validate(r#"{"url":"http://127.0.0.1/","webhooks":[{"url":"http://127.0.0.1/a","hasQuorumVote":false}],"webhookQuorum":0}"#).unwrap();
        assert!(!v.spec.webhooks[0].has_quorum_vote);
    }

    #[test]
    fn duplicate_header_names_are_refused() {
        for (json, field) in [
            (
                r#"{"url":"http://127.0.0.1/","headers":{"X-A":"1","x-a":"2"}}"#,
                "headers.x-a",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":{"X-A":"1","X-A":"2"}}"#,
                "headers.X-A",
            ),
            (
                r#"{"url":"http://127.0.0.1/","headers":{"Authorization":"a","B":"b","AUTHORIZATION":"c"}}"#,
                "headers.AUTHORIZATION",
            ),
        ] {
            let e = err(json);
            assert_eq!(
                (e.code, e.field.as_str()),
                ("invalid_field", field),
                "{json}: {e:?}"
            );
        }
        let v =
            cx_validate(r#"{"url":"http://127.0.0.1/","headers":{"X-B":"1","X-A":"2"}}"#).unwrap();
        assert_eq!(
            v.spec.headers,
            vec![("X-A".into(), "2".into()), ("X-B".into(), "1".into())],
            "sorted by name, as before"
        );
    }

    #[test]
    fn header_values_follow_rfc_9110() {
        for value in [
            r"a\u0001b",
            r"a\u007fb",
            r"a\rb",
            r"a\nb",
            r"a\u0000b",
            r"\u001b[31m",
        ] {
            let json = format!(r#"{{"url":"http://127.0.0.1/","headers":{{"X-V":"{value}"}}}}"#);
            let e = err(&json);
            assert_eq!(
                (e.code, e.field.as_str()),
                ("invalid_field", "headers.X-V"),
                "{json}"
            );
        }
        for name in ["X A", "X:A", "", "é"] {
            let json = format!(r#"{{"url":"http://127.0.0.1/","headers":{{"{name}":"v"}}}}"#);
            let e = err(&json);
            assert_eq!(
                (e.code, e.field),
                ("invalid_field", format!("headers.{name}")),
                "{json}"
            );
        }
        let v =
            cx_validate(r#"{"url":"http://127.0.0.1/","headers":{"X-V":"a\tb c~ é"}}"#).unwrap();
        assert_eq!(
            v.spec.headers[0].1, "a\tb c~ é",
            "tab, space and non-ASCII are allowed"
        );
    }

    #[test]
    fn header_key_and_body_key() {
        let parse_with = |json: &str, header: &str| {
            let mut input = parse(json.as_bytes()).unwrap();
            input.take_header_key(header).map(|_| input)
        };
        let limits = Limits::default();
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let cx = Context {
            limits: &limits,
            ssrf: &policy,
            local_region: "local",
            clustered: false,
            now_ms: 1_000,
        };
        let v = parse_with(r#"{"url":"http://127.0.0.1/"}"#, "h-1")
            .unwrap()
            .validate(&cx)
            .unwrap();
        assert_eq!(v.idempotent_key.as_deref(), Some("h-1"));
        let v = parse_with(
            r#"{"url":"http://127.0.0.1/","idempotent_key":"same"}"#,
            "same",
        )
        .unwrap()
        .validate(&cx)
        .unwrap();
        assert_eq!(v.idempotent_key.as_deref(), Some("same"));
        let e = parse_with(r#"{"url":"http://127.0.0.1/","idempotentKey":"b"}"#, "h").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_str()),
            ("invalid_field", "idempotent_key")
        );
        // The header's value is checked like the field's.
        let e = parse_with(r#"{"url":"http://127.0.0.1/"}"#, "")
            .unwrap()
            .validate(&cx)
            .unwrap_err();
        assert_eq!(e.field, "idempotent_key");
    }

    #[test]
    fn redaction_hides_anything_that_looks_secret() {
        let v = cx_validate(
            r#"{"url":"http://127.0.0.1/","headers":{"Proxy-Authorization":"Basic x","X-Auth-Token":"t","X-Session-Id":"s","Cookie":"c","X-Client-Secret":"cs","X-My-Key":"k","X-Shop":"shop-cred","Accept":"application/json"}}"#,
        )
        .unwrap();
        let r = v.spec.redacted(&["x-shop".into()]);
        for (n, v) in &r.headers {
            if n == "Accept" {
                assert_eq!(v, "application/json");
            } else {
                assert_eq!(v, "[redacted]", "{n}");
            }
        }
    }
}
