//! Prompts, tools and configs ([`ResourceStore`]): versioned resources per account, in the
//! tables of migration 0008. A delete locks the resource's row first and a config version
//! locks (shares) the rows it references, so the two cannot interleave: a reference never
//! points at something deleted.

use crate::rows::{col, Row};
use crate::{db, reads, PostgresStore};
use async_trait::async_trait;
use colloquy_storage::sql::resources::{resource_version, RESOURCE_COLUMNS, RESOURCE_FROM};
use colloquy_storage::sql::Listing;
use colloquy_storage::*;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Postgres;
use uuid::Uuid;

async fn insert_resource(
    conn: &mut PgConnection,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    name: &str,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO evi_resources (id, user_id, kind, name, created_on, last_version) \
         VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind.as_str())
    .bind(storable_text(name))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_version(
    conn: &mut PgConnection,
    id: Uuid,
    version: i64,
    description: Option<&str>,
    body: &str,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO evi_resource_versions \
         (resource_id, version, version_description, modified_on, body) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(version)
    .bind(storable(description))
    .bind(now_ms)
    .bind(storable_text(body))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Creates the inline prompt, stores version `version` of `id` and its references; the
/// first reference that names nothing of the account, if any (the caller rolls back).
async fn store_version(
    conn: &mut PgConnection,
    user_id: Uuid,
    id: Uuid,
    version: i64,
    new: &NewVersion,
) -> StoreResult<Option<ResourceRef>> {
    if let Some(p) = &new.inline_prompt {
        insert_resource(
            conn,
            user_id,
            ResourceKind::Prompt,
            p.id,
            &p.name,
            new.now_ms,
        )
        .await?;
        insert_version(conn, p.id, 0, None, &p.body, new.now_ms).await?;
    }
    insert_version(
        conn,
        id,
        version,
        new.version_description.as_deref(),
        &new.body,
        new.now_ms,
    )
    .await?;
    for r in &new.references {
        // Shares the rows, so that a delete of what is referenced waits for this
        // transaction (and is then refused), or this one waits for the delete (and then
        // finds nothing).
        let found = sqlx::query(
            "SELECT 1 FROM evi_resources r JOIN evi_resource_versions v ON v.resource_id = r.id \
             WHERE r.id = $1 AND r.user_id = $2 AND r.kind = $3 \
             AND ($4::BIGINT IS NULL OR v.version = $4) LIMIT 1 FOR SHARE",
        )
        .bind(r.id)
        .bind(user_id)
        .bind(r.kind.as_str())
        .bind(r.version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        if found.is_none() {
            return Ok(Some(*r));
        }
        sqlx::query(
            "INSERT INTO evi_config_references \
             (config_id, config_version, target_id, target_version) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(version)
        .bind(r.id)
        .bind(r.version)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(None)
}

/// One version (`None`: the newest) of the account's resource.
async fn get<'e, E>(
    ex: E,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    version: Option<i64>,
) -> StoreResult<Option<ResourceVersion>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM {RESOURCE_FROM} \
         WHERE r.id = $1 AND r.user_id = $2 AND r.kind = $3 \
         AND ($4::BIGINT IS NULL OR v.version = $4) ORDER BY v.version DESC LIMIT 1"
    ))
    .bind(id)
    .bind(user_id)
    .bind(kind.as_str())
    .bind(version)
    .fetch_optional(ex)
    .await
    .map_err(db)?;
    row.as_ref().map(resource_version::<Row>).transpose()
}

/// Stores a version in an open transaction and reads it back, or says why not.
async fn finish(
    mut tx: sqlx::Transaction<'_, Postgres>,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    version: i64,
    new: &NewVersion,
) -> StoreResult<Written> {
    if let Some(missing) = store_version(&mut tx, user_id, id, version, new).await? {
        tx.rollback().await.map_err(db)?;
        return Ok(Written::MissingReference(missing));
    }
    let stored = get(&mut *tx, user_id, kind, id, Some(version))
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("{kind} {id} vanished while written")))?;
    tx.commit().await.map_err(db)?;
    Ok(Written::Stored(stored))
}

/// The config versions referencing `id` (any of its versions, or exactly `version`).
async fn referrers(
    conn: &mut PgConnection,
    id: Uuid,
    version: Option<i64>,
) -> StoreResult<Vec<Referrer>> {
    let rows = sqlx::query(
        "SELECT DISTINCT x.config_id, c.name, x.config_version FROM evi_config_references x \
         JOIN evi_resources c ON c.id = x.config_id \
         WHERE x.target_id = $1 AND ($2::BIGINT IS NULL OR x.target_version = $2) \
         ORDER BY x.config_id, x.config_version",
    )
    .bind(id)
    .bind(version)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(Referrer {
                config_id: col(r, 0)?,
                name: col(r, 1)?,
                version: col(r, 2)?,
            })
        })
        .collect()
}

async fn delete(
    pool: &PgPool,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    version: Option<i64>,
) -> StoreResult<Deleted> {
    let mut tx = pool.begin().await.map_err(db)?;
    let owned = sqlx::query(
        "SELECT id FROM evi_resources WHERE id = $1 AND user_id = $2 AND kind = $3 FOR UPDATE",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    if owned.is_none() {
        return Ok(Deleted::NotFound);
    }
    let (versions, has_version): (i64, bool) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(BOOL_OR(version = $2), FALSE) FROM evi_resource_versions \
         WHERE resource_id = $1",
    )
    .bind(id)
    .bind(version)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if versions == 0 || (version.is_some() && !has_version) {
        return Ok(Deleted::NotFound);
    }
    // The last version goes with its resource: what references the latest version holds it.
    let whole = version.is_none() || versions == 1;
    let held = referrers(&mut tx, id, if whole { None } else { version }).await?;
    if !held.is_empty() {
        return Ok(Deleted::Referenced(held));
    }
    let done = if whole {
        sqlx::query("DELETE FROM evi_resources WHERE id = $1").bind(id)
    } else {
        sqlx::query("DELETE FROM evi_resource_versions WHERE resource_id = $1 AND version = $2")
            .bind(id)
            .bind(version)
    };
    done.execute(&mut *tx).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Deleted::Done)
}

#[async_trait]
impl ResourceStore for PostgresStore {
    async fn create_resource(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        name: &str,
        first: &NewVersion,
    ) -> StoreResult<Written> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        insert_resource(&mut tx, user_id, kind, id, name, first.now_ms).await?;
        finish(tx, user_id, kind, id, 0, first).await
    }

    async fn add_resource_version(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        next: &NewVersion,
    ) -> StoreResult<Written> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE evi_resources SET last_version = last_version + 1 \
             WHERE id = $1 AND user_id = $2 AND kind = $3 RETURNING last_version",
        )
        .bind(id)
        .bind(user_id)
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match version {
            Some(version) => finish(tx, user_id, kind, id, version, next).await,
            None => Ok(Written::NotFound),
        }
    }

    async fn get_resource_version(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        version: Option<i64>,
    ) -> StoreResult<Option<ResourceVersion>> {
        get(&self.pool, user_id, kind, id, version).await
    }

    async fn list_resources(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        filter: &ResourceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ResourceVersion>> {
        let listing = Listing::resources(user_id, kind, filter, page);
        reads::page_of(
            &self.pool,
            RESOURCE_COLUMNS,
            RESOURCE_FROM,
            false,
            &listing,
            resource_version::<Row>,
        )
        .await
    }

    async fn rename_resource(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        name: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE evi_resources SET name = $1 WHERE id = $2 AND user_id = $3 AND kind = $4",
        )
        .bind(storable_text(name))
        .bind(id)
        .bind(user_id)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn describe_resource_version(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        version: i64,
        description: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Option<ResourceVersion>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE evi_resource_versions v SET version_description = $1, modified_on = $2 \
             FROM evi_resources r WHERE v.resource_id = $3 AND v.version = $4 \
             AND r.id = v.resource_id AND r.user_id = $5 AND r.kind = $6",
        )
        .bind(storable(description))
        .bind(now_ms)
        .bind(id)
        .bind(version)
        .bind(user_id)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let updated = get(&mut *tx, user_id, kind, id, Some(version)).await?;
        tx.commit().await.map_err(db)?;
        Ok(updated)
    }

    async fn delete_resource(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        version: Option<i64>,
    ) -> StoreResult<Deleted> {
        delete(&self.pool, user_id, kind, id, version).await
    }
}
