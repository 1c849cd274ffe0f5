//! The one way to build an HTTP client for calls we make.

use std::sync::Arc;
use std::time::Duration;

use crate::resolver::SsrfResolver;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions<'a> {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// The SSRF-checking resolver every connection goes through.
    pub resolver: SsrfResolver,
    /// `User-Agent` of every call.
    pub user_agent: &'static str,
    /// `outbound.proxy`, if set: every call goes through it.
    pub proxy: Option<&'a str>,
    /// `outbound.source_ip`, if set: the local address every connection is made from.
    pub source_ip: Option<std::net::IpAddr>,
}

/// The HTTP client for calls we make (jobs and webhook deliveries alike): rustls, pooled,
/// HTTP/2 where offered, never following redirects, connecting only to addresses the resolver
/// lets through.
///
/// Proxies come only from `outbound.proxy` (`proxy`): `HTTP_PROXY`, `HTTPS_PROXY` and
/// `ALL_PROXY` in the environment are ignored, because a call through a proxy reaches the
/// proxy's address, never the resolver's checked one.
pub fn build(opts: ClientOptions<'_>) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder().no_proxy();
    if let Some(p) = opts.proxy {
        b = b.proxy(reqwest::Proxy::all(p)?);
    }
    b.redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout)
        .dns_resolver(Arc::new(opts.resolver))
        .user_agent(opts.user_agent)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .local_address(opts.source_ip)
        .build()
}
