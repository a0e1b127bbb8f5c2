//! Messages between servers sharing the database (`NOTIFY` / `LISTEN`) and the owner of a
//! live chat, for the control plane.

use crate::{db, PostgresStore};
use async_trait::async_trait;
use colloquy_storage::{LiveOwner, LiveStore, StoreResult};
use futures::stream::BoxStream;
use futures::StreamExt;
use sqlx::postgres::PgListener;
use uuid::Uuid;

#[async_trait]
impl LiveStore for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    async fn live_chat_owner(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
    ) -> StoreResult<Option<LiveOwner>> {
        let row: Option<(Option<Uuid>, Option<i64>)> = sqlx::query_as(
            "SELECT c.instance_id, i.heartbeat_at FROM chats c \
             LEFT JOIN server_instances i ON i.id = c.instance_id \
             WHERE c.id = $1 AND c.user_id = $2 AND c.status = 'ACTIVE'",
        )
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.and_then(|(instance, heartbeat_at)| {
            instance.map(|instance_id| LiveOwner {
                instance_id,
                heartbeat_at,
            })
        }))
    }

    async fn set_chat_metadata(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        metadata: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE chats SET metadata = $3 WHERE id = $1 AND user_id = $2 AND status = 'ACTIVE'",
        )
        .bind(chat_id)
        .bind(user_id)
        .bind(colloquy_storage::storable_text(metadata).as_ref())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn listen(&self, channel: &str) -> StoreResult<BoxStream<'static, String>> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db)?;
        listener.listen(channel).await.map_err(db)?;
        // `PgListener` reconnects by itself after a lost connection (messages sent
        // meanwhile are lost; the control plane's requests then time out).
        Ok(listener
            .into_stream()
            .filter_map(|n| async move {
                match n {
                    Ok(n) => Some(n.payload().to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other servers failed");
                        None
                    }
                }
            })
            .boxed())
    }
}
