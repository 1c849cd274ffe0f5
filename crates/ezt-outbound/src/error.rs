//! Why a call failed, typed, and texts about calls that are safe to log.
//!
//! Texts never carry a URL's path or query: those hold secrets (`?key=…`, Slack-style
//! webhook paths). A [`CallError`]'s `Display` is the text stored in attempt records.

use crate::resolver::SsrfBlocked;

/// Why an outbound call produced no (complete) answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The target is refused by the SSRF rules (an IP literal checked before the call, or a
    /// name whose every address is refused at connect time). Never worth retrying.
    #[error("{0}")]
    SsrfDenied(String),
    /// No connection (refused, reset, TLS, DNS).
    #[error("{0}")]
    Connect(String),
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The head arrived but the body did not.
    #[error("{0}")]
    Body(String),
    /// Any other failure of the request.
    #[error("{0}")]
    Request(String),
    /// A header sealed at rest could not be opened (the server key changed?): nothing was sent.
    #[error("{0}; was the server key changed?")]
    SealedHeader(String),
    /// The deadline passed before the call could be made.
    #[error("deadline passed")]
    DeadlinePassed,
    /// We gave up on the call (shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl CallError {
    /// Classifies a client error, by the type found in its chain first (an SSRF refusal from
    /// the resolver), then by reqwest's kind.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        let text = describe(e);
        if error_chain_has::<SsrfBlocked>(e) {
            Self::SsrfDenied(text)
        } else if e.is_timeout() {
            Self::Timeout(text)
        } else if e.is_connect() {
            Self::Connect(text)
        } else if e.is_body() || e.is_decode() {
            Self::Body(text)
        } else {
            Self::Request(text)
        }
    }

    /// A target refused before any connection (e.g. a denied IP literal).
    pub fn ssrf_denied(reason: impl std::fmt::Display) -> Self {
        Self::SsrfDenied(format!("ssrf_denied: {reason}"))
    }

    /// Whether the SSRF rules refused the call (a failure, never retried).
    pub fn is_ssrf_denied(&self) -> bool {
        matches!(self, Self::SsrfDenied(_))
    }
}

/// Whether `e` or any error in its `source` chain is an `E`.
pub(crate) fn error_chain_has<E: std::error::Error + 'static>(
    e: &(dyn std::error::Error + 'static),
) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What a URL may show in logs and error texts: scheme, host and port. Paths and queries
/// carry secrets (`?key=…`, Slack-style webhook paths), so they never leave the job's spec.
pub fn log_target(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => origin(&u),
        Err(_) => "(unparseable URL)".into(),
    }
}

fn origin(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// A call's error for logs and attempt records, without the URL's path or query: reqwest's
/// own text ends in `for url (<full URL>)`, which is cut, and any other copy of the URL in
/// the chain is replaced by its scheme, host and port.
pub fn describe(e: &reqwest::Error) -> String {
    let url = e.url();
    let scrub = |text: String| match url {
        Some(u) => text
            .replace(&format!(" for url ({u})"), "")
            .replace(u.as_str(), &origin(u)),
        None => text,
    };
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut msg = format!("{kind}: {}", scrub(e.to_string()));
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&scrub(s.to_string()));
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ezt_core::ssrf::SsrfPolicy;

    use super::*;
    use crate::client::{build, ClientOptions};
    use crate::resolver::SsrfResolver;

    fn client(policy: SsrfPolicy) -> reqwest::Client {
        build(ClientOptions {
            connect_timeout: Duration::from_secs(2),
            resolver: SsrfResolver::new(policy),
            user_agent: "ezt-outbound-test",
            proxy: None,
            source_ip: None,
        })
        .expect("client")
    }

    fn loopback() -> SsrfPolicy {
        SsrfPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    #[test]
    fn log_target_keeps_only_scheme_host_and_port() {
        assert_eq!(
            log_target("https://hooks.example.com/services/T0/B0/secret?key=1"),
            "https://hooks.example.com:443"
        );
        assert_eq!(log_target("not a url"), "(unparseable URL)");
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_ssrf_denied() {
        let e = client(SsrfPolicy::default())
            .get("http://localhost:9/secret-path?token=abc")
            .send()
            .await
            .expect_err("localhost is refused");
        let c = CallError::from_reqwest(&e);
        assert!(c.is_ssrf_denied(), "{c:?}");
        let text = c.to_string();
        assert!(text.contains("ssrf_denied"), "{text}");
        assert!(
            !text.contains("secret-path") && !text.contains("token"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_without_the_path() {
        // Bind and drop: the port is closed (nothing listens) on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client(loopback())
            .get(format!("http://127.0.0.1:{port}/p?key=secret"))
            .send()
            .await
            .expect_err("nothing listens");
        let c = CallError::from_reqwest(&e);
        assert!(matches!(c, CallError::Connect(_)), "{c:?}");
        assert!(c.to_string().starts_with("connect: "), "{c}");
        assert!(!c.to_string().contains("secret"), "{c}");
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_timeout_and_redirects_are_not_followed() {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/moved",
                get(|| async { axum::response::Redirect::temporary("/elsewhere") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = client(loopback());
        let e = c
            .get(format!("http://{addr}/slow"))
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .expect_err("times out");
        let err = CallError::from_reqwest(&e);
        assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
        let r = c.get(format!("http://{addr}/moved")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 307, "a 3xx is returned, not followed");
    }
}
