//! Webhooks: a job's outcome as it goes on the wire, how it is signed and verified, when a
//! failed delivery is tried again, and whether enough receivers acknowledged it.
//!
//! Two signature schemes are sent side by side over the same body, so existing receivers keep
//! working whichever verifier they use:
//! - EZThrottle's own (Stripe-style): `X-EZThrottle-Signature: t=<unix s>,v1=<hex>` where the hex
//!   is HMAC-SHA256 keyed with the secret's UTF-8 bytes over `"<t>.<raw body>"`; one `v1=` per
//!   active secret (primary, then secondary).
//! - Standard Webhooks v1: `webhook-signature: v1,<base64>` (space-separated, one per secret)
//!   over `"<webhook-id>.<t>.<raw body>"`. The key is the base64-decoded part of a `whsec_…`
//!   secret (what the Standard Webhooks libraries do with such a string); any other secret is
//!   used as its raw UTF-8 bytes (what those libraries do when handed bytes).
//!
//! Verification lives here too, so our tests and every SDK agree on one set of rules and vectors
//! (`testdata/webhook-signatures.json`): timestamps more than `TOLERANCE_S` away in either
//! direction are refused, lengths are compared before bytes (the empty-signature bypass fixed
//! in standard-webhooks 98abef1), and comparison is constant-time.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::JobState;

/// A webhook on a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// Where the outcome is POSTed (checked against the SSRF rules at submit and connect time).
    pub url: String,
    /// Regions to deliver it from: in a cluster, a live node of each listed region sends it
    /// (raced; the first 2xx wins); with none live, the node holding the delivery does. Empty:
    /// from the node holding the delivery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Whether its acknowledgement counts towards the job's webhook quorum.
    pub has_quorum_vote: bool,
}

/// How far a signed timestamp may be from now, either way (Stripe and the Standard Webhooks
/// libraries use the same 5 minutes).
pub const TOLERANCE_S: u64 = 300;

/// Shortest secret accepted by the secrets API.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted by the secrets API.
pub const MAX_SECRET_LEN: usize = 256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// `X-EZThrottle-Signature` for `body` sent at `t` (Unix seconds), one `v1=` per secret.
pub fn ezthrottle_signature(secrets: &[&str], t: u64, body: &[u8]) -> String {
    let ts = t.to_string();
    let mut out = format!("t={ts}");
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out.push_str(",v1=");
        out.push_str(&hex::encode(mac(
            s.as_bytes(),
            &[ts.as_bytes(), b".", body],
        )));
    }
    out
}

/// The HMAC key a Standard Webhooks verifier derives from `secret`: the decoded base64 of a
/// `whsec_` secret, else the secret's bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `webhook-signature` (Standard Webhooks) for message `msg_id` sent at `t`.
pub fn standard_signature(secrets: &[&str], msg_id: &str, t: u64, body: &[u8]) -> String {
    let ts = t.to_string();
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let sig = mac(
                &standard_key(s),
                &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
            );
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(sig)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not in the expected form (e.g. no `t=`, a non-numeric timestamp).
    #[error("malformed signature header")]
    Malformed,
    /// No `v1` signature in the header.
    #[error("no v1 signature")]
    NoSignature,
    /// The timestamp is older than the tolerance (a replay, or a very late retry).
    #[error("timestamp too old")]
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("timestamp too new")]
    TooNew,
    /// No signature matches any of the secrets (wrong secret or altered body).
    #[error("no matching signature")]
    Mismatch,
    /// No usable (non-empty) secret was given.
    #[error("no secret")]
    NoSecret,
}

fn check_time(t: u64, now_s: u64, tolerance_s: u64) -> Result<(), VerifyError> {
    if now_s > t && now_s - t > tolerance_s {
        return Err(VerifyError::TooOld);
    }
    if t > now_s && t - now_s > tolerance_s {
        return Err(VerifyError::TooNew);
    }
    Ok(())
}

fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The checks both schemes share once their header is parsed (and a usable secret is known to
/// exist): at least one signature, a fresh timestamp, then whether any signature equals what any
/// secret produces.
fn verify_any(
    secrets: &[&str],
    t: u64,
    sigs: &[&str],
    now_s: u64,
    tolerance_s: u64,
    expected: impl Fn(&str) -> String,
) -> Result<(), VerifyError> {
    if sigs.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    check_time(t, now_s, tolerance_s)?;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let want = expected(s);
        if sigs.iter().any(|sig| ct_eq_str(sig, &want)) {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// Checked before parsing, so a receiver with no secret configured hears that first.
fn require_secret(secrets: &[&str]) -> Result<(), VerifyError> {
    if secrets.iter().any(|s| !s.is_empty()) {
        Ok(())
    } else {
        Err(VerifyError::NoSecret)
    }
}

/// Verifies an `X-EZThrottle-Signature` header against any of `secrets`.
pub fn verify_ezthrottle(
    header: &str,
    body: &[u8],
    secrets: &[&str],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), VerifyError> {
    require_secret(secrets)?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(VerifyError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<u64>().map_err(|_| VerifyError::Malformed)?),
            "v1" => sigs.push(v),
            _ => {} // other schemes (e.g. Stripe's legacy v0) are ignored
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    let ts = t.to_string();
    verify_any(secrets, t, &sigs, now_s, tolerance_s, |s| {
        hex::encode(mac(s.as_bytes(), &[ts.as_bytes(), b".", body]))
    })
}

/// Verifies the Standard Webhooks trio (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
pub fn verify_standard(
    msg_id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    secrets: &[&str],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), VerifyError> {
    require_secret(secrets)?;
    let t: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed)?;
    let sigs: Vec<&str> = signature
        .split(' ')
        .filter_map(|p| p.strip_prefix("v1,"))
        .collect();
    verify_any(secrets, t, &sigs, now_s, tolerance_s, |s| {
        let sig = standard_signature(&[s], msg_id, t, body);
        sig.strip_prefix("v1,").unwrap_or(&sig).to_string()
    })
}

/// A fanout job's outcome in one region (`execution_mode: fanout`): the latest leg of the
/// region in the job's attempt series (a region that succeeded keeps its success); also one
/// leg of a raced attempt (`execution_mode: race`, with its `outcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionOutcome {
    /// The region.
    pub region: String,
    /// The node that made the call (absent when the region had no live node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The target's status, when it answered.
    pub status_code: Option<u16>,
    /// Why there is no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The leg's latency, ms.
    pub latency_ms: u64,
    /// How the leg was judged: `success`, `retry`, `reroute` or `fail`.
    pub decision: crate::retry::Verdict,
    /// A raced attempt's leg (`execution_mode: race`): `won`, `lost`, `cancelled`, `error`
    /// or `refused` (not sent: no lane permit or hedge budget). Absent for fanout legs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::hedge::LegOutcome>,
}

/// The upstream answer carried in a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayloadResponse {
    /// HTTP status.
    pub status_code: u16,
    /// Headers (a repeated name keeps its values joined by ", ").
    pub headers: BTreeMap<String, String>,
    /// Body as captured (capped).
    pub body: String,
}

impl PayloadResponse {
    /// Builds the response part from a header list that may repeat names.
    pub fn new(status_code: u16, headers: &[(String, String)], body: String) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (n, v) in headers {
            map.entry(n.to_ascii_lowercase())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        Self {
            status_code,
            headers: map,
            body,
        }
    }
}

/// Why a job did not succeed, as carried in a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayloadError {
    /// Stable code (`http_status`, `retries_exhausted`, `deadline`, `cancelled`, …).
    pub code: String,
    /// Human text.
    pub message: String,
}

/// The body of a webhook delivery (API.md "Webhooks"), serialised once when the job ends and
/// sent byte-identical on every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WebhookPayload))]
pub struct Payload {
    /// The job.
    pub job_id: String,
    /// Its dedup key.
    pub idempotent_key: String,
    /// `success` or `failed` (expired and cancelled jobs are `failed` with an error code).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::hosted_status))]
    pub status: &'static str,
    /// The final upstream answer, if there was one.
    pub response: Option<PayloadResponse>,
    /// The job's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PayloadError>,
    /// Attempts made.
    pub attempts: u32,
    /// Region of the node that finished the job.
    pub region: String,
    /// A fanout job: its outcome in each listed region, in `regions` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionOutcome>,
    /// When the job became final, ms since the epoch.
    pub completed_at: u64,
    /// Standard Webhooks event type: `job.` and the job's final state (`job.succeeded`,
    /// `job.failed`, `job.expired`, `job.cancelled`); finer than `status`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::event_type))]
    pub event_type: &'static str,
    /// Standard Webhooks `timestamp`: `completed_at` in RFC 3339 (UTC, milliseconds).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub timestamp: String,
}

/// The Standard Webhooks `type` of a job's outcome: `job.<state>` (API.md's vocabulary).
pub fn event_type(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "job.queued",
        JobState::Scheduled => "job.scheduled",
        JobState::Running => "job.running",
        JobState::Succeeded => "job.succeeded",
        JobState::Failed => "job.failed",
        JobState::Expired => "job.expired",
        JobState::Cancelled => "job.cancelled",
    }
}

/// The hosted `status` of a job's outcome: `success` for a succeeded job, else `failed`
/// (expired and cancelled jobs too, with their error code).
pub fn hosted_status(state: JobState) -> &'static str {
    if state == JobState::Succeeded {
        "success"
    } else {
        "failed"
    }
}

/// `ms` since the epoch in RFC 3339, UTC, with milliseconds (`2026-01-02T03:04:05.678Z`).
/// Formats a given instant; reads no clock.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

impl Payload {
    /// The exact bytes to sign and send.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payload serialises")
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or in flight).
    Pending,
    /// A 2xx was received.
    Delivered,
    /// The schedule ran out, or the receiver answered 410 Gone.
    Failed,
}

impl DeliveryState {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// Whether enough voting webhooks acknowledged a job's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuorumState {
    /// Not yet decided.
    Pending,
    /// At least `webhook_quorum` voting webhooks acknowledged.
    Met,
    /// Too many voting webhooks failed for the quorum to be reached.
    Failed,
}

/// The quorum over voting deliveries, each given as (acknowledged at least once, current state).
/// A delivery that was acknowledged once keeps its vote even while it is being redelivered.
pub fn quorum(
    required: u32,
    votes: impl IntoIterator<Item = (bool, DeliveryState)>,
) -> QuorumState {
    let (mut acked, mut open) = (0u32, 0u32);
    for (was_acked, state) in votes {
        if was_acked || state == DeliveryState::Delivered {
            acked += 1;
        } else if state == DeliveryState::Pending {
            open += 1;
        }
    }
    if acked >= required {
        QuorumState::Met
    } else if acked + open >= required {
        QuorumState::Pending
    } else {
        QuorumState::Failed
    }
}

/// When failed deliveries are tried again: the wait after each failed attempt (the first
/// attempt is immediate), jittered by ±`jitter`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Waits after attempt 1, 2, …; when they run out the delivery is failed.
    pub delays_ms: Vec<u64>,
    /// Relative jitter, e.g. 0.2 for ±20 %.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 14 h, 20 h: ten attempts
    /// over about 2.6 days (Svix's schedule, extended towards Standard Webhooks' tail so
    /// a receiver has nearly the three days API.md promises).
    fn default() -> Self {
        const S: u64 = 1000;
        const M: u64 = 60 * S;
        const H: u64 = 60 * M;
        Self {
            delays_ms: vec![
                5 * S,
                5 * M,
                30 * M,
                2 * H,
                5 * H,
                10 * H,
                10 * H,
                14 * H,
                20 * H,
            ],
            jitter: 0.2,
        }
    }
}

/// The longest a receiver's Retry-After may postpone a delivery.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 3600 * 1000;

/// What a receiver's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryPlan {
    /// Acknowledged.
    Delivered,
    /// Try again at this time (ms since epoch).
    RetryAt(u64),
    /// Give up.
    Failed,
}

impl RetrySchedule {
    /// Judges one attempt: `status` is `None` for a network error or timeout. `failed_before`
    /// counts the failed attempts of this run before this one. A 2xx is delivered; 410 Gone
    /// gives up at once (the receiver says the endpoint is gone, as Standard Webhooks advises);
    /// anything else (3xx included: redirects are not followed) waits for the next step, and
    /// never less than the receiver's Retry-After (capped at 24 h).
    pub fn plan(
        &self,
        status: Option<u16>,
        failed_before: u32,
        retry_after_ms: Option<u64>,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> DeliveryPlan {
        match status {
            Some(s) if (200..300).contains(&s) => return DeliveryPlan::Delivered,
            Some(410) => return DeliveryPlan::Failed,
            _ => {}
        }
        let Some(&base) = self.delays_ms.get(failed_before as usize) else {
            return DeliveryPlan::Failed;
        };
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            rng.gen_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        let wait = ((base as f64) * factor) as u64;
        let wait = wait.max(retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS));
        DeliveryPlan::RetryAt(now_ms.saturating_add(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn standard_webhooks_spec_vector() {
        // From the Standard Webhooks reference (shared/reference/webhook-signing.md §2.4).
        let sig = standard_signature(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_sends_one_signature_per_secret_and_either_verifies() {
        let body = b"{\"a\":1}";
        let h = ezthrottle_signature(
            &["new-secret-0123456789", "old-secret-0123456789"],
            100,
            body,
        );
        assert_eq!(h.matches("v1=").count(), 2, "{h}");
        for only in ["new-secret-0123456789", "old-secret-0123456789"] {
            assert_eq!(
                verify_ezthrottle(&h, body, &[only], 100, TOLERANCE_S),
                Ok(())
            );
        }
        assert_eq!(
            verify_ezthrottle(&h, body, &["other-secret-0123456"], 100, TOLERANCE_S),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn empty_signature_is_not_a_match() {
        // The bypass fixed in standard-webhooks 98abef1: `v1,` compared by zip() always passed.
        let r = verify_standard(
            "msg_1",
            "100",
            "v1,",
            b"x",
            &["secret-0123456789ab"],
            100,
            300,
        );
        assert_eq!(r, Err(VerifyError::Mismatch));
        let r = verify_ezthrottle("t=100,v1=", b"x", &["secret-0123456789ab"], 100, 300);
        assert_eq!(r, Err(VerifyError::Mismatch));
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let h = ezthrottle_signature(&["secret-0123456789ab"], 1000, b"x");
        let s = ["secret-0123456789ab"];
        assert_eq!(verify_ezthrottle(&h, b"x", &s, 1300, 300), Ok(()));
        assert_eq!(
            verify_ezthrottle(&h, b"x", &s, 1301, 300),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            verify_ezthrottle(&h, b"x", &s, 699, 300),
            Err(VerifyError::TooNew)
        );
    }

    #[test]
    fn quorum_counts_acknowledged_votes() {
        use DeliveryState::*;
        assert_eq!(
            quorum(
                2,
                [(false, Delivered), (false, Delivered), (false, Pending)]
            ),
            QuorumState::Met
        );
        assert_eq!(
            quorum(2, [(false, Delivered), (false, Pending), (false, Failed)]),
            QuorumState::Pending
        );
        assert_eq!(
            quorum(2, [(false, Delivered), (false, Failed), (false, Failed)]),
            QuorumState::Failed
        );
        // Acknowledged once, now being redelivered: still counts.
        assert_eq!(quorum(1, [(true, Pending)]), QuorumState::Met);
        assert_eq!(quorum(0, []), QuorumState::Met);
    }

    #[test]
    fn schedule_runs_out_and_honours_retry_after() {
        let s = RetrySchedule {
            delays_ms: vec![5_000, 300_000],
            jitter: 0.2,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(
            s.plan(Some(204), 0, None, 0, &mut rng),
            DeliveryPlan::Delivered
        );
        assert_eq!(
            s.plan(Some(410), 0, None, 0, &mut rng),
            DeliveryPlan::Failed
        );
        match s.plan(Some(500), 0, None, 1_000, &mut rng) {
            DeliveryPlan::RetryAt(t) => assert!((5_000..=7_000).contains(&t), "{t}"),
            p => panic!("{p:?}"),
        }
        match s.plan(None, 1, Some(3_600_000), 0, &mut rng) {
            DeliveryPlan::RetryAt(t) => assert_eq!(t, 3_600_000),
            p => panic!("{p:?}"),
        }
        assert_eq!(
            s.plan(Some(301), 2, None, 0, &mut rng),
            DeliveryPlan::Failed
        );
    }

    #[test]
    fn payload_joins_repeated_headers_and_omits_absent_error() {
        let p = Payload {
            job_id: "job_1".into(),
            idempotent_key: "k".into(),
            status: "success",
            response: Some(PayloadResponse::new(
                200,
                &[
                    ("Set-Cookie".into(), "a".into()),
                    ("set-cookie".into(), "b".into()),
                ],
                "ok".into(),
            )),
            metadata: BTreeMap::new(),
            error: None,
            attempts: 1,
            region: "local".into(),
            regions: Vec::new(),
            completed_at: 5,
            event_type: event_type(JobState::Succeeded),
            timestamp: rfc3339_ms(5),
        };
        let v: serde_json::Value = serde_json::from_slice(&p.to_bytes()).unwrap();
        assert_eq!(v["response"]["headers"]["set-cookie"], "a, b");
        assert!(v.get("error").is_none());
        assert_eq!(v["status"], "success");
        assert_eq!(v["type"], "job.succeeded");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.005Z");
    }

    #[test]
    fn one_vocabulary_maps_states_to_status_and_type() {
        for (state, status, ty) in [
            (JobState::Succeeded, "success", "job.succeeded"),
            (JobState::Failed, "failed", "job.failed"),
            (JobState::Expired, "failed", "job.expired"),
            (JobState::Cancelled, "failed", "job.cancelled"),
        ] {
            assert_eq!(hosted_status(state), status);
            assert_eq!(event_type(state), ty);
            assert_eq!(ty, format!("job.{}", state.as_str()), "type is job.<state>");
        }
        assert_eq!(rfc3339_ms(1_767_323_045_678), "2026-01-02T03:04:05.678Z");
    }
}
