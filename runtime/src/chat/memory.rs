//! Conversation memory: one SQLite file (WAL) or a PostgreSQL database shared by replicas
//! (`LORE_MEMORY=postgres://…`), every message sealed with AES-256-GCM under a key derived
//! for memory alone, bounded in turns per session, session age and total size. The two
//! databases hold the same rows, sealed the same way; [`Tx`] is the handful of statements
//! the logic here needs, written once per database in `sqlite.rs` and `pg.rs`.
//!
//! Rows name a session by a keyed hash of its id, and hold each turn as `nonce || ciphertext`
//! whose associated data is that hash and the turn's number, so a turn cannot be moved to
//! another session or place unnoticed. `strings` on the file shows no message text.
//! A commit happens before a turn is acknowledged; in WAL mode with `synchronous=NORMAL` a
//! committed transaction survives the process being killed (only a power cut may lose the last
//! ones), at the price of no fsync per message.

#[cfg(feature = "postgres")]
mod pg;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const NONCE_LEN: usize = 12;
/// Sealed under the memory key when the file is created; opening it proves the key.
const KEY_CHECK: &[u8] = b"lore memory v1";
/// Longest summary of folded turns kept, in bytes.
const MAX_SUMMARY_BYTES: usize = 2048;
/// Expired sessions are deleted (and the size total recounted) once every this many appends.
const EXPIRE_EVERY: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("conversation memory {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("conversation memory {path}: {message}")]
    Postgres { path: String, message: String },
    #[error(
        "conversation memory {path} was sealed with another memory key; give the key it was created with (LORE_MEMORY_KEY or LORE_MEMORY_KEY_FILE) or a new file"
    )]
    WrongKey { path: String },
    #[error("conversation memory {path}: a stored turn fails authentication (damaged or tampered with)")]
    Damaged { path: String },
}

/// The limits that keep memory bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Turns kept verbatim per session (a question and its answer are two); older ones are
    /// folded into the session's summary.
    pub max_turns: usize,
    /// A session untouched this long is deleted.
    pub ttl: Duration,
    /// Sealed bytes kept over all sessions; the least recently used sessions go first.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_turns: 40, ttl: Duration::from_secs(7 * 24 * 3600), max_bytes: 256 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    /// Chunk ids an answer cited (empty for questions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<String>,
    /// The self-contained question retrieval used (questions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_question: Option<String>,
}

/// What a session remembers: the summary of folded turns and the turns kept verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub summary: Option<String>,
    pub turns: Vec<Turn>,
}

/// A session's row.
#[derive(Debug, Clone, Copy)]
struct SessionRow {
    next_seq: i64,
    bytes: i64,
    updated: i64,
}

/// A session's sealed summary (if any) and its last update.
type SummaryRow = (Option<Vec<u8>>, i64);

/// The statements memory needs, inside one transaction of either database. Errors are
/// already [`MemoryError`]s naming the store.
trait Tx {
    /// Create the session's row when absent (updated `now`, empty), then read it, locking it
    /// against other writers until commit (PostgreSQL: `FOR UPDATE`; SQLite: the write lock).
    fn lock_session(&mut self, id: &[u8], now: i64) -> Result<SessionRow, MemoryError>;
    /// The session's summary (sealed) and last update, if the session exists.
    fn summary(&mut self, id: &[u8]) -> Result<Option<SummaryRow>, MemoryError>;
    /// The session's bytes, if it exists.
    fn session_bytes(&mut self, id: &[u8]) -> Result<Option<i64>, MemoryError>;
    /// The session's turns (seq, sealed), oldest first, at most `limit`.
    fn turns(&mut self, id: &[u8], limit: i64) -> Result<Vec<(i64, Vec<u8>)>, MemoryError>;
    fn count_turns(&mut self, id: &[u8]) -> Result<i64, MemoryError>;
    fn insert_turn(&mut self, id: &[u8], seq: i64, sealed: &[u8]) -> Result<(), MemoryError>;
    /// Delete the turns up to and including `seq`.
    fn delete_turns_through(&mut self, id: &[u8], seq: i64) -> Result<(), MemoryError>;
    fn update_session(&mut self, id: &[u8], now: i64, next_seq: i64, bytes: i64) -> Result<(), MemoryError>;
    /// Replace the summary (`None` clears it) and the byte count.
    fn set_summary(&mut self, id: &[u8], sealed: Option<&[u8]>, bytes: i64) -> Result<(), MemoryError>;
    /// Delete the session and its turns; true when it existed.
    fn delete_session(&mut self, id: &[u8]) -> Result<bool, MemoryError>;
    /// Delete every session last updated before `cutoff`; returns how many.
    fn expire(&mut self, cutoff: i64) -> Result<usize, MemoryError>;
    fn total_bytes(&mut self) -> Result<i64, MemoryError>;
    /// The `limit` least recently updated sessions (id, bytes), oldest first.
    fn sessions_by_age(&mut self, limit: i64) -> Result<Vec<(Vec<u8>, i64)>, MemoryError>;
    /// The sealed key check, storing `fresh` first when there is none (concurrent starters
    /// agree on whichever was stored first).
    fn key_check(&mut self, fresh: &[u8]) -> Result<Vec<u8>, MemoryError>;
    /// Make the rest of this (read-only) transaction read one snapshot. SQLite's transactions
    /// already do; PostgreSQL's default, READ COMMITTED, does not.
    fn snapshot(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }
}

/// Where the rows live.
enum Store {
    Sqlite(sqlite::Sqlite),
    #[cfg(feature = "postgres")]
    Postgres(Box<pg::Postgres>),
}

fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// A database URL fit for logs: the user and host kept, the password and the query (which
/// may hold `password=`) dropped. The credentials end at the first `@`, as libpq and
/// tokio-postgres read them, so a `/` or `:` in a password does not leak it.
fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(a database URL)".to_string() };
    let (user, host_and_path) = match rest.split_once('@') {
        Some((credentials, after)) => (Some(credentials.split(':').next().unwrap_or_default()), after),
        None => (None, rest),
    };
    let host_and_path = host_and_path.split('?').next().unwrap_or_default();
    match user {
        Some(user) => format!("{scheme}://{user}:***@{host_and_path}"),
        None => format!("{scheme}://{host_and_path}"),
    }
}

/// The memory store. One connection behind a mutex: every call is a few row reads or one
/// short transaction, far shorter than the retrieval around it.
pub struct Memory {
    path: String,
    store: Store,
    cipher: Aes256Gcm,
    id_key: [u8; 32],
    limits: Limits,
    /// Sealed bytes over all sessions (turns and summaries), kept as rows change so that no
    /// append scans the table; recounted at open and with every expiry pass.
    total: AtomicI64,
    appends: AtomicU64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("path", &self.path).field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The memory cipher key and the session-id hashing key, both derived from the configured
/// memory key (never used as is).
fn derive(master: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let hk = Hkdf::<Sha256>::new(Some(b"lore-memory"), master);
    let mut seal = [0u8; 32];
    let mut ids = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 8160; expand cannot fail.
    let _ = hk.expand(b"seal messages v1", &mut seal);
    let _ = hk.expand(b"session ids v1", &mut ids);
    (seal, ids)
}

impl Memory {
    /// Open (or create) the memory at `location`: a file path, `:memory:` for a store that
    /// lives as long as the process, or a `postgres://` URL (tables created under an advisory
    /// lock, so replicas starting together do not race).
    pub fn open(location: &Path, master_key: &[u8; 32], limits: Limits) -> Result<Memory, MemoryError> {
        let text = location.to_string_lossy();
        let (path, store) = if is_postgres_url(&text) {
            #[cfg(feature = "postgres")]
            {
                let store = pg::Postgres::connect(&text)?;
                (store.shown().to_string(), Store::Postgres(Box::new(store)))
            }
            #[cfg(not(feature = "postgres"))]
            return Err(MemoryError::Postgres {
                path: redacted_url(&text),
                message: "this lore was built without PostgreSQL support (the `postgres` feature)".into(),
            });
        } else {
            let path = location.display().to_string();
            (path.clone(), Store::Sqlite(sqlite::Sqlite::open(location, &path)?))
        };
        let (seal_key, id_key) = derive(master_key);
        let memory = Memory {
            path,
            store,
            cipher: Aes256Gcm::new((&seal_key).into()),
            id_key,
            limits,
            total: AtomicI64::new(0),
            appends: AtomicU64::new(0),
        };
        memory.check_key()?;
        memory.expire()?;
        Ok(memory)
    }

    /// Run `f` in one transaction, committed when it returns `Ok`.
    fn transaction<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        match &self.store {
            Store::Sqlite(db) => db.transaction(f),
            #[cfg(feature = "postgres")]
            Store::Postgres(db) => db.transaction(f),
        }
    }

    /// Sessions last touched before this are expired (a time to live beyond i64 never expires).
    fn cutoff(&self) -> i64 {
        now_unix().saturating_sub(i64::try_from(self.limits.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    fn check_key(&self) -> Result<(), MemoryError> {
        let fresh = self.seal(KEY_CHECK, b"key_check");
        let stored = self.transaction(|tx| tx.key_check(&fresh))?;
        match self.open_sealed(&stored, b"key_check") {
            Some(plain) if plain == KEY_CHECK => Ok(()),
            _ => Err(MemoryError::WrongKey { path: self.path.clone() }),
        }
    }

    /// The stored name of a session: a keyed hash, so the file does not list visitors' ids.
    fn session_key(&self, session: &str) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.id_key);
        h.update(session.as_bytes());
        h.finalize().to_vec()
    }

    fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The OS random source failing is not recoverable; a fixed nonce would be worse.
        if getrandom::fill(&mut nonce).is_err() {
            panic!("the operating system's random source failed");
        }
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts any message below 64 GiB"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn open_sealed(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).ok()
    }

    fn turn_aad(session: &[u8], seq: i64) -> Vec<u8> {
        let mut aad = session.to_vec();
        aad.extend_from_slice(&seq.to_le_bytes());
        aad
    }

    fn summary_aad(session: &[u8]) -> Vec<u8> {
        let mut aad = session.to_vec();
        aad.extend_from_slice(b"summary");
        aad
    }

    fn damaged(&self) -> MemoryError {
        MemoryError::Damaged { path: self.path.clone() }
    }

    fn open_turn(&self, key: &[u8], seq: i64, sealed: &[u8]) -> Result<Turn, MemoryError> {
        let plain = self.open_sealed(sealed, &Memory::turn_aad(key, seq)).ok_or_else(|| self.damaged())?;
        serde_json::from_slice(&plain).map_err(|_| self.damaged())
    }

    /// The session's summary and kept turns, oldest first; empty for an unknown session.
    pub fn history(&self, session: &str) -> Result<History, MemoryError> {
        let key = self.session_key(session);
        let cutoff = self.cutoff();
        let (summary, rows) = self.transaction(|tx| {
            tx.snapshot()?;
            let Some((summary, updated)) = tx.summary(&key)? else { return Ok((None, None)) };
            if updated < cutoff {
                return Ok((None, None));
            }
            Ok((summary, Some(tx.turns(&key, i64::MAX)?)))
        })?;
        let Some(rows) = rows else { return Ok(History::default()) };
        let summary = match summary {
            Some(sealed) => {
                let plain = self.open_sealed(&sealed, &Memory::summary_aad(&key)).ok_or_else(|| self.damaged())?;
                Some(String::from_utf8(plain).map_err(|_| self.damaged())?)
            }
            None => None,
        };
        let turns = rows.iter().map(|(seq, sealed)| self.open_turn(&key, *seq, sealed)).collect::<Result<_, _>>()?;
        Ok(History { summary, turns })
    }

    /// Append turns in one transaction; returns once they are committed. Turns beyond the
    /// session's limit are folded into its summary by `summarize` (given the old summary and
    /// the turns to fold).
    pub fn append(
        &self,
        session: &str,
        new_turns: &[Turn],
        summarize: &dyn Fn(Option<&str>, &[Turn]) -> String,
    ) -> Result<(), MemoryError> {
        let key = self.session_key(session);
        let now = now_unix();
        let cutoff = self.cutoff();
        let max = self.limits.max_turns.max(2) as i64;
        let (old_bytes, bytes) = self.transaction(|tx| {
            let row = tx.lock_session(&key, now)?;
            let old_bytes = row.bytes;
            let (mut next_seq, mut bytes) = (row.next_seq, row.bytes);
            if row.updated < cutoff {
                // An expired session starts again from nothing.
                tx.delete_turns_through(&key, i64::MAX)?;
                tx.set_summary(&key, None, 0)?;
                (next_seq, bytes) = (0, 0);
            }
            for turn in new_turns {
                let plain = serde_json::to_vec(turn).unwrap_or_default();
                let sealed = self.seal(&plain, &Memory::turn_aad(&key, next_seq));
                bytes += sealed.len() as i64;
                tx.insert_turn(&key, next_seq, &sealed)?;
                next_seq += 1;
            }
            tx.update_session(&key, now, next_seq, bytes)?;
            // Fold the oldest turns into the summary once the session holds too many.
            let count = tx.count_turns(&key)?;
            if count > max {
                let rows = tx.turns(&key, count - max / 2)?;
                let freed: i64 = rows.iter().map(|(_, sealed)| sealed.len() as i64).sum();
                let old = rows
                    .iter()
                    .map(|(seq, sealed)| self.open_turn(&key, *seq, sealed))
                    .collect::<Result<Vec<_>, _>>()?;
                let (previous, _) = tx.summary(&key)?.unwrap_or((None, now));
                let previous_len = previous.as_ref().map_or(0, |p| p.len() as i64);
                let previous = previous
                    .and_then(|s| self.open_sealed(&s, &Memory::summary_aad(&key)))
                    .and_then(|p| String::from_utf8(p).ok());
                let mut summary = summarize(previous.as_deref(), &old);
                truncate_to(&mut summary, MAX_SUMMARY_BYTES);
                let sealed = self.seal(summary.as_bytes(), &Memory::summary_aad(&key));
                tx.delete_turns_through(&key, rows.last().map_or(-1, |(seq, _)| *seq))?;
                // The summary counts towards the size limit like the turns it replaces.
                bytes = bytes - freed - previous_len + sealed.len() as i64;
                tx.set_summary(&key, Some(&sealed), bytes)?;
            }
            Ok((old_bytes, bytes))
        })?;
        self.total.fetch_add(bytes - old_bytes, Ordering::Relaxed);
        if self.appends.fetch_add(1, Ordering::Relaxed) % EXPIRE_EVERY == EXPIRE_EVERY - 1 {
            self.expire()?;
        }
        self.enforce_size()
    }

    /// How many of a session's oldest turns the next `append` of `adding` turns will fold into
    /// its summary, when it holds `kept` turns now (0: none).
    pub fn turns_to_fold(&self, kept: usize, adding: usize) -> usize {
        let max = self.limits.max_turns.max(2);
        let count = kept + adding;
        if count > max { count - max / 2 } else { 0 }
    }

    /// Forget a session; true when there was one.
    pub fn delete(&self, session: &str) -> Result<bool, MemoryError> {
        let key = self.session_key(session);
        let (existed, bytes) = self.transaction(|tx| {
            let bytes = tx.session_bytes(&key)?.unwrap_or(0);
            Ok((tx.delete_session(&key)?, bytes))
        })?;
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        Ok(existed)
    }

    /// Delete sessions older than the time to live (at open, and every few hundred appends),
    /// and count the size total again (with replicas, of every replica's sessions).
    pub fn expire(&self) -> Result<usize, MemoryError> {
        let cutoff = self.cutoff();
        let (n, total) = self.transaction(|tx| Ok((tx.expire(cutoff)?, tx.total_bytes()?)))?;
        self.total.store(total, Ordering::Relaxed);
        Ok(n)
    }

    /// Drop the least recently used sessions while the sealed total exceeds the limit.
    fn enforce_size(&self) -> Result<(), MemoryError> {
        let max = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        if self.total.load(Ordering::Relaxed) <= max {
            return Ok(());
        }
        let left = self.transaction(|tx| {
            let mut total = tx.total_bytes()?;
            while total > max {
                let oldest = tx.sessions_by_age(256)?;
                if oldest.is_empty() {
                    break;
                }
                for (id, bytes) in oldest {
                    if total <= max {
                        break;
                    }
                    tx.delete_session(&id)?;
                    total -= bytes;
                }
            }
            Ok(total)
        })?;
        self.total.store(left, Ordering::Relaxed);
        Ok(())
    }

    /// Where the memory lives (for logs; a PostgreSQL URL without its password).
    pub fn location(&self) -> PathBuf {
        PathBuf::from(&self.path)
    }
}

/// Cut `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_to(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Memory {
        /// The SQLite connection, for tests that look at or damage the rows.
        fn sqlite(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
            match &self.store {
                Store::Sqlite(db) => db.lock(),
                #[cfg(feature = "postgres")]
                Store::Postgres(_) => panic!("not an SQLite memory"),
            }
        }
    }

    fn q(text: &str) -> Turn {
        Turn { role: Role::User, text: text.into(), citations: vec![], retrieval_question: None }
    }

    fn joined(prev: Option<&str>, turns: &[Turn]) -> String {
        let mut s = prev.unwrap_or("").to_string();
        for t in turns {
            s.push_str(&t.text);
            s.push(';');
        }
        s
    }

    #[test]
    fn database_passwords_never_reach_the_logs() {
        assert_eq!(
            redacted_url("postgres://lore:s3cret@127.0.0.1:5432/lore?sslmode=disable"),
            "postgres://lore:***@127.0.0.1:5432/lore"
        );
        assert_eq!(redacted_url("postgres://lore:ab/cd:ef@db/lore"), "postgres://lore:***@db/lore");
        assert_eq!(redacted_url("postgresql://db.internal/lore?password=x"), "postgresql://db.internal/lore");
        assert_eq!(redacted_url("not a url"), "(a database URL)");
    }

    #[test]
    fn turns_round_trip_and_fold_into_a_summary() {
        let limits = Limits { max_turns: 4, ..Limits::default() };
        let m = Memory::open(Path::new(":memory:"), &[7; 32], limits).expect("open");
        for i in 0..5 {
            m.append("s1", &[q(&format!("question {i}"))], &joined).expect("append");
        }
        let h = m.history("s1").expect("history");
        // Five turns over a limit of four: the oldest three are folded, two stay.
        assert_eq!(h.summary.as_deref(), Some("question 0;question 1;question 2;"));
        assert_eq!(h.turns.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["question 3", "question 4"]);
        assert_eq!(m.history("other").expect("history"), History::default());
        assert!(m.delete("s1").expect("delete"));
        assert_eq!(m.history("s1").expect("history"), History::default());
        assert!(!m.delete("s1").expect("delete"));
    }

    #[test]
    fn a_turn_moved_to_another_place_fails_authentication() {
        let m = Memory::open(Path::new(":memory:"), &[1; 32], Limits::default()).expect("open");
        m.append("a", &[q("first"), q("second")], &joined).expect("append");
        // The second turn's sealed bytes put in the first one's place.
        m.sqlite()
            .execute("UPDATE turns SET sealed = (SELECT t.sealed FROM turns t WHERE t.seq = 1) WHERE seq = 0", [])
            .expect("move");
        assert!(matches!(m.history("a"), Err(MemoryError::Damaged { .. })));
    }

    #[test]
    fn a_time_to_live_beyond_i64_never_expires() {
        let limits = Limits { ttl: Duration::from_secs(u64::MAX), ..Limits::default() };
        let m = Memory::open(Path::new(":memory:"), &[3; 32], limits).expect("open");
        m.append("s", &[q("kept")], &joined).expect("append");
        assert_eq!(m.history("s").expect("history").turns.len(), 1);
    }

    #[test]
    fn the_size_total_follows_appends_folds_and_deletes() {
        let limits = Limits { max_turns: 2, ..Limits::default() };
        let m = Memory::open(Path::new(":memory:"), &[4; 32], limits).expect("open");
        for i in 0..5 {
            m.append("a", &[q(&format!("question {i}"))], &joined).expect("append");
        }
        m.append("b", &[q("other")], &joined).expect("append");
        let counted: i64 = m.sqlite().query_row("SELECT SUM(bytes) FROM sessions", [], |r| r.get(0)).expect("sum");
        let actual: i64 = m
            .sqlite()
            .query_row(
                "SELECT (SELECT SUM(length(sealed)) FROM turns) + (SELECT COALESCE(SUM(length(summary)), 0) FROM sessions)",
                [],
                |r| r.get(0),
            )
            .expect("actual");
        assert_eq!(counted, actual);
        assert_eq!(m.total.load(Ordering::Relaxed), actual);
        m.delete("a").expect("delete");
        let left: i64 = m.sqlite().query_row("SELECT SUM(bytes) FROM sessions", [], |r| r.get(0)).expect("sum");
        assert_eq!(m.total.load(Ordering::Relaxed), left);
    }

    #[test]
    fn the_size_limit_drops_the_least_recently_used_sessions() {
        // One sealed turn of 150 characters takes about 200 bytes: room for one session.
        let limits = Limits { max_bytes: 300, ..Limits::default() };
        let m = Memory::open(Path::new(":memory:"), &[2; 32], limits).expect("open");
        m.append("old", &[q(&"x".repeat(150))], &joined).expect("append");
        m.append("new", &[q(&"y".repeat(150))], &joined).expect("append");
        assert_eq!(m.history("old").expect("history"), History::default());
        assert_eq!(m.history("new").expect("history").turns.len(), 1);
    }
}
