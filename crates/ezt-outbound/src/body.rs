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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_cut_at_the_cap() {
        use axum::routing::get;
        let app = axum::Router::new()
            .route("/big", get(|| async { "x".repeat(10_000) }))
            .route("/small", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
        let (body, err) = read_capped(get("/big").await.unwrap(), 100).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(body.bytes.len(), 100, "cut at the cap");
        assert!(body.truncated, "and marked so");
        let (body, _) = read_capped(get("/small").await.unwrap(), 100).await;
        assert_eq!((body.bytes.as_slice(), body.truncated), (&b"ok"[..], false));
    }
}
