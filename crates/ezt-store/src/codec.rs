//! Row encoding every persistent backend shares: ids as 16-byte big-endian bytes (so byte
//! order is time order), nested values as JSON text, and the store's enum texts. Each backend
//! keeps only its driver's side (parameter types, error mapping).

use ezt_core::tier::Tier;
use ezt_core::JobState;

use crate::{AttemptDone, Error, Next, Result};

/// An id as stored: 16 bytes, big-endian.
pub fn id_bytes(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

/// An id from its stored bytes (shorter input is taken as the low-order bytes).
pub fn bytes_id(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    let n = b.len().min(16);
    a[16 - n..].copy_from_slice(&b[..n]);
    u128::from_be_bytes(a)
}

/// A nested value as JSON text.
pub fn json_encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Other(format!("encode: {e}")))
}

/// A nested value from its JSON text; a bad text is a corrupt row.
pub fn json_decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Other(format!("corrupt row: {e}")))
}

/// A job state from its stored name.
pub fn parse_state(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| Error::Other(format!("corrupt row: state {s:?}")))
}

/// A tier from its stored name (an unknown name is the lowest tier).
pub fn parse_tier(s: &str) -> Tier {
    Tier::parse(s).unwrap_or(Tier::Free)
}

/// What `complete_attempt` writes as JSON: the attempt, and the response and error of the
/// job's next state (a retry keeps the last response and no error).
pub fn encode_outcome(done: &AttemptDone) -> Result<(String, Option<String>, Option<String>)> {
    let attempt = json_encode(&done.attempt)?;
    let (response, error) = match &done.next {
        Next::Final {
            response, error, ..
        } => (
            response.as_ref().map(json_encode).transpose()?,
            error.as_ref().map(json_encode).transpose()?,
        ),
        Next::Retry { response, .. } => (response.as_ref().map(json_encode).transpose()?, None),
    };
    Ok((attempt, response, error))
}
