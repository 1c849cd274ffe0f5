//! One outbound call's request and answer, made the same way wherever it leaves from: a job's
//! attempt on its lane's owner (`dispatch`) or a leg another node handed over (`handoff`).

use ezt_outbound::CallError;
use ezt_store::Response;

/// `req` with the call's headers, the `Idempotency-Key` (`key`, unless the headers carry one)
/// and its body.
pub(crate) fn prepare(
    mut req: reqwest::RequestBuilder,
    headers: &[(String, String)],
    key: &str,
    body: Option<&String>,
) -> reqwest::RequestBuilder {
    let mut has_key = false;
    for (n, v) in headers {
        has_key |= n.eq_ignore_ascii_case("idempotency-key");
        req = req.header(n.as_str(), v.as_str());
    }
    if !has_key {
        req = req.header("Idempotency-Key", key);
    }
    if let Some(b) = body {
        req = req.body(b.clone());
    }
    req
}

/// The answer: status, headers and the body up to `cap` bytes; the error when the head
/// arrived but the body did not (the call did not complete).
pub(crate) async fn answer(resp: reqwest::Response, cap: usize) -> (Response, Option<CallError>) {
    let status_code = resp.status().as_u16();
    let headers = ezt_outbound::headers::header_pairs(resp.headers());
    let (body, read_error) = ezt_outbound::body::read_capped(resp, cap).await;
    let response = Response {
        status_code,
        headers,
        body: String::from_utf8_lossy(&body.bytes).into_owned(),
        body_truncated: body.truncated,
        regions: Vec::new(),
    };
    (response, read_error)
}
