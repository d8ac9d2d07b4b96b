//! Fresh databases for tests: SQLite always, PostgreSQL when `MUSTER_TEST_DATABASE_URL` is set.
//!
//! Each PostgreSQL test database is a schema of its own (selected through the connection's
//! `search_path`), so tests run in parallel without seeing each other; it is dropped when the
//! [`TestDb`] is.

use std::env;

pub const PG_ENV: &str = "MUSTER_TEST_DATABASE_URL";

/// A database that exists for one test.
pub struct TestDb {
    /// `sqlite` or `postgres`, for messages.
    pub label: &'static str,
    /// What `Store::connect` (or `muster --database-url`) takes.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({})", self.label)
    }
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite:{}", dir.path().join("muster.db").display());
        Self {
            label: "sqlite",
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh schema on the server named by `MUSTER_TEST_DATABASE_URL`, if it is set.
    pub async fn postgres() -> Option<Self> {
        let admin_url = env::var(PG_ENV).ok().filter(|s| !s.is_empty())?;
        let schema = format!("muster_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("MUSTER_TEST_DATABASE_URL must be reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .expect("create test schema");
        pool.close().await;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        Some(Self {
            label: "postgres",
            url,
            cleanup: Cleanup::Postgres { admin_url, schema },
        })
    }

    /// SQLite, plus PostgreSQL when configured: what every conformance test runs against.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        dbs.extend(Self::postgres().await);
        dbs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, schema } = &self.cleanup {
            let (admin_url, schema) = (admin_url.clone(), schema.clone());
            // Drop may run inside a runtime; do the async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin_url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                            .execute(&pool)
                            .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}
