//! Prompts, tools and configs ([`ResourceStore`]): versioned resources per account, in the
//! tables of migration 0008. Writes take the write lock up front (`BEGIN IMMEDIATE`), so a
//! delete and a config version referencing what it deletes cannot interleave.

use crate::rows::{col, Row};
use crate::{db, reads, SqliteStore};
use async_trait::async_trait;
use colloquy_storage::sql::resources::{resource_version, RESOURCE_COLUMNS, RESOURCE_FROM};
use colloquy_storage::sql::Listing;
use colloquy_storage::*;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

async fn insert_resource(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    name: &str,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO evi_resources (id, user_id, kind, name, created_on, last_version) \
         VALUES (?, ?, ?, ?, ?, 0)",
    )
    .bind(id.to_string())
    .bind(user_id.to_string())
    .bind(kind.as_str())
    .bind(storable_text(name))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_version(
    conn: &mut SqliteConnection,
    id: Uuid,
    version: i64,
    description: Option<&str>,
    body: &str,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO evi_resource_versions \
         (resource_id, version, version_description, modified_on, body) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
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
    conn: &mut SqliteConnection,
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
        let found = sqlx::query(
            "SELECT 1 FROM evi_resources r JOIN evi_resource_versions v ON v.resource_id = r.id \
             WHERE r.id = ?1 AND r.user_id = ?2 AND r.kind = ?3 AND (?4 IS NULL OR v.version = ?4) \
             LIMIT 1",
        )
        .bind(r.id.to_string())
        .bind(user_id.to_string())
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
             (config_id, config_version, target_id, target_version) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(version)
        .bind(r.id.to_string())
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
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM {RESOURCE_FROM} \
         WHERE r.id = ?1 AND r.user_id = ?2 AND r.kind = ?3 AND (?4 IS NULL OR v.version = ?4) \
         ORDER BY v.version DESC LIMIT 1"
    ))
    .bind(id.to_string())
    .bind(user_id.to_string())
    .bind(kind.as_str())
    .bind(version)
    .fetch_optional(ex)
    .await
    .map_err(db)?;
    row.as_ref().map(resource_version::<Row>).transpose()
}

/// Stores a version in an open transaction and reads it back, or says why not.
async fn finish(
    mut tx: sqlx::Transaction<'_, Sqlite>,
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
    conn: &mut SqliteConnection,
    id: Uuid,
    version: Option<i64>,
) -> StoreResult<Vec<Referrer>> {
    let rows = sqlx::query(
        "SELECT DISTINCT x.config_id, c.name, x.config_version FROM evi_config_references x \
         JOIN evi_resources c ON c.id = x.config_id \
         WHERE x.target_id = ?1 AND (?2 IS NULL OR x.target_version = ?2) \
         ORDER BY x.config_id, x.config_version",
    )
    .bind(id.to_string())
    .bind(version)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(Referrer {
                config_id: sql::uuid_text(&col::<String>(r, 0)?)?,
                name: col(r, 1)?,
                version: col(r, 2)?,
            })
        })
        .collect()
}

async fn delete(
    write: &SqlitePool,
    user_id: Uuid,
    kind: ResourceKind,
    id: Uuid,
    version: Option<i64>,
) -> StoreResult<Deleted> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let (versions, has_version): (i64, bool) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(MAX(v.version = ?4), 0) FROM evi_resource_versions v \
         JOIN evi_resources r ON r.id = v.resource_id \
         WHERE r.id = ?1 AND r.user_id = ?2 AND r.kind = ?3",
    )
    .bind(id.to_string())
    .bind(user_id.to_string())
    .bind(kind.as_str())
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
        sqlx::query("DELETE FROM evi_resources WHERE id = ?").bind(id.to_string())
    } else {
        sqlx::query("DELETE FROM evi_resource_versions WHERE resource_id = ? AND version = ?")
            .bind(id.to_string())
            .bind(version)
    };
    done.execute(&mut *tx).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Deleted::Done)
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn create_resource(
        &self,
        user_id: Uuid,
        kind: ResourceKind,
        id: Uuid,
        name: &str,
        first: &NewVersion,
    ) -> StoreResult<Written> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
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
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE evi_resources SET last_version = last_version + 1 \
             WHERE id = ? AND user_id = ? AND kind = ? RETURNING last_version",
        )
        .bind(id.to_string())
        .bind(user_id.to_string())
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
        get(&self.read, user_id, kind, id, version).await
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
            &self.read,
            RESOURCE_COLUMNS,
            RESOURCE_FROM,
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
            "UPDATE evi_resources SET name = ? WHERE id = ? AND user_id = ? AND kind = ?",
        )
        .bind(storable_text(name))
        .bind(id.to_string())
        .bind(user_id.to_string())
        .bind(kind.as_str())
        .execute(&self.write)
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
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE evi_resource_versions SET version_description = ?1, modified_on = ?2 \
             WHERE resource_id = ?3 AND version = ?4 AND EXISTS (SELECT 1 FROM evi_resources r \
             WHERE r.id = ?3 AND r.user_id = ?5 AND r.kind = ?6)",
        )
        .bind(storable(description))
        .bind(now_ms)
        .bind(id.to_string())
        .bind(version)
        .bind(user_id.to_string())
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
        delete(&self.write, user_id, kind, id, version).await
    }
}
