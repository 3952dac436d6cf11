//! Reading values the same way on both engines.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

/// A boolean column: `BOOLEAN` on Postgres, `INTEGER` 0/1 on SQLite.
pub(crate) fn get_bool(row: &AnyRow, col: &str) -> Result<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

/// A non-negative counter column.
pub(crate) fn get_count(row: &AnyRow, col: &str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v} is not a count")))
}

/// A text column holding one of an enum's names.
pub(crate) fn get_parsed<T>(row: &AnyRow, col: &str) -> Result<T>
where
    T: std::str::FromStr,
{
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{col} = {s:?} is not a known value")))
}

/// A subquery of the ids in the JSON array bound at `$param` (`"[1,2,3]"`),
/// for `INSERT ... SELECT`. The statement's text does not depend on how many
/// ids there are, so one prepared statement and one plan serve every list;
/// the Any driver has no array parameters.
pub(crate) fn json_ids(engine: crate::Engine, param: usize) -> String {
    match engine {
        crate::Engine::Postgres => {
            format!("SELECT value::BIGINT AS value FROM json_array_elements_text(${param}::JSON)")
        }
        crate::Engine::Sqlite => format!("SELECT value FROM json_each(${param})"),
    }
}

/// `column` is one of the ids in the JSON array bound at `$param` (see
/// [`json_ids`]). On PostgreSQL the ids become an array first: as `IN
/// (subquery)` the planner guesses a hundred ids and, on a table without
/// statistics yet, joins them to a scan of the whole table; as `= ANY` of an
/// array it looks each one up in the index.
pub(crate) fn in_json_ids(engine: crate::Engine, column: &str, param: usize) -> String {
    match engine {
        crate::Engine::Postgres => format!("{column} = ANY(ARRAY({}))", json_ids(engine, param)),
        crate::Engine::Sqlite => format!("{column} IN ({})", json_ids(engine, param)),
    }
}

/// `ids` as the JSON array [`json_ids`] reads.
pub(crate) fn json_array(ids: impl IntoIterator<Item = i64>) -> String {
    let mut out = String::from("[");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}

/// `$first, $first+1, ...` for `n` placeholders.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row count as `u64` (counts are never negative).
pub(crate) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A duration in milliseconds, as the store keeps times (saturating).
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
