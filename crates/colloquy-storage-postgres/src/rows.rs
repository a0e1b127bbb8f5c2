//! Reading PostgreSQL rows: columns for [`colloquy_storage::sql`]'s decoders ([`Row`]),
//! which turn them into models.

use colloquy_storage::sql::{corrupt, Decode};
use colloquy_storage::StoreResult;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row as _, Type};
use uuid::Uuid;

/// Column `i` of `r`, or [`colloquy_storage::StoreError::Corrupt`].
pub fn col<'r, T>(r: &'r PgRow, i: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + Type<Postgres>,
{
    r.try_get(i).map_err(corrupt)
}

/// PostgreSQL's rows, for the shared decoders (`sql::chat_record::<Row>` and the like).
pub enum Row {}

impl Decode for Row {
    type Row = PgRow;

    fn uuid(r: &PgRow, i: usize) -> StoreResult<Uuid> {
        col(r, i)
    }

    fn opt_uuid(r: &PgRow, i: usize) -> StoreResult<Option<Uuid>> {
        col(r, i)
    }

    fn text(r: &PgRow, i: usize) -> StoreResult<String> {
        col(r, i)
    }

    fn opt_text(r: &PgRow, i: usize) -> StoreResult<Option<String>> {
        col(r, i)
    }

    fn int(r: &PgRow, i: usize) -> StoreResult<i64> {
        col(r, i)
    }

    fn opt_int(r: &PgRow, i: usize) -> StoreResult<Option<i64>> {
        col(r, i)
    }

    fn flag(r: &PgRow, i: usize) -> StoreResult<bool> {
        col(r, i)
    }
}
