//! Response bodies, read up to a cap.

use crate::error::CallError;

/// A body as read: at most the cap, with whether more was cut off.
#[derive(Debug, Clone, Default)]
pub struct CappedBody {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// The body was longer than the cap; the rest was not read.
    pub truncated: bool,
}

/// Reads `resp`'s body up to `cap` bytes (what is past the cap is neither read nor kept). A
/// failure part-way returns what arrived with the error: the head came, the body did not.
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> (CappedBody, Option<CallError>) {
    let mut out = CappedBody::default();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(out.bytes.len());
                if chunk.len() > room {
                    out.bytes.extend_from_slice(&chunk[..room]);
                    out.truncated = true;
                    return (out, None);
                }
                out.bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(CallError::from_reqwest(&e))),
        }
    }
}
