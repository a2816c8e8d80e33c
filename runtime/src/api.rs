//! The wire: what clients send and get back over stdin and HTTP, and the one mapping from every
//! error to a code and an HTTP status. The engine's types never reach a client directly.

use serde::{Deserialize, Serialize};

use crate::engine::retrieval::Mode;
use crate::engine::{self, EngineError, QueryOptions};

/// Largest accepted question, in bytes.
pub const MAX_QUESTION_BYTES: usize = 2048;
/// Largest accepted `k`.
pub const MAX_K: usize = 1000;
/// `k` when a request gives none.
pub const DEFAULT_K: usize = 5;
/// Longest accepted knowledge-base, variant or user name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A query as clients send it, over stdin or HTTP (JSON body or query string).
#[derive(Debug, Clone, Default, Deserialize)]
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
    pub mode: Mode,
    /// The knowledge base to ask; the default one when absent (HTTP also takes it in the path).
    #[serde(default)]
    pub kb: Option<String>,
    /// Force this variant of the knowledge base (HTTP also takes `X-Lore-Variant`).
    #[serde(default)]
    pub variant: Option<String>,
    /// Who asks: the same user always gets the same variant while the weights stay the same
    /// (HTTP also takes `X-Lore-User`).
    #[serde(default)]
    pub user: Option<String>,
}

/// Why a request was refused before it reached an engine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("`q` is empty")]
    EmptyQuestion,
    #[error("`q` is {0} bytes; the limit is {MAX_QUESTION_BYTES}")]
    QuestionTooLong(usize),
    #[error("`k` must be between 1 and {MAX_K}, not {0}")]
    BadK(usize),
    #[error("`{field}` is {len} bytes; the limit is {MAX_NAME_BYTES}")]
    NameTooLong { field: &'static str, len: usize },
}

impl QueryRequest {
    /// A plain question with the default options.
    pub fn question(q: impl Into<String>) -> QueryRequest {
        QueryRequest { q: q.into(), ..QueryRequest::default() }
    }

    /// Check limits; returns the options to query with.
    pub fn options(&self) -> Result<QueryOptions, RequestError> {
        if self.q.trim().is_empty() {
            return Err(RequestError::EmptyQuestion);
        }
        if self.q.len() > MAX_QUESTION_BYTES {
            return Err(RequestError::QuestionTooLong(self.q.len()));
        }
        for (field, value) in [("kb", &self.kb), ("variant", &self.variant), ("user", &self.user)] {
            if let Some(v) = value
                && v.len() > MAX_NAME_BYTES
            {
                return Err(RequestError::NameTooLong { field, len: v.len() });
            }
        }
        let k = match self.k.unwrap_or(DEFAULT_K) {
            k @ 1..=MAX_K => k,
            k => return Err(RequestError::BadK(k)),
        };
        Ok(QueryOptions { k, include_off_topic: self.include_off_topic, mode: self.mode })
    }
}

/// How the variant that answered was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// The knowledge base has one variant.
    Only,
    /// From the user's name: the same user gets the same variant while the weights stay.
    User,
    /// No user was named, so a weighted random draw.
    Random,
    /// The request named the variant.
    Forced,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub id: String,
    /// The document the hit came from; passages of one document share it.
    pub doc: String,
    pub source: String,
    pub path: String,
    pub title: String,
    pub section: String,
    pub tags: Vec<String>,
    pub text: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArtifactRef {
    pub version: String,
    pub build_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopicSignals {
    /// The question speaks to the persona (has one of the artifact's addressing terms).
    pub addressed: bool,
    pub top3_similarity: f32,
    pub top3_background: f32,
    pub top3_probe: f32,
    pub top_probe: f32,
    pub term_coverage: f32,
    pub bm25_max: f32,
}

/// One answer, as every transport sends it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Answer {
    /// The knowledge base that answered.
    pub kb: String,
    /// Its variant that answered.
    pub variant: String,
    /// How that variant was chosen.
    pub assignment: Assignment,
    pub q: String,
    pub on_topic: bool,
    pub hits: Vec<Hit>,
    /// The best dense similarity, which `on_topic` compares with the artifact's threshold.
    pub top_similarity: f32,
    /// The best similarity to the artifact's background of generic, off-topic questions.
    pub background_similarity: f32,
    /// The signals behind `on_topic`.
    pub topic: TopicSignals,
    /// The artifact every part of this answer came from.
    pub artifact: ArtifactRef,
    pub took_us: u64,
}

impl Answer {
    pub fn new(kb: &str, variant: &str, assignment: Assignment, a: engine::Answer) -> Answer {
        Answer {
            kb: kb.to_string(),
            variant: variant.to_string(),
            assignment,
            q: a.q,
            on_topic: a.on_topic,
            hits: a
                .hits
                .into_iter()
                .map(|h| Hit {
                    id: h.id,
                    doc: h.doc,
                    source: h.source,
                    path: h.path,
                    title: h.title,
                    section: h.section,
                    tags: h.tags,
                    text: h.text,
                    score: h.score,
                })
                .collect(),
            top_similarity: a.top_similarity,
            background_similarity: a.background_similarity,
            topic: TopicSignals {
                addressed: a.topic.addressed,
                top3_similarity: a.topic.top3_similarity,
                top3_background: a.topic.top3_background,
                top3_probe: a.topic.top3_probe,
                top_probe: a.topic.top_probe,
                term_coverage: a.topic.term_coverage,
                bm25_max: a.topic.bm25_max,
            },
            artifact: ArtifactRef { version: a.artifact.version, build_id: a.artifact.build_id },
            took_us: a.took_us,
        }
    }
}

/// Longest accepted session id, in bytes (visible ASCII).
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// A chat message as clients send it to `/v1/chat` (or `/v1/kb/NAME/chat`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub message: String,
    /// The conversation this message continues; a new one is made when absent.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub kb: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

impl ChatRequest {
    /// Check limits of the message and the session id.
    pub fn check(&self) -> Result<(), ApiError> {
        let probe = QueryRequest { q: self.message.clone(), ..QueryRequest::default() };
        probe.options().map_err(|e| match e {
            RequestError::EmptyQuestion => ApiError::new(ErrorCode::BadRequest, "`message` is empty"),
            RequestError::QuestionTooLong(n) => ApiError::new(
                ErrorCode::QuestionTooLong,
                format!("`message` is {n} bytes; the limit is {MAX_QUESTION_BYTES}"),
            ),
            other => ApiError::from(other),
        })?;
        if let Some(id) = &self.session_id
            && (id.is_empty() || id.len() > MAX_SESSION_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("`session_id` must be 1 to {MAX_SESSION_ID_BYTES} visible ASCII characters"),
            ));
        }
        for (field, value) in [("kb", &self.kb), ("variant", &self.variant), ("user", &self.user)] {
            if let Some(v) = value
                && v.len() > MAX_NAME_BYTES
            {
                return Err(ApiError::from(RequestError::NameTooLong { field, len: v.len() }));
            }
        }
        Ok(())
    }
}

/// One chat answer, as `/v1/chat` sends it (the last event of a stream carries it too).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatAnswer {
    pub answer: String,
    pub citations: Vec<crate::chat::Citation>,
    pub on_topic: bool,
    /// Made without an LLM (none configured, or it failed: see `degraded`).
    pub extractive: bool,
    /// Why the LLM's answer was replaced by the extractive one, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<&'static str>,
    /// Served from the response cache (same artifact build, question and conversation).
    pub cached: bool,
    pub session_id: String,
    pub kb: String,
    pub variant: String,
    pub assignment: Assignment,
    pub artifact: ArtifactRef,
    /// The self-contained question retrieval used (the message joined to the one it follows).
    pub retrieval_question: String,
    #[serde(skip)]
    pub prompt_tokens: Option<u64>,
    #[serde(skip)]
    pub completion_tokens: Option<u64>,
    /// Where the time went: lore's own share is `took_us - timings.llm_us`.
    pub timings: ChatTimings,
    pub took_us: u64,
}

/// A chat answer's time, in microseconds, by part.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ChatTimings {
    /// Embedding the question and ranking.
    pub retrieval_us: u64,
    /// Reading the conversation from memory.
    pub memory_read_us: u64,
    /// Committing the question and the answer to memory.
    pub memory_write_us: u64,
    /// Waiting for the LLM (every attempt; 0 without one or from the cache).
    pub llm_us: u64,
    /// From the start of the request to the first piece of text handed to the transport.
    pub first_text_us: u64,
}

/// Every error a client can be sent, each with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    QuestionTooLong,
    BodyTooLarge,
    UnsupportedMediaType,
    NotFound,
    UnknownKb,
    UnknownVariant,
    NoDefaultKb,
    Unauthorized,
    AdminDisabled,
    NothingToRollBack,
    ReloadFailed,
    ArtifactChanged,
    ArtifactDamaged,
    EmbedderUnavailable,
    Overloaded,
    Timeout,
    UnknownSession,
    MemoryUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::QuestionTooLong => "question_too_long",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownKb => "unknown_kb",
            ErrorCode::UnknownVariant => "unknown_variant",
            ErrorCode::NoDefaultKb => "no_default_kb",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::AdminDisabled => "admin_disabled",
            ErrorCode::NothingToRollBack => "nothing_to_roll_back",
            ErrorCode::ReloadFailed => "reload_failed",
            ErrorCode::ArtifactChanged => "artifact_changed",
            ErrorCode::ArtifactDamaged => "artifact_damaged",
            ErrorCode::EmbedderUnavailable => "embedder_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::MemoryUnavailable => "memory_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound
            | ErrorCode::UnknownKb
            | ErrorCode::UnknownVariant
            | ErrorCode::NoDefaultKb
            | ErrorCode::UnknownSession => 404,
            ErrorCode::AdminDisabled => 404,
            ErrorCode::Timeout => 408,
            ErrorCode::NothingToRollBack => 409,
            ErrorCode::QuestionTooLong | ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ReloadFailed => 422,
            ErrorCode::Internal | ErrorCode::ArtifactDamaged => 500,
            ErrorCode::ArtifactChanged
            | ErrorCode::EmbedderUnavailable
            | ErrorCode::Overloaded
            | ErrorCode::MemoryUnavailable => 503,
        }
    }

    /// Whether the client is at fault (`lore query` exits 2 for these, 1 otherwise).
    pub fn is_client_error(self) -> bool {
        self.status() < 500
    }
}

/// The message of every 500: engine errors name server paths, so their detail is only logged.
pub const INTERNAL_ERROR_MESSAGE: &str = "internal error; see the server log";

/// An error as a client sees it: `{"error": {"code", "message", "request_id"?, ...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// What exists, when the client named something that does not (knowledge bases, variants).
    pub available: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), available: None }
    }

    pub fn with_available(mut self, names: Vec<String>) -> ApiError {
        self.available = Some(names);
        self
    }

    /// The JSON body, carrying the request id when there is one.
    pub fn body(&self, request_id: Option<&str>) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(available) = &self.available {
            error["available"] = available.clone().into();
        }
        if let Some(id) = request_id {
            error["request_id"] = id.into();
        }
        serde_json::json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for ApiError {}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let code = match e {
            RequestError::QuestionTooLong(_) => ErrorCode::QuestionTooLong,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<&EngineError> for ApiError {
    /// The client's view of an engine error; the caller logs the detail.
    fn from(e: &EngineError) -> ApiError {
        match e {
            EngineError::ArtifactChanged { .. } => {
                ApiError::new(ErrorCode::ArtifactChanged, "the artifact file was changed in place; see the server log")
            }
            EngineError::Embed(message) => {
                ApiError::new(ErrorCode::EmbedderUnavailable, format!("the embedder failed: {message}"))
            }
            // The detail names the artifact's path: it goes to the log, never to the client.
            EngineError::Container { .. } | EngineError::Malformed { .. } => ApiError::new(
                ErrorCode::ArtifactDamaged,
                "a part of the artifact read for this answer is damaged; see the server log",
            ),
            _ => ApiError::new(ErrorCode::Internal, INTERNAL_ERROR_MESSAGE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_failure_of_the_embedder_is_the_same_code_everywhere() {
        let e = EngineError::Embed("connection refused".into());
        let api = ApiError::from(&e);
        assert_eq!(api.code.as_str(), "embedder_unavailable");
        assert_eq!(api.code.status(), 503);
        assert!(!api.code.is_client_error());
        let damaged = ApiError::from(&EngineError::Malformed {
            path: "/srv/x.lore".into(),
            section: "texts",
            message: "m".into(),
        });
        assert_eq!(damaged.code, ErrorCode::ArtifactDamaged);
        assert!(!damaged.message.contains("/srv"), "paths never reach a client: {}", damaged.message);
    }

    #[test]
    fn request_limits_are_checked() {
        let mut r = QueryRequest::question("  ");
        assert_eq!(r.options(), Err(RequestError::EmptyQuestion));
        r.q = "lamp".into();
        r.k = Some(0);
        assert_eq!(r.options(), Err(RequestError::BadK(0)));
        r.k = None;
        r.user = Some("u".repeat(MAX_NAME_BYTES + 1));
        assert!(matches!(r.options(), Err(RequestError::NameTooLong { field: "user", .. })));
    }
}
