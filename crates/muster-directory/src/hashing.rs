//! Password hashing off the async runtime.
//!
//! argon2id takes tens of milliseconds of CPU and 19 MiB of memory per hash. Running it on the
//! runtime's worker threads would stall every other request; running unboundedly many at once
//! would exhaust memory. Hashes therefore run on tokio's blocking threads, at most `permits` at
//! a time (by default one per core), and queue for a permit otherwise.

use muster_core::credentials::password::PasswordHasher;
use muster_core::error::DomainError;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone, Debug)]
pub struct HashPool {
    hasher: PasswordHasher,
    permits: Arc<Semaphore>,
}

impl HashPool {
    pub fn new(hasher: PasswordHasher, permits: usize) -> Self {
        Self {
            hasher,
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, DomainError> {
        let _permit = self.permits.acquire().await.map_err(DomainError::internal)?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || f(&hasher))
            .await
            .map_err(DomainError::internal)
    }

    /// argon2id hash of a password a person chose.
    pub async fn hash(&self, password: String) -> Result<String, DomainError> {
        self.run(move |h| h.hash(&password)).await
    }

    /// Verifies a password; always costs one argon2id (see `PasswordHasher::verify`).
    pub async fn verify(&self, stored: Option<String>, password: String) -> Result<bool, DomainError> {
        self.run(move |h| h.verify(stored.as_deref(), &password)).await
    }
}
