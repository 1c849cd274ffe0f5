//! Learns a lane's limits from the headers of one upstream response.
//!
//! EZThrottle paces each lane (target host + credential) with a token bucket (`rate_per_sec`,
//! `burst`), a cap on requests in flight and an optional pause. Upstreams announce their limits
//! in a dozen dialects; this module turns any mix of them into one [`LimitChange`] so the
//! limiter has a single thing to apply. It is pure: no I/O, and it never reads the clock (the
//! receipt time is passed in) so that replays and tests are deterministic. It never panics: a
//! malformed hint is ignored, never fatal, because one bad header from a target must not take
//! a lane down. The same rules are pinned by the shared vectors in
//! `testdata/ratelimit-headers.json`, which the SDKs also run.
//!
//! # General
//! - Header names match case-insensitively; values are trimmed of spaces and tabs.
//! - A plain header that repeats: the first valid occurrence wins (an invalid one is skipped).
//!   `Retry-After` is the exception: the largest valid value wins, to be safe.
//! - `RateLimit` and `RateLimit-Policy` are Structured Fields that HTTP may split across
//!   lines. Each line is parsed on its own; a line that is not a valid Structured Field is
//!   ignored alone and every valid line contributes (draft-07 servers send one line per policy).
//! - Every hint is honoured on every status, since limits arrive on 200s (Shopify, GitHub
//!   `remaining: 0`), 403s (GitHub), 429s and 503s alike. The status only sets `throttled`
//!   (429/503: yes, 2xx/3xx: no), which adaptive pacing feeds on.
//! - Every learned value names its [`Source`]: the header (lower-case) and the window.
//! - Every pause is capped at [`MAX_PAUSE_MS`]; a reset moment already past gives `Some(0)`
//!   ("go now"), which differs from `None` ("no information").
//!
//! # Rate, burst, in-flight
//! - `X-EZTHROTTLE-RPS: <float>` (finite, > 0) sets `rate_per_sec` and
//!   `X-EZTHROTTLE-MAX-CONCURRENT: <int>` (>= 1) sets `max_in_flight`. They are the target
//!   speaking to EZThrottle directly, so they override what `RateLimit-Policy` implies.
//! - `RateLimit-Policy` (draft-11, SF List): an item is a policy name (String) with `q`
//!   (required, integer >= 0), `qu` (String, default `"requests"`), `w` (integer seconds > 0);
//!   other parameters are comments. A String `qu` of another value (`content-bytes`) is not
//!   about requests and is skipped; an item whose `q`, `qu` or `w` has the wrong type, or a
//!   Token instead of a String name, is malformed and skipped whole.
//!   The draft-07 form `100;w=10` (Integer item, `w` parameter) is read the same way.
//!   - `requests` policies with a `w` and `q >= 1`: `rate_per_sec` = the lowest `q / w`
//!     (the most restrictive policy) and `burst` = the smallest `q` of those policies. The
//!     smallest `q` rather than the chosen policy's own `q`, because with
//!     `"burst";q=100;w=60, "daily";q=1000;w=86400` a bucket of 1000 would let 1000 calls out at
//!     once and break the 100-per-minute policy. Ties need no rule: the minima are independent.
//!     Without `w` there is no rate, so such a policy is skipped; `q = 0` cannot be a rate
//!     either (the pause comes from `RateLimit`/`Retry-After`).
//!   - `concurrent-requests` policies with `q >= 1`: `max_in_flight` = the smallest `q`.
//! - OpenAI `x-ratelimit-limit-requests` and Anthropic `anthropic-ratelimit-requests-limit`
//!   (>= 1) are quotas per minute: `rate_per_sec` = limit / 60 with `burst` 1, since both
//!   refill continuously and may enforce the minute in shorter slices. Their `*-tokens`
//!   headers never touch the request rate.
//! - GitHub (`x-ratelimit-resource` present): `x-ratelimit-limit` per fixed hour (per minute
//!   for the `search` and `code_search` resources); the rate is the lower of limit / window and
//!   `(remaining + 1) / (reset - now)` (when the key is shared, the budget left is what counts).
//! - Generic `X-RateLimit-*`, draft <= 06 `RateLimit-*` and `X-Rate-Limit-*` name no window:
//!   `(remaining + 1) / (reset - now)` (the answered call was one of the window's: this keeps
//!   the window's calls evenly spaced), never above the limit (or, without one, remaining) per
//!   second, as whole-second headers cannot describe a window shorter than 1 s. Burst 1.
//! - `X-Shopify-Shop-Api-Call-Limit: used/bucket` (bucket >= 1): a leaky bucket draining
//!   bucket / 20 per second (40 -> 2/s, 400 -> 20/s on Plus), so `rate_per_sec` = bucket / 20
//!   and `burst` = bucket.
//! - Conflicting dialects: the lowest rate and the smallest burst win (each from its own
//!   source). `remaining` is the smallest budget any dialect reports.
//!
//! # Pause
//! `Retry-After` wins whenever it has a valid value, even a smaller one; otherwise the largest of
//! the other hints below applies.
//! - `Retry-After` ([`parse_retry_after`]): delay-seconds, decimal seconds rounded up to whole
//!   seconds (Shopify sends `2.0`), or an HTTP-date in IMF-fixdate, rfc850 or asctime form.
//!   Negative, empty or garbage values are ignored; huge values are capped.
//! - `RateLimit` draft-11 (SF List): items are a policy name (String) with `r` (required,
//!   integer >= 0) and `t` (integer seconds >= 0). `r = 0` with `t` pauses `t` seconds, or
//!   `t - 1` when the response itself was a success (2xx/3xx): `t` is rounded up, so the quota
//!   resets within `(t - 1, t]`, and the lane's pace covers the rest (draft-07 `reset` alike).
//!   Token names (`default;r=5`) and items with missing or mistyped `r`/`t` are skipped whole.
//! - `RateLimit` draft-07 (SF Dictionary `limit=100, remaining=50, reset=5`): `remaining = 0`
//!   pauses `reset` seconds. A line is read as draft-07 only if it is not a valid SF List.
//! - Draft <= 06 `RateLimit-Remaining` / `RateLimit-Reset`, and `X-RateLimit-Remaining` /
//!   `X-RateLimit-Reset` (GitHub and many others) and the `X-Rate-Limit-*` spelling: when
//!   remaining is exhausted, pause until reset. Remaining is a non-negative number and counts as
//!   exhausted below 1 (Reddit sends `0.0`). Reset is ambiguous in the wild, so a number above
//!   10^12 is epoch milliseconds, above 10^9 epoch seconds, else delta seconds (fractions
//!   rounded up to the ms); RFC 3339 and HTTP-dates are accepted too.
//! - OpenAI `x-ratelimit-remaining-requests` (exhausted) + `x-ratelimit-reset-requests`: a Go
//!   duration (`1s`, `6m0s`, `12ms`, `4m12.172s`, `1h2m3s`, `0s`; a bare number is read as
//!   seconds). The `*-tokens` headers are ignored: lanes limit requests, not tokens.
//! - Anthropic `anthropic-ratelimit-requests-remaining` (exhausted) +
//!   `anthropic-ratelimit-requests-reset`: an RFC 3339 time (an HTTP-date is accepted too).
//! - Shopify `used >= bucket`: pause 1000 ms (its leaky bucket drains a few calls per second).
//!   `40/0` or anything malformed is ignored.
//!
//! Not modelled: Stripe's `Stripe-Rate-Limited-Reason` and GitHub's "no hint: wait >= 60 s"
//! carry no numbers, so they are left to the caller's retry backoff.

use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sfv::{BareItem, Dictionary, Item, ListEntry, Parser};

/// What one response teaches about its lane's limits. `None` = no information.
///
/// A value, not a diff against current limits, so the caller decides how to merge it with
/// operator-pinned limits and with what earlier responses taught.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitChange {
    /// New sustained rate (requests per second) for the lane.
    pub rate_per_sec: Option<f64>,
    /// New burst (bucket size, >= 1) for the lane.
    pub burst: Option<u32>,
    /// New max in-flight requests for the lane.
    pub max_in_flight: Option<u32>,
    /// Pause the whole lane for this many ms from receipt of the response (capped at 24 h).
    pub pause_for_ms: Option<u64>,
    /// Requests left in the provider's current window (the smallest any header announced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Which header each value above came from, and over which window.
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    pub sources: Sources,
    /// `Some(true)` when the answer was "slow down" (429 or 503), `Some(false)` when the call
    /// went through (status below 400); `None` otherwise. Adaptive pacing feeds on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
}

/// Where a learned value came from: the header that carried it and the window it was
/// announced over, in seconds (`None`: the header names no window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Header name, as the dialect spells it (`x-ratelimit-limit-requests`).
    pub header: String,
    /// Window of the announced quota, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
}

impl Source {
    fn new(header: &str, window_s: Option<u64>) -> Self {
        Self {
            header: header.to_owned(),
            window_s,
        }
    }
}

/// The source of each value of a [`LimitChange`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sources {
    /// Of `rate_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Source>,
    /// Of `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Source>,
    /// Of `max_in_flight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<Source>,
    /// Of `pause_for_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Source>,
}

impl Sources {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Longest pause any header can impose (24 h), so that a buggy or hostile upstream cannot
/// freeze a lane indefinitely; jobs also have their own deadlines.
pub const MAX_PAUSE_MS: u64 = 24 * 3600 * 1000;

/// Parses everything the response says about its lane's limits (see the module docs for the
/// rules).
///
/// `headers` are (name, value) pairs as received (names in any case; a name may repeat).
/// `status` is the HTTP status; no rule depends on it today (limits arrive on any status), it
/// is taken so callers need not change when one does. `now_ms` is ms since the Unix epoch at
/// receipt, used to turn reset moments into pauses.
pub fn parse(headers: &[(String, String)], status: u16, now_ms: u64) -> LimitChange {
    let h = Headers(headers);
    let granted = (200..=399).contains(&status);
    let mut sources = Sources::default();

    // Rate and burst: every dialect's reading, the most restrictive wins.
    let hints = rate_hints(h, now_ms);
    let mut rate_per_sec = None;
    let mut burst = None;
    for hint in &hints {
        if let Some(r) = hint.rate {
            if rate_per_sec.is_none_or(|cur| r < cur) {
                rate_per_sec = Some(r);
                sources.rate = Some(hint.source.clone());
            }
        }
        if let Some(b) = hint.burst {
            if burst.is_none_or(|cur| b < cur) {
                burst = Some(b);
                sources.burst = Some(hint.source.clone());
            }
        }
    }
    if let Some(r) = h.first("x-ezthrottle-rps", parse_rps) {
        rate_per_sec = Some(r);
        sources.rate = Some(Source::new("x-ezthrottle-rps", None));
    }
    let remaining = hints.iter().filter_map(|hint| hint.remaining).min();

    let policy_concurrency = policy_hints(h).concurrency;
    let max_in_flight = match h.first("x-ezthrottle-max-concurrent", parse_count) {
        Some(m) => {
            sources.max_in_flight = Some(Source::new("x-ezthrottle-max-concurrent", None));
            Some(m)
        }
        None => {
            if policy_concurrency.is_some() {
                sources.max_in_flight = Some(Source::new("ratelimit-policy", None));
            }
            policy_concurrency
        }
    };

    let retry_after = h
        .all("retry-after")
        .filter_map(|v| parse_retry_after(v, now_ms))
        .max();
    let pause_for_ms = match retry_after {
        Some(p) => {
            sources.pause = Some(Source::new("retry-after", None));
            Some(p)
        }
        None => {
            let shopify = h.first("x-shopify-shop-api-call-limit", parse_shopify);
            let others = [
                (ratelimit_field_pause(h, granted), "ratelimit"),
                (
                    exhausted_pause(h, "ratelimit-remaining", "ratelimit-reset", |v| {
                        parse_reset(v, now_ms)
                    }),
                    "ratelimit-reset",
                ),
                (
                    exhausted_pause(h, "x-ratelimit-remaining", "x-ratelimit-reset", |v| {
                        parse_reset(v, now_ms)
                    }),
                    "x-ratelimit-reset",
                ),
                (
                    exhausted_pause(h, "x-rate-limit-remaining", "x-rate-limit-reset", |v| {
                        parse_reset(v, now_ms)
                    }),
                    "x-rate-limit-reset",
                ),
                (
                    exhausted_pause(
                        h,
                        "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests",
                        parse_go_duration_ms,
                    ),
                    "x-ratelimit-reset-requests",
                ),
                (
                    exhausted_pause(
                        h,
                        "anthropic-ratelimit-requests-remaining",
                        "anthropic-ratelimit-requests-reset",
                        |v| parse_datetime_ms(v).map(|at| until(at, now_ms)),
                    ),
                    "anthropic-ratelimit-requests-reset",
                ),
                (
                    shopify.and_then(|s| (s.used >= u64::from(s.bucket)).then_some(1000)),
                    "x-shopify-shop-api-call-limit",
                ),
            ];
            let best = others
                .into_iter()
                .filter_map(|(p, name)| p.map(|p| (p, name)))
                .fold(None, |acc: Option<(u64, &str)>, (p, name)| match acc {
                    Some((q, _)) if q >= p => acc,
                    _ => Some((p, name)),
                });
            best.map(|(p, name)| {
                sources.pause = Some(Source::new(name, None));
                p
            })
        }
    };

    let throttled = match status {
        429 | 503 => Some(true),
        _ if granted => Some(false),
        _ => None,
    };

    LimitChange {
        rate_per_sec,
        burst,
        max_in_flight,
        pause_for_ms,
        remaining,
        sources,
        throttled,
    }
}

/// Parses a `Retry-After` value alone, so callers that only care about it (e.g. webhook
/// delivery) need not build a header list.
///
/// Accepts delay-seconds, decimal seconds rounded up to whole seconds (Shopify's `2.0`), and
/// HTTP-dates (IMF-fixdate, rfc850, asctime), which RFC 9110 requires recipients to accept.
/// A past date gives `Some(0)`; negative, empty or invalid values give `None`; the result is
/// capped at [`MAX_PAUSE_MS`].
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let v = trim_ows(value);
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let d = Decimal::parse(v, false)?;
        let secs = d.int.saturating_add(u128::from(d.has_fraction()));
        return Some(cap(secs.saturating_mul(1000)));
    }
    parse_http_date_ms(v).map(|at| until(at, now_ms))
}

/// Case-insensitive view over the received header pairs.
#[derive(Clone, Copy)]
struct Headers<'a>(&'a [(String, String)]);

impl<'a> Headers<'a> {
    /// All values of `name` (lower-case), in order, trimmed.
    fn all(self, name: &'static str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
    }

    /// The first value of `name` that `f` accepts.
    fn first<T>(self, name: &'static str, f: impl FnMut(&'a str) -> Option<T>) -> Option<T> {
        self.all(name).find_map(f)
    }
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn cap(ms: u128) -> u64 {
    u64::try_from(ms.min(u128::from(MAX_PAUSE_MS))).unwrap_or(MAX_PAUSE_MS)
}

/// Pause from `now_ms` until the moment `at_ms`; zero if already past.
fn until(at_ms: i128, now_ms: u64) -> u64 {
    let delta = at_ms.saturating_sub(i128::from(now_ms));
    cap(u128::try_from(delta).unwrap_or(0))
}

/// `X-EZTHROTTLE-RPS`: a finite positive float.
fn parse_rps(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0)
}

/// A count >= 1 (`X-EZTHROTTLE-MAX-CONCURRENT`); huge values saturate.
fn parse_count(v: &str) -> Option<u32> {
    parse_digits(v)
        .filter(|n| *n >= 1)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// `1*DIGIT` as u64, saturating; no sign, no whitespace.
fn parse_digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// An unsigned decimal number `int[.frac]`, kept exact so that `4m12.172s` is 252172 ms and
/// not one more after float rounding.
struct Decimal {
    /// Integer part, saturating at 10^20 (far beyond any cap once scaled).
    int: u128,
    /// The first [`Decimal::MAX_FRAC_DIGITS`] fraction digits.
    frac: u128,
    frac_digits: u32,
    /// A non-zero fraction digit beyond those kept, so rounding up stays correct.
    frac_rest: bool,
}

impl Decimal {
    const MAX_FRAC_DIGITS: u32 = 18;
    const INT_LIMIT: u128 = 100_000_000_000_000_000_000;

    /// Parses `1*DIGIT ["." 1*DIGIT]`; `lenient` also allows Go's `.5` and `5.`.
    fn parse(s: &str, lenient: bool) -> Option<Decimal> {
        let (int_s, frac_s) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_s) || !frac_s.into_iter().all(all_digits) {
            return None;
        }
        let frac_s = frac_s.unwrap_or("");
        let ok = if lenient {
            !(int_s.is_empty() && frac_s.is_empty())
        } else {
            !int_s.is_empty() && (!frac_s.is_empty() || !s.ends_with('.'))
        };
        if !ok {
            return None;
        }
        let int = int_s.bytes().fold(0u128, |acc, b| {
            (acc * 10 + u128::from(b - b'0')).min(Self::INT_LIMIT)
        });
        let mut d = Decimal {
            int,
            frac: 0,
            frac_digits: 0,
            frac_rest: false,
        };
        for b in frac_s.bytes() {
            if d.frac_digits < Self::MAX_FRAC_DIGITS {
                d.frac = d.frac * 10 + u128::from(b - b'0');
                d.frac_digits += 1;
            } else if b != b'0' {
                d.frac_rest = true;
            }
        }
        Some(d)
    }

    fn has_fraction(&self) -> bool {
        self.frac != 0 || self.frac_rest
    }

    /// `ceil(self * scale)`.
    fn ceil_scaled(&self, scale: u128) -> u128 {
        let den = 10u128.pow(self.frac_digits);
        let num = self.frac * scale;
        let mut frac_part = num / den;
        if frac_part * den != num || self.frac_rest {
            frac_part += 1;
        }
        self.int.saturating_mul(scale).saturating_add(frac_part)
    }
}

/// Milliseconds since the epoch (negative before 1970) of an RFC 3339 date-time, with `Z` or a
/// numeric offset. Sub-millisecond digits round up.
fn parse_rfc3339_ms(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = b.get(from..to)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
        )
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = b.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        for (k, d) in digits.iter().enumerate() {
            let d = i128::from(d - b'0');
            match k {
                0 => frac_ms += d * 100,
                1 => frac_ms += d * 10,
                2 => frac_ms += d,
                _ if d != 0 => {
                    frac_ms += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    let offset_min: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(i128::from(secs) * 1000 + frac_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an HTTP-date (IMF-fixdate, rfc850 or asctime).
fn parse_http_date_ms(s: &str) -> Option<i128> {
    let t = httpdate::parse_http_date(s).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i128::try_from(d.as_millis()).ok()
}

/// An absolute time written as RFC 3339 or as an HTTP-date.
fn parse_datetime_ms(s: &str) -> Option<i128> {
    parse_rfc3339_ms(s).or_else(|| parse_http_date_ms(s))
}

/// A `*-Reset` value of unknown flavour: epoch ms, epoch seconds, delta seconds or a date.
fn parse_reset(v: &str, now_ms: u64) -> Option<u64> {
    const EPOCH_MS_ABOVE: u128 = 1_000_000_000_000_000; // value > 10^12, in thousandths
    const EPOCH_S_ABOVE: u128 = 1_000_000_000_000; // value > 10^9, in thousandths
    match Decimal::parse(v, false) {
        Some(d) => {
            let milli = d.ceil_scaled(1000);
            let at = if milli > EPOCH_MS_ABOVE {
                d.ceil_scaled(1)
            } else if milli > EPOCH_S_ABOVE {
                milli
            } else {
                return Some(cap(milli));
            };
            Some(until(i128::try_from(at).unwrap_or(i128::MAX), now_ms))
        }
        None => parse_datetime_ms(v).map(|at| until(at, now_ms)),
    }
}

/// A Go `time.Duration` string (`1h2m3s`, `4m12.172s`, `12ms`, `0`) in ms, rounded up.
/// A bare number is taken as seconds, as some OpenAI-compatible APIs send. Negative -> `None`.
fn parse_go_duration_ms(v: &str) -> Option<u64> {
    let rest = v.strip_prefix('+').unwrap_or(v);
    if let Some(d) = Decimal::parse(rest, false) {
        return Some(cap(d.ceil_scaled(1000)));
    }
    let mut rest = rest;
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let amount = Decimal::parse(num, true)?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let ns_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        total_ns = total_ns.saturating_add(amount.ceil_scaled(ns_per_unit));
        rest = after;
    }
    Some(cap(total_ns.div_ceil(1_000_000)))
}

/// A `*-Remaining` value: `Some(true)` when not even one whole request is left.
fn parse_exhausted(v: &str) -> Option<bool> {
    Decimal::parse(v, false).map(|d| d.int == 0)
}

/// The pause implied by a remaining/reset header pair: only when remaining is exhausted.
fn exhausted_pause(
    h: Headers<'_>,
    remaining: &'static str,
    reset: &'static str,
    parse_reset: impl FnMut(&str) -> Option<u64>,
) -> Option<u64> {
    if h.first(remaining, parse_exhausted)? {
        h.first(reset, parse_reset)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
struct ShopifyLimit {
    used: u64,
    bucket: u32,
}

/// `X-Shopify-Shop-Api-Call-Limit: used/bucket`, bucket >= 1.
fn parse_shopify(v: &str) -> Option<ShopifyLimit> {
    let (used, bucket) = v.split_once('/')?;
    let used = parse_digits(trim_ows(used))?;
    let bucket = parse_count(trim_ows(bucket))?;
    Some(ShopifyLimit { used, bucket })
}

/// A non-negative SF Integer parameter; `Err` if present with another type or sign.
fn int_param(item: &Item, key: &str) -> Result<Option<u64>, ()> {
    match item.params.get(key) {
        None => Ok(None),
        Some(BareItem::Integer(n)) => u64::try_from(*n).map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

/// Pause from the `RateLimit` field lines: draft-11 List or draft-07 Dictionary.
///
/// Their reset is delta-seconds, so a server rounds it up: the quota resets within
/// `(t - 1, t]`. When the call that spent the last request went through (`granted`), the lane
/// pauses `t - 1` s and its pace does the rest (with a 1 s window, a full second's pause after
/// every window's last call would waste about half of the limit); if that was early, the
/// refusal that follows pauses the full `t`.
fn ratelimit_field_pause(h: Headers<'_>, granted: bool) -> Option<u64> {
    let slack = u64::from(granted) * 1000;
    h.all("ratelimit")
        .filter_map(|line| match Parser::parse_list(line.as_bytes()) {
            Ok(list) => list
                .iter()
                .filter_map(|entry| match entry {
                    ListEntry::Item(item) => draft11_pause(item).map(|p| p.saturating_sub(slack)),
                    ListEntry::InnerList(_) => None,
                })
                .max(),
            Err(_) => Parser::parse_dictionary(line.as_bytes())
                .ok()
                .and_then(|dict| draft07_pause(&dict))
                .map(|p| p.saturating_sub(slack)),
        })
        .max()
}

/// Draft-11 `"name";r=0;t=30` -> 30 s. Token names and mistyped `r`/`t` -> ignored.
fn draft11_pause(item: &Item) -> Option<u64> {
    if !matches!(item.bare_item, BareItem::String(_)) {
        return None;
    }
    let remaining = int_param(item, "r").ok()??;
    let reset = int_param(item, "t").ok()?;
    if remaining == 0 {
        reset.map(|t| cap(u128::from(t) * 1000))
    } else {
        None
    }
}

/// Draft-07 `limit=100, remaining=0, reset=5` -> 5 s.
fn draft07_pause(dict: &Dictionary) -> Option<u64> {
    let int = |key: &str| match dict.get(key) {
        Some(ListEntry::Item(item)) => item.bare_item.as_int().and_then(|n| u64::try_from(n).ok()),
        _ => None,
    };
    if int("remaining")? == 0 {
        int("reset").map(|t| cap(u128::from(t) * 1000))
    } else {
        None
    }
}

/// One dialect's reading of the lane's pace.
#[derive(Debug, Clone, PartialEq)]
struct RateHint {
    rate: Option<f64>,
    burst: Option<u32>,
    remaining: Option<u64>,
    source: Source,
}

/// Per-minute request quotas (OpenAI, Anthropic): the limit spread over its minute, one at a
/// time. Both providers refill continuously and may enforce a minute's quota in shorter slices
/// (OpenAI: "60,000 requests/minute may be enforced as 1,000 requests/second"), so the burst is
/// 1: in any window of `w` seconds GCRA then lets at most `1 + w * rate` through.
fn per_minute_hint(
    h: Headers<'_>,
    limit: &'static str,
    remaining: &'static str,
) -> Option<RateHint> {
    let q = h.first(limit, parse_digits).filter(|q| *q >= 1)?;
    Some(RateHint {
        rate: Some(q as f64 / 60.0),
        burst: Some(1),
        remaining: h.first(remaining, parse_whole),
        source: Source::new(limit, Some(60)),
    })
}

/// A `*-Remaining` count, whole requests (Reddit's `599.0` is 599).
fn parse_whole(v: &str) -> Option<u64> {
    Decimal::parse(v, false).map(|d| u64::try_from(d.int).unwrap_or(u64::MAX))
}

/// `remaining` spread evenly over the `t_left_ms` to the reset, at most `cap` per second.
///
/// The answered call was one of the window's, so an even pace puts it one interval before the
/// `remaining` others: (remaining + 1) / (reset - now) is the pace that keeps the window's
/// calls even (with just `remaining`, the last call of every window would land on the reset
/// and a 1 s window of 4 would carry 3). The `remaining` calls still all leave before the reset.
fn paced(remaining: u64, t_left_ms: u64, cap: f64) -> Option<f64> {
    if remaining == 0 || t_left_ms == 0 {
        return None;
    }
    let r = ((remaining as f64 + 1.0) * 1000.0 / t_left_ms as f64).min(cap);
    (r.is_finite() && r > 0.0).then_some(r)
}

/// Every dialect's reading of rate, burst and remaining budget (see the module docs).
fn rate_hints(h: Headers<'_>, now_ms: u64) -> Vec<RateHint> {
    let mut out = Vec::new();
    let policy = policy_hints(h);
    if policy.rate.is_some() || policy.burst.is_some() {
        out.push(RateHint {
            rate: policy.rate,
            burst: policy.burst,
            remaining: ratelimit_field_remaining(h),
            source: Source::new("ratelimit-policy", policy.window_s),
        });
    }
    out.extend(per_minute_hint(
        h,
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
    ));
    out.extend(per_minute_hint(
        h,
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
    ));
    if let Some(s) = h.first("x-shopify-shop-api-call-limit", parse_shopify) {
        // The REST Admin API's leaky bucket drains at a twentieth of its size per second
        // (40 -> 2/s standard, 400 -> 20/s Plus).
        out.push(RateHint {
            rate: Some(f64::from(s.bucket) / 20.0),
            burst: Some(s.bucket),
            remaining: Some(u64::from(s.bucket).saturating_sub(s.used)),
            source: Source::new("x-shopify-shop-api-call-limit", None),
        });
    }
    let github_resource = h.first("x-ratelimit-resource", |v| (!v.is_empty()).then_some(v));
    if let Some(resource) = github_resource {
        // GitHub: fixed windows of an hour, except the search resources' minute.
        let window = if resource.eq_ignore_ascii_case("search")
            || resource.eq_ignore_ascii_case("code_search")
        {
            60
        } else {
            3600
        };
        if let Some(q) = h
            .first("x-ratelimit-limit", parse_digits)
            .filter(|q| *q >= 1)
        {
            let remaining = h.first("x-ratelimit-remaining", parse_whole);
            let announced = q as f64 / window as f64;
            let left = remaining.zip(h.first("x-ratelimit-reset", |v| parse_reset(v, now_ms)));
            let rate = match left {
                Some((0, _)) => None,
                Some((r, t)) => Some(paced(r, t, announced).unwrap_or(announced)),
                None => Some(announced),
            };
            out.push(RateHint {
                rate,
                burst: rate.map(|_| 1),
                remaining,
                source: Source::new("x-ratelimit-limit", Some(window)),
            });
        }
    } else {
        // Window unknown: pace what is left evenly until the reset. Headers count in whole
        // seconds, so the shortest window they can name is 1 s: never above the limit (or,
        // without one, the remaining budget) per second.
        for (limit, remaining, reset) in [
            (
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ),
            ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"),
            (
                "x-rate-limit-limit",
                "x-rate-limit-remaining",
                "x-rate-limit-reset",
            ),
        ] {
            let Some(r) = h.first(remaining, parse_whole) else {
                continue;
            };
            let q = h.first(limit, parse_digits).filter(|q| *q >= 1);
            let cap = q.unwrap_or(r).max(r) as f64;
            let rate = h
                .first(reset, |v| parse_reset(v, now_ms))
                .and_then(|t| paced(r, t, cap));
            out.push(RateHint {
                rate,
                burst: rate.map(|_| 1),
                remaining: Some(r),
                source: Source::new(remaining, None),
            });
        }
    }
    out
}

/// Requests left according to the `RateLimit` field (draft-11 `r`, draft-07 `remaining`).
fn ratelimit_field_remaining(h: Headers<'_>) -> Option<u64> {
    h.all("ratelimit")
        .filter_map(|line| match Parser::parse_list(line.as_bytes()) {
            Ok(list) => list
                .iter()
                .filter_map(|entry| match entry {
                    ListEntry::Item(item) if matches!(item.bare_item, BareItem::String(_)) => {
                        int_param(item, "r").ok().flatten()
                    }
                    _ => None,
                })
                .min(),
            Err(_) => Parser::parse_dictionary(line.as_bytes())
                .ok()
                .and_then(|dict| match dict.get("remaining") {
                    Some(ListEntry::Item(item)) => {
                        item.bare_item.as_int().and_then(|n| u64::try_from(n).ok())
                    }
                    _ => None,
                }),
        })
        .min()
}

#[derive(Debug, Default, PartialEq)]
struct PolicyHints {
    rate: Option<f64>,
    /// Window of the policy that set `rate`.
    window_s: Option<u64>,
    burst: Option<u32>,
    concurrency: Option<u32>,
}

#[derive(Debug, PartialEq)]
enum QuotaUnit {
    Requests,
    ConcurrentRequests,
    Other,
}

struct Policy {
    quota: u64,
    window_s: Option<u64>,
    unit: QuotaUnit,
}

/// One `RateLimit-Policy` list item: draft-11 (String name) or draft-07 (Integer quota).
fn policy_of(item: &Item) -> Option<Policy> {
    let window_s = int_param(item, "w").ok()?.filter(|w| *w > 0);
    if item.params.contains_key("w") && window_s.is_none() {
        return None;
    }
    match &item.bare_item {
        BareItem::String(_) => {
            let quota = int_param(item, "q").ok()??;
            let unit = match item.params.get("qu") {
                None => QuotaUnit::Requests,
                Some(BareItem::String(u)) if u == "requests" => QuotaUnit::Requests,
                Some(BareItem::String(u)) if u == "concurrent-requests" => {
                    QuotaUnit::ConcurrentRequests
                }
                Some(BareItem::String(_)) => QuotaUnit::Other,
                Some(_) => return None,
            };
            Some(Policy {
                quota,
                window_s,
                unit,
            })
        }
        BareItem::Integer(q) => Some(Policy {
            quota: u64::try_from(*q).ok()?,
            window_s,
            unit: QuotaUnit::Requests,
        }),
        _ => None,
    }
}

/// Rate, burst and concurrency from every valid `RateLimit-Policy` line.
fn policy_hints(h: Headers<'_>) -> PolicyHints {
    let mut hints = PolicyHints::default();
    let items = h
        .all("ratelimit-policy")
        .filter_map(|line| Parser::parse_list(line.as_bytes()).ok())
        .flatten()
        .filter_map(|entry| match entry {
            ListEntry::Item(item) => Some(item),
            ListEntry::InnerList(_) => None,
        });
    for p in items.filter_map(|item| policy_of(&item)) {
        if p.quota == 0 {
            continue;
        }
        let quota32 = u32::try_from(p.quota).unwrap_or(u32::MAX);
        match (p.unit, p.window_s) {
            (QuotaUnit::Requests, Some(w)) => {
                let rate = p.quota as f64 / w as f64;
                if hints.rate.is_none_or(|r| rate < r) {
                    hints.rate = Some(rate);
                    hints.window_s = Some(w);
                }
                hints.burst = min_opt(hints.burst, Some(quota32));
            }
            (QuotaUnit::ConcurrentRequests, _) => {
                hints.concurrency = min_opt(hints.concurrency, Some(quota32));
            }
            _ => {}
        }
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Deserialize)]
    struct Vectors {
        description: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        status: u16,
        now_ms: u64,
        headers: Vec<(String, String)>,
        expect: LimitChange,
    }

    fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn shared_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/ratelimit-headers.json"
        );
        let text = std::fs::read_to_string(path).expect("read testdata/ratelimit-headers.json");
        let vectors: Vectors = serde_json::from_str(&text).expect("valid vector file");
        assert!(!vectors.description.is_empty());
        assert!(
            vectors.cases.len() >= 40,
            "only {} cases",
            vectors.cases.len()
        );
        let mut names = std::collections::HashSet::new();
        for case in &vectors.cases {
            assert!(
                names.insert(&case.name),
                "duplicate case name {:?}",
                case.name
            );
            let got = parse(&case.headers, case.status, case.now_ms);
            let e = &case.expect;
            match (got.rate_per_sec, e.rate_per_sec) {
                (Some(g), Some(w)) => assert!(
                    (g - w).abs() <= 1e-9,
                    "case {:?}: rate_per_sec {g} != {w}",
                    case.name
                ),
                (g, w) => assert_eq!(g, w, "case {:?}: rate_per_sec", case.name),
            }
            assert_eq!(got.burst, e.burst, "case {:?}: burst", case.name);
            assert_eq!(
                got.max_in_flight, e.max_in_flight,
                "case {:?}: max_in_flight",
                case.name
            );
            assert_eq!(
                got.pause_for_ms, e.pause_for_ms,
                "case {:?}: pause_for_ms",
                case.name
            );
            if e.remaining.is_some() {
                assert_eq!(
                    got.remaining, e.remaining,
                    "case {:?}: remaining",
                    case.name
                );
            }
            for (g, w, what) in [
                (&got.sources.rate, &e.sources.rate, "rate"),
                (&got.sources.burst, &e.sources.burst, "burst"),
                (
                    &got.sources.max_in_flight,
                    &e.sources.max_in_flight,
                    "max_in_flight",
                ),
                (&got.sources.pause, &e.sources.pause, "pause"),
            ] {
                if w.is_some() {
                    assert_eq!(g, w, "case {:?}: source of {what}", case.name);
                }
            }
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120", NOW), Some(120_000));
        assert_eq!(parse_retry_after(" 0 ", NOW), Some(0));
        assert_eq!(parse_retry_after("2.0", NOW), Some(2_000));
        assert_eq!(parse_retry_after("2.01", NOW), Some(3_000));
        assert_eq!(parse_retry_after("-1", NOW), None);
        assert_eq!(parse_retry_after("+1", NOW), None);
        assert_eq!(parse_retry_after("1e3", NOW), None);
        assert_eq!(parse_retry_after("2.", NOW), None);
        assert_eq!(parse_retry_after(".5", NOW), None);
        assert_eq!(parse_retry_after("1.2.3", NOW), None);
        assert_eq!(parse_retry_after("", NOW), None);
        assert_eq!(parse_retry_after("99999999999", NOW), Some(MAX_PAUSE_MS));
        assert_eq!(parse_retry_after(&"9".repeat(400), NOW), Some(MAX_PAUSE_MS));
        // 2023-11-14T22:13:20Z is NOW; these are 60 s later in the three HTTP-date forms.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", NOW),
            Some(60_000)
        );
        assert_eq!(
            parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", NOW),
            Some(60_000)
        );
        assert_eq!(
            parse_retry_after("Tue Nov 14 22:14:20 2023", NOW),
            Some(60_000)
        );
        // Wrong weekday is not a valid HTTP-date.
        assert_eq!(
            parse_retry_after("Mon, 14 Nov 2023 22:14:20 GMT", NOW),
            None
        );
    }

    #[test]
    fn go_durations_are_exact() {
        let d = parse_go_duration_ms;
        assert_eq!(d("1s"), Some(1_000));
        assert_eq!(d("6m0s"), Some(360_000));
        assert_eq!(d("6m"), Some(360_000));
        assert_eq!(d("12ms"), Some(12));
        assert_eq!(d("4m12.172s"), Some(252_172));
        assert_eq!(d("23h47m36.648s"), Some(85_656_648));
        assert_eq!(d("1h2m3s"), Some(3_723_000));
        assert_eq!(d("0s"), Some(0));
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("1.5h"), Some(5_400_000));
        assert_eq!(d(".5s"), Some(500));
        assert_eq!(d("1500us"), Some(2));
        assert_eq!(d("1\u{3bc}s"), Some(1));
        assert_eq!(d("2.5"), Some(2_500));
        assert_eq!(d("48h"), Some(MAX_PAUSE_MS));
        for bad in [
            "", "-1s", "-0", "s", "1x", "1.2.3s", ".s", "1s-", "1 s", "1S",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20Z"),
            Some(i128::from(NOW))
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-15T00:13:20.5+02:00"),
            Some(i128::from(NOW) + 500)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-14t17:13:20.0001-05:00"),
            Some(i128::from(NOW) + 1)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0200",
            "2023-11-14T22:13:20.Z",
            "2023-11-14",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reset_heuristic() {
        assert_eq!(parse_reset("30", NOW), Some(30_000));
        assert_eq!(parse_reset("1.5", NOW), Some(1_500));
        assert_eq!(parse_reset("1700000060", NOW), Some(60_000));
        assert_eq!(parse_reset("1700000060000", NOW), Some(60_000));
        assert_eq!(parse_reset("1600000000", NOW), Some(0));
        assert_eq!(parse_reset("1000000000", NOW), Some(MAX_PAUSE_MS));
        assert_eq!(parse_reset("2023-11-14T22:14:20Z", NOW), Some(60_000));
        assert_eq!(parse_reset("-5", NOW), None);
    }

    #[test]
    fn most_restrictive_policy_and_smallest_quota() {
        let got = parse(
            &hs(&[(
                "RateLimit-Policy",
                "\"minute\";q=100;w=60, \"second\";q=10;w=1, \"day\";q=1000;w=86400",
            )]),
            200,
            NOW,
        );
        let rate = got.rate_per_sec.expect("rate");
        assert!((rate - 1000.0 / 86400.0).abs() < 1e-12);
        assert_eq!(got.burst, Some(10));
    }

    #[test]
    fn explicit_ezthrottle_headers_override_policy() {
        let got = parse(
            &hs(&[
                (
                    "RateLimit-Policy",
                    "\"a\";q=10;w=1, \"c\";q=3;qu=\"concurrent-requests\"",
                ),
                ("X-EZTHROTTLE-RPS", "25"),
                ("X-EZTHROTTLE-MAX-CONCURRENT", "8"),
            ]),
            200,
            NOW,
        );
        assert_eq!(got.rate_per_sec, Some(25.0));
        assert_eq!(got.burst, Some(10));
        assert_eq!(got.max_in_flight, Some(8));
    }

    #[test]
    fn invalid_ratelimit_line_does_not_spoil_others() {
        let got = parse(
            &hs(&[
                ("RateLimit", "\"a\";r=0;t=5, garbage ("),
                ("RateLimit", "\"b\";r=0;t=7"),
                ("RateLimit", "\"c\";r=0;t=\"9\""),
            ]),
            429,
            NOW,
        );
        assert_eq!(got.pause_for_ms, Some(7_000));
    }

    #[test]
    fn empty_input_teaches_nothing() {
        assert_eq!(
            parse(&[], 0, NOW),
            LimitChange::default(),
            "no headers, no status class"
        );
        assert_eq!(parse(&[], 200, NOW).throttled, Some(false));
        assert_eq!(parse(&[], 429, NOW).throttled, Some(true));
        assert_eq!(parse(&[], 503, NOW).throttled, Some(true));
        assert_eq!(parse(&[], 500, NOW).throttled, None);
    }

    fn header_name() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "Retry-After",
            "RateLimit",
            "RateLimit-Policy",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "X-Rate-Limit-Remaining",
            "X-Rate-Limit-Reset",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "X-Shopify-Shop-Api-Call-Limit",
            "X-EZTHROTTLE-RPS",
            "X-EZTHROTTLE-MAX-CONCURRENT",
        ])
        .prop_map(str::to_owned);
        prop_oneof![3 => known, 1 => any::<String>()]
    }

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{0,25}(\\.[0-9]{0,25})?",
            "-?[0-9.]{0,6}(ns|us|ms|s|m|h|µs|x){0,1}([0-9.]{0,4}(h|m|s|ms)){0,3}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
            "(Mon|Fri|Sun), [0-9]{2} (Jan|Feb|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
            "(Sunday|Friday), [0-9]{2}-(Nov|Dec)-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
            "(\"[a-z]{0,4}\"|[a-z]{1,4}|-?[0-9]{1,16})(;[a-z]{1,2}=(-?[0-9]{1,16}|\"[a-z-]{0,20}\"|:[A-Za-z0-9+/=]{0,8}:|[a-z]{1,3}|\\?[01]|[0-9]{1,3}\\.[0-9]{1,3})){0,4}(, ?(\"[a-z]{0,4}\"|[0-9]{1,16})(;[a-z]{1,2}=-?[0-9]{1,16}){0,3}){0,3}",
            "(limit|remaining|reset)=-?[0-9]{1,16}(, (limit|remaining|reset)=-?[0-9]{1,16}){0,2}",
            "[0-9 ]{0,20}/[0-9 ]{0,20}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parse_never_panics_and_respects_bounds(
            headers in prop::collection::vec((header_name(), header_value()), 0..8),
            status in any::<u16>(),
            now_ms in prop_oneof![any::<u64>(), 0u64..4_000_000_000_000],
        ) {
            let got = parse(&headers, status, now_ms);
            if let Some(p) = got.pause_for_ms {
                prop_assert!(p <= MAX_PAUSE_MS);
            }
            if let Some(r) = got.rate_per_sec {
                prop_assert!(r.is_finite() && r > 0.0);
            }
            prop_assert_ne!(got.burst, Some(0));
            prop_assert_ne!(got.max_in_flight, Some(0));
        }

        #[test]
        fn per_minute_dialects_spread_the_limit_over_the_minute(
            q in 1u64..10_000_000,
            anthropic in any::<bool>(),
            tokens_left in 0u64..10,
        ) {
            let (limit, tokens) = if anthropic {
                ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-tokens-remaining")
            } else {
                ("x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens")
            };
            let got = parse(
                &hs(&[(limit, &q.to_string()), (tokens, &tokens_left.to_string())]),
                200,
                NOW,
            );
            let rate = got.rate_per_sec.expect("rate");
            prop_assert!((rate - q as f64 / 60.0).abs() <= 1e-9 * rate.max(1.0));
            prop_assert_eq!(got.burst, Some(1));
            prop_assert_eq!(got.pause_for_ms, None);
            // GCRA lets at most burst + w * rate through in any window w: never above q a minute.
            prop_assert!(1.0 + 60.0 * rate <= q as f64 + 1.0 + 1e-6);
        }

        #[test]
        fn unknown_window_never_spends_more_than_remaining_before_reset(
            q in 1u64..100_000,
            r in 1u64..100_000,
            t_left_ms in 1u64..4_000_000,
        ) {
            let reset_ms = NOW + t_left_ms;
            let got = parse(
                &hs(&[
                    ("X-RateLimit-Limit", &q.to_string()),
                    ("X-RateLimit-Remaining", &r.to_string()),
                    ("X-RateLimit-Reset", &reset_ms.to_string()),
                ]),
                200,
                NOW,
            );
            let rate = got.rate_per_sec.expect("rate");
            // One interval, then `r` calls at this pace, all before the reset.
            prop_assert!(rate * t_left_ms as f64 / 1000.0 <= (r + 1) as f64 * (1.0 + 1e-9));
            prop_assert!(r as f64 / rate <= t_left_ms as f64 / 1000.0 * (1.0 + 1e-9) || rate >= q.max(r) as f64 * (1.0 - 1e-12));
            prop_assert!(rate <= q.max(r) as f64 * (1.0 + 1e-12));
            prop_assert_eq!(got.burst, Some(1));
            prop_assert_eq!(got.remaining, Some(r));
        }

        #[test]
        fn github_never_above_the_announced_hour(
            q in 1u64..1_000_000,
            r in 0u64..1_000_000,
            t_left_s in 0u64..7200,
        ) {
            let got = parse(
                &hs(&[
                    ("x-ratelimit-limit", &q.to_string()),
                    ("x-ratelimit-remaining", &r.to_string()),
                    ("x-ratelimit-reset", &(NOW / 1000 + t_left_s).to_string()),
                    ("x-ratelimit-resource", "core"),
                ]),
                200,
                NOW,
            );
            match got.rate_per_sec {
                None => prop_assert_eq!(r, 0),
                Some(rate) => {
                    prop_assert!(rate <= q as f64 / 3600.0 * (1.0 + 1e-12));
                    if t_left_s > 0 {
                        prop_assert!(rate * t_left_s as f64 <= ((r + 1) as f64).max(q as f64 / 3600.0 * t_left_s as f64) * (1.0 + 1e-9));
                    }
                }
            }
        }

        #[test]
        fn shopify_drains_a_twentieth_of_its_bucket(used in 0u64..1000, bucket in 1u32..10_000) {
            let got = parse(
                &hs(&[("X-Shopify-Shop-Api-Call-Limit", &format!("{used}/{bucket}"))]),
                200,
                NOW,
            );
            prop_assert_eq!(got.rate_per_sec, Some(f64::from(bucket) / 20.0));
            prop_assert_eq!(got.burst, Some(bucket));
            prop_assert_eq!(got.pause_for_ms, (used >= u64::from(bucket)).then_some(1000));
        }

        #[test]
        fn conflicting_dialects_the_most_restrictive_wins(
            openai_q in 1u64..100_000,
            policy_q in 1u64..10_000,
            policy_w in 1u64..100,
            bucket in 1u32..1000,
        ) {
            let policy = format!("\"p\";q={policy_q};w={policy_w}");
            let openai = openai_q.to_string();
            let shopify = format!("0/{bucket}");
            let got = parse(
                &hs(&[
                    ("x-ratelimit-limit-requests", &openai),
                    ("RateLimit-Policy", &policy),
                    ("X-Shopify-Shop-Api-Call-Limit", &shopify),
                ]),
                200,
                NOW,
            );
            let want = (openai_q as f64 / 60.0)
                .min(policy_q as f64 / policy_w as f64)
                .min(f64::from(bucket) / 20.0);
            prop_assert_eq!(got.rate_per_sec, Some(want));
            prop_assert_eq!(got.burst, Some(1));
            prop_assert!(got.sources.rate.is_some());
        }

        #[test]
        fn retry_after_never_panics(value in header_value(), now_ms in any::<u64>()) {
            if let Some(p) = parse_retry_after(&value, now_ms) {
                prop_assert!(p <= MAX_PAUSE_MS);
            }
        }
    }
}
