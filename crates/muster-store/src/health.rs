//! What the health check reports about the database: whether it answers, and whether it still
//! takes writes.
//!
//! "Answers" is a read; "takes writes" is a real committed write (a row that needs new pages,
//! deleted again in the same transaction), because a database can answer reads while every
//! write fails: a full disk, a size limit, a server gone read-only. Each check has its own
//! short timeout, so the health endpoint answers quickly whatever the database does, and the
//! result is kept for a moment so that frequent polling costs one probe.

use crate::{Failure, Store, on_db};
use std::time::{Duration, Instant};

/// How long each check may take.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a result is reused.
const KEEP_FOR: Duration = Duration::from_secs(1);
/// The probe row's size: larger than a page, so that writing it needs pages a full database
/// does not have.
const PROBE_BYTES: i64 = 8192;

/// The database's state as the health check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseHealth {
    pub reachable: bool,
    pub writable: bool,
    /// Why not: `storage_full`, `database_unavailable`, `timeout` or `database_error`.
    pub problem: Option<&'static str>,
}

#[derive(Default)]
pub(crate) struct HealthCache(tokio::sync::Mutex<Option<(Instant, DatabaseHealth)>>);

fn problem_of(e: &sqlx::Error) -> &'static str {
    match Failure::of(e) {
        Failure::Full => "storage_full",
        Failure::Unavailable => "database_unavailable",
        Failure::Other => "database_error",
    }
}

impl Store {
    /// Checks the database (or reuses a check less than a second old).
    pub async fn health(&self) -> DatabaseHealth {
        let mut cached = self.health.0.lock().await;
        if let Some((at, h)) = cached.as_ref()
            && at.elapsed() < KEEP_FOR
        {
            return h.clone();
        }
        let h = self.check_health().await;
        *cached = Some((Instant::now(), h.clone()));
        h
    }

    async fn check_health(&self) -> DatabaseHealth {
        let read = tokio::time::timeout(CHECK_TIMEOUT, async {
            on_db!(self, read, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
        })
        .await;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return DatabaseHealth {
                    reachable: false,
                    writable: false,
                    problem: Some(problem_of(&e)),
                };
            }
            Err(_) => {
                return DatabaseHealth {
                    reachable: false,
                    writable: false,
                    problem: Some("timeout"),
                };
            }
        }
        // A number of its own, so that nodes probing at once do not wait for each other.
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
        let write = tokio::time::timeout(CHECK_TIMEOUT, async {
            on_db!(self, write, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO health_probe (id, data) VALUES ($1, $2)")
                    .bind(id)
                    .bind(vec![0u8; PROBE_BYTES as usize])
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM health_probe WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await
            })
        })
        .await;
        match write {
            Ok(Ok(())) => DatabaseHealth {
                reachable: true,
                writable: true,
                problem: None,
            },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health check: the database does not take writes");
                DatabaseHealth {
                    reachable: true,
                    writable: false,
                    problem: Some(problem_of(&e)),
                }
            }
            Err(_) => DatabaseHealth {
                reachable: true,
                writable: false,
                problem: Some("timeout"),
            },
        }
    }
}
