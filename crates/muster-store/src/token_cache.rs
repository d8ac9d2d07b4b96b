//! A per-node cache of API token lookups, so that an agent's every request does not cost a
//! database round trip for its token.
//!
//! - Keyed by the SHA-256 of the key (what the database stores), never by the key.
//! - Only tokens that were found are cached. A lookup that finds nothing always goes to the
//!   database, so guessing keys gains nothing from the cache (and cannot fill it).
//! - The caller chooses how old an entry may be ([`Store::api_token_by_hash_cached`]).
//! - Revoking a token, or deleting its provider, through this [`Store`] evicts it at once, so on
//!   the node that revoked it the very next request is refused. Other nodes (each has its own
//!   cache) refuse it once their entry is older than the caller's maximum age.
//! - A lookup that read the database before a revocation committed must not put the revoked
//!   token back: every eviction bumps a generation, and a lookup only stores what it read if no
//!   eviction happened since it started.

use crate::{Result, Store};
use muster_core::offering::model::{ApiToken, ApiTokenUuid, ProviderUuid};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens are few (a handful per provider); the bound only keeps memory fixed whatever happens.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub(crate) struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every eviction.
    generation: u64,
    entries: HashMap<[u8; 32], Entry>,
}

struct Entry {
    token: ApiToken,
    stored_hash: Vec<u8>,
    fetched: Instant,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every change is a
        // single insert, remove or retain), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry for `hash` if it is younger than `max_age`, else the current generation.
    fn get(&self, hash: &[u8; 32], max_age: Duration) -> std::result::Result<(ApiToken, Vec<u8>), u64> {
        let inner = self.lock();
        match inner.entries.get(hash) {
            Some(e) if e.fetched.elapsed() < max_age => Ok((e.token.clone(), e.stored_hash.clone())),
            _ => Err(inner.generation),
        }
    }

    /// Stores what a lookup that started at `generation` read, unless an eviction happened since.
    fn put(
        &self,
        hash: [u8; 32],
        token: ApiToken,
        stored_hash: Vec<u8>,
        fetched: Instant,
        generation: u64,
        max_age: Duration,
    ) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(&hash) {
            inner.entries.retain(|_, e| e.fetched.elapsed() < max_age);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner.entries.insert(
            hash,
            Entry {
                token,
                stored_hash,
                fetched,
            },
        );
    }

    fn evict(&self, keep: impl Fn(&ApiToken) -> bool) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.retain(|_, e| keep(&e.token));
    }

    pub(crate) fn evict_token(&self, token: ApiTokenUuid) {
        self.evict(|t| t.uuid != token);
    }

    pub(crate) fn evict_provider(&self, provider: ProviderUuid) {
        self.evict(|t| t.provider_uuid != provider);
    }
}

impl Store {
    /// [`Store::api_token_by_hash`], answered from this node's cache when it read the token less
    /// than `max_age` ago. Tokens that are not found are never cached; a token revoked (or whose
    /// provider was deleted) through this store is gone from the cache at once. Another node's
    /// revocation is seen here once the entry is `max_age` old.
    pub async fn api_token_by_hash_cached(
        &self,
        hash: &[u8; 32],
        max_age: Duration,
    ) -> Result<Option<(ApiToken, Vec<u8>)>> {
        let generation = match self.tokens.get(hash, max_age) {
            Ok(hit) => return Ok(Some(hit)),
            Err(generation) => generation,
        };
        // The entry's age counts from before the read: it is never younger than what it says.
        let fetched = Instant::now();
        let found = self.api_token_by_hash(hash).await?;
        if let Some((token, stored)) = &found {
            self.tokens
                .put(*hash, token.clone(), stored.clone(), fetched, generation, max_age);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(provider: ProviderUuid) -> ApiToken {
        ApiToken {
            uuid: ApiTokenUuid::new_random(),
            provider_uuid: provider,
            name: "agent".into(),
            created_by: "test".into(),
            created: muster_core::clock::now(),
        }
    }

    const AGE: Duration = Duration::from_secs(60);

    #[test]
    fn a_lookup_that_raced_a_revocation_stores_nothing() {
        let cache = TokenCache::default();
        let t = token(ProviderUuid::new_random());
        let hash = [1u8; 32];
        // The lookup misses and reads the row from the database…
        let Err(generation) = cache.get(&hash, AGE) else {
            panic!("empty cache hit");
        };
        // …while the token is revoked, and only then stores what it read.
        cache.evict_token(t.uuid);
        cache.put(hash, t.clone(), hash.to_vec(), Instant::now(), generation, AGE);
        assert!(cache.get(&hash, AGE).is_err());
        // Without a revocation in between, the entry is kept.
        let Err(generation) = cache.get(&hash, AGE) else {
            panic!("hit");
        };
        cache.put(hash, t.clone(), hash.to_vec(), Instant::now(), generation, AGE);
        assert_eq!(cache.get(&hash, AGE).ok().map(|(x, _)| x.uuid), Some(t.uuid));
    }

    #[test]
    fn evictions_are_by_token_and_by_provider() {
        let cache = TokenCache::default();
        let (p, q) = (ProviderUuid::new_random(), ProviderUuid::new_random());
        let (a, b, c) = (token(p), token(p), token(q));
        for (i, t) in [&a, &b, &c].into_iter().enumerate() {
            let Err(g) = cache.get(&[i as u8; 32], AGE) else {
                panic!("hit");
            };
            cache.put([i as u8; 32], t.clone(), vec![i as u8; 32], Instant::now(), g, AGE);
        }
        cache.evict_token(a.uuid);
        assert!(cache.get(&[0; 32], AGE).is_err());
        assert!(cache.get(&[1; 32], AGE).is_ok() && cache.get(&[2; 32], AGE).is_ok());
        cache.evict_provider(p);
        assert!(cache.get(&[1; 32], AGE).is_err());
        assert!(cache.get(&[2; 32], AGE).is_ok());
        // An entry older than the age asked for is not an answer.
        assert!(cache.get(&[2; 32], Duration::ZERO).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        let t = token(ProviderUuid::new_random());
        for i in 0..(MAX_ENTRIES + 10) {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let Err(g) = cache.get(&hash, AGE) else {
                panic!("hit");
            };
            cache.put(hash, t.clone(), hash.to_vec(), Instant::now(), g, AGE);
        }
        assert!(cache.lock().entries.len() <= MAX_ENTRIES);
    }
}
