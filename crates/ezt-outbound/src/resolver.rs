//! DNS resolution that refuses what the SSRF rules deny.

use std::net::SocketAddr;

use ezt_core::ssrf::{DenyClass, SsrfError, SsrfPolicy};

/// A name that resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("ssrf_denied: {host} resolves only to refused addresses ({addr} is {class})")]
pub struct SsrfBlocked {
    host: String,
    addr: std::net::IpAddr,
    class: DenyClass,
}

impl SsrfBlocked {
    /// Why the address was refused (loopback, private, …).
    pub fn class(&self) -> DenyClass {
        self.class
    }
}

/// Why [`SsrfResolver::resolve_checked`] found nothing to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolved to is refused.
    #[error(transparent)]
    Blocked(#[from] SsrfBlocked),
    /// The name did not resolve (or the policy refused it for another reason).
    #[error("{0}")]
    Lookup(String),
}

/// DNS resolution for outbound calls that drops refused addresses (pinning: the client connects
/// to what this returns, so there is no second lookup to rebind).
#[derive(Debug, Clone)]
pub struct SsrfResolver {
    policy: SsrfPolicy,
}

impl SsrfResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: SsrfPolicy) -> Self {
        Self { policy }
    }

    /// Resolves and filters; an error names the refused class when nothing is left.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ResolveError::Lookup(e.to_string()))?
            .collect();
        let allowed = self
            .policy
            .filter_resolved(addrs.iter().map(SocketAddr::ip))
            .map_err(|e| match e {
                SsrfError::Denied { addr, class } => ResolveError::Blocked(SsrfBlocked {
                    host: host.into(),
                    addr,
                    class,
                }),
                other => ResolveError::Lookup(other.to_string()),
            })?;
        if allowed.is_empty() {
            return Err(ResolveError::Lookup(format!("{host} did not resolve")));
        }
        Ok(allowed
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

impl reqwest::dns::Resolve for SsrfResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this
                .resolve_checked(name.as_str(), 0)
                .await
                .map_err(|e| match e {
                    // Kept as its own type in the error chain: `CallError` finds it there.
                    ResolveError::Blocked(b) => {
                        Box::new(b) as Box<dyn std::error::Error + Send + Sync>
                    }
                    ResolveError::Lookup(m) => m.into(),
                })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_denied_addresses() {
        let strict = SsrfResolver::new(SsrfPolicy::default());
        let err = strict
            .resolve_checked("localhost", 80)
            .await
            .expect_err("localhost is loopback");
        let ResolveError::Blocked(blocked) = err else {
            panic!("an SSRF refusal, not a DNS failure: {err}");
        };
        assert_eq!(blocked.class(), DenyClass::Loopback, "{blocked}");
        let allowing = SsrfResolver::new(SsrfPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]));
        let addrs = allowing
            .resolve_checked("localhost", 80)
            .await
            .expect("allowed by the operator");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
