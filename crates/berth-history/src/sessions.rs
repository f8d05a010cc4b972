//! Login sessions and single-use tokens, in the history database.
//!
//! berth's server keeps its sessions here so that they survive a restart,
//! and its hand-off links, so that a link used once stays used. The store
//! knows nothing of what a session holds: `data` is the caller's text
//! (JSON), `id` the caller's key (berth passes a hash of the secret, so
//! the database alone holds no usable session).

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;
use crate::store::HistoryStore;
use crate::time::{from_nanos, to_nanos};

/// What [`HistoryStore::take_single_use`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The token was valid and unused; it is used now. Its data.
    Taken(String),
    /// The token exists but expired before it was used.
    Expired,
    /// The token was used before (at this time).
    Used(SystemTime),
    /// No such token (never issued, tampered with, or forgotten long after
    /// it expired).
    Unknown,
}

/// How long a single-use token is remembered after it expired, so that a
/// late second use is still reported as used or expired, not unknown.
pub const SINGLE_USE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

fn save_session(conn: &Connection, id: &str, data: &str, expires: SystemTime) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, data, expires_ns) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_ns = excluded.expires_ns",
    )?
    .execute((id, data, to_nanos(expires)))
    .map(drop)
}

fn load_session(conn: &Connection, id: &str, now: SystemTime) -> rusqlite::Result<Option<(String, SystemTime)>> {
    conn.prepare_cached("SELECT data, expires_ns FROM sessions WHERE id = ?1 AND expires_ns > ?2")?
        .query_row((id, to_nanos(now)), |row| Ok((row.get::<_, String>(0)?, from_nanos(row.get(1)?))))
        .optional()
}

fn take(conn: &mut Connection, id: &str, now: SystemTime) -> rusqlite::Result<TakeOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let row: Option<(String, i64, Option<i64>)> = tx
        .query_row("SELECT data, expires_ns, used_ns FROM single_use WHERE id = ?1", [id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let outcome = match row {
        None => TakeOutcome::Unknown,
        Some((_, _, Some(used))) => TakeOutcome::Used(from_nanos(used)),
        Some((_, expires, None)) if expires <= to_nanos(now) => TakeOutcome::Expired,
        Some((data, _, None)) => {
            tx.execute("UPDATE single_use SET used_ns = ?2 WHERE id = ?1", (id, to_nanos(now)))?;
            TakeOutcome::Taken(data)
        }
    };
    tx.commit()?;
    Ok(outcome)
}

fn prune(conn: &Connection, now: SystemTime) -> rusqlite::Result<u64> {
    let sessions = conn.execute("DELETE FROM sessions WHERE expires_ns <= ?1", [to_nanos(now)])?;
    let forget_before = now.checked_sub(SINGLE_USE_MEMORY).unwrap_or(std::time::UNIX_EPOCH);
    let tokens = conn.execute("DELETE FROM single_use WHERE expires_ns <= ?1", [to_nanos(forget_before)])?;
    Ok((sessions + tokens) as u64)
}

impl HistoryStore {
    /// Stores (or replaces) session `id` with `data`, valid until `expires`.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`](crate::Error::Sqlite) when the database cannot be
    /// written, [`Error::Closed`](crate::Error::Closed) after
    /// [`close`](Self::close).
    pub async fn save_session(&self, id: &str, data: &str, expires: SystemTime) -> Result<()> {
        let (id, data) = (id.to_owned(), data.to_owned());
        self.call(|| "saving a session".to_owned(), move |conn| save_session(conn, &id, &data, expires)).await
    }

    /// Session `id`'s data and expiry, unless it is missing or expired at
    /// `now`.
    ///
    /// # Errors
    ///
    /// As [`save_session`](Self::save_session), for reading.
    pub async fn load_session(&self, id: &str, now: SystemTime) -> Result<Option<(String, SystemTime)>> {
        let id = id.to_owned();
        self.call(|| "reading a session".to_owned(), move |conn| load_session(conn, &id, now)).await
    }

    /// Deletes session `id` (logout); true when it existed.
    ///
    /// # Errors
    ///
    /// As [`save_session`](Self::save_session).
    pub async fn delete_session(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.call(
            || "deleting a session".to_owned(),
            move |conn| conn.execute("DELETE FROM sessions WHERE id = ?1", [&id]).map(|n| n > 0),
        )
        .await
    }

    /// Stores single-use token `id` with `data`, usable until `expires`.
    ///
    /// # Errors
    ///
    /// As [`save_session`](Self::save_session); a token `id` that exists
    /// already is an [`Error::Sqlite`](crate::Error::Sqlite).
    pub async fn put_single_use(&self, id: &str, data: &str, expires: SystemTime) -> Result<()> {
        let (id, data) = (id.to_owned(), data.to_owned());
        self.call(
            || "storing a single-use token".to_owned(),
            move |conn| {
                conn.execute(
                    "INSERT INTO single_use (id, data, expires_ns) VALUES (?1, ?2, ?3)",
                    (&id, &data, to_nanos(expires)),
                )
                .map(drop)
            },
        )
        .await
    }

    /// Uses single-use token `id` at `now`: its data the first time, within
    /// its validity; afterwards why not. Atomic: of two concurrent uses,
    /// one gets the data.
    ///
    /// # Errors
    ///
    /// As [`save_session`](Self::save_session).
    pub async fn take_single_use(&self, id: &str, now: SystemTime) -> Result<TakeOutcome> {
        let id = id.to_owned();
        self.call(|| "using a single-use token".to_owned(), move |conn| take(conn, &id, now)).await
    }

    /// Deletes sessions expired at `now`, and single-use tokens expired
    /// more than [`SINGLE_USE_MEMORY`] before; returns how many rows went.
    ///
    /// # Errors
    ///
    /// As [`save_session`](Self::save_session).
    pub async fn prune_sessions(&self, now: SystemTime) -> Result<u64> {
        self.call(|| "pruning sessions".to_owned(), move |conn| prune(conn, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_expire_and_tokens_are_single_use() {
        let store = HistoryStore::in_memory().unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        store.save_session("a", "{\"user\":\"ann\"}", now + hour).await.unwrap();
        store.save_session("old", "{}", now - hour).await.unwrap();
        assert_eq!(store.load_session("a", now).await.unwrap().unwrap().0, "{\"user\":\"ann\"}");
        assert_eq!(store.load_session("old", now).await.unwrap(), None, "expired");
        assert_eq!(store.load_session("a", now + 2 * hour).await.unwrap(), None, "expires");
        store.save_session("a", "{}", now + hour).await.unwrap();
        assert_eq!(store.load_session("a", now).await.unwrap().unwrap().0, "{}", "replaced");
        assert!(store.delete_session("a").await.unwrap());
        assert_eq!(store.load_session("a", now).await.unwrap(), None);

        store.put_single_use("t", "link", now + hour).await.unwrap();
        store.put_single_use("late", "link", now - Duration::from_secs(1)).await.unwrap();
        assert!(store.put_single_use("t", "again", now + hour).await.is_err(), "ids are unique");
        assert_eq!(store.take_single_use("t", now).await.unwrap(), TakeOutcome::Taken("link".into()));
        assert!(matches!(store.take_single_use("t", now).await.unwrap(), TakeOutcome::Used(_)));
        assert_eq!(store.take_single_use("late", now).await.unwrap(), TakeOutcome::Expired);
        assert_eq!(store.take_single_use("never", now).await.unwrap(), TakeOutcome::Unknown);
        assert_eq!(store.prune_sessions(now).await.unwrap(), 1, "the expired session");
        assert_eq!(store.prune_sessions(now + SINGLE_USE_MEMORY + 2 * hour).await.unwrap(), 2, "both tokens");
    }
}
