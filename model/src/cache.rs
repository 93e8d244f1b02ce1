//! Embedding cache bounded in bytes, keyed by (model fingerprint, sequence, output kind).

use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::Serialize;

/// Cache key: which model, which output, which sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Fingerprint of the model weights.
    pub fingerprint: String,
    /// Output kind, e.g. `pooled:mean:6` or `residues:6`.
    pub kind: String,
    /// The cleaned sequence.
    pub sequence: String,
}

impl CacheKey {
    fn bytes(&self) -> usize {
        self.fingerprint.len() + self.kind.len() + self.sequence.len() + std::mem::size_of::<Self>()
    }
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries pushed out to stay within the byte budget.
    pub evictions: u64,
    /// Entries stored.
    pub insertions: u64,
    /// Entries currently held.
    pub entries: u64,
    /// Bytes currently held (values and keys).
    pub bytes: u64,
    /// The byte budget.
    pub capacity_bytes: u64,
}

struct Inner {
    map: LruCache<CacheKey, Arc<[f32]>>,
    stats: CacheStats,
}

impl Inner {
    /// Evicts least recently used entries until at most `budget` bytes are held.
    fn evict_to(&mut self, budget: u64) {
        while self.stats.bytes > budget {
            let Some((k, v)) = self.map.pop_lru() else {
                break;
            };
            self.stats.bytes -= entry_bytes(&k, &v) as u64;
            self.stats.entries -= 1;
            self.stats.evictions += 1;
        }
    }
}

/// A thread-safe LRU cache of f32 vectors bounded by total bytes.
pub struct EmbeddingCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("stats", &self.stats())
            .finish()
    }
}

fn entry_bytes(key: &CacheKey, value: &[f32]) -> usize {
    key.bytes() + std::mem::size_of_val(value)
}

impl EmbeddingCache {
    /// A cache holding at most `capacity_bytes` (0 disables caching).
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                stats: CacheStats {
                    capacity_bytes: capacity_bytes as u64,
                    ..Default::default()
                },
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent for readers.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks a key up, counting a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<[f32]>> {
        let mut inner = self.lock();
        let found = inner.map.get(key).cloned();
        if found.is_some() {
            inner.stats.hits += 1;
        } else {
            inner.stats.misses += 1;
        }
        found
    }

    /// Stores a value, evicting least recently used entries to stay within the budget.
    /// A value larger than the whole budget is not stored.
    pub fn put(&self, key: CacheKey, value: Arc<[f32]>) {
        let mut inner = self.lock();
        let size = entry_bytes(&key, &value) as u64;
        if size > inner.stats.capacity_bytes {
            return;
        }
        if let Some(old) = inner.map.pop(&key) {
            inner.stats.bytes -= entry_bytes(&key, &old) as u64;
            inner.stats.entries -= 1;
        }
        let budget = inner.stats.capacity_bytes - size;
        inner.evict_to(budget);
        inner.map.put(key, value);
        inner.stats.bytes += size;
        inner.stats.entries += 1;
        inner.stats.insertions += 1;
    }

    /// Changes the byte budget, evicting as needed.
    pub fn resize(&self, capacity_bytes: usize) {
        let mut inner = self.lock();
        inner.stats.capacity_bytes = capacity_bytes as u64;
        inner.evict_to(capacity_bytes as u64);
    }

    /// Drops every entry (counters other than size are kept).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.stats.bytes = 0;
        inner.stats.entries = 0;
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> CacheKey {
        CacheKey {
            fingerprint: "f".into(),
            kind: "k".into(),
            sequence: s.into(),
        }
    }

    #[test]
    fn stays_within_byte_budget_and_counts() {
        let one = entry_bytes(&key("A"), &[0.0; 100]);
        let cache = EmbeddingCache::new(one * 3);
        for s in ["A", "B", "C", "D", "E"] {
            cache.put(key(s), Arc::from(vec![1.0f32; 100]));
            assert!(cache.stats().bytes <= cache.stats().capacity_bytes);
        }
        let st = cache.stats();
        assert_eq!(st.entries, 3);
        assert_eq!(st.evictions, 2);
        assert_eq!(st.insertions, 5);
        assert!(cache.get(&key("A")).is_none());
        assert!(cache.get(&key("E")).is_some());
        let st = cache.stats();
        assert_eq!((st.hits, st.misses), (1, 1));
    }

    #[test]
    fn lru_order_respects_recent_use() {
        let one = entry_bytes(&key("A"), &[0.0; 10]);
        let cache = EmbeddingCache::new(one * 2);
        cache.put(key("A"), Arc::from(vec![0.0f32; 10]));
        cache.put(key("B"), Arc::from(vec![0.0f32; 10]));
        assert!(cache.get(&key("A")).is_some());
        cache.put(key("C"), Arc::from(vec![0.0f32; 10]));
        assert!(cache.get(&key("A")).is_some());
        assert!(cache.get(&key("B")).is_none());
    }

    #[test]
    fn oversized_value_is_not_stored_and_resize_evicts() {
        let cache = EmbeddingCache::new(100);
        cache.put(key("A"), Arc::from(vec![0.0f32; 1000]));
        assert_eq!(cache.stats().entries, 0);
        let cache = EmbeddingCache::new(1 << 20);
        for i in 0..10 {
            cache.put(key(&i.to_string()), Arc::from(vec![0.0f32; 100]));
        }
        cache.resize(1000);
        assert!(cache.stats().bytes <= 1000);
        assert!(cache.stats().evictions >= 8);
        cache.put(key("A"), Arc::from(vec![0.0f32; 10]));
        cache.put(key("A"), Arc::from(vec![0.0f32; 10]));
        assert_eq!(cache.get(&key("A")).map(|v| v.len()), Some(10));
    }
}
