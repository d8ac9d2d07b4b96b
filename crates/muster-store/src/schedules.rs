//! Scheduled tasks: each schedule's next run, claimed by exactly one node per tick.

use crate::tx::on_tx;
use crate::{Result, Store, StoreTx, Ts, on_db};
use time::OffsetDateTime;
use uuid::Uuid;

/// Scheduled tasks.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub name: String,
    pub workflow_name: String,
    pub interval_seconds: i64,
    pub offset_seconds: i64,
    pub next_run_at: Option<Ts>,
    pub last_run_at: Option<Ts>,
    pub last_process_id: Option<Uuid>,
}

impl Store {
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as("SELECT name, workflow_name, interval_seconds, offset_seconds, next_run_at, last_run_at, last_process_id FROM schedules ORDER BY name")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Sets a schedule's first run time if it has none yet.
    pub async fn plan_schedule(&self, name: &str, next: OffsetDateTime) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query("UPDATE schedules SET next_run_at = $2 WHERE name = $1 AND next_run_at IS NULL")
                .bind(name)
                .bind(Ts(next))
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

impl StoreTx {
    /// Claims one tick of a schedule: moves `next_run_at` from `due` to `next`. Only one node's
    /// UPDATE matches, so only that node starts the task.
    pub async fn fire_schedule(
        &mut self,
        name: &str,
        due: OffsetDateTime,
        next: OffsetDateTime,
        pid: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let n = on_tx!(self, conn => {
            sqlx::query(
                "UPDATE schedules SET next_run_at = $3, last_run_at = $4, last_process_id = $5 WHERE name = $1 AND next_run_at = $2",
            )
            .bind(name)
            .bind(Ts(due))
            .bind(Ts(next))
            .bind(Ts(now))
            .bind(pid)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }
}
