use super::MetadataStore;
use crate::error::Result;
use moat_model::RepositoryName;

#[derive(Clone, Debug)]
pub struct UploadRow {
    pub id: String,
    pub registry_id: String,
    pub repository: String,
    /// Bytes acknowledged (durable) so far.
    pub committed_size: i64,
    pub created_at: String,
    /// Where the upload stood after its last acknowledged chunk (`UploadState::encode`): its hash midstate and
    /// staged blocks, so that any node continues it.
    pub resume: Option<String>,
}

impl MetadataStore {
    pub async fn create_upload(
        &self,
        id: &str,
        registry_id: &str,
        repo: &RepositoryName,
    ) -> Result<()> {
        let now = crate::time_fmt::now();
        sqlx::query("INSERT INTO uploads(id, registry_id, repository, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(registry_id)
            .bind(repo.as_str())
            .bind(&now)
            .bind(&now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row: Option<(String, String, String, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, registry_id, repository, committed_size, created_at, resume FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(
            |(id, registry_id, repository, committed_size, created_at, resume)| UploadRow {
                id,
                registry_id,
                repository,
                committed_size,
                created_at,
                resume,
            },
        ))
    }

    /// Records an acknowledged chunk: the size and the state to continue from, together.
    pub async fn set_upload_size(&self, id: &str, size: u64, resume: &str) -> Result<()> {
        sqlx::query(
            "UPDATE uploads SET committed_size = $1, resume = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(size as i64)
        .bind(resume)
        .bind(crate::time_fmt::now())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Sessions last touched before `before` (stored time form).
    pub async fn stale_uploads(&self, before: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM uploads WHERE updated_at < $1")
                .bind(before)
                .fetch_all(&self.writer)
                .await?,
        )
    }

    pub async fn upload_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM uploads")
            .fetch_all(&self.writer)
            .await?)
    }
}
