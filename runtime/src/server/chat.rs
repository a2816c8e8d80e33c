//! The chat routes: `/v1/chat` (lore's own, with server-side sessions), the OpenAI-compatible
//! `/v1/chat/completions` and `/v1/models`, and `DELETE /v1/sessions/ID`. Every answer goes
//! through [`Service::chat_blocking`] on the blocking pool; a stream is fed by a channel whose
//! closing (the client went away) cancels the LLM call.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::http::{AppState, RequestId, body_error, error_response, route};
use crate::api::{ApiError, ChatAnswer, ChatRequest, ErrorCode};
use crate::chat::memory::{History, Role, Turn};
use crate::service::{Conversation, Route, Service};

/// Events buffered between the answering thread and a slow client.
const STREAM_BUFFER: usize = 64;
/// Most earlier messages of a `/v1/chat/completions` request kept as the conversation.
const MAX_GIVEN_MESSAGES: usize = 64;

/// A `Stream` over a channel's receiver (what `Sse` needs), without another dependency.
struct Receiver(mpsc::Receiver<Event>);

impl futures_core::Stream for Receiver {
    type Item = Result<Event, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

fn internal() -> ApiError {
    ApiError::new(ErrorCode::Internal, crate::api::INTERNAL_ERROR_MESSAGE)
}

/// Run one chat message on the blocking pool, collecting the whole answer.
async fn answer_whole(
    service: Arc<Service>,
    req: ChatRequest,
    conversation: Conversation,
    route: Route,
    id: Arc<str>,
) -> Result<ChatAnswer, ApiError> {
    let slot = service.chat_slot()?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        service.chat_blocking(req, conversation, route, &id, &mut |_| true)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!("a chat task failed: {e}");
        Err(internal())
    })
}

/// How one streamed answer is told: an optional first event, an event per piece of text, and
/// the closing events made from the outcome.
struct StreamShape<P, F> {
    first: Option<Event>,
    piece: P,
    finish: F,
}

/// Run one chat message on the blocking pool, streaming it as `shape` says. The stream ends
/// when the answer does.
fn answer_streamed<P, F>(
    service: Arc<Service>,
    req: ChatRequest,
    conversation: Conversation,
    route: Route,
    id: Arc<str>,
    shape: StreamShape<P, F>,
) -> Response
where
    P: Fn(&str) -> Event + Send + 'static,
    F: FnOnce(Result<ChatAnswer, ApiError>, &str) -> Vec<Event> + Send + 'static,
{
    if let Err(e) = service.check_chat(&req, &route) {
        return error_response(&e, &RequestId(id));
    }
    let slot = match service.chat_slot() {
        Ok(slot) => slot,
        Err(e) => return error_response(&e, &RequestId(id)),
    };
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    let StreamShape { first, piece, finish } = shape;
    if let Some(first) = first {
        // The channel is new and empty: this cannot fail for want of room.
        let _ = tx.try_send(first);
    }
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let result =
            service.chat_blocking(req, conversation, route, &id, &mut |text| tx.blocking_send(piece(text)).is_ok());
        for event in finish(result, &id) {
            if tx.blocking_send(event).is_err() {
                break;
            }
        }
    });
    Sse::new(Receiver(rx)).keep_alive(KeepAlive::default()).into_response()
}

async fn chat(
    state: AppState,
    id: RequestId,
    kb: Option<String>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => return error_response(&body_error(e), &id),
    };
    if let Err(e) = req.check() {
        return error_response(&e, &id);
    }
    let route = match route(kb, &headers) {
        Ok(r) => r,
        Err(e) => return error_response(&e, &id),
    };
    let conversation = Conversation::Session(None);
    if !req.stream {
        return match answer_whole(state.service.clone(), req, conversation, route, id.0.clone()).await {
            Ok(a) => Json(a).into_response(),
            Err(e) => error_response(&e, &id),
        };
    }
    answer_streamed(
        state.service.clone(),
        req,
        conversation,
        route,
        id.0.clone(),
        StreamShape {
            first: None,
            piece: |text: &str| Event::default().event("token").data(json!({ "text": text }).to_string()),
            finish: |result: Result<ChatAnswer, ApiError>, request_id: &str| {
                vec![match result {
                    Ok(answer) => {
                        Event::default().event("done").data(serde_json::to_string(&answer).unwrap_or_default())
                    }
                    Err(e) => Event::default().event("error").data(e.body(Some(request_id)).to_string()),
                }]
            },
        },
    )
}

pub async fn post_chat(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    chat(state, id, None, headers, body).await
}

pub async fn post_kb_chat(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(kb): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    chat(state, id, Some(kb), headers, body).await
}

async fn session_of(state: &AppState, kb: Option<String>, session: String, id: &RequestId) -> Response {
    let service = state.service.clone();
    let key = session.clone();
    let result = tokio::task::spawn_blocking(move || service.session(kb.as_deref(), &key))
        .await
        .unwrap_or_else(|_| Err(internal()));
    match result {
        Ok(history) => Json(json!({
            "session_id": session,
            "summary": history.summary,
            "turns": history.turns,
        }))
        .into_response(),
        Err(e) => error_response(&e, id),
    }
}

async fn delete_session_of(state: &AppState, kb: Option<String>, session: String, id: &RequestId) -> Response {
    let service = state.service.clone();
    let result = tokio::task::spawn_blocking(move || service.delete_session(kb.as_deref(), &session))
        .await
        .unwrap_or_else(|_| Err(internal()));
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(&e, id),
    }
}

/// `GET /v1/sessions/ID`: what the conversation holds, for a page to show it again.
pub async fn get_session(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(session): Path<String>,
) -> Response {
    session_of(&state, None, session, &id).await
}

pub async fn get_kb_session(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path((kb, session)): Path<(String, String)>,
) -> Response {
    session_of(&state, Some(kb), session, &id).await
}

/// `DELETE /v1/sessions/ID`: the visitor forgets their conversation.
pub async fn delete_session(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(session): Path<String>,
) -> Response {
    delete_session_of(&state, None, session, &id).await
}

pub async fn delete_kb_session(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path((kb, session)): Path<(String, String)>,
) -> Response {
    delete_session_of(&state, Some(kb), session, &id).await
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The persona of a knowledge base's first variant; derived (a scan of chunks) once per build,
/// on the blocking pool.
async fn persona_of(state: &AppState, kb: Option<&str>, id: &RequestId) -> Response {
    let kb = match state.service.registry().kb(kb) {
        Ok(kb) => kb,
        Err(e) => return error_response(&e, id),
    };
    let Some(variant) = kb.variants.first() else {
        return error_response(&internal(), id);
    };
    let (name, loaded, service) = (kb.name.clone(), variant.current(), state.service.clone());
    let found = tokio::task::spawn_blocking(move || service.chat().persona(&loaded.engine)).await;
    match found {
        Ok(Ok(p)) => Json(json!({
            "kb": name,
            "name": p.name,
            "description": p.description,
            "openers": p.openers,
        }))
        .into_response(),
        Ok(Err(e)) => {
            tracing::error!(request_id = %id.0, "persona: {e}");
            error_response(&ApiError::from(&e), id)
        }
        Err(_) => error_response(&internal(), id),
    }
}

/// `GET /v1/persona`: who answers, for the chat page (name, description, opening questions).
pub async fn persona(State(state): State<AppState>, Extension(id): Extension<RequestId>) -> Response {
    persona_of(&state, None, &id).await
}

pub async fn kb_persona(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(kb): Path<String>,
) -> Response {
    persona_of(&state, Some(&kb), &id).await
}

/// `GET /v1/models`: one model per knowledge base, named like it.
pub async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .service
        .registry()
        .kbs()
        .iter()
        .map(|kb| {
            let created = kb.variants.first().map_or(0, |v| v.current().engine.header().created_unix);
            json!({"id": kb.name, "object": "model", "created": created, "owned_by": "lore"})
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// The text of an OpenAI message's `content`: a string, or an array of parts whose `text`
/// parts are joined.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str).is_none_or(|t| t == "text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// What a `/v1/chat/completions` body asks: the knowledge base, the last user message, the
/// earlier turns, and the streaming options.
struct CompletionAsk {
    model: String,
    message: String,
    history: History,
    stream: bool,
    include_usage: bool,
    user: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn parse_completion(body: &Value) -> Result<CompletionAsk, ApiError> {
    let model =
        body.get("model").and_then(Value::as_str).ok_or_else(|| bad("`model` (a knowledge base name) is required"))?;
    let messages = body.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))?;
    let Some((last, earlier)) = messages.split_last() else { return Err(bad("`messages` is empty")) };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(bad("the last message must have the role `user`"));
    }
    let message =
        last.get("content").and_then(content_text).ok_or_else(|| bad("the last message has no text content"))?;
    let mut turns = Vec::new();
    let skip = earlier.len().saturating_sub(MAX_GIVEN_MESSAGES);
    for m in &earlier[skip..] {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            // System and tool messages: the persona is lore's own.
            _ => continue,
        };
        if let Some(text) = m.get("content").and_then(content_text) {
            turns.push(Turn { role, text, citations: Vec::new(), retrieval_question: None });
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let user = body.get("user").and_then(Value::as_str).map(str::to_string);
    Ok(CompletionAsk {
        model: model.to_string(),
        message,
        history: History { summary: None, turns },
        stream,
        include_usage,
        user,
    })
}

/// The answer as a front end shows it: the text, then the sources it cites as a numbered list.
fn with_sources(answer: &ChatAnswer) -> String {
    let mut text = answer.answer.clone();
    text.push_str(&sources_footer(answer));
    text
}

fn sources_footer(answer: &ChatAnswer) -> String {
    if answer.citations.is_empty() {
        return String::new();
    }
    let mut footer = String::from("\n\nSources:");
    for c in &answer.citations {
        footer.push_str(&format!("\n[{}] {} ({}#{})", c.n, c.title, c.source, c.path));
    }
    footer
}

/// Token counts: the LLM's own when it reported them, else an estimate of four bytes a token.
fn usage(answer: &ChatAnswer, message: &str) -> Value {
    let prompt = answer.prompt_tokens.unwrap_or(message.len().div_ceil(4) as u64);
    let completion = answer.completion_tokens.unwrap_or(answer.answer.len().div_ceil(4) as u64);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn lore_fields(answer: &ChatAnswer) -> Value {
    json!({
        "on_topic": answer.on_topic,
        "extractive": answer.extractive,
        "degraded": answer.degraded,
        "kb": answer.kb,
        "variant": answer.variant,
        "artifact": answer.artifact,
    })
}

/// `POST /v1/chat/completions`, as OpenAI clients and front ends (Open WebUI, LibreChat) call it.
pub async fn completions(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return error_response(&body_error(e), &id),
    };
    let ask = match parse_completion(&body) {
        Ok(a) => a,
        Err(e) => return error_response(&e, &id),
    };
    let req = ChatRequest {
        message: ask.message.clone(),
        session_id: None,
        stream: ask.stream,
        kb: Some(ask.model.clone()),
        variant: None,
        user: ask.user.clone(),
    };
    if let Err(e) = req.check() {
        return error_response(&e, &id);
    }
    let route = match route(None, &headers) {
        Ok(r) => r,
        Err(e) => return error_response(&e, &id),
    };
    let completion_id = format!("chatcmpl-{}", id.0);
    let created = now_unix();
    let conversation = Conversation::Given(ask.history);
    if !ask.stream {
        return match answer_whole(state.service.clone(), req, conversation, route, id.0.clone()).await {
            Ok(a) => Json(json!({
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": ask.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": with_sources(&a)},
                    "finish_reason": "stop",
                }],
                "usage": usage(&a, &ask.message),
                "citations": a.citations,
                "lore": lore_fields(&a),
            }))
            .into_response(),
            Err(e) => error_response(&e, &id),
        };
    }
    let chunk = {
        let (completion_id, model) = (completion_id.clone(), ask.model.clone());
        move |delta: Value, finish: Option<&str>| {
            json!({
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
        }
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let piece_chunk = chunk.clone();
    let (completion_id2, model2, message, include_usage) = (completion_id, ask.model, ask.message, ask.include_usage);
    answer_streamed(
        state.service.clone(),
        req,
        conversation,
        route,
        id.0.clone(),
        StreamShape {
            // The role comes first, before any text, as OpenAI's own streams do.
            first: Some(Event::default().data(first.to_string())),
            piece: move |text: &str| Event::default().data(piece_chunk(json!({ "content": text }), None).to_string()),
            finish: move |result: Result<ChatAnswer, ApiError>, request_id: &str| {
                let mut events = Vec::new();
                match result {
                    Ok(a) => {
                        let footer = sources_footer(&a);
                        if !footer.is_empty() {
                            events.push(Event::default().data(chunk(json!({ "content": footer }), None).to_string()));
                        }
                        let mut last = chunk(json!({}), Some("stop"));
                        last["citations"] = json!(a.citations);
                        last["lore"] = lore_fields(&a);
                        events.push(Event::default().data(last.to_string()));
                        if include_usage {
                            let usage_chunk = json!({
                                "id": completion_id2,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model2,
                                "choices": [],
                                "usage": usage(&a, &message),
                            });
                            events.push(Event::default().data(usage_chunk.to_string()));
                        }
                    }
                    Err(e) => events.push(Event::default().data(e.body(Some(request_id)).to_string())),
                }
                events.push(Event::default().data("[DONE]"));
                events
            },
        },
    )
}
