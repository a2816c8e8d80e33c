//! The lore runtime: open an artifact in milliseconds and answer questions from it.
//!
//! This crate never depends on YAML, on the compiler, or on anything only the compiler needs;
//! its only view of a knowledge base is the artifact.
#![deny(unsafe_code)]

pub mod engine;
pub mod http;
pub mod listener;
pub mod mapped;
pub mod retrieval;
pub mod stdin;

pub use engine::{Answer, Engine, EngineError, Hit, QueryOptions};
pub use mapped::LoadMode;

/// Largest accepted question, in bytes.
pub const MAX_QUESTION_BYTES: usize = 2048;
/// Largest accepted `k`.
pub const MAX_K: usize = 1000;
/// `k` when a request gives none.
pub const DEFAULT_K: usize = 5;

/// A query as clients send it, over stdin or HTTP.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub q: String,
    #[serde(default)]
    pub k: Option<usize>,
    /// Return the best hits even when the question is off topic (for evaluation and debugging).
    #[serde(default)]
    pub include_off_topic: bool,
    /// Which retrievers to use: `hybrid` (default), `bm25` or `dense`.
    #[serde(default)]
    pub mode: retrieval::Mode,
}

/// Why a request was refused before it reached the engine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("`q` is empty")]
    EmptyQuestion,
    #[error("`q` is {0} bytes; the limit is {MAX_QUESTION_BYTES}")]
    QuestionTooLong(usize),
    #[error("`k` must be between 1 and {MAX_K}, not {0}")]
    BadK(usize),
}

impl QueryRequest {
    /// Check limits; returns the options to query with.
    pub fn options(&self) -> Result<QueryOptions, RequestError> {
        Ok(QueryOptions { k: self.validate()?, include_off_topic: self.include_off_topic, mode: self.mode })
    }

    /// Check limits; returns the `k` to use.
    pub fn validate(&self) -> Result<usize, RequestError> {
        if self.q.trim().is_empty() {
            return Err(RequestError::EmptyQuestion);
        }
        if self.q.len() > MAX_QUESTION_BYTES {
            return Err(RequestError::QuestionTooLong(self.q.len()));
        }
        match self.k.unwrap_or(DEFAULT_K) {
            k @ 1..=MAX_K => Ok(k),
            k => Err(RequestError::BadK(k)),
        }
    }
}
