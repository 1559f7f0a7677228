//! Leases of background jobs: among processes that share one metadata store, one holds a job at a time; a holder
//! that dies lets its lease lapse.

use crate::error::Result;
use crate::meta::MetadataStore;
use std::time::Duration;

impl MetadataStore {
    /// Takes (or renews) the lease `name` for `holder` for `ttl`; false while another holder's lease runs.
    pub async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let sql_now = self.dialect().now_secs();
        let done = sqlx::query(&format!(
            "INSERT INTO job_leases(name, holder, expires_at) VALUES ($1, $2, {sql_now} + $3)
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= {sql_now}"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}
