//! Conversation memory in SQLite: one file in WAL mode (or `:memory:`), one connection.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{MemoryError, SessionRow, SummaryRow, Tx};

pub(super) struct Sqlite {
    path: String,
    conn: Mutex<Connection>,
}

impl Sqlite {
    pub(super) fn open(location: &Path, path: &str) -> Result<Sqlite, MemoryError> {
        let sql = |source| MemoryError::Sqlite { path: path.to_string(), source };
        let conn =
            if path == ":memory:" { Connection::open_in_memory() } else { Connection::open(location) }.map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        // WAL: readers never wait for the writer; NORMAL: a commit survives a killed process.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS sessions (
                 id BLOB PRIMARY KEY, updated INTEGER NOT NULL, next_seq INTEGER NOT NULL,
                 bytes INTEGER NOT NULL, summary BLOB);
             CREATE TABLE IF NOT EXISTS turns (
                 session BLOB NOT NULL, seq INTEGER NOT NULL, sealed BLOB NOT NULL,
                 PRIMARY KEY (session, seq));
             CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (updated);",
        )
        .map_err(sql)?;
        Ok(Sqlite { path: path.to_string(), conn: Mutex::new(conn) })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn transaction<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, MemoryError>,
    ) -> Result<T, MemoryError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|source| MemoryError::Sqlite { path: self.path.clone(), source })?;
        let mut wrapped = SqliteTx { tx, path: &self.path };
        let value = f(&mut wrapped)?;
        wrapped.tx.commit().map_err(|source| MemoryError::Sqlite { path: self.path.clone(), source })?;
        Ok(value)
    }
}

struct SqliteTx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a str,
}

impl SqliteTx<'_> {
    fn err(&self) -> impl Fn(rusqlite::Error) -> MemoryError + '_ {
        |source| MemoryError::Sqlite { path: self.path.to_string(), source }
    }
}

impl Tx for SqliteTx<'_> {
    fn lock_session(&mut self, id: &[u8], now: i64) -> Result<SessionRow, MemoryError> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO sessions (id, updated, next_seq, bytes) VALUES (?1, ?2, 0, 0)",
                params![id, now],
            )
            .map_err(self.err())?;
        self.tx
            .query_row("SELECT next_seq, bytes, updated FROM sessions WHERE id = ?1", params![id], |r| {
                Ok(SessionRow { next_seq: r.get(0)?, bytes: r.get(1)?, updated: r.get(2)? })
            })
            .map_err(self.err())
    }

    fn summary(&mut self, id: &[u8]) -> Result<Option<SummaryRow>, MemoryError> {
        self.tx
            .query_row("SELECT summary, updated FROM sessions WHERE id = ?1", params![id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.err())
    }

    fn session_bytes(&mut self, id: &[u8]) -> Result<Option<i64>, MemoryError> {
        self.tx
            .query_row("SELECT bytes FROM sessions WHERE id = ?1", params![id], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    fn turns(&mut self, id: &[u8], limit: i64) -> Result<Vec<(i64, Vec<u8>)>, MemoryError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT seq, sealed FROM turns WHERE session = ?1 ORDER BY seq LIMIT ?2")
            .map_err(self.err())?;
        let rows = stmt.query_map(params![id, limit], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn count_turns(&mut self, id: &[u8]) -> Result<i64, MemoryError> {
        self.tx
            .query_row("SELECT COUNT(*) FROM turns WHERE session = ?1", params![id], |r| r.get(0))
            .map_err(self.err())
    }

    fn insert_turn(&mut self, id: &[u8], seq: i64, sealed: &[u8]) -> Result<(), MemoryError> {
        self.tx
            .execute("INSERT INTO turns (session, seq, sealed) VALUES (?1, ?2, ?3)", params![id, seq, sealed])
            .map(drop)
            .map_err(self.err())
    }

    fn delete_turns_through(&mut self, id: &[u8], seq: i64) -> Result<(), MemoryError> {
        self.tx
            .execute("DELETE FROM turns WHERE session = ?1 AND seq <= ?2", params![id, seq])
            .map(drop)
            .map_err(self.err())
    }

    fn update_session(&mut self, id: &[u8], now: i64, next_seq: i64, bytes: i64) -> Result<(), MemoryError> {
        self.tx
            .execute(
                "UPDATE sessions SET updated = ?2, next_seq = ?3, bytes = ?4 WHERE id = ?1",
                params![id, now, next_seq, bytes],
            )
            .map(drop)
            .map_err(self.err())
    }

    fn set_summary(&mut self, id: &[u8], sealed: Option<&[u8]>, bytes: i64) -> Result<(), MemoryError> {
        self.tx
            .execute("UPDATE sessions SET summary = ?2, bytes = ?3 WHERE id = ?1", params![id, sealed, bytes])
            .map(drop)
            .map_err(self.err())
    }

    fn delete_session(&mut self, id: &[u8]) -> Result<bool, MemoryError> {
        // The same order as PostgreSQL's (see memory/pg.rs); SQLite serialises writers anyway.
        let existed = self.tx.execute("DELETE FROM sessions WHERE id = ?1", params![id]).map_err(self.err())? > 0;
        self.tx.execute("DELETE FROM turns WHERE session = ?1", params![id]).map_err(self.err())?;
        Ok(existed)
    }

    fn expire(&mut self, cutoff: i64) -> Result<usize, MemoryError> {
        self.tx
            .execute("DELETE FROM turns WHERE session IN (SELECT id FROM sessions WHERE updated < ?1)", params![cutoff])
            .map_err(self.err())?;
        self.tx.execute("DELETE FROM sessions WHERE updated < ?1", params![cutoff]).map_err(self.err())
    }

    fn total_bytes(&mut self) -> Result<i64, MemoryError> {
        self.tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM sessions", [], |r| r.get(0)).map_err(self.err())
    }

    fn sessions_by_age(&mut self, limit: i64) -> Result<Vec<(Vec<u8>, i64)>, MemoryError> {
        let mut stmt =
            self.tx.prepare("SELECT id, bytes FROM sessions ORDER BY updated, rowid LIMIT ?1").map_err(self.err())?;
        let rows = stmt.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn key_check(&mut self, fresh: &[u8]) -> Result<Vec<u8>, MemoryError> {
        self.tx
            .execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?1)", params![fresh])
            .map_err(self.err())?;
        self.tx.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0)).map_err(self.err())
    }
}
