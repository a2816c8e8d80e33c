//! Conversation memory: one SQLite file (WAL), every message sealed with AES-256-GCM under a
//! key derived for memory alone, bounded in turns per session, session age and total size.
//!
//! Rows name a session by a keyed hash of its id, and hold each turn as `nonce || ciphertext`
//! whose associated data is that hash and the turn's number, so a turn cannot be moved to
//! another session or place unnoticed. `strings` on the file shows no message text.
//! A commit happens before a turn is acknowledged; in WAL mode with `synchronous=NORMAL` a
//! committed transaction survives the process being killed (only a power cut may lose the last
//! ones), at the price of no fsync per message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rusqlite::{Connection, OptionalExtension as _, params};
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

/// The memory store. One connection behind a mutex: every call is a few row reads or one
/// short transaction, far shorter than the retrieval around it.
pub struct Memory {
    path: String,
    conn: Mutex<Connection>,
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
    /// Open (or create) the memory at `location`: a file path, or `:memory:` for a store that
    /// lives as long as the process.
    pub fn open(location: &Path, master_key: &[u8; 32], limits: Limits) -> Result<Memory, MemoryError> {
        let path = location.display().to_string();
        let sql = |source| MemoryError::Sqlite { path: path.clone(), source };
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
        let (seal_key, id_key) = derive(master_key);
        let memory = Memory {
            path: path.clone(),
            conn: Mutex::new(conn),
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

    /// Sessions last touched before this are expired (a time to live beyond i64 never expires).
    fn cutoff(&self) -> i64 {
        now_unix().saturating_sub(i64::try_from(self.limits.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> MemoryError + '_ {
        |source| MemoryError::Sqlite { path: self.path.clone(), source }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_key(&self) -> Result<(), MemoryError> {
        let conn = self.lock();
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0))
            .optional()
            .map_err(self.sql())?;
        match stored {
            Some(sealed) => match self.open_sealed(&sealed, b"key_check") {
                Some(plain) if plain == KEY_CHECK => Ok(()),
                _ => Err(MemoryError::WrongKey { path: self.path.clone() }),
            },
            None => {
                let sealed = self.seal(KEY_CHECK, b"key_check");
                conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", params![sealed])
                    .map_err(self.sql())?;
                Ok(())
            }
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

    /// The session's summary and kept turns, oldest first; empty for an unknown session.
    pub fn history(&self, session: &str) -> Result<History, MemoryError> {
        let key = self.session_key(session);
        let conn = self.lock();
        let cutoff = self.cutoff();
        let summary: Option<(Option<Vec<u8>>, i64)> = conn
            .query_row("SELECT summary, updated FROM sessions WHERE id = ?1", params![key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.sql())?;
        let Some((summary, updated)) = summary else { return Ok(History::default()) };
        if updated < cutoff {
            return Ok(History::default());
        }
        let damaged = || MemoryError::Damaged { path: self.path.clone() };
        let summary = match summary {
            Some(sealed) => {
                let plain = self.open_sealed(&sealed, &Memory::summary_aad(&key)).ok_or_else(damaged)?;
                Some(String::from_utf8(plain).map_err(|_| damaged())?)
            }
            None => None,
        };
        let mut stmt =
            conn.prepare_cached("SELECT seq, sealed FROM turns WHERE session = ?1 ORDER BY seq").map_err(self.sql())?;
        let rows =
            stmt.query_map(params![key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))).map_err(self.sql())?;
        let mut turns = Vec::new();
        for row in rows {
            let (seq, sealed) = row.map_err(self.sql())?;
            let plain = self.open_sealed(&sealed, &Memory::turn_aad(&key, seq)).ok_or_else(damaged)?;
            turns.push(serde_json::from_slice(&plain).map_err(|_| damaged())?);
        }
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
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.sql())?;
        let now = now_unix();
        let existing: Option<(i64, i64, i64)> = tx
            .query_row("SELECT next_seq, bytes, updated FROM sessions WHERE id = ?1", params![key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(self.sql())?;
        let cutoff = self.cutoff();
        let old_bytes = existing.map_or(0, |(_, b, _)| b);
        let (mut next_seq, mut bytes) = match existing {
            // An expired session starts again from nothing.
            Some((_, _, updated)) if updated < cutoff => {
                tx.execute("DELETE FROM turns WHERE session = ?1", params![key]).map_err(self.sql())?;
                tx.execute("DELETE FROM sessions WHERE id = ?1", params![key]).map_err(self.sql())?;
                (0, 0)
            }
            Some((seq, bytes, _)) => (seq, bytes),
            None => (0, 0),
        };
        tx.execute(
            "INSERT OR IGNORE INTO sessions (id, updated, next_seq, bytes) VALUES (?1, ?2, 0, 0)",
            params![key, now],
        )
        .map_err(self.sql())?;
        for turn in new_turns {
            let plain = serde_json::to_vec(turn).unwrap_or_default();
            let sealed = self.seal(&plain, &Memory::turn_aad(&key, next_seq));
            bytes += sealed.len() as i64;
            tx.execute("INSERT INTO turns (session, seq, sealed) VALUES (?1, ?2, ?3)", params![key, next_seq, sealed])
                .map_err(self.sql())?;
            next_seq += 1;
        }
        tx.execute(
            "UPDATE sessions SET updated = ?2, next_seq = ?3, bytes = ?4 WHERE id = ?1",
            params![key, now, next_seq, bytes],
        )
        .map_err(self.sql())?;
        // Fold the oldest turns into the summary once the session holds too many.
        let count: i64 = tx
            .query_row("SELECT COUNT(*) FROM turns WHERE session = ?1", params![key], |r| r.get(0))
            .map_err(self.sql())?;
        let max = self.limits.max_turns.max(2) as i64;
        if count > max {
            let fold = count - max / 2;
            let mut old = Vec::new();
            let mut old_seqs = Vec::new();
            let mut freed = 0i64;
            {
                let mut stmt = tx
                    .prepare("SELECT seq, sealed FROM turns WHERE session = ?1 ORDER BY seq LIMIT ?2")
                    .map_err(self.sql())?;
                let rows = stmt
                    .query_map(params![key, fold], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                    .map_err(self.sql())?;
                for row in rows {
                    let (seq, sealed) = row.map_err(self.sql())?;
                    freed += sealed.len() as i64;
                    let plain = self
                        .open_sealed(&sealed, &Memory::turn_aad(&key, seq))
                        .ok_or(MemoryError::Damaged { path: self.path.clone() })?;
                    old.push(
                        serde_json::from_slice::<Turn>(&plain)
                            .map_err(|_| MemoryError::Damaged { path: self.path.clone() })?,
                    );
                    old_seqs.push(seq);
                }
            }
            let previous: Option<Vec<u8>> = tx
                .query_row("SELECT summary FROM sessions WHERE id = ?1", params![key], |r| r.get(0))
                .map_err(self.sql())?;
            let previous_len = previous.as_ref().map_or(0, |p| p.len() as i64);
            let previous = previous
                .and_then(|s| self.open_sealed(&s, &Memory::summary_aad(&key)))
                .and_then(|p| String::from_utf8(p).ok());
            let mut summary = summarize(previous.as_deref(), &old);
            truncate_to(&mut summary, MAX_SUMMARY_BYTES);
            let sealed = self.seal(summary.as_bytes(), &Memory::summary_aad(&key));
            let last = old_seqs.last().copied().unwrap_or(-1);
            tx.execute("DELETE FROM turns WHERE session = ?1 AND seq <= ?2", params![key, last]).map_err(self.sql())?;
            // The summary counts towards the size limit like the turns it replaces.
            bytes = bytes - freed - previous_len + sealed.len() as i64;
            tx.execute("UPDATE sessions SET summary = ?2, bytes = ?3 WHERE id = ?1", params![key, sealed, bytes])
                .map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())?;
        self.total.fetch_add(bytes - old_bytes, Ordering::Relaxed);
        drop(conn);
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
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.sql())?;
        let bytes: i64 = tx
            .query_row("SELECT bytes FROM sessions WHERE id = ?1", params![key], |r| r.get(0))
            .optional()
            .map_err(self.sql())?
            .unwrap_or(0);
        tx.execute("DELETE FROM turns WHERE session = ?1", params![key]).map_err(self.sql())?;
        let n = tx.execute("DELETE FROM sessions WHERE id = ?1", params![key]).map_err(self.sql())?;
        tx.commit().map_err(self.sql())?;
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        Ok(n > 0)
    }

    /// Delete sessions older than the time to live (at open, and every few hundred appends),
    /// and count the size total again.
    pub fn expire(&self) -> Result<usize, MemoryError> {
        let cutoff = self.cutoff();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.sql())?;
        tx.execute("DELETE FROM turns WHERE session IN (SELECT id FROM sessions WHERE updated < ?1)", params![cutoff])
            .map_err(self.sql())?;
        let n = tx.execute("DELETE FROM sessions WHERE updated < ?1", params![cutoff]).map_err(self.sql())?;
        let total: i64 =
            tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM sessions", [], |r| r.get(0)).map_err(self.sql())?;
        tx.commit().map_err(self.sql())?;
        self.total.store(total, Ordering::Relaxed);
        Ok(n)
    }

    /// Drop the least recently used sessions while the sealed total exceeds the limit.
    fn enforce_size(&self) -> Result<(), MemoryError> {
        let max = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        if self.total.load(Ordering::Relaxed) <= max {
            return Ok(());
        }
        let mut conn = self.lock();
        let total = self.total.load(Ordering::Relaxed);
        let tx = conn.transaction().map_err(self.sql())?;
        let mut over = total - max;
        let victims: Vec<(Vec<u8>, i64)> = {
            let mut stmt = tx.prepare("SELECT id, bytes FROM sessions ORDER BY updated, rowid").map_err(self.sql())?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.sql())?;
            let mut out = Vec::new();
            for row in rows {
                let (id, bytes): (Vec<u8>, i64) = row.map_err(self.sql())?;
                if over <= 0 {
                    break;
                }
                over -= bytes;
                out.push((id, bytes));
            }
            out
        };
        for (id, _) in &victims {
            tx.execute("DELETE FROM turns WHERE session = ?1", params![id]).map_err(self.sql())?;
            tx.execute("DELETE FROM sessions WHERE id = ?1", params![id]).map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())?;
        self.total.fetch_sub(victims.iter().map(|(_, b)| b).sum::<i64>(), Ordering::Relaxed);
        Ok(())
    }

    /// Where the memory lives (for logs).
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
        m.lock()
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
        let counted: i64 = m.lock().query_row("SELECT SUM(bytes) FROM sessions", [], |r| r.get(0)).expect("sum");
        let actual: i64 = m
            .lock()
            .query_row(
                "SELECT (SELECT SUM(length(sealed)) FROM turns) + (SELECT COALESCE(SUM(length(summary)), 0) FROM sessions)",
                [],
                |r| r.get(0),
            )
            .expect("actual");
        assert_eq!(counted, actual);
        assert_eq!(m.total.load(Ordering::Relaxed), actual);
        m.delete("a").expect("delete");
        let left: i64 = m.lock().query_row("SELECT SUM(bytes) FROM sessions", [], |r| r.get(0)).expect("sum");
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
