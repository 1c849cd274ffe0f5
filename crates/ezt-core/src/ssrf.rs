//! STUB (replaced by the real module)
#![allow(missing_docs)]
use std::net::IpAddr;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DenyClass {
    Loopback,
    Private,
}
impl DenyClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyClass::Loopback => "loopback",
            DenyClass::Private => "private",
        }
    }
}
impl std::fmt::Display for DenyClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
pub fn classify(ip: IpAddr) -> Option<DenyClass> {
    if ip.is_loopback() {
        Some(DenyClass::Loopback)
    } else if let IpAddr::V4(v) = ip {
        v.is_private().then_some(DenyClass::Private)
    } else {
        None
    }
}
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    allow: Vec<ipnet::IpNet>,
}
impl SsrfPolicy {
    pub fn new(allow: Vec<ipnet::IpNet>) -> Self {
        Self { allow }
    }
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), DenyClass> {
        match classify(ip) {
            None => Ok(()),
            Some(c) => {
                if self.allow.iter().any(|n| n.contains(&ip)) {
                    Ok(())
                } else {
                    Err(c)
                }
            }
        }
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    pub url: url::Url,
    pub host: TargetHost,
    pub port: u16,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Ip(IpAddr),
    Domain(String),
}
impl TargetUrl {
    pub fn authority(&self) -> String {
        match &self.host {
            TargetHost::Ip(IpAddr::V6(v)) => format!("[{v}]:{}", self.port),
            TargetHost::Ip(v) => format!("{v}:{}", self.port),
            TargetHost::Domain(d) => format!("{d}:{}", self.port),
        }
    }
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("scheme {0} not allowed")]
    Scheme(String),
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("{0}")]
    Url(UrlError),
    #[error("address {addr} is {class}")]
    Denied { addr: IpAddr, class: DenyClass },
}
pub fn parse_target_url(s: &str) -> Result<TargetUrl, UrlError> {
    let url = url::Url::parse(s).map_err(|e| UrlError::NotAUrl(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(UrlError::Scheme(url.scheme().into()));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let host = match url.host() {
        Some(url::Host::Ipv4(v)) => TargetHost::Ip(v.into()),
        Some(url::Host::Ipv6(v)) => TargetHost::Ip(v.into()),
        Some(url::Host::Domain(d)) => TargetHost::Domain(d.to_string()),
        None => return Err(UrlError::NotAUrl("no host".into())),
    };
    Ok(TargetUrl { url, host, port })
}
pub fn check_url(policy: &SsrfPolicy, s: &str) -> Result<TargetUrl, SsrfError> {
    let t = parse_target_url(s).map_err(SsrfError::Url)?;
    if let TargetHost::Ip(ip) = t.host {
        policy
            .check_ip(ip)
            .map_err(|class| SsrfError::Denied { addr: ip, class })?;
    }
    Ok(t)
}
