//! Conversation memory in PostgreSQL, shared by replicas: the same rows as SQLite (tables
//! prefixed `lore_memory_`), created under an advisory lock so that replicas starting together
//! do not race, and each append locking its session's row (`FOR UPDATE`) so that two replicas
//! answering the same conversation number its turns one after the other.
//!
//! The connection is plain TCP (no TLS): meant for a database on the same host or private
//! network; a URL asking for `sslmode=require` is refused at connect.

use std::sync::Mutex;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

/// A statement parameter.
type Param<'a> = dyn ToSql + Sync + 'a;

use super::{MemoryError, SessionRow, SummaryRow, Tx};

/// `pg_advisory_lock` key of the schema migration ("lore mem" in ASCII).
const SCHEMA_LOCK: i64 = 0x6c6f_7265_206d_656d;
/// The schema this version writes; recorded in `lore_memory_meta`.
const SCHEMA_VERSION: &str = "1";

pub(super) struct Postgres {
    shown: String,
    /// Kept to reconnect after the server restarts or fails over; never shown.
    config: postgres::Config,
    client: Mutex<Client>,
}

impl Postgres {
    pub(super) fn connect(url: &str) -> Result<Postgres, MemoryError> {
        let shown = super::redacted_url(url);
        let err = |e: postgres::Error| MemoryError::Postgres { path: shown.clone(), message: describe(&e) };
        let mut config: postgres::Config = url.parse().map_err(err)?;
        // A dead server or network fails a request in seconds instead of hanging a thread.
        config.connect_timeout(Duration::from_secs(5)).keepalives(true).keepalives_idle(Duration::from_secs(30));
        config.options("-c statement_timeout=10000");
        let mut client = config.connect(NoTls).map_err(err)?;
        // Replicas starting together wait for each other here instead of racing on CREATE.
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS lore_memory_meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
             CREATE TABLE IF NOT EXISTS lore_memory_sessions (
                 id BYTEA PRIMARY KEY, updated BIGINT NOT NULL, next_seq BIGINT NOT NULL,
                 bytes BIGINT NOT NULL, summary BYTEA);
             CREATE TABLE IF NOT EXISTS lore_memory_turns (
                 session BYTEA NOT NULL, seq BIGINT NOT NULL, sealed BYTEA NOT NULL,
                 PRIMARY KEY (session, seq));
             CREATE INDEX IF NOT EXISTS lore_memory_sessions_by_age ON lore_memory_sessions (updated);",
        )
        .map_err(err)?;
        let version: Option<Vec<u8>> = tx
            .query_opt("SELECT value FROM lore_memory_meta WHERE key = 'schema'", &[])
            .map_err(err)?
            .map(|row| row.get(0));
        match version.as_deref() {
            None => {
                tx.execute(
                    "INSERT INTO lore_memory_meta (key, value) VALUES ('schema', $1)",
                    &[&SCHEMA_VERSION.as_bytes()],
                )
                .map_err(err)?;
            }
            Some(v) if v == SCHEMA_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(MemoryError::Postgres {
                    path: shown.clone(),
                    message: format!(
                        "the memory tables are schema {}, this lore writes {SCHEMA_VERSION}; upgrade lore",
                        String::from_utf8_lossy(v)
                    ),
                });
            }
        }
        tx.commit().map_err(err)?;
        Ok(Postgres { shown, config, client: Mutex::new(client) })
    }

    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    pub(super) fn transaction<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, MemoryError>,
    ) -> Result<T, MemoryError> {
        let mut client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let err = |e: postgres::Error| MemoryError::Postgres { path: self.shown.clone(), message: describe(&e) };
        if client.is_closed() {
            // The server restarted or failed over: one new connection, or this request fails.
            tracing::warn!(memory = %self.shown, "the PostgreSQL connection was lost; reconnecting");
            *client = self.config.connect(NoTls).map_err(err)?;
        }
        let tx = client.transaction().map_err(err)?;
        let mut wrapped = PgTx { tx, shown: &self.shown };
        let value = f(&mut wrapped)?;
        wrapped.tx.commit().map_err(err)?;
        Ok(value)
    }
}

/// The server's message when there is one (`postgres::Error`'s display is only "db error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(e) {
                text = format!("{text}: {source}");
            }
            text
        }
    }
}

struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    shown: &'a str,
}

impl PgTx<'_> {
    fn err(&self) -> impl Fn(postgres::Error) -> MemoryError + '_ {
        |e| MemoryError::Postgres { path: self.shown.to_string(), message: describe(&e) }
    }
}

impl Tx for PgTx<'_> {
    fn lock_session(&mut self, id: &[u8], now: i64) -> Result<SessionRow, MemoryError> {
        // Another replica may delete the row between the insert and the lock (a DELETE or the
        // size limit): then it is made again.
        for _ in 0..3 {
            self.tx
                .execute(
                    "INSERT INTO lore_memory_sessions (id, updated, next_seq, bytes) VALUES ($1, $2, 0, 0)
                     ON CONFLICT (id) DO NOTHING",
                    &[&id as &Param<'_>, &now],
                )
                .map_err(self.err())?;
            let row = self
                .tx
                .query_opt("SELECT next_seq, bytes, updated FROM lore_memory_sessions WHERE id = $1 FOR UPDATE", &[&id])
                .map_err(self.err())?;
            if let Some(row) = row {
                return Ok(SessionRow { next_seq: row.get(0), bytes: row.get(1), updated: row.get(2) });
            }
        }
        Err(MemoryError::Postgres {
            path: self.shown.to_string(),
            message: "a session kept vanishing while a turn was being stored".into(),
        })
    }

    fn summary(&mut self, id: &[u8]) -> Result<Option<SummaryRow>, MemoryError> {
        let row = self
            .tx
            .query_opt("SELECT summary, updated FROM lore_memory_sessions WHERE id = $1", &[&id])
            .map_err(self.err())?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn session_bytes(&mut self, id: &[u8]) -> Result<Option<i64>, MemoryError> {
        let row =
            self.tx.query_opt("SELECT bytes FROM lore_memory_sessions WHERE id = $1", &[&id]).map_err(self.err())?;
        Ok(row.map(|r| r.get(0)))
    }

    fn turns(&mut self, id: &[u8], limit: i64) -> Result<Vec<(i64, Vec<u8>)>, MemoryError> {
        let rows = self
            .tx
            .query(
                "SELECT seq, sealed FROM lore_memory_turns WHERE session = $1 ORDER BY seq LIMIT $2",
                &[&id as &Param<'_>, &limit],
            )
            .map_err(self.err())?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn count_turns(&mut self, id: &[u8]) -> Result<i64, MemoryError> {
        let row = self
            .tx
            .query_one("SELECT COUNT(*) FROM lore_memory_turns WHERE session = $1", &[&id])
            .map_err(self.err())?;
        Ok(row.get(0))
    }

    fn insert_turn(&mut self, id: &[u8], seq: i64, sealed: &[u8]) -> Result<(), MemoryError> {
        self.tx
            .execute(
                "INSERT INTO lore_memory_turns (session, seq, sealed) VALUES ($1, $2, $3)",
                &[&id as &Param<'_>, &seq, &sealed],
            )
            .map(drop)
            .map_err(self.err())
    }

    fn delete_turns_through(&mut self, id: &[u8], seq: i64) -> Result<(), MemoryError> {
        self.tx
            .execute("DELETE FROM lore_memory_turns WHERE session = $1 AND seq <= $2", &[&id as &Param<'_>, &seq])
            .map(drop)
            .map_err(self.err())
    }

    fn update_session(&mut self, id: &[u8], now: i64, next_seq: i64, bytes: i64) -> Result<(), MemoryError> {
        self.tx
            .execute(
                "UPDATE lore_memory_sessions SET updated = $2, next_seq = $3, bytes = $4 WHERE id = $1",
                &[&id as &Param<'_>, &now, &next_seq, &bytes],
            )
            .map(drop)
            .map_err(self.err())
    }

    fn set_summary(&mut self, id: &[u8], sealed: Option<&[u8]>, bytes: i64) -> Result<(), MemoryError> {
        self.tx
            .execute(
                "UPDATE lore_memory_sessions SET summary = $2, bytes = $3 WHERE id = $1",
                &[&id as &Param<'_>, &sealed, &bytes],
            )
            .map(drop)
            .map_err(self.err())
    }

    fn delete_session(&mut self, id: &[u8]) -> Result<bool, MemoryError> {
        // The session row first: it waits for an append holding it (FOR UPDATE), and the turns
        // are then deleted by a statement that sees what that append committed, so none is
        // left behind to come back when the id is used again.
        let existed =
            self.tx.execute("DELETE FROM lore_memory_sessions WHERE id = $1", &[&id]).map_err(self.err())? > 0;
        self.tx.execute("DELETE FROM lore_memory_turns WHERE session = $1", &[&id]).map_err(self.err())?;
        Ok(existed)
    }

    fn snapshot(&mut self) -> Result<(), MemoryError> {
        // The summary and the turns read in one snapshot, not across another replica's fold.
        self.tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").map_err(self.err())
    }

    fn expire(&mut self, cutoff: i64) -> Result<usize, MemoryError> {
        self.tx
            .execute(
                "DELETE FROM lore_memory_turns WHERE session IN (SELECT id FROM lore_memory_sessions WHERE updated < $1)",
                &[&cutoff],
            )
            .map_err(self.err())?;
        let n =
            self.tx.execute("DELETE FROM lore_memory_sessions WHERE updated < $1", &[&cutoff]).map_err(self.err())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn total_bytes(&mut self) -> Result<i64, MemoryError> {
        let row = self
            .tx
            .query_one("SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM lore_memory_sessions", &[])
            .map_err(self.err())?;
        Ok(row.get(0))
    }

    fn sessions_by_age(&mut self, limit: i64) -> Result<Vec<(Vec<u8>, i64)>, MemoryError> {
        let rows = self
            .tx
            .query("SELECT id, bytes FROM lore_memory_sessions ORDER BY updated, id LIMIT $1", &[&limit])
            .map_err(self.err())?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn key_check(&mut self, fresh: &[u8]) -> Result<Vec<u8>, MemoryError> {
        self.tx
            .execute(
                "INSERT INTO lore_memory_meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING",
                &[&fresh],
            )
            .map_err(self.err())?;
        let row =
            self.tx.query_one("SELECT value FROM lore_memory_meta WHERE key = 'key_check'", &[]).map_err(self.err())?;
        Ok(row.get(0))
    }
}
