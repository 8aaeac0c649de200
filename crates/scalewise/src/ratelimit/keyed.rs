//! A limiter per key with bounded memory.
//!
//! Keys come from clients (IP addresses, API keys), so the map must not grow with them: a
//! client rotating through IPv6 addresses would otherwise exhaust memory (governor issue
//! #171). The map is split into shards by hash (each behind its own mutex, so threads rarely
//! meet), and each shard holds at most `max_keys / shards` entries:
//!
//! * when a shard is full, a new key replaces an entry chosen by the CLOCK (second-chance)
//!   policy, an O(1) amortised approximation of least-recently-used: every hit sets a
//!   "referenced" bit, the eviction hand clears set bits and evicts the first entry whose
//!   bit is clear (or that is idle). New entries start unreferenced, so a flood of one-off
//!   keys replaces mostly itself rather than the keys of returning clients;
//! * idle entries (not seen for `idle_timeout`) are removed as the hand passes them on each
//!   insertion, and all at once by [`KeyedRateLimiter::purge_idle`].
//!
//! Forgetting a key restarts its limit. With the default idle timeout (the algorithm's
//! [`Algorithm::idle_after`]) an idle key is forgotten only once its state is
//! indistinguishable from a fresh one, so expiry never grants extra allowance; eviction of a
//! *busy* key under pressure can, which is the price of the memory bound.
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Duration;

use hashbrown::HashTable;

use super::{nanos, Algorithm, Decision};
use crate::clock::{Clock, CoarseClock};

/// Sizing of a [`KeyedRateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedConfig {
    /// Most keys held at once. Default 100 000.
    pub max_keys: usize,
    /// Keys not seen for this long are forgotten. Default: the algorithm's
    /// [`Algorithm::idle_after`], at least one second.
    pub idle_timeout: Option<Duration>,
    /// Number of shards (rounded to a power of two, reduced for small `max_keys`). Default 32.
    pub shards: usize,
}

impl Default for KeyedConfig {
    fn default() -> Self {
        Self {
            max_keys: 100_000,
            idle_timeout: None,
            shards: 32,
        }
    }
}

struct Slot<K, S> {
    key: K,
    state: S,
    last_seen: u64,
    referenced: bool,
}

/// Entries live inline in the hash table (one memory access per lookup); the CLOCK hand
/// walks the table's bucket indices, skipping empty buckets.
struct Shard<K, S> {
    table: HashTable<Slot<K, S>>,
    hand: usize,
    /// Counted under the shard lock (no extra atomics on the hot path).
    stats: KeyedStats,
}

type ShardCell<K, S> = Padded<Mutex<Shard<K, S>>>;

// Each shard on its own cache lines, so threads on different shards do not contend.
#[repr(align(128))]
struct Padded<T>(T);

impl<K, S> Shard<K, S> {
    fn new() -> Self {
        Self {
            table: HashTable::new(),
            hand: 0,
            stats: KeyedStats::default(),
        }
    }

    fn is_idle(slot: &Slot<K, S>, now: u64, idle: u64) -> bool {
        now.saturating_sub(slot.last_seen) >= idle
    }

    /// Removes one entry by the CLOCK policy. Terminates within two sweeps of the buckets:
    /// the first clears every reference bit it passes.
    fn evict_one(&mut self, now: u64, idle: u64) {
        let buckets = self.table.num_buckets();
        for _ in 0..buckets.saturating_mul(2) {
            self.hand = (self.hand + 1) % buckets;
            if let Ok(entry) = self.table.get_bucket_entry(self.hand) {
                let slot = entry.get();
                if !slot.referenced || Self::is_idle(slot, now, idle) {
                    entry.remove();
                    self.stats.evicted += 1;
                    return;
                }
                entry.into_mut().referenced = false;
            }
        }
    }

    /// Looks at the next `steps` buckets under the hand and removes idle entries.
    fn expire_some(&mut self, now: u64, idle: u64, steps: usize) {
        let buckets = self.table.num_buckets();
        if buckets == 0 {
            return;
        }
        for _ in 0..steps {
            self.hand = (self.hand + 1) % buckets;
            if let Ok(entry) = self.table.get_bucket_entry(self.hand) {
                if Self::is_idle(entry.get(), now, idle) {
                    entry.remove();
                    self.stats.expired += 1;
                }
            }
        }
    }

    fn purge(&mut self, now: u64, idle: u64, hasher: impl Fn(&K) -> u64) -> usize {
        let before = self.table.len();
        self.table.retain(|slot| !Self::is_idle(slot, now, idle));
        self.stats.expired += (before - self.table.len()) as u64;
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len() * 2, |slot| hasher(&slot.key));
        }
        before - self.table.len()
    }
}

/// Counters of a [`KeyedRateLimiter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedStats {
    /// Checks admitted.
    pub allowed: u64,
    /// Checks denied.
    pub denied: u64,
    /// Keys dropped to make room (memory bound reached).
    pub evicted: u64,
    /// Keys dropped because they were idle.
    pub expired: u64,
    /// Keys held now.
    pub keys: u64,
}

impl KeyedStats {
    #[inline]
    fn count(&mut self, allowed: bool) {
        if allowed {
            self.allowed += 1;
        } else {
            self.denied += 1;
        }
    }
}

/// The clock of keyed limiters built without one.
pub(crate) fn default_clock() -> CoarseClock {
    CoarseClock::start(Duration::from_millis(1))
}

/// One rate limit per key, at most `max_keys` keys, idle keys forgotten.
///
/// ```
/// use scalewise::clock::ManualClock;
/// use scalewise::ratelimit::{Gcra, KeyedConfig, KeyedRateLimiter, Quota};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let config = KeyedConfig { max_keys: 1000, ..KeyedConfig::default() };
/// let limiter = KeyedRateLimiter::with_config(Gcra::new(Quota::per_second(1)), config, clock.clone());
/// assert!(limiter.check(&"alice").allowed);
/// assert!(!limiter.check(&"alice").allowed);
/// assert!(limiter.check(&"bob").allowed);
///
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(limiter.purge_idle(), 2);
/// assert!(limiter.is_empty());
/// ```
pub struct KeyedRateLimiter<K, A: Algorithm, C: Clock = CoarseClock> {
    algorithm: A,
    shards: Box<[ShardCell<K, A::State>]>,
    shard_mask: u64,
    per_shard: usize,
    idle: u64,
    hasher: foldhash::fast::RandomState,
    clock: C,
}

impl<K, A> KeyedRateLimiter<K, A>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Algorithm,
{
    /// Default sizing ([`KeyedConfig::default`]) on the [`CoarseClock`] with 1 ms
    /// resolution: the clock read is then one atomic load, the cheapest part of a check.
    /// For sub-millisecond precision (per-key rates well above 1000/s) pass a
    /// [`QuantaClock`](crate::clock::QuantaClock) to [`KeyedRateLimiter::with_config`].
    pub fn new(algorithm: A) -> Self {
        Self::with_config(algorithm, KeyedConfig::default(), default_clock())
    }
}

impl<K, A, C> KeyedRateLimiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Algorithm,
    C: Clock,
{
    /// A keyed limiter sized by `config`, reading time from `clock`.
    pub fn with_config(algorithm: A, config: KeyedConfig, clock: C) -> Self {
        let max_keys = config.max_keys.max(1);
        let mut shards = config.shards.clamp(1, 1024).next_power_of_two();
        // Small limits get few shards, so that per-shard rounding does not waste the budget.
        while shards > 1 && max_keys / shards < 8 {
            shards /= 2;
        }
        let idle = config.idle_timeout.map_or_else(
            || nanos(algorithm.idle_after()).max(1_000_000_000),
            |d| nanos(d).max(1),
        );
        Self {
            algorithm,
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            shard_mask: shards as u64 - 1,
            per_shard: (max_keys / shards).max(1),
            idle,
            hasher: foldhash::fast::RandomState::default(),
            clock,
        }
    }

    /// Decides on one unit for `key`.
    #[inline]
    pub fn check(&self, key: &K) -> Decision {
        self.check_n(key, 1)
    }

    /// Decides on `n` units for `key`.
    pub fn check_n(&self, key: &K, n: u32) -> Decision {
        let hash = self.hasher.hash_one(key);
        // High bits pick the shard; hashbrown uses the low bits and the top seven.
        let shard = &self.shards[((hash >> 32) & self.shard_mask) as usize].0;
        let now = self.clock.now_nanos();
        let n = u64::from(n);
        let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        if let Some(slot) = s.table.find_mut(hash, |slot| slot.key == *key) {
            slot.last_seen = now;
            slot.referenced = true;
            let decision = self.algorithm.check(&mut slot.state, now, n);
            s.stats.count(decision.allowed);
            return decision;
        }
        if s.table.len() >= self.per_shard {
            s.evict_one(now, self.idle);
        } else {
            s.expire_some(now, self.idle, 4);
        }
        let mut state = self.algorithm.initial_state(now);
        let decision = self.algorithm.check(&mut state, now, n);
        let slot = Slot {
            key: key.clone(),
            state,
            last_seen: now,
            referenced: false,
        };
        s.table
            .insert_unique(hash, slot, |slot| self.hasher.hash_one(&slot.key));
        s.stats.count(decision.allowed);
        decision
    }

    /// Keys held right now (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).table.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys held at once.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Forgets every key idle for the idle timeout; returns how many. Insertions already
    /// reclaim idle keys gradually; call this periodically to give memory back in quiet
    /// periods too.
    pub fn purge_idle(&self) -> usize {
        let now = self.clock.now_nanos();
        self.shards
            .iter()
            .map(|s| {
                s.0.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .purge(now, self.idle, |k| self.hasher.hash_one(k))
            })
            .sum()
    }

    /// Counters since creation, summed over shards (for metrics and the admin API).
    pub fn stats(&self) -> KeyedStats {
        let mut total = KeyedStats::default();
        for shard in self.shards.iter() {
            let s = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            total.allowed += s.stats.allowed;
            total.denied += s.stats.denied;
            total.evicted += s.stats.evicted;
            total.expired += s.stats.expired;
            total.keys += s.table.len() as u64;
        }
        total
    }

    /// The algorithm.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }
}

impl<K, A: Algorithm, C: Clock> std::fmt::Debug for KeyedRateLimiter<K, A, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("shards", &self.shards.len())
            .field("capacity", &(self.per_shard * self.shards.len()))
            .field("idle_timeout", &Duration::from_nanos(self.idle))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ratelimit::{Gcra, Quota, SlidingWindowLog};

    fn limiter(max_keys: usize, clock: &ManualClock) -> KeyedRateLimiter<u64, Gcra, ManualClock> {
        KeyedRateLimiter::with_config(
            Gcra::new(Quota::per_second(10)),
            KeyedConfig {
                max_keys,
                idle_timeout: Some(Duration::from_secs(10)),
                shards: 4,
            },
            clock.clone(),
        )
    }

    #[test]
    fn every_key_stays_findable_through_evictions() {
        let clock = ManualClock::new();
        let l = limiter(64, &clock);
        for k in 0..10_000u64 {
            l.check(&(k % 200));
            if k % 7 == 0 {
                l.check(&3);
            }
        }
        assert!(l.len() <= 64);
        for shard in l.shards.iter() {
            let s = shard.0.lock().unwrap();
            for slot in s.table.iter() {
                let h = l.hasher.hash_one(slot.key);
                assert!(s.table.find(h, |o| o.key == slot.key).is_some());
            }
        }
    }

    #[test]
    fn hot_key_survives_a_flood_of_new_keys() {
        let clock = ManualClock::new();
        let l = limiter(64, &clock);
        // Key 0 uses its whole burst; if it were evicted it would get a fresh one.
        for _ in 0..10 {
            assert!(l.check(&0).allowed);
        }
        for k in 1..100_000u64 {
            l.check(&k);
            if k % 16 == 0 {
                assert!(!l.check(&0).allowed, "hot key was evicted at {k}");
            }
        }
        let stats = l.stats();
        assert_eq!(stats.keys, l.len() as u64);
        assert!(stats.evicted >= 100_000 - 64);
        assert_eq!(stats.allowed, 10 + 99_999);
        assert_eq!(stats.denied, 99_999 / 16);
    }

    #[test]
    fn insertions_reclaim_idle_keys() {
        let clock = ManualClock::new();
        let l = KeyedRateLimiter::with_config(
            SlidingWindowLog::new("5/s".parse().unwrap()),
            KeyedConfig {
                max_keys: 1000,
                idle_timeout: None,
                shards: 1,
            },
            clock.clone(),
        );
        for k in 0..500u32 {
            l.check(&k);
        }
        clock.advance(Duration::from_secs(2));
        for k in 1000..1300u32 {
            l.check(&k);
        }
        // Each insertion inspects four buckets under the hand.
        assert!(l.len() < 500, "len {}", l.len());
    }
}
