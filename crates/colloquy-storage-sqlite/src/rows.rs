//! Reading SQLite rows: columns for [`colloquy_storage::sql`]'s decoders ([`Row`]), which
//! turn them into models. UUIDs are stored as text.

use colloquy_storage::sql::{corrupt, uuid_text, Decode};
use colloquy_storage::StoreResult;
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;
use uuid::Uuid;

/// Any column, with a decoding failure reported as corruption.
pub fn col<'r, T>(r: &'r SqliteRow, i: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(i).map_err(corrupt)
}

/// SQLite's rows, for the shared decoders (`sql::chat_record::<Row>` and the like).
pub enum Row {}

impl Decode for Row {
    type Row = SqliteRow;

    fn uuid(r: &SqliteRow, i: usize) -> StoreResult<Uuid> {
        uuid_text(&col::<String>(r, i)?)
    }

    fn opt_uuid(r: &SqliteRow, i: usize) -> StoreResult<Option<Uuid>> {
        col::<Option<String>>(r, i)?
            .as_deref()
            .map(uuid_text)
            .transpose()
    }

    fn text(r: &SqliteRow, i: usize) -> StoreResult<String> {
        col(r, i)
    }

    fn opt_text(r: &SqliteRow, i: usize) -> StoreResult<Option<String>> {
        col(r, i)
    }

    fn int(r: &SqliteRow, i: usize) -> StoreResult<i64> {
        col(r, i)
    }

    fn opt_int(r: &SqliteRow, i: usize) -> StoreResult<Option<i64>> {
        col(r, i)
    }

    fn flag(r: &SqliteRow, i: usize) -> StoreResult<bool> {
        col(r, i)
    }
}
