//! SSRF rules for outbound calls: which addresses EZThrottle refuses to connect to, and how a
//! user-given URL is parsed before anything is resolved.
//!
//! EZThrottle calls URLs chosen by its tenants (job targets, TORRENT targets, webhooks). Without
//! these rules a tenant could make the server call its own admin port, a cloud metadata service
//! (`169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`) or anything else on the private network
//! the node sits in.
//!
//! The module is pure (no DNS, no sockets), so the rules can be tested exhaustively. The intended
//! flow is:
//!
//! 1. At submission, [`check_url`] parses the URL with the WHATWG parser ([`parse_target_url`]),
//!    so that every spelling of an address (`http://2130706433/`, `http://0x7f.1/`, ...) is seen
//!    in its canonical form, and refuses IP-literal hosts in a denied range.
//! 2. At connect time, on every attempt, the dispatcher resolves a [`TargetHost::Domain`] once,
//!    keeps only the addresses that pass [`SsrfPolicy::check_ip`] (see
//!    [`SsrfPolicy::filter_resolved`]) and connects to one of *those*, sending the original Host
//!    and SNI. Letting the HTTP client resolve the name again would reopen the door to DNS
//!    rebinding.
//!
//! The deny list ([`denied_ranges`]) is the union of Svix's `is_allowed`, Stripe Smokescreen's
//! `classifyAddr` and the IANA special-purpose registries (`shared/reference/ssrf.md` §2.7). The
//! only escape hatch is the operator's CIDR allow-list in [`SsrfPolicy`], empty by default.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Why an address is refused.
///
/// Each variant names one class of the deny list; [`DenyClass::as_str`] (and the serde form) is
/// the stable snake_case name used in API errors (`ssrf_denied`), so clients can tell *why* a
/// target was refused without parsing prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyClass {
    /// `127.0.0.0/8`, `::1`: the node itself, including its own admin and metrics ports.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`): the operator's private network.
    Private,
    /// `169.254.0.0/16`, `fe80::/10`: link-local, home of the cloud metadata services
    /// (`169.254.169.254`, ECS `169.254.170.2`).
    LinkLocal,
    /// `100.64.0.0/10`: carrier-grade NAT shared space, also Alibaba's metadata `100.100.100.200`.
    Cgnat,
    /// `fc00::/7`: IPv6 unique-local (private) addresses, e.g. AWS IMDS `fd00:ec2::254`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`: multicast; never the address of one HTTP server.
    Multicast,
    /// `0.0.0.0`, `::`: the unspecified address, which reaches localhost on Linux.
    Unspecified,
    /// `::ffff:0:0/96`: IPv4-mapped IPv6. Denied whole, even for public IPv4: a real target is
    /// reached by its IPv4 address, and a mapped one is only a way to dodge IPv4 rules.
    Ipv4Mapped,
    /// `::/96` (other than `::` and `::1`): deprecated IPv4-compatible IPv6, which embeds an IPv4
    /// address that `to_canonical` does not unwrap.
    Ipv4Compatible,
    /// `64:ff9b::/96`, `64:ff9b:1::/48`: NAT64 prefixes, which embed (and reach) an IPv4 address.
    Nat64,
    /// `2002::/16`, `192.88.99.0/24`: 6to4, which embeds an IPv4 address, and its relay anycast.
    #[serde(rename = "6to4")]
    SixToFour,
    /// `2001::/32`: Teredo tunnels, which embed an IPv4 address.
    Teredo,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`:
    /// documentation ranges; never a real target, sometimes routed internally.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`: benchmarking ranges, often used inside labs and clouds.
    Benchmarking,
    /// `240.0.0.0/4` and IPv6 outside `2000::/3` not otherwise classified: reserved by IANA, not
    /// publicly routed, so only reachable on a network someone configured privately.
    Reserved,
    /// `255.255.255.255`: limited broadcast.
    Broadcast,
    /// `0.0.0.0/8` (other than `0.0.0.0`): "this network", which also reaches local hosts.
    ThisNetwork,
    /// `192.0.0.0/24`, `2001::/23`: IETF protocol assignments (legacy Oracle Cloud metadata
    /// `192.0.0.192`, DS-Lite, ORCHID...), not targets a tenant needs.
    ProtocolAssignments,
    /// `100::/64`: discard-only prefix (RFC 6666), black-holed by design.
    DiscardOnly,
    /// `fec0::/10`: deprecated IPv6 site-local, still private where it is used.
    SiteLocal,
    /// `5f00::/16`: SRv6 segment identifiers, internal to an operator's network.
    Srv6,
}

impl DenyClass {
    /// Every class, in declaration order: for exhaustive tests and documentation.
    pub const ALL: [DenyClass; 21] = [
        DenyClass::Loopback,
        DenyClass::Private,
        DenyClass::LinkLocal,
        DenyClass::Cgnat,
        DenyClass::UniqueLocal,
        DenyClass::Multicast,
        DenyClass::Unspecified,
        DenyClass::Ipv4Mapped,
        DenyClass::Ipv4Compatible,
        DenyClass::Nat64,
        DenyClass::SixToFour,
        DenyClass::Teredo,
        DenyClass::Documentation,
        DenyClass::Benchmarking,
        DenyClass::Reserved,
        DenyClass::Broadcast,
        DenyClass::ThisNetwork,
        DenyClass::ProtocolAssignments,
        DenyClass::DiscardOnly,
        DenyClass::SiteLocal,
        DenyClass::Srv6,
    ];

    /// The stable snake_case name used in API errors (same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            DenyClass::Loopback => "loopback",
            DenyClass::Private => "private",
            DenyClass::LinkLocal => "link_local",
            DenyClass::Cgnat => "cgnat",
            DenyClass::UniqueLocal => "unique_local",
            DenyClass::Multicast => "multicast",
            DenyClass::Unspecified => "unspecified",
            DenyClass::Ipv4Mapped => "ipv4_mapped",
            DenyClass::Ipv4Compatible => "ipv4_compatible",
            DenyClass::Nat64 => "nat64",
            DenyClass::SixToFour => "6to4",
            DenyClass::Teredo => "teredo",
            DenyClass::Documentation => "documentation",
            DenyClass::Benchmarking => "benchmarking",
            DenyClass::Reserved => "reserved",
            DenyClass::Broadcast => "broadcast",
            DenyClass::ThisNetwork => "this_network",
            DenyClass::ProtocolAssignments => "protocol_assignments",
            DenyClass::DiscardOnly => "discard_only",
            DenyClass::SiteLocal => "site_local",
            DenyClass::Srv6 => "srv6",
        }
    }
}

impl fmt::Display for DenyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IPv4 deny table. First match wins, so a range comes before any range that contains it
/// (checked by a test): `0.0.0.0` is `unspecified` rather than `this_network`.
const DENY_V4: &[(Ipv4Addr, u8, DenyClass)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 32, DenyClass::Unspecified),
    (Ipv4Addr::new(0, 0, 0, 0), 8, DenyClass::ThisNetwork),
    (Ipv4Addr::new(10, 0, 0, 0), 8, DenyClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, DenyClass::Cgnat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, DenyClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, DenyClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, DenyClass::Private),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        DenyClass::ProtocolAssignments,
    ),
    (Ipv4Addr::new(192, 0, 2, 0), 24, DenyClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, DenyClass::SixToFour),
    (Ipv4Addr::new(192, 168, 0, 0), 16, DenyClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, DenyClass::Benchmarking),
    (Ipv4Addr::new(198, 51, 100, 0), 24, DenyClass::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, DenyClass::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, DenyClass::Multicast),
    (Ipv4Addr::new(255, 255, 255, 255), 32, DenyClass::Broadcast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, DenyClass::Reserved),
];

/// IPv6 deny table. First match wins, so a range comes before any range that contains it
/// (checked by a test). The last three rows deny everything outside `2000::/3`, the only block
/// IANA delegates for global unicast; this also catches future or obscure forms that embed IPv4
/// (e.g. SIIT's `::ffff:0:a.b.c.d`).
const DENY_V6: &[(Ipv6Addr, u8, DenyClass)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        DenyClass::Unspecified,
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),
        128,
        DenyClass::Loopback,
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        DenyClass::Ipv4Mapped,
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        DenyClass::Ipv4Compatible,
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        DenyClass::Nat64,
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        DenyClass::Nat64,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        DenyClass::DiscardOnly,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        DenyClass::Teredo,
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        DenyClass::Benchmarking,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        DenyClass::ProtocolAssignments,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        DenyClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        DenyClass::SixToFour,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        DenyClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        DenyClass::Srv6,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        DenyClass::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        DenyClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        DenyClass::SiteLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        DenyClass::Multicast,
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        3,
        DenyClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x4000, 0, 0, 0, 0, 0, 0, 0),
        2,
        DenyClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0),
        1,
        DenyClass::Reserved,
    ),
];

/// Every denied CIDR with its class, in lookup order (first match wins; a range always comes
/// before any range that contains it). Exposed for documentation, `config print` and tests.
pub fn denied_ranges() -> impl Iterator<Item = (IpNet, DenyClass)> {
    let v4 = DENY_V4.iter().map(|&(addr, len, class)| {
        let net = Ipv4Net::new(addr, len).expect("prefix lengths in DENY_V4 are valid");
        (IpNet::V4(net), class)
    });
    let v6 = DENY_V6.iter().map(|&(addr, len, class)| {
        let net = Ipv6Net::new(addr, len).expect("prefix lengths in DENY_V6 are valid");
        (IpNet::V6(net), class)
    });
    v4.chain(v6)
}

/// Deny-list classification of one address; `None` means publicly routable.
///
/// Works on the address exactly as given: an IPv4-mapped address is `ipv4_mapped`, whatever
/// IPv4 address it carries (see [`DenyClass::Ipv4Mapped`]). The operator allow-list is not
/// consulted here; use [`SsrfPolicy::check_ip`] for the decision.
pub fn classify(ip: IpAddr) -> Option<DenyClass> {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            DENY_V4
                .iter()
                .find(|&&(net, len, _)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    bits & mask == u32::from(net)
                })
                .map(|&(_, _, class)| class)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            DENY_V6
                .iter()
                .find(|&&(net, len, _)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    bits & mask == u128::from(net)
                })
                .map(|&(_, _, class)| class)
        }
    }
}

/// Operator allow-list of CIDRs that turns the deny rules off for chosen ranges.
///
/// Empty by default (everything in [`denied_ranges`] is refused). Operators add ranges they
/// really call, e.g. `127.0.0.0/8` for local tests or an internal API's subnet, like Svix's
/// `whitelist_subnets`. An allowed range never *adds* a denial: public addresses pass anyway.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    allow: Vec<IpNet>,
}

impl SsrfPolicy {
    /// A policy that allows the given CIDRs despite the deny rules.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The allowed CIDRs, as configured.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Ok if the address may be connected to: either [`classify`] finds it public, or it is
    /// inside an allowed CIDR.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) inside an allowed IPv4 CIDR counts as
    /// allowed too, so that allowing `127.0.0.0/8` works for dual-stack sockets that report
    /// mapped peers. Other IPv4-embedding forms (NAT64, 6to4, IPv4-compatible...) are not
    /// unwrapped: they reach the IPv4 host through a translator, and the operator has to allow
    /// them by their IPv6 prefix if that is really wanted.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), DenyClass> {
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.is_allow_listed(ip) => Ok(()),
            Some(class) => Err(class),
        }
    }

    /// Keeps the resolved addresses that may be connected to, in their order, so the caller can
    /// pin its connection to one of them (Svix's `NonLocalDnsResolver` approach).
    ///
    /// Errs with the first denied address when every address was denied, so the job fails with
    /// `ssrf_denied` rather than a vague network error. An empty input gives an empty `Ok`: that is
    /// a resolution failure, for the caller to report.
    pub fn filter_resolved<I>(&self, addrs: I) -> Result<Vec<IpAddr>, SsrfError>
    where
        I: IntoIterator<Item = IpAddr>,
    {
        let mut allowed = Vec::new();
        let mut first_denied = None;
        for addr in addrs {
            match self.check_ip(addr) {
                Ok(()) => allowed.push(addr),
                Err(class) => {
                    first_denied.get_or_insert(SsrfError::Denied { addr, class });
                }
            }
        }
        match first_denied {
            Some(err) if allowed.is_empty() => Err(err),
            _ => Ok(allowed),
        }
    }

    fn is_allow_listed(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

/// Longest URL accepted, in bytes, before and after normalisation. Keeps lane keys, stored jobs
/// and log lines bounded; far above what any real API needs.
pub const MAX_URL_BYTES: usize = 8192;

/// Longest domain name DNS can carry (RFC 1035), without the trailing dot.
const MAX_DOMAIN_BYTES: usize = 253;

/// Longest DNS label (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;

/// A parsed outbound URL that passed the syntactic rules.
///
/// `url` is what the dispatcher sends (Host header and SNI come from it); `host` and `port` are
/// the same values, pre-extracted so callers never re-parse. They always agree: a domain's
/// trailing dot is removed from `url` as well, and an IPv6 zone id is gone from both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// The normalised URL (WHATWG serialisation).
    pub url: Url,
    /// The host: an IP literal (to check now) or a domain (to resolve and check at connect time).
    pub host: TargetHost,
    /// The explicit port, or the scheme's default (80 or 443).
    pub port: u16,
}

/// The host part of a [`TargetUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal, in canonical form whatever its spelling in the URL (`0x7f.1`, `2130706433`).
    Ip(IpAddr),
    /// A domain name: lowercase ASCII (IDNs in punycode), no trailing dot.
    Domain(String),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            TargetHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            TargetHost::Domain(d) => f.write_str(d),
        }
    }
}

impl TargetUrl {
    /// `"host:port"` as used for lane keys: IPv6 in brackets, lowercase, port always present, so
    /// that every spelling of the same endpoint (`HTTP://Example.COM.`, `http://example.com:80`)
    /// shares one lane.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Why a URL was refused before any address check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The WHATWG parser refused it (the message says why).
    #[error("not a valid URL: {0}")]
    NotAUrl(String),
    /// Only `http` and `https` are dispatched; other schemes (`file`, `gopher`...) are classic
    /// SSRF vectors.
    #[error("scheme {0:?} is not allowed: use http or https")]
    Scheme(String),
    /// `user:pass@` is refused: it hides the real host from readers
    /// (`http://169.254.169.254@evil.example/`), and credentials belong in headers.
    #[error("credentials in the URL (user:password@) are not allowed")]
    UserInfo,
    /// No host at all (`http://`, `http:///x`).
    #[error("the URL has no host")]
    EmptyHost,
    /// Longer than [`MAX_URL_BYTES`].
    #[error("the URL is longer than {} bytes", MAX_URL_BYTES)]
    TooLong,
    /// A domain that DNS cannot carry: empty labels (`a..b`), labels over 63 or names over 253
    /// bytes.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// Port 0 cannot be connected to.
    #[error("port 0 is not allowed")]
    PortZero,
}

/// Why [`check_url`] refused a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The URL itself is unusable.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The host (or a resolved address) is in a denied range and not allow-listed.
    #[error("address {addr} is {class}")]
    Denied {
        /// The refused address.
        addr: IpAddr,
        /// Why it is refused.
        class: DenyClass,
    },
}

/// Parses an outbound URL with the WHATWG `url` crate and applies the syntactic rules.
///
/// One standard parser, and its normalised host, is what keeps `http://2130706433/`,
/// `http://0x7f.1/`, `http://0177.0.0.1/` and `http://127.1/` from slipping past as anything but
/// `127.0.0.1`. On top of it: only http/https; no userinfo; a host is required; at most
/// [`MAX_URL_BYTES`]; IPv6 zone ids (`[fe80::1%25eth0]`) are stripped, since they only pick an
/// interface and must not hide the address; domains are lowercased, without trailing dot.
/// Bracketed hosts that are not IPv6 (`http://[127.0.0.1]/`) are refused by the parser.
pub fn parse_target_url(s: &str) -> Result<TargetUrl, UrlError> {
    if s.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong);
    }
    let mut url = Url::parse(&strip_zone_id(s)).map_err(|e| match e {
        url::ParseError::EmptyHost => UrlError::EmptyHost,
        other => UrlError::NotAUrl(other.to_string()),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    let host = match url.host() {
        None => return Err(UrlError::EmptyHost),
        Some(Host::Ipv4(v4)) => TargetHost::Ip(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => TargetHost::Ip(IpAddr::V6(v6)),
        Some(Host::Domain(d)) => TargetHost::Domain(normalise_domain(d)?),
    };
    if let TargetHost::Domain(d) = &host {
        if url.host_str() != Some(d.as_str()) {
            url.set_host(Some(d))
                .map_err(|e| UrlError::NotAUrl(e.to_string()))?;
            // Dropping the dot must not turn the name into something else (e.g. an IPv4
            // literal): the URL and `host` have to agree.
            if url.host() != Some(Host::Domain(d.as_str())) {
                return Err(UrlError::InvalidHost(d.clone()));
            }
        }
    }
    let port = url.port_or_known_default().ok_or(UrlError::EmptyHost)?;
    if port == 0 {
        return Err(UrlError::PortZero);
    }
    if url.as_str().len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong);
    }
    Ok(TargetUrl { url, host, port })
}

/// Convenience for submission time: parse, and if the host is an IP literal check it against the
/// policy.
///
/// Domains are returned unchecked: only resolution can tell where they point, and a check now
/// would be worthless against DNS rebinding anyway. The caller resolves at connect time and
/// calls [`SsrfPolicy::check_ip`] on each address.
pub fn check_url(policy: &SsrfPolicy, s: &str) -> Result<TargetUrl, SsrfError> {
    let target = parse_target_url(s)?;
    if let TargetHost::Ip(addr) = target.host {
        policy
            .check_ip(addr)
            .map_err(|class| SsrfError::Denied { addr, class })?;
    }
    Ok(target)
}

/// Removes an IPv6 zone id (`%25eth0` or `%eth0`) from a bracketed host, which the WHATWG parser
/// would otherwise refuse. Only the host of the authority is touched; the result is parsed and
/// checked in full like any other input, so this cannot let anything through unchecked.
fn strip_zone_id(s: &str) -> Cow<'_, str> {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(s);
    };
    let rest = &s[start..];
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host = &authority[host_start..];
    if !host.starts_with('[') {
        return Cow::Borrowed(s);
    }
    let Some(close) = host.find(']') else {
        return Cow::Borrowed(s);
    };
    let Some(pct) = host[..close].find('%') else {
        return Cow::Borrowed(s);
    };
    let base = start + host_start;
    Cow::Owned(format!("{}{}", &s[..base + pct], &s[base + close..]))
}

/// Lowercases and drops one trailing dot (`example.com.` is `example.com`: one lane, one name to
/// resolve), then refuses names DNS cannot carry. Labels are letters, digits, `-` and `_` (after
/// IDNA, so `bücher.de` is `xn--bcher-kva.de`): the WHATWG parser lets `*`, `!`, `~` and such
/// through in a host, and a job whose host can never resolve is better refused at submit than
/// failed after its retries (found by the schema-driven fuzzer).
fn normalise_domain(d: &str) -> Result<String, UrlError> {
    let lower = d.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let bad = name.is_empty() || name.len() > MAX_DOMAIN_BYTES || !name.split('.').all(label_ok);
    if bad {
        return Err(UrlError::InvalidHost(d.to_owned()));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// At least one address per class, with the well-known metadata and IPv4-embedding forms.
    const DENIED: &[(&str, DenyClass)] = &[
        ("127.0.0.1", DenyClass::Loopback),
        ("127.255.255.254", DenyClass::Loopback),
        ("::1", DenyClass::Loopback),
        ("10.0.0.1", DenyClass::Private),
        ("172.16.0.1", DenyClass::Private),
        ("172.31.255.255", DenyClass::Private),
        ("192.168.1.1", DenyClass::Private),
        ("169.254.169.254", DenyClass::LinkLocal),
        ("169.254.170.2", DenyClass::LinkLocal),
        ("fe80::1", DenyClass::LinkLocal),
        ("febf:ffff::1", DenyClass::LinkLocal),
        ("100.64.0.1", DenyClass::Cgnat),
        ("100.100.100.200", DenyClass::Cgnat),
        ("100.127.255.255", DenyClass::Cgnat),
        ("fd00:ec2::254", DenyClass::UniqueLocal),
        ("fc00::1", DenyClass::UniqueLocal),
        ("224.0.0.1", DenyClass::Multicast),
        ("239.255.255.250", DenyClass::Multicast),
        ("ff02::1", DenyClass::Multicast),
        ("0.0.0.0", DenyClass::Unspecified),
        ("::", DenyClass::Unspecified),
        ("::ffff:127.0.0.1", DenyClass::Ipv4Mapped),
        ("::ffff:169.254.169.254", DenyClass::Ipv4Mapped),
        ("::ffff:8.8.8.8", DenyClass::Ipv4Mapped),
        ("::127.0.0.1", DenyClass::Ipv4Compatible),
        ("::169.254.169.254", DenyClass::Ipv4Compatible),
        ("::2", DenyClass::Ipv4Compatible),
        ("64:ff9b::7f00:1", DenyClass::Nat64),
        ("64:ff9b::a9fe:a9fe", DenyClass::Nat64),
        ("64:ff9b:1::1", DenyClass::Nat64),
        ("2002:7f00:1::", DenyClass::SixToFour),
        ("2002:a9fe:a9fe::1", DenyClass::SixToFour),
        ("192.88.99.1", DenyClass::SixToFour),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", DenyClass::Teredo),
        ("192.0.2.1", DenyClass::Documentation),
        ("198.51.100.7", DenyClass::Documentation),
        ("203.0.113.255", DenyClass::Documentation),
        ("2001:db8::1", DenyClass::Documentation),
        ("3fff::1", DenyClass::Documentation),
        ("3fff:fff:ffff::1", DenyClass::Documentation),
        ("198.18.0.1", DenyClass::Benchmarking),
        ("198.19.255.255", DenyClass::Benchmarking),
        ("2001:2::1", DenyClass::Benchmarking),
        ("240.0.0.1", DenyClass::Reserved),
        ("255.255.255.254", DenyClass::Reserved),
        ("4000::1", DenyClass::Reserved),
        ("::ffff:0:7f00:1", DenyClass::Reserved), // SIIT IPv4-translated form
        ("1::1", DenyClass::Reserved),
        ("255.255.255.255", DenyClass::Broadcast),
        ("0.1.2.3", DenyClass::ThisNetwork),
        ("0.255.255.255", DenyClass::ThisNetwork),
        ("192.0.0.192", DenyClass::ProtocolAssignments),
        ("192.0.0.9", DenyClass::ProtocolAssignments),
        ("2001:1::1", DenyClass::ProtocolAssignments),
        ("2001:1ff::1", DenyClass::ProtocolAssignments),
        ("100::1", DenyClass::DiscardOnly),
        ("100::ffff:ffff:ffff:ffff", DenyClass::DiscardOnly),
        ("fec0::1", DenyClass::SiteLocal),
        ("5f00::1", DenyClass::Srv6),
    ];

    /// Public addresses, many sitting just outside a denied range.
    const PUBLIC: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "9.9.9.9",
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.0",
        "192.0.3.0",
        "192.88.98.255",
        "192.88.100.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.99.255",
        "203.0.114.0",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2001:200::1",
        "2001:db7:ffff::1",
        "2001:db9::1",
        "2003::1",
        "3fff:1000::1",
        "3ffe::1",
        "2400:cb00::1",
    ];

    #[test]
    fn table_of_denied_addresses() {
        for &(addr, class) in DENIED {
            assert_eq!(classify(ip(addr)), Some(class), "classify({addr})");
            assert_eq!(
                SsrfPolicy::default().check_ip(ip(addr)),
                Err(class),
                "check_ip({addr})"
            );
        }
    }

    #[test]
    fn every_class_has_a_table_row_and_a_stable_name() {
        for class in DenyClass::ALL {
            assert!(
                DENIED.iter().any(|&(_, c)| c == class),
                "no test address for {class:?}"
            );
            let json = serde_json::to_string(&class).expect("serialises");
            assert_eq!(
                json,
                format!("\"{}\"", class.as_str()),
                "serde of {class:?}"
            );
            assert_eq!(class.to_string(), class.as_str(), "Display of {class:?}");
        }
        let mut names: Vec<_> = DenyClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DenyClass::ALL.len(), "class names are unique");
    }

    #[test]
    fn public_addresses_are_allowed() {
        for &addr in PUBLIC {
            assert_eq!(classify(ip(addr)), None, "classify({addr})");
            assert_eq!(
                SsrfPolicy::default().check_ip(ip(addr)),
                Ok(()),
                "check_ip({addr})"
            );
        }
    }

    #[test]
    fn range_edges_are_denied_with_their_class() {
        let ranges: Vec<_> = denied_ranges().collect();
        for (i, &(range, class)) in ranges.iter().enumerate() {
            for addr in [range.network(), range.broadcast()] {
                let shadowed = ranges[..i].iter().any(|(r, _)| r.contains(&addr));
                let got = classify(addr);
                assert!(got.is_some(), "{addr} (edge of {range}) is denied");
                if !shadowed {
                    assert_eq!(got, Some(class), "{addr} (edge of {range})");
                }
            }
        }
    }

    #[test]
    fn table_order_puts_specific_ranges_first() {
        let ranges: Vec<_> = denied_ranges().collect();
        for (i, (earlier, _)) in ranges.iter().enumerate() {
            for (later, _) in &ranges[i + 1..] {
                assert!(
                    !(earlier.contains(later)),
                    "{later} is shadowed by the earlier {earlier}"
                );
            }
        }
    }

    #[test]
    fn ip_literal_encodings_all_become_canonical() {
        let loopback = ip("127.0.0.1");
        for s in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://0x7F.0.0.1/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "http://127.0.0.1:80/",
            "HTTP://127.0.0.1",
            "  http://127.0.0.1/  ",
        ] {
            let t = parse_target_url(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.host, TargetHost::Ip(loopback), "{s}");
            assert_eq!(t.url.host_str(), Some("127.0.0.1"), "{s}");
            assert_eq!(t.authority(), "127.0.0.1:80", "{s}");
            assert_eq!(
                check_url(&SsrfPolicy::default(), s),
                Err(SsrfError::Denied {
                    addr: loopback,
                    class: DenyClass::Loopback
                }),
                "{s}"
            );
        }
        let t = parse_target_url("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/").expect("parses");
        assert_eq!(t.host, TargetHost::Ip(ip("169.254.169.254")));
    }

    #[test]
    fn ipv6_literals_and_zone_ids() {
        let t = parse_target_url("http://[::1]/").expect("parses");
        assert_eq!(t.host, TargetHost::Ip(ip("::1")));
        assert_eq!(t.authority(), "[::1]:80");
        assert_eq!(
            check_url(&SsrfPolicy::default(), "http://[::1]/"),
            Err(SsrfError::Denied {
                addr: ip("::1"),
                class: DenyClass::Loopback
            })
        );

        for s in [
            "http://[fe80::1%25eth0]/",
            "http://[fe80::1%eth0]/",
            "http://[FE80::1%25en0]:8080/x?y#z",
        ] {
            let t = parse_target_url(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.host, TargetHost::Ip(ip("fe80::1")), "{s}");
            assert_eq!(
                t.url.host_str(),
                Some("[fe80::1]"),
                "zone gone from url: {s}"
            );
            assert_eq!(
                check_url(&SsrfPolicy::default(), s),
                Err(SsrfError::Denied {
                    addr: ip("fe80::1"),
                    class: DenyClass::LinkLocal
                }),
                "{s}"
            );
        }

        for (s, class) in [
            ("http://[::ffff:127.0.0.1]/", DenyClass::Ipv4Mapped),
            ("http://[::ffff:7f00:1]/", DenyClass::Ipv4Mapped),
            ("http://[::127.0.0.1]/", DenyClass::Ipv4Compatible),
            ("http://[64:ff9b::169.254.169.254]/", DenyClass::Nat64),
            ("https://[fd00:ec2::254]/", DenyClass::UniqueLocal),
        ] {
            match check_url(&SsrfPolicy::default(), s) {
                Err(SsrfError::Denied { class: got, .. }) => assert_eq!(got, class, "{s}"),
                other => panic!("{s}: expected {class}, got {other:?}"),
            }
        }

        let t = parse_target_url("https://[2606:4700:4700::1111]:8443/").expect("parses");
        assert_eq!(t.authority(), "[2606:4700:4700::1111]:8443");
    }

    #[test]
    fn syntactic_rules() {
        for s in [
            "http://169.254.169.254@evil.example/",
            "http://user:pass@example.com/",
            "http://:pass@example.com/",
            "http://user@example.com/",
            "http://[fe80::1%25eth0]@example.com/",
        ] {
            assert_eq!(parse_target_url(s), Err(UrlError::UserInfo), "{s}");
        }
        for (s, scheme) in [
            ("ftp://example.com/", "ftp"),
            ("file:///etc/passwd", "file"),
            ("gopher://127.0.0.1:6379/_INFO", "gopher"),
            ("ws://example.com/", "ws"),
            ("javascript:alert(1)", "javascript"),
        ] {
            assert_eq!(
                parse_target_url(s),
                Err(UrlError::Scheme(scheme.into())),
                "{s}"
            );
        }
        for s in ["http://", "http:///", "https://:443/", "http://?x"] {
            assert_eq!(parse_target_url(s), Err(UrlError::EmptyHost), "{s}");
        }
        for s in [
            "",
            "not a url",
            "/relative/path",
            "http://[127.0.0.1]/",
            "http://[::1/",
            "http://1.2.3.4.5/",
            "http://256.0.0.1/",
            "http://example.com:99999/",
            "http://exa mple.com/",
        ] {
            assert!(
                matches!(parse_target_url(s), Err(UrlError::NotAUrl(_))),
                "{s}: {:?}",
                parse_target_url(s)
            );
        }
        for s in [
            "http://a..b/",
            "http://example.com../",
            "http://./",
            "http://A0*/",
            "http://a!b.example/",
            "http://x~y.com/",
        ] {
            assert!(
                matches!(parse_target_url(s), Err(UrlError::InvalidHost(_))),
                "{s}: {:?}",
                parse_target_url(s)
            );
        }
        for s in [
            "http://my_service.internal/",
            "http://b\u{fc}cher.de/",
            "http://a-b.example.com./",
        ] {
            assert!(
                parse_target_url(s).is_ok(),
                "{s}: {:?}",
                parse_target_url(s)
            );
        }
        let long_label = format!("http://{}.com/", "a".repeat(64));
        assert!(matches!(
            parse_target_url(&long_label),
            Err(UrlError::InvalidHost(_))
        ));
        assert_eq!(
            parse_target_url("http://example.com:0/"),
            Err(UrlError::PortZero)
        );

        let base = "http://example.com/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_URL_BYTES - base.len()));
        assert!(parse_target_url(&at_limit).is_ok(), "exactly at the limit");
        let over = format!("{at_limit}a");
        assert_eq!(parse_target_url(&over), Err(UrlError::TooLong));
        // Short input that grows past the limit once percent-encoded.
        let grows = format!("{base}{}a", "a ".repeat(MAX_URL_BYTES / 3));
        assert!(grows.len() < MAX_URL_BYTES);
        assert_eq!(parse_target_url(&grows), Err(UrlError::TooLong));
    }

    #[test]
    fn domains_are_normalised_and_returned_unchecked() {
        let t = parse_target_url("HTTP://Example.COM./Path?q=1").expect("parses");
        assert_eq!(t.host, TargetHost::Domain("example.com".into()));
        assert_eq!(t.url.as_str(), "http://example.com/Path?q=1");
        assert_eq!((t.port, t.authority().as_str()), (80, "example.com:80"));

        let t = parse_target_url("https://api.example.com").expect("parses");
        assert_eq!(
            (t.port, t.authority().as_str()),
            (443, "api.example.com:443")
        );
        let t = parse_target_url("http://api.example.com:8080/x").expect("parses");
        assert_eq!(t.authority(), "api.example.com:8080");

        let t = parse_target_url("http://BÜCHER.example/").expect("parses");
        assert_eq!(t.host, TargetHost::Domain("xn--bcher-kva.example".into()));

        // Names are only judged once resolved; check_url lets them through.
        let t = check_url(&SsrfPolicy::default(), "http://localhost:9/").expect("unchecked");
        assert_eq!(t.host, TargetHost::Domain("localhost".into()));
    }

    #[test]
    fn allow_list_opens_only_its_ranges() {
        let policy = SsrfPolicy::new(vec![net("127.0.0.0/8")]);
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("127.9.9.9")), Ok(()));
        assert_eq!(
            policy.check_ip(ip("::ffff:127.0.0.1")),
            Ok(()),
            "mapped form of an allowed IPv4 address"
        );
        assert_eq!(policy.check_ip(ip("10.0.0.1")), Err(DenyClass::Private));
        assert_eq!(
            policy.check_ip(ip("::ffff:10.0.0.1")),
            Err(DenyClass::Ipv4Mapped)
        );
        assert_eq!(
            policy.check_ip(ip("::127.0.0.1")),
            Err(DenyClass::Ipv4Compatible),
            "only the mapped form is unwrapped"
        );
        assert_eq!(policy.check_ip(ip("::1")), Err(DenyClass::Loopback));
        assert_eq!(policy.check_ip(ip("8.8.8.8")), Ok(()));
        assert!(check_url(&policy, "http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url(&policy, "http://[::ffff:127.0.0.1]/").is_ok());
        assert_eq!(
            check_url(&policy, "http://10.0.0.1/"),
            Err(SsrfError::Denied {
                addr: ip("10.0.0.1"),
                class: DenyClass::Private
            })
        );

        let v6 = SsrfPolicy::new(vec![net("fd00:ec2::/32"), net("::1/128")]);
        assert_eq!(v6.check_ip(ip("fd00:ec2::254")), Ok(()));
        assert_eq!(v6.check_ip(ip("::1")), Ok(()));
        assert_eq!(v6.check_ip(ip("fd00:ec3::1")), Err(DenyClass::UniqueLocal));
        assert_eq!(v6.check_ip(ip("127.0.0.1")), Err(DenyClass::Loopback));
        assert_eq!(v6.allowed().len(), 2);
    }

    #[test]
    fn filter_resolved_keeps_allowed_addresses_in_order() {
        let policy = SsrfPolicy::default();
        let got = policy.filter_resolved([ip("10.0.0.1"), ip("8.8.8.8"), ip("::1"), ip("1.1.1.1")]);
        assert_eq!(got, Ok(vec![ip("8.8.8.8"), ip("1.1.1.1")]));
        let got = policy.filter_resolved([ip("169.254.169.254"), ip("::1")]);
        assert_eq!(
            got,
            Err(SsrfError::Denied {
                addr: ip("169.254.169.254"),
                class: DenyClass::LinkLocal
            }),
            "all denied: the first denial is reported"
        );
        assert_eq!(policy.filter_resolved([]), Ok(vec![]));
    }

    #[test]
    fn error_messages_name_address_and_class() {
        let e = check_url(&SsrfPolicy::default(), "http://[fd00:ec2::254]/").expect_err("denied");
        assert_eq!(e.to_string(), "address fd00:ec2::254 is unique_local");
        let e = check_url(&SsrfPolicy::default(), "ftp://x/").expect_err("scheme");
        assert_eq!(e.to_string(), UrlError::Scheme("ftp".into()).to_string());
    }

    /// Picks the address of `net` whose host bits are taken from `r`.
    fn inside(net: IpNet, r: u128) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let host = (r as u32) & !u32::from(n.netmask());
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            IpNet::V6(n) => {
                let host = r & !u128::from(n.netmask());
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn classify_never_panics(v4 in any::<u32>(), v6 in any::<u128>()) {
            let policy = SsrfPolicy::new(vec![net("10.0.0.0/8"), net("fc00::/7")]);
            for addr in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                let class = classify(addr);
                let checked = SsrfPolicy::default().check_ip(addr);
                prop_assert_eq!(checked, class.map_or(Ok(()), Err));
                let _ = policy.check_ip(addr);
            }
        }

        #[test]
        fn every_address_in_a_denied_range_is_denied(r in any::<u128>()) {
            let ranges: Vec<_> = denied_ranges().collect();
            for (i, &(range, class)) in ranges.iter().enumerate() {
                let addr = inside(range, r);
                prop_assert!(range.contains(&addr));
                let got = classify(addr);
                prop_assert!(got.is_some(), "{} in {} not denied", addr, range);
                prop_assert!(SsrfPolicy::default().check_ip(addr).is_err());
                let shadowed = ranges[..i].iter().any(|(earlier, _)| earlier.contains(&addr));
                if !shadowed {
                    prop_assert_eq!(got, Some(class), "{} in {}", addr, range);
                }
            }
        }

        #[test]
        fn mapped_addresses_are_denied_unless_their_ipv4_is_allowed(v4 in any::<u32>()) {
            let v4 = Ipv4Addr::from(v4);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(classify(mapped), Some(DenyClass::Ipv4Mapped));
            let all_v4 = SsrfPolicy::new(vec![net("0.0.0.0/0")]);
            prop_assert_eq!(all_v4.check_ip(mapped), Ok(()));
        }

        #[test]
        fn decimal_ipv4_urls_parse_to_the_same_address(v4 in any::<u32>(), port in 1u16..) {
            let want = IpAddr::V4(Ipv4Addr::from(v4));
            let t = parse_target_url(&format!("http://{v4}:{port}/")).expect("decimal form parses");
            prop_assert_eq!(&t.host, &TargetHost::Ip(want));
            prop_assert_eq!(t.port, port);
            let checked = check_url(&SsrfPolicy::default(), &format!("http://{v4:#x}:{port}/"));
            match classify(want) {
                None => prop_assert!(checked.is_ok()),
                Some(class) => prop_assert_eq!(checked, Err(SsrfError::Denied { addr: want, class })),
            }
        }

        #[test]
        fn parse_never_panics(s in "(https?://)?[a-zA-Z0-9%@:./\\[\\]\\\\?#-]{0,40}") {
            if let Ok(t) = parse_target_url(&s) {
                prop_assert!(t.url.username().is_empty() && t.url.password().is_none());
                prop_assert!(matches!(t.url.scheme(), "http" | "https"));
                prop_assert!(t.port != 0);
                prop_assert_eq!(parse_target_url(t.url.as_str()), Ok(t.clone()), "idempotent");
            }
        }
    }
}
