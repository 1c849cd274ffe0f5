//! A small map whose entries count as absent once older than a fixed TTL: for values read from
//! the store on a hot path (API keys on admission, webhook secrets on delivery) where a change
//! made by another process may take up to the TTL to be seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries kept at most; past it the map is cleared rather than grown (a cache, not a store).
const MAX_ENTRIES: usize = 100_000;

/// Values of `V` by `K`, each fresh for `ttl`.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value, if cached less than `ttl` ago.
    pub fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// The value, if cached less than `max_age` ago (a stale read, for when the source cannot
    /// answer: an entry past the TTL stays until replaced or the map is cleared).
    pub fn get_within(&self, key: &K, max_age: Duration) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(v, _)| v.clone())
    }

    /// Caches `value` from now.
    pub fn insert(&self, key: K, value: V) {
        let mut g = self.lock();
        if g.len() >= MAX_ENTRIES {
            g.clear();
        }
        g.insert(key, (value, Instant::now()));
    }

    /// Forgets `key` (its source changed on this node).
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let c = TtlCache::new(Duration::from_millis(50));
        c.insert(1, "a");
        assert_eq!(c.get(&1), Some("a"));
        c.remove(&1);
        assert_eq!(c.get(&1), None);
        let c = TtlCache::new(Duration::ZERO);
        c.insert(1, "a");
        assert_eq!(c.get(&1), None, "older than the TTL counts as absent");
        assert_eq!(
            c.get_within(&1, Duration::from_secs(60)),
            Some("a"),
            "but a stale read still finds it"
        );
    }
}
