//! Throwaway PostgreSQL databases for tests (this crate's and the server's).
//!
//! The admin URL comes from `COLLOQUY_TEST_POSTGRES_URL` (default [`DEFAULT_ADMIN_URL`]).
//! When no server answers, tests are skipped with a message on stderr, unless
//! `COLLOQUY_TEST_POSTGRES=required`, which turns that into a failure.
//!
//! ```no_run
//! # async fn t() {
//! colloquy_storage_postgres::testing::with_database(|url| async move {
//!     // open a store on `url`, test it
//! })
//! .await;
//! # }
//! ```

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

/// Admin URL used when `COLLOQUY_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A uniquely named, empty database; drop it with [`TestDatabase::drop_database`].
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `colloquy_test_<uuid>`; `None` (after a note on stderr) when no server answers
    /// and `COLLOQUY_TEST_POSTGRES` is not `required`.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("COLLOQUY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
        let mut admin = match admin_connection(&admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                if std::env::var("COLLOQUY_TEST_POSTGRES").as_deref() == Ok("required") {
                    panic!("no PostgreSQL at {admin_url}: {e}");
                }
                eprintln!(
                    "skipping: no PostgreSQL at {admin_url} \
                     (set COLLOQUY_TEST_POSTGRES=required to make this a failure): {e}"
                );
                return None;
            }
        };
        let name = format!("colloquy_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database_name(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_database(self) {
        let result = async {
            let mut admin = admin_connection(&self.admin_url).await?;
            let dropped = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
            dropped.map(|_| ())
        }
        .await;
        if let Err(e) = result {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `body` with the URL of a fresh database and drops the database afterwards, even when
/// `body` panics (the panic is resumed after the drop). Returns at once when skipping.
pub async fn with_database<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let outcome = CatchUnwind(Box::pin(body(db.url().to_string()))).await;
    db.drop_database().await;
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
}

async fn admin_connection(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?.connect().await
}

/// `url` with its database (path) replaced by `name`, keeping any query string.
fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Resolves to `Err(payload)` instead of unwinding when the inner future panics.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn drops_the_database_when_the_body_panics() {
        let seen = Arc::new(Mutex::new(None));
        let outcome = CatchUnwind(Box::pin(with_database({
            let seen = seen.clone();
            |url| async move {
                *seen.lock().unwrap() = Some(url);
                panic!("test body failed");
            }
        })))
        .await;
        let Some(url) = seen.lock().unwrap().take() else {
            return; // skipped: no server
        };
        assert!(outcome.is_err(), "the panic is resumed");
        let name = url.rsplit('/').next().unwrap().to_string();
        let admin_url = std::env::var("COLLOQUY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
        let mut admin = admin_connection(&admin_url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0, "{name} was dropped");
    }

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database_name("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database_name("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database_name("postgres://h:1", "x"),
            "postgres://h:1/x"
        );
    }
}
