//! The SQL, as plain synchronous functions over one connection. They run
//! on the store's worker thread only.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use berth_activity::{ActivityKind, ActivityRecord};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::time::{duration_nanos, from_nanos, to_nanos};
use crate::types::{HistoryEntry, HistoryQuery, PruneStats};

const INSERT_RECORD: &str =
    "INSERT INTO activity (container, time_ns, path, status, bytes, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

// `max` of SQL returns NULL when an argument is NULL, hence the coalesce.
const TOUCH_CONTAINER: &str = "INSERT INTO containers (name, last_activity_ns) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET last_activity_ns = max(coalesce(last_activity_ns, ?2), ?2)";

fn kind_name(kind: ActivityKind) -> &'static str {
    match kind {
        ActivityKind::Http => "http",
        ActivityKind::WebSocket => "websocket",
    }
}

fn entry(row: &Row<'_>) -> rusqlite::Result<HistoryEntry> {
    let kind: String = row.get(4)?;
    let kind = match kind.as_str() {
        "http" => ActivityKind::Http,
        "websocket" => ActivityKind::WebSocket,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                4,
                Type::Text,
                format!("unknown activity kind {other:?}").into(),
            ));
        }
    };
    Ok(HistoryEntry {
        time: from_nanos(row.get(0)?),
        path: row.get(1)?,
        status: row.get(2)?,
        bytes: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        kind,
    })
}

/// Inserts a batch in one transaction and moves each container's last
/// activity forward to the batch's latest time.
pub(crate) fn insert_batch(conn: &mut Connection, batch: &[ActivityRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(INSERT_RECORD)?;
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for record in batch {
            let time = to_nanos(record.time);
            insert.execute((
                &record.container,
                time,
                &record.path,
                record.status,
                // SQLite integers are signed; 2^63 bytes is not a real response.
                i64::try_from(record.bytes).unwrap_or(i64::MAX),
                kind_name(record.kind),
            ))?;
            latest.entry(&record.container).and_modify(|t| *t = (*t).max(time)).or_insert(time);
        }
        let mut touch = tx.prepare_cached(TOUCH_CONTAINER)?;
        for (container, time) in latest {
            touch.execute((container, time))?;
        }
    }
    tx.commit()
}

pub(crate) fn history(conn: &Connection, container: &str, query: HistoryQuery) -> rusqlite::Result<Vec<HistoryEntry>> {
    let since = query.since.map_or(i64::MIN, to_nanos);
    match query.limit {
        None => {
            let mut select = conn.prepare_cached(
                "SELECT time_ns, path, status, bytes, kind FROM activity
                 WHERE container = ?1 AND time_ns >= ?2 ORDER BY time_ns, id",
            )?;
            select.query_map((container, since), entry)?.collect()
        }
        Some(limit) => {
            // The most recent `limit` entries, read newest first through the
            // index, then turned around.
            let mut select = conn.prepare_cached(
                "SELECT time_ns, path, status, bytes, kind FROM activity
                 WHERE container = ?1 AND time_ns >= ?2 ORDER BY time_ns DESC, id DESC LIMIT ?3",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut entries = select.query_map((container, since, limit), entry)?.collect::<Result<Vec<_>, _>>()?;
            entries.reverse();
            Ok(entries)
        }
    }
}

pub(crate) fn last_activity(conn: &Connection, container: &str) -> rusqlite::Result<Option<SystemTime>> {
    let mut select = conn.prepare_cached("SELECT last_activity_ns FROM containers WHERE name = ?1")?;
    let nanos: Option<Option<i64>> = select.query_row([container], |row| row.get(0)).optional()?;
    Ok(nanos.flatten().map(from_nanos))
}

pub(crate) fn last_activity_all(conn: &Connection) -> rusqlite::Result<HashMap<String, SystemTime>> {
    let mut select =
        conn.prepare_cached("SELECT name, last_activity_ns FROM containers WHERE last_activity_ns IS NOT NULL")?;
    select.query_map([], |row| Ok((row.get(0)?, from_nanos(row.get(1)?))))?.collect()
}

pub(crate) fn mark_removed(conn: &Connection, container: &str, at: SystemTime) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO containers (name, removed_ns) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET removed_ns = ?2",
    )?
    .execute((container, to_nanos(at)))?;
    Ok(())
}

/// Starts a new incarnation of `container`; when the name was marked
/// removed, the previous incarnation's records go. Returns how many.
pub(crate) fn mark_launched(conn: &mut Connection, container: &str, at: SystemTime) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let removed: Option<Option<i64>> = tx
        .prepare_cached("SELECT removed_ns FROM containers WHERE name = ?1")?
        .query_row([container], |row| row.get(0))
        .optional()?;
    let mut deleted = 0;
    if removed.flatten().is_some() {
        deleted = tx.prepare_cached("DELETE FROM activity WHERE container = ?1")?.execute([container])?;
        tx.prepare_cached("UPDATE containers SET last_activity_ns = NULL WHERE name = ?1")?.execute([container])?;
    }
    tx.prepare_cached(
        "INSERT INTO containers (name, launched_ns) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET launched_ns = ?2, removed_ns = NULL",
    )?
    .execute((container, to_nanos(at)))?;
    tx.commit()?;
    Ok(deleted as u64)
}

/// Deletes everything about `container`. Returns how many records went.
pub(crate) fn forget(conn: &mut Connection, container: &str) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let deleted = tx.prepare_cached("DELETE FROM activity WHERE container = ?1")?.execute([container])?;
    tx.prepare_cached("DELETE FROM containers WHERE name = ?1")?.execute([container])?;
    tx.commit()?;
    Ok(deleted as u64)
}

pub(crate) fn prune(
    conn: &mut Connection,
    now: SystemTime,
    retention: Duration,
    max_age: Option<Duration>,
) -> rusqlite::Result<PruneStats> {
    let now = to_nanos(now);
    let mut stats = PruneStats::default();
    let tx = conn.transaction()?;
    {
        let removed_before = now.saturating_sub(duration_nanos(retention));
        let expired: Vec<String> = tx
            .prepare_cached("SELECT name FROM containers WHERE removed_ns IS NOT NULL AND removed_ns <= ?1")?
            .query_map([removed_before], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut delete_records = tx.prepare_cached("DELETE FROM activity WHERE container = ?1")?;
        let mut delete_container = tx.prepare_cached("DELETE FROM containers WHERE name = ?1")?;
        for name in &expired {
            stats.records += delete_records.execute([name])? as u64;
            stats.containers += delete_container.execute([name])? as u64;
        }
        if let Some(max_age) = max_age {
            // One range delete per container goes through the
            // (container, time_ns) index; a single `time_ns < ?` delete
            // would scan the whole table, or need a second index that
            // every insert pays for.
            let older_than = now.saturating_sub(duration_nanos(max_age));
            let names: Vec<String> = tx
                .prepare_cached("SELECT name FROM containers")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut delete_old = tx.prepare_cached("DELETE FROM activity WHERE container = ?1 AND time_ns < ?2")?;
            for name in &names {
                stats.records += delete_old.execute((name, older_than))? as u64;
            }
        }
    }
    tx.commit()?;
    Ok(stats)
}
