//! The one entry point every transport uses (stdin, HTTP, `lore query`, later chat): validate
//! a request, choose its engine (knowledge base, variant), run the query, record metrics, and
//! map every failure to one [`ApiError`]. Work that may block runs off the async workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::api::{Answer, ApiError, ChatAnswer, ChatRequest, ChatTimings, ErrorCode, QueryRequest};
use crate::chat::memory::{History, Memory, MemoryError, Role, Turn};
use crate::chat::{Chat, Origin};
use crate::metrics::Metrics;
use crate::registry::{Loaded, Registry, Report, Trigger};

/// Who is asking, from outside the request body: the HTTP path and headers.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// The knowledge base named by the path (`/v1/kb/NAME/query`).
    pub kb: Option<String>,
    /// `X-Lore-Variant`.
    pub variant: Option<String>,
    /// `X-Lore-User`.
    pub user: Option<String>,
}

/// The service: a registry of engines, the process's metrics, and the chat layer with its
/// conversation memory.
#[derive(Debug)]
pub struct Service {
    registry: Registry,
    metrics: Arc<Metrics>,
    chat: Chat,
    memory: Option<Memory>,
    /// Chat messages answered at once (each holds a blocking thread for up to the LLM's
    /// deadline); one more is refused with 503 rather than queued.
    chat_slots: Arc<tokio::sync::Semaphore>,
}

/// Chat messages answered at once unless configured.
pub const DEFAULT_CHAT_CONCURRENCY: usize = 64;

/// Where a chat message's conversation comes from.
#[derive(Debug, Clone)]
pub enum Conversation {
    /// The session in memory (`/v1/chat`); stored after the answer.
    Session(Option<String>),
    /// Given whole by the client (`/v1/chat/completions` sends every earlier message); not stored.
    Given(History),
}

fn memory_error(e: &MemoryError) -> ApiError {
    tracing::error!("conversation memory failed: {e}");
    ApiError::new(ErrorCode::MemoryUnavailable, "conversation memory is unavailable; see the server log")
}

/// A new session id: 128 random bits, hex. The id is the conversation's only credential
/// (`GET /v1/sessions/ID` shows it), so there is no predictable fallback.
fn new_session_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!("the random source failed: {e}");
        ApiError::new(ErrorCode::Internal, crate::api::INTERNAL_ERROR_MESSAGE)
    })?;
    Ok(format::text::hex(&bytes))
}

/// Where a session lives in memory: per knowledge base, so one knowledge base's conversation
/// never reaches another's prompt.
fn memory_key(kb: &str, session: &str) -> String {
    format!("{kb}\u{1f}{session}")
}

/// A value given in two places must agree.
fn merge(field: &str, from_route: Option<String>, from_body: Option<String>) -> Result<Option<String>, ApiError> {
    match (from_route, from_body) {
        (Some(a), Some(b)) if a != b => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("`{field}` is \"{b}\" in the body but \"{a}\" in the path or headers"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

impl Service {
    pub fn new(registry: Registry, metrics: Arc<Metrics>) -> Service {
        Service {
            registry,
            metrics,
            chat: Chat::default(),
            memory: None,
            chat_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_CHAT_CONCURRENCY)),
        }
    }

    /// At most `n` chat messages answered at once.
    pub fn with_chat_concurrency(mut self, n: usize) -> Service {
        self.chat_slots = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// A slot to answer one chat message in, or 503 when all are taken.
    pub fn chat_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.chat_slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(ErrorCode::Overloaded, "too many chat messages are being answered; try again in a moment")
        })
    }

    /// Check what a chat message names (knowledge base, variant) before a stream starts, so
    /// that a mistake is a plain error response rather than an error event after a 200.
    pub fn check_chat(&self, req: &ChatRequest, route: &Route) -> Result<(), ApiError> {
        req.check()?;
        let kb = merge("kb", route.kb.clone(), req.kb.clone())?;
        let variant = merge("variant", route.variant.clone(), req.variant.clone())?;
        merge("user", route.user.clone(), req.user.clone())?;
        self.registry.pick(kb.as_deref(), variant.as_deref(), None).map(|_| ())
    }

    /// Chat with this LLM client (extractive answers without one) and this memory.
    pub fn with_chat(mut self, chat: Chat, memory: Option<Memory>) -> Service {
        self.chat = chat;
        self.memory = memory;
        self
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// Answer one chat message on this thread: pick the engine, read the conversation, answer
    /// (streaming text to `on_token`, which cancels by returning false), store both turns.
    pub fn chat_blocking(
        &self,
        mut req: ChatRequest,
        conversation: Conversation,
        route: Route,
        request_id: &str,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<ChatAnswer, ApiError> {
        let started = Instant::now();
        req.check()?;
        req.kb = merge("kb", route.kb, req.kb.take())?;
        req.variant = merge("variant", route.variant, req.variant.take())?;
        req.user = merge("user", route.user, req.user.take())?;
        let (loaded, assignment) =
            self.registry.pick(req.kb.as_deref(), req.variant.as_deref(), req.user.as_deref()).inspect_err(|e| {
                let kb = self.registry.kb(req.kb.as_deref()).map_or("", |k| k.name.as_str());
                self.metrics.refused(kb, e.code.as_str());
            })?;
        let mut timings = ChatTimings::default();
        let (session, history, store) = match conversation {
            Conversation::Given(history) => (req.session_id.clone().unwrap_or_default(), history, false),
            Conversation::Session(id) => {
                let id = match id.or(req.session_id.clone()) {
                    Some(id) => id,
                    None => new_session_id()?,
                };
                let read = Instant::now();
                let history = match &self.memory {
                    Some(m) => m.history(&memory_key(&loaded.kb, &id)).map_err(|e| memory_error(&e))?,
                    None => History::default(),
                };
                timings.memory_read_us = read.elapsed().as_micros() as u64;
                (id, history, self.memory.is_some())
            }
        };
        let m = &loaded.metrics;
        let mut first_text = None;
        let mut on_text = |text: &str| {
            first_text.get_or_insert_with(|| started.elapsed().as_micros() as u64);
            on_token(text)
        };
        let reply = self.chat.respond(&loaded.engine, &req.message, &history, &mut on_text).map_err(|e| {
            let api = ApiError::from(&e);
            m.failed(&self.metrics, api.code.as_str());
            tracing::error!(request_id, kb = %loaded.kb, variant = %loaded.variant, "chat failed: {e}");
            api
        })?;
        let cancelled = reply.origin == Origin::Degraded("cancelled");
        if store
            && !cancelled
            && let Some(memory) = &self.memory
        {
            let turns = [
                Turn {
                    role: Role::User,
                    text: req.message.clone(),
                    citations: Vec::new(),
                    retrieval_question: Some(reply.retrieval_question.clone()),
                },
                Turn {
                    role: Role::Assistant,
                    text: reply.text.clone(),
                    citations: reply.citations.iter().map(|c| c.id.clone()).collect(),
                    retrieval_question: None,
                },
            ];
            // The oldest turns about to be folded are summarised by the LLM where there is one
            // (before the write, so no transaction waits for it); else the questions are kept.
            let fold = memory.turns_to_fold(history.turns.len(), turns.len()).min(history.turns.len());
            let by_llm = if fold > 0 && self.chat.llm().is_some() {
                let persona = self.chat.persona(&loaded.engine).map_err(|e| ApiError::from(&e))?;
                self.chat.summarize(&persona, history.summary.as_deref(), &history.turns[..fold])
            } else {
                None
            };
            let summarize = |previous: Option<&str>, folded: &[Turn]| match &by_llm {
                Some(summary) => summary.clone(),
                None => crate::chat::fold_summary(previous, folded),
            };
            let write = Instant::now();
            memory.append(&memory_key(&loaded.kb, &session), &turns, &summarize).map_err(|e| memory_error(&e))?;
            timings.memory_write_us = write.elapsed().as_micros() as u64;
        }
        let (extractive, degraded, origin) = match reply.origin {
            Origin::Llm => (false, None, "llm"),
            Origin::Extractive => (true, None, "extractive"),
            Origin::Refusal => (false, None, "refusal"),
            Origin::Degraded(reason) => (true, Some(reason), "degraded"),
        };
        self.metrics.chat_answered(
            &loaded.kb,
            &loaded.variant,
            origin,
            reply.cached,
            reply.text.len(),
            started.elapsed().as_secs_f64(),
        );
        tracing::info!(
            request_id,
            kb = %loaded.kb,
            variant = %loaded.variant,
            on_topic = reply.on_topic,
            origin,
            degraded,
            cached = reply.cached,
            answer_chars = reply.text.chars().count(),
            citations = reply.citations.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "chat answered"
        );
        Ok(ChatAnswer {
            answer: reply.text,
            citations: reply.citations,
            on_topic: reply.on_topic,
            extractive,
            degraded,
            cached: reply.cached,
            session_id: session,
            kb: loaded.kb.clone(),
            variant: loaded.variant.clone(),
            assignment,
            artifact: crate::api::ArtifactRef { version: reply.artifact.version, build_id: reply.artifact.build_id },
            retrieval_question: reply.retrieval_question,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            timings: ChatTimings {
                retrieval_us: if reply.cached { 0 } else { reply.retrieval_us },
                llm_us: if reply.cached { 0 } else { reply.llm_us },
                first_text_us: first_text.unwrap_or(0),
                ..timings
            },
            took_us: started.elapsed().as_micros() as u64,
        })
    }

    /// A session's summary and turns (`GET /v1/sessions/ID`); unknown or expired sessions are
    /// an error.
    pub fn session(&self, kb: Option<&str>, id: &str) -> Result<History, ApiError> {
        let kb = self.registry.kb(kb)?.name.clone();
        let Some(memory) = &self.memory else {
            return Err(ApiError::new(ErrorCode::UnknownSession, "no conversation memory is configured"));
        };
        let history = memory.history(&memory_key(&kb, id)).map_err(|e| memory_error(&e))?;
        if history.turns.is_empty() && history.summary.is_none() {
            return Err(ApiError::new(ErrorCode::UnknownSession, "no such session"));
        }
        Ok(history)
    }

    /// Forget a session (`DELETE /v1/sessions/ID`).
    pub fn delete_session(&self, kb: Option<&str>, id: &str) -> Result<(), ApiError> {
        let kb = self.registry.kb(kb)?.name.clone();
        let Some(memory) = &self.memory else {
            return Err(ApiError::new(ErrorCode::UnknownSession, "no conversation memory is configured"));
        };
        match memory.delete(&memory_key(&kb, id)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::new(ErrorCode::UnknownSession, "no such session")),
            Err(e) => Err(memory_error(&e)),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Validate and choose the engine: everything but the query itself, cheap enough for an
    /// async worker.
    fn prepare(&self, req: &mut QueryRequest, route: Route) -> Result<(Arc<Loaded>, crate::api::Assignment), ApiError> {
        let merged = merge("kb", route.kb, req.kb.take()).and_then(|kb| {
            req.kb = kb;
            req.variant = merge("variant", route.variant, req.variant.take())?;
            req.user = merge("user", route.user, req.user.take())?;
            req.options()?;
            Ok(())
        });
        let picked =
            merged.and_then(|()| self.registry.pick(req.kb.as_deref(), req.variant.as_deref(), req.user.as_deref()));
        picked.inspect_err(|e| {
            // Only configured names become labels: an unknown knowledge base counts as "".
            let kb = self.registry.kb(req.kb.as_deref()).map_or("", |k| k.name.as_str());
            self.metrics.refused(kb, e.code.as_str());
        })
    }

    /// Run the query on the chosen engine and record it. Synchronous: may embed the question
    /// with a model or a remote API.
    fn run(
        &self,
        loaded: &Loaded,
        assignment: crate::api::Assignment,
        req: &QueryRequest,
        request_id: &str,
    ) -> Result<Answer, ApiError> {
        let started = Instant::now();
        // `prepare` validated the options.
        let opts = req.options()?;
        let m = &loaded.metrics;
        match loaded.engine.query_with(&req.q, opts) {
            Ok(answer) => {
                tracing::debug!(request_id, kb = %loaded.kb, variant = %loaded.variant, took_us = answer.took_us, on_topic = answer.on_topic, "answered");
                m.latency.observe(started.elapsed().as_secs_f64());
                m.ok.inc();
                if answer.on_topic {
                    m.on_topic.inc()
                } else {
                    m.off_topic.inc()
                };
                Ok(Answer::new(&loaded.kb, &loaded.variant, assignment, answer))
            }
            Err(e) => {
                let api = ApiError::from(&e);
                m.failed(&self.metrics, api.code.as_str());
                if api.code == ErrorCode::EmbedderUnavailable {
                    tracing::warn!(request_id, kb = %loaded.kb, variant = %loaded.variant, "query failed: {e}");
                } else {
                    tracing::error!(request_id, kb = %loaded.kb, variant = %loaded.variant, "query failed: {e}");
                }
                Err(api)
            }
        }
    }

    /// Answer on this thread (stdin, `lore query`).
    pub fn answer_blocking(&self, mut req: QueryRequest, route: Route, request_id: &str) -> Result<Answer, ApiError> {
        let (loaded, assignment) = self.prepare(&mut req, route)?;
        self.run(&loaded, assignment, &req, request_id)
    }

    /// Answer from an async task. The request holds one engine from start to end. A query that
    /// may block (a model or remote API embeds the question, or the table is large) runs on the
    /// blocking pool; a quick one (a table lookup and a scan of a few thousand rows, tens of
    /// microseconds) runs in place, where a handoff to another thread would cost as much as
    /// the query itself.
    pub async fn answer(
        self: &Arc<Self>,
        mut req: QueryRequest,
        route: Route,
        request_id: Arc<str>,
    ) -> Result<Answer, ApiError> {
        let (loaded, assignment) = self.prepare(&mut req, route)?;
        if !loaded.engine.may_block() {
            return self.run(&loaded, assignment, &req, &request_id);
        }
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.run(&loaded, assignment, &req, &request_id)).await.unwrap_or_else(
            |e| {
                tracing::error!("a query task failed: {e}");
                Err(ApiError::new(ErrorCode::Internal, crate::api::INTERNAL_ERROR_MESSAGE))
            },
        )
    }

    /// Re-read the configuration (when serving one) and load every artifact that changed, on
    /// the blocking pool. `force` also retries files rejected before.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger, force: bool) -> Result<Vec<Report>, ApiError> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.reload_blocking(trigger, force)).await.unwrap_or_else(|e| {
            tracing::error!("a reload task failed: {e}");
            Err(ApiError::new(ErrorCode::Internal, crate::api::INTERNAL_ERROR_MESSAGE))
        })
    }

    pub fn reload_blocking(&self, trigger: Trigger, force: bool) -> Result<Vec<Report>, ApiError> {
        if force {
            // The watcher only looks at files; signals and the admin call re-read the config.
            self.registry.reread_config().map_err(|e| {
                tracing::error!(trigger = trigger.as_str(), "reload refused, nothing changed: {e}");
                ApiError::new(ErrorCode::ReloadFailed, e.to_string())
            })?;
        }
        Ok(self.registry.reload(trigger, force))
    }
}

/// Request ids: the client's `X-Request-Id` when it is sane, else this process's random prefix
/// and a counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> RequestIds {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        RequestIds { prefix: format!("{:08x}", h.finish() as u32), next: AtomicU64::new(1) }
    }
}

/// Longest client-given request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

impl RequestIds {
    /// The client's id if it is 1 to 128 visible ASCII characters, else a new one.
    pub fn take_or_make(&self, given: Option<&[u8]>) -> Arc<str> {
        if let Some(id) = given
            && !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id.iter().all(|b| b.is_ascii_graphic())
            && let Ok(text) = std::str::from_utf8(id)
        {
            return Arc::from(text);
        }
        Arc::from(format!("{}-{:x}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed)))
    }
}
