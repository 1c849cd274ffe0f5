//! Weighted deficit round robin (DRR) across tenants, FIFO within a tenant.
//!
//! One `FairQueue` sits inside each lane. When the lane's limiter lets one request go, `pop`
//! picks whose job it is: tenants take turns, and on its turn a tenant may send as many jobs as
//! its weight. A tenant with 10,000 queued jobs therefore delays another tenant's 10 jobs by at
//! most its own weight per turn, never by its backlog.
//!
//! Like FQ-CoDel's "new flows" list, a tenant whose queue was empty goes to the front when it
//! gets a job, interrupting (not resetting) the current turn: a sparse tenant's occasional job
//! waits for the next free slot rather than for every backlogged tenant's turn. A tenant that
//! stays backlogged is an old flow and takes turns at the back like everyone else.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
struct TenantQueue<T> {
    weight: u32,
    deficit: u32,
    items: VecDeque<T>,
}

/// A weighted fair queue keyed by tenant `K` holding items `T`.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    tenants: HashMap<K, TenantQueue<T>>,
    /// Tenants with items, in turn order; the front one is being served.
    active: VecDeque<K>,
    len: usize,
}

impl<K: Hash + Eq + Clone, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            active: VecDeque::new(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `item` to `tenant`'s FIFO. `weight` (>= 1) is the tenant's share.
    pub fn push(&mut self, tenant: K, weight: u32, item: T) {
        let q = self
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantQueue {
                weight: weight.max(1),
                deficit: 0,
                items: VecDeque::new(),
            });
        q.weight = weight.max(1);
        if q.items.is_empty() {
            self.active.push_front(tenant);
        }
        q.items.push_back(item);
        self.len += 1;
    }

    /// Takes the next item by weighted round robin.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let tenant = self.active.front()?.clone();
        let q = self
            .tenants
            .get_mut(&tenant)
            .expect("active tenants have queues");
        if q.deficit == 0 {
            q.deficit = q.weight; // the start of this tenant's turn
        }
        let item = q.items.pop_front().expect("active tenants have items");
        q.deficit -= 1;
        self.len -= 1;
        if q.items.is_empty() {
            self.tenants.remove(&tenant);
            self.active.pop_front();
        } else if q.deficit == 0 {
            self.active.rotate_left(1);
        }
        Some((tenant, item))
    }

    /// Removes every item matching `pred` (cancellation), keeping order otherwise.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let mut removed = 0;
        for q in self.tenants.values_mut() {
            let before = q.items.len();
            q.items.retain(|t| !pred(t));
            removed += before - q.items.len();
        }
        if removed > 0 {
            self.len -= removed;
            let tenants = &mut self.tenants;
            tenants.retain(|_, q| !q.items.is_empty());
            self.active.retain(|k| tenants.contains_key(k));
        }
        removed
    }

    /// Items queued in total.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items queued for one tenant.
    pub fn tenant_len(&self, tenant: &K) -> usize {
        self.tenants.get(tenant).map_or(0, |q| q.items.len())
    }

    /// Zero-based position `item` would be served at, if the queue received nothing new.
    /// Costs O(n); meant for occasional progress reports, not the hot path.
    pub fn position(&self, tenant: &K, is_item: impl Fn(&T) -> bool) -> Option<usize> {
        let q = self.tenants.get(tenant)?;
        let idx = q.items.iter().position(is_item)?;
        // Simulate turns: count items of all tenants served before `idx` of this one.
        let mut remaining: Vec<(usize, u32, u32, bool)> = self
            .active
            .iter()
            .map(|k| {
                let t = &self.tenants[k];
                (t.items.len(), t.weight, t.deficit, k == tenant)
            })
            .collect();
        let mut served = 0usize;
        let mut mine = 0usize;
        loop {
            for (left, weight, deficit, is_me) in remaining.iter_mut() {
                let mut turn = if *deficit > 0 { *deficit } else { *weight } as usize;
                *deficit = 0;
                while turn > 0 && *left > 0 {
                    if *is_me {
                        if mine == idx {
                            return Some(served);
                        }
                        mine += 1;
                    }
                    served += 1;
                    *left -= 1;
                    turn -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quiet_tenant_is_not_stuck_behind_a_backlog() {
        let mut q = FairQueue::new();
        for i in 0..10_000 {
            q.push("noisy", 1, i);
        }
        for i in 0..10 {
            q.push("quiet", 1, i);
        }
        let mut order = Vec::new();
        while let Some((t, _)) = q.pop() {
            order.push(t);
            if order.iter().filter(|t| **t == "quiet").count() == 10 {
                break;
            }
        }
        assert!(
            order.len() <= 21,
            "quiet's 10 jobs done within 21 pops, took {}",
            order.len()
        );
    }

    #[test]
    fn a_sparse_tenant_is_served_next() {
        let mut q = FairQueue::new();
        for i in 0..100 {
            q.push("noisy", 8, i);
        }
        assert_eq!(q.pop().map(|(t, _)| t), Some("noisy"));
        q.push("sparse", 1, 0);
        assert_eq!(
            q.pop().map(|(t, _)| t),
            Some("sparse"),
            "a newly active tenant goes first"
        );
        let rest: Vec<_> = std::iter::from_fn(|| q.pop())
            .take(7)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            rest,
            vec!["noisy"; 7],
            "the interrupted turn resumes with its remaining deficit"
        );
    }

    #[test]
    fn weights_share_proportionally() {
        let mut q = FairQueue::new();
        for i in 0..1000 {
            q.push("reserved", 8, i);
            q.push("paid", 4, i);
            q.push("free", 1, i);
        }
        let mut counts = HashMap::new();
        for _ in 0..130 {
            let (t, _) = q.pop().unwrap();
            *counts.entry(t).or_insert(0) += 1;
        }
        assert_eq!(counts["reserved"], 80, "{counts:?}");
        assert_eq!(counts["paid"], 40, "{counts:?}");
        assert_eq!(counts["free"], 10, "{counts:?}");
    }

    #[test]
    fn position_matches_pop_order() {
        let mut q = FairQueue::new();
        for i in 0..5 {
            q.push("a", 2, i);
        }
        for i in 10..13 {
            q.push("b", 1, i);
        }
        let pos = q.position(&"b", |x| *x == 12).unwrap();
        let mut n = 0;
        while let Some((_, x)) = q.pop() {
            if x == 12 {
                break;
            }
            n += 1;
        }
        assert_eq!(pos, n);
    }

    proptest! {
        /// FIFO per tenant, nothing lost or duplicated, len stays right.
        #[test]
        fn fifo_per_tenant_and_conserves_items(ops in proptest::collection::vec((0u8..4, 1u32..5, any::<bool>()), 1..400)) {
            let mut q = FairQueue::new();
            let mut next = 0u32;
            let mut pushed: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut popped: HashMap<u8, Vec<u32>> = HashMap::new();
            for (tenant, weight, is_push) in ops {
                if is_push {
                    q.push(tenant, weight, next);
                    pushed.entry(tenant).or_default().push(next);
                    next += 1;
                } else if let Some((t, x)) = q.pop() {
                    popped.entry(t).or_default().push(x);
                }
            }
            while let Some((t, x)) = q.pop() {
                popped.entry(t).or_default().push(x);
            }
            prop_assert_eq!(q.len(), 0);
            prop_assert_eq!(pushed, popped);
        }
    }
}
