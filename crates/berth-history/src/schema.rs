//! Connection settings and the schema, with numbered migrations.

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};
use crate::time::to_nanos;

/// `MIGRATIONS[i]` takes the schema from version `i` to version `i + 1`;
/// a new version appends one entry and never edits an old one.
const MIGRATIONS: &[&str] = &[
    // Version 1. `activity.id` is the rowid: new rows always get an id
    // above every existing one, so it orders records of equal time by
    // insertion. The index on (container, time_ns) also holds the rowid,
    // so it serves `ORDER BY time_ns, id` for one container.
    "
    CREATE TABLE activity (
        id        INTEGER PRIMARY KEY,
        container TEXT    NOT NULL,
        time_ns   INTEGER NOT NULL,
        path      TEXT    NOT NULL,
        status    INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        kind      TEXT    NOT NULL CHECK (kind IN ('http', 'websocket'))
    );
    CREATE INDEX activity_by_container_time ON activity (container, time_ns);

    -- One row per container name ever seen: the latest activity time (the
    -- maximum, whatever order records arrive in) and the lifecycle marks.
    CREATE TABLE containers (
        name             TEXT PRIMARY KEY NOT NULL,
        last_activity_ns INTEGER,
        launched_ns      INTEGER,
        removed_ns       INTEGER
    ) WITHOUT ROWID;
    ",
    // Version 2: login sessions and single-use tokens (hand-off links) of
    // berth's server, kept here so that they survive a restart. Keys are
    // whatever the caller gives (berth gives hashes of the secrets).
    "
    CREATE TABLE sessions (
        id         TEXT    PRIMARY KEY NOT NULL,
        data       TEXT    NOT NULL,
        expires_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_expiry ON sessions (expires_ns);

    CREATE TABLE single_use (
        id         TEXT    PRIMARY KEY NOT NULL,
        data       TEXT    NOT NULL,
        expires_ns INTEGER NOT NULL,
        used_ns    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX single_use_by_expiry ON single_use (expires_ns);
    ",
];

/// The schema version this crate writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Sets the connection up (WAL, `synchronous=NORMAL`, busy timeout) and
/// brings the schema to [`SCHEMA_VERSION`]. `name` names the database in
/// errors.
pub(crate) fn prepare(conn: &mut Connection, name: &str) -> Result<()> {
    let sqlite = |context: &str| {
        let context = format!("{context} of {name}");
        move |source| Error::Sqlite { context, source }
    };
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite("setting the busy timeout"))?;
    // WAL lets a commit append to the log instead of rewriting pages, and
    // with synchronous=NORMAL a commit does not wait for fsync: a power
    // loss can lose the last commits, never corrupt the file. That is the
    // right trade for activity records. In-memory databases answer
    // "memory" here, which is fine.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite("switching to WAL mode"))?;
    if mode != "wal" && mode != "memory" {
        tracing::warn!(database = name, mode, "history database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite("setting synchronous=NORMAL"))?;
    migrate(conn, name)
}

fn migrate(conn: &mut Connection, name: &str) -> Result<()> {
    let sqlite = |source| Error::Sqlite { context: format!("migrating the schema of {name}"), source };
    // IMMEDIATE takes the write lock first, so two processes opening the
    // same new file do not both try to create the tables.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            applied_ns INTEGER NOT NULL
        )",
    )
    .map_err(sqlite)?;
    let found: i64 =
        tx.query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |row| row.get(0)).map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema { path: name.to_owned(), found, supported: SCHEMA_VERSION });
    }
    let now = to_nanos(SystemTime::now());
    for (version, migration) in (1..).zip(MIGRATIONS).skip(usize::try_from(found).unwrap_or(0)) {
        tx.execute_batch(migration).map_err(sqlite)?;
        tx.execute("INSERT INTO schema_version (version, applied_ns) VALUES (?1, ?2)", (version, now))
            .map_err(sqlite)?;
        tracing::debug!(database = name, version, "applied history schema migration");
    }
    tx.commit().map_err(sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn, "test").unwrap();
        prepare(&mut conn, "test").unwrap();
        let versions: i64 = conn.query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0)).unwrap();
        assert_eq!(versions, SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn, "test").unwrap();
        conn.execute("INSERT INTO schema_version VALUES (?1, 0)", [SCHEMA_VERSION + 1]).unwrap();
        let err = prepare(&mut conn, "test").unwrap_err();
        assert!(matches!(err, Error::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
    }
}
