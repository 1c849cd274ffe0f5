//! Where a job's attempt runs (issue 15): the lane owner picks a region for each attempt from
//! the job's `regions`, `region_policy`, the live members and the job's reroutes so far, then
//! either makes the call itself (its own region) or hands it to a live node of the chosen
//! region (`handoff`).
//!
//! - **Order.** The listed regions in their order; with `fallback`, then this node's region,
//!   then every other live region (by name). `strict` never leaves the list. A job without
//!   `regions` starts in the owner's region (the node's own, as API.md says).
//! - **Reroute.** A region that answered one of the job's `reroute_codes` (or could not be
//!   connected to) in the current attempt series is skipped while another candidate remains;
//!   when every candidate failed, the next one after the last failure is used again (the job's
//!   `max_reroutes` bounds the loop).
//! - **Outlier detection** (Envoy's defaults): a region whose calls to one host end in 5
//!   consecutive reroute-class failures is ejected for that host for 30 s × the number of
//!   times it was ejected (capped at 300 s); a success resets its count. An ejected region is
//!   skipped unless it is the last candidate left: ejection never empties the list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ezt_core::job::RegionPolicy;
use ezt_store::NodeRecord;
use tokio::time::Instant;

/// Consecutive reroute-class failures that eject a region for a host (Envoy `consecutive_5xx`).
pub(crate) const EJECT_AFTER: u32 = 5;
/// First ejection's length (Envoy `base_ejection_time`); the n-th lasts n times as long.
pub(crate) const EJECT_BASE: Duration = Duration::from_secs(30);
/// Longest ejection (Envoy `max_ejection_time`).
pub(crate) const EJECT_MAX: Duration = Duration::from_secs(300);
/// Most (host, region) pairs tracked; beyond it, pairs with no failure are forgotten first.
const OUTLIERS_MAX: usize = 10_000;

/// Where one attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// This node makes the call.
    Local,
    /// A live node of another region makes it.
    Remote {
        node: String,
        url: String,
        region: String,
    },
}

/// One attempt's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) route: Route,
    pub(crate) region: String,
    /// Whether another candidate region exists (a failure here can move elsewhere).
    pub(crate) alternatives: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Outlier {
    consecutive: u32,
    ejections: u32,
    until: Option<Instant>,
}

/// The job path's region router of one node.
pub(crate) struct Regions {
    members: Arc<crate::members::LiveMembers>,
    region: String,
    node: String,
    /// Cluster mode with a cluster secret: other regions can be reached.
    reach: bool,
    outliers: Mutex<HashMap<(String, String), Outlier>>,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field("region", &self.region)
            .field("reach", &self.reach)
            .finish_non_exhaustive()
    }
}

/// The candidate regions of a job, best first (pure: see the module's rules).
pub(crate) fn candidates(
    listed: &[String],
    policy: RegionPolicy,
    own: &str,
    live: &[String],
) -> Vec<String> {
    let is_live = |r: &str| r == own || live.iter().any(|l| l == r);
    let mut out: Vec<String> = Vec::new();
    let push = |r: &str, out: &mut Vec<String>| {
        if !out.iter().any(|o| o == r) {
            out.push(r.to_string());
        }
    };
    for r in listed.iter().filter(|r| is_live(r)) {
        push(r, &mut out);
    }
    if policy == RegionPolicy::Fallback || listed.is_empty() {
        push(own, &mut out);
    }
    if policy == RegionPolicy::Fallback {
        let mut others: Vec<&String> = live.iter().collect();
        others.sort();
        for r in others {
            push(r, &mut out);
        }
    }
    out
}

/// Picks the region among `cands` (non-empty): the first that has not failed in this series
/// and is not ejected; else the first not failed; else the one after the last failure.
pub(crate) fn pick<'a>(
    cands: &'a [String],
    failed: &[String],
    ejected: impl Fn(&str) -> bool,
) -> &'a str {
    let fresh = |r: &&String| !failed.contains(r);
    if let Some(r) = cands.iter().filter(fresh).find(|r| !ejected(r)) {
        return r;
    }
    if let Some(r) = cands.iter().find(fresh) {
        return r;
    }
    let last = failed
        .last()
        .and_then(|l| cands.iter().position(|c| c == l));
    match last {
        Some(i) => &cands[(i + 1) % cands.len()],
        None => &cands[0],
    }
}

impl Regions {
    pub(crate) fn new(
        members: Arc<crate::members::LiveMembers>,
        cfg: &crate::config::Config,
        node: &str,
    ) -> Self {
        Self {
            members,
            region: cfg.region.clone(),
            node: node.to_string(),
            reach: cfg.clustered() && cfg.cluster_secret.is_some(),
            outliers: Mutex::new(HashMap::new()),
        }
    }

    /// Another member that says how to reach it.
    fn reachable(&self, n: &NodeRecord) -> bool {
        n.id != self.node && n.advertise_url.is_some()
    }

    /// Forgets the cached member list (a hand-off to one of them failed).
    pub(crate) fn stale(&self) {
        self.members.forget();
    }

    /// Places one attempt to `host`. `Err` carries the `region_unavailable` message.
    pub(crate) async fn place(
        &self,
        host: &str,
        listed: &[String],
        policy: RegionPolicy,
        failed: &[String],
    ) -> Result<Placement, String> {
        let nodes = if self.reach {
            // A store hiccup: act on what this node knows (its own region).
            self.members.get().await.unwrap_or_default()
        } else {
            Arc::new(Vec::new())
        };
        let mut live: Vec<String> = Vec::new();
        for n in nodes.iter().filter(|n| self.reachable(n)) {
            if n.region != self.region && !live.contains(&n.region) {
                live.push(n.region.clone());
            }
        }
        let cands = candidates(listed, policy, &self.region, &live);
        if cands.is_empty() {
            return Err(if self.reach {
                format!(
                    "region_policy strict: no live node of {listed:?} in the cluster (this node is {:?})",
                    self.region
                )
            } else {
                format!(
                    "region_policy strict: no node of {listed:?} can be reached from this node ({:?}, which runs alone or has no cluster_secret)",
                    self.region
                )
            });
        }
        let now = Instant::now();
        let region = pick(&cands, failed, |r| self.ejected(host, r, now)).to_string();
        let route = if region == self.region {
            Route::Local
        } else {
            // Spread a region's hand-offs over its live nodes.
            let of: Vec<&NodeRecord> = nodes.iter().filter(|n| n.region == region).collect();
            let n = of[rand::random::<usize>() % of.len()];
            Route::Remote {
                node: n.id.clone(),
                url: n.advertise_url.clone().unwrap_or_default(),
                region: region.clone(),
            }
        };
        Ok(Placement {
            route,
            region,
            alternatives: cands.len() > 1,
        })
    }

    /// Where a call in `region` goes (fanout): here, or a live node of it; `None` when the
    /// region has no live node this node can reach.
    pub(crate) async fn route_to(&self, region: &str) -> Option<Route> {
        if region == self.region {
            return Some(Route::Local);
        }
        if !self.reach {
            return None;
        }
        let nodes = self.members.get().await.unwrap_or_default();
        let of: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.region == region && self.reachable(n))
            .collect();
        if of.is_empty() {
            return None;
        }
        let n = of[rand::random::<usize>() % of.len()];
        Some(Route::Remote {
            node: n.id.clone(),
            url: n.advertise_url.clone().unwrap_or_default(),
            region: region.to_string(),
        })
    }

    /// The other legs of a raced attempt whose first leg runs in `first`: each region of
    /// `listed` (in order, once) that is live, has not failed in this series and is not
    /// ejected for `host`, with where its call goes. `fallback` adds no region outside the
    /// list: a race is over the listed live regions only.
    pub(crate) async fn race_legs(
        &self,
        host: &str,
        listed: &[String],
        first: &str,
        failed: &[String],
    ) -> Vec<(String, Route)> {
        let mut out: Vec<(String, Route)> = Vec::new();
        let now = Instant::now();
        for r in listed {
            if r == first
                || failed.contains(r)
                || out.iter().any(|(o, _)| o == r)
                || self.ejected(host, r, now)
            {
                continue;
            }
            if let Some(route) = self.route_to(r).await {
                out.push((r.clone(), route));
            }
        }
        out
    }

    fn ejected(&self, host: &str, region: &str, now: Instant) -> bool {
        let o = self.outliers.lock().unwrap_or_else(|p| p.into_inner());
        o.get(&(host.to_string(), region.to_string()))
            .and_then(|x| x.until)
            .is_some_and(|u| u > now)
    }

    /// Records one attempt's outcome for outlier detection: `failed` for a reroute-class
    /// answer or a connect failure, else a success (any answer the region got through).
    /// Answers true when this outcome ejected the region.
    pub(crate) fn observe(&self, host: &str, region: &str, failed: bool) -> bool {
        let now = Instant::now();
        let mut o = self.outliers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_string(), region.to_string());
        if !failed {
            if let Some(x) = o.get_mut(&key) {
                x.consecutive = 0;
            }
            return false;
        }
        if o.len() >= OUTLIERS_MAX && !o.contains_key(&key) {
            o.retain(|_, x| x.consecutive > 0 || x.until.is_some_and(|u| u > now));
            if o.len() >= OUTLIERS_MAX {
                return false;
            }
        }
        let x = o.entry(key).or_default();
        x.consecutive += 1;
        if x.consecutive >= EJECT_AFTER && x.until.is_none_or(|u| u <= now) {
            x.ejections += 1;
            x.consecutive = 0;
            x.until = Some(now + (EJECT_BASE * x.ejections).min(EJECT_MAX));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn candidates_follow_the_list_then_fallback() {
        let live = s(&["r3", "r2"]);
        assert_eq!(
            candidates(&s(&["r2", "r1"]), RegionPolicy::Fallback, "r1", &live),
            s(&["r2", "r1", "r3"])
        );
        assert_eq!(
            candidates(&s(&["r2", "r9"]), RegionPolicy::Strict, "r1", &live),
            s(&["r2"]),
            "strict stays in the (live part of the) list"
        );
        assert!(candidates(&s(&["r9"]), RegionPolicy::Strict, "r1", &live).is_empty());
        assert_eq!(
            candidates(&[], RegionPolicy::Fallback, "r1", &live),
            s(&["r1", "r2", "r3"]),
            "no list: the owner's region first"
        );
        assert_eq!(
            candidates(&[], RegionPolicy::Strict, "r1", &live),
            s(&["r1"])
        );
    }

    #[test]
    fn pick_skips_failed_then_ejected_never_all() {
        let c = s(&["r1", "r2", "r3"]);
        assert_eq!(pick(&c, &[], |_| false), "r1");
        assert_eq!(pick(&c, &s(&["r1"]), |_| false), "r2");
        assert_eq!(pick(&c, &s(&["r1"]), |r| r == "r2"), "r3");
        assert_eq!(
            pick(&c, &s(&["r1"]), |_| true),
            "r2",
            "every fresh region ejected: the first fresh one still runs"
        );
        assert_eq!(pick(&c, &s(&["r1", "r2", "r3"]), |_| false), "r1");
        assert_eq!(pick(&c, &s(&["r3", "r1"]), |_| false), "r2");
        assert_eq!(pick(&s(&["r1"]), &s(&["r1"]), |_| true), "r1");
    }

    #[tokio::test]
    async fn five_failures_eject_and_a_success_resets() {
        let store: Arc<dyn ezt_store::Store> = Arc::new(ezt_store::MemoryStore::new());
        let cfg = crate::config::Config::default();
        let members = Arc::new(crate::members::LiveMembers::new(store));
        let r = Regions::new(members, &cfg, "n1");
        for _ in 0..4 {
            assert!(!r.observe("h", "r2", true));
        }
        assert!(!r.observe("h", "r2", false), "a success resets the count");
        for _ in 0..4 {
            assert!(!r.observe("h", "r2", true));
        }
        assert!(r.observe("h", "r2", true), "the fifth in a row ejects");
        assert!(r.ejected("h", "r2", Instant::now()));
        assert!(!r.ejected("other", "r2", Instant::now()), "per host");
        assert!(!r.ejected(
            "h",
            "r2",
            Instant::now() + EJECT_BASE + Duration::from_millis(1)
        ));
    }
}
