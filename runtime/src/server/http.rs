//! The HTTP adapter (axum): routes, request ids, and turning service results into responses.
//! It holds no logic of its own: every query goes through [`Service`]. The accept loop, with
//! the connection limits and graceful shutdown, is [`super::listener`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::api::{Answer, ApiError, ErrorCode, QueryRequest};
use crate::service::{RequestIds, Route, Service};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest `/v1/chat/completions` body: OpenAI clients send the whole conversation each time.
pub const MAX_COMPLETIONS_BODY_BYTES: usize = 512 * 1024;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_LORE_USER: HeaderName = HeaderName::from_static("x-lore-user");
pub const X_LORE_VARIANT: HeaderName = HeaderName::from_static("x-lore-variant");
const X_LORE_KB: HeaderName = HeaderName::from_static("x-lore-kb");
const X_LORE_ASSIGNMENT: HeaderName = HeaderName::from_static("x-lore-assignment");
const X_LORE_ARTIFACT_VERSION: HeaderName = HeaderName::from_static("x-lore-artifact-version");
const X_LORE_BUILD_ID: HeaderName = HeaderName::from_static("x-lore-build-id");

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub ids: Arc<RequestIds>,
    /// `LORE_ADMIN_TOKEN`; admin endpoints are off without one.
    pub admin_token: Option<Arc<str>>,
}

/// This request's id, set by [`request_id`] before any handler runs.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// An error response: the JSON body with the request id.
pub fn error_response(e: &ApiError, id: &RequestId) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body(Some(&id.0)))).into_response()
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("the {name} header is not visible ASCII"))),
    }
}

pub(crate) fn route(kb: Option<String>, headers: &HeaderMap) -> Result<Route, ApiError> {
    Ok(Route { kb, variant: header_text(headers, &X_LORE_VARIANT)?, user: header_text(headers, &X_LORE_USER)? })
}

fn answer_response(answer: Answer) -> Response {
    let mut headers = HeaderMap::with_capacity(5);
    for (name, value) in [
        (X_LORE_KB, answer.kb.as_str()),
        (X_LORE_VARIANT, answer.variant.as_str()),
        (X_LORE_ARTIFACT_VERSION, answer.artifact.version.as_str()),
        (X_LORE_BUILD_ID, answer.artifact.build_id.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let assignment = match answer.assignment {
        crate::api::Assignment::Only => "only",
        crate::api::Assignment::User => "user",
        crate::api::Assignment::Random => "random",
        crate::api::Assignment::Forced => "forced",
    };
    headers.insert(X_LORE_ASSIGNMENT, HeaderValue::from_static(assignment));
    (headers, Json(answer)).into_response()
}

async fn answer(
    state: &AppState,
    id: RequestId,
    kb: Option<String>,
    headers: &HeaderMap,
    req: QueryRequest,
) -> Response {
    let route = match route(kb, headers) {
        Ok(r) => r,
        Err(e) => return error_response(&e, &id),
    };
    match state.service.answer(req, route, id.0.clone()).await {
        Ok(a) => answer_response(a),
        Err(e) => error_response(&e, &id),
    }
}

pub(crate) fn body_error(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::BodyTooLarge, format!("the body exceeds {MAX_BODY_BYTES} bytes"))
        }
        JsonRejection::MissingJsonContentType(e) => ApiError::new(ErrorCode::UnsupportedMediaType, e.body_text()),
        e => ApiError::new(ErrorCode::BadRequest, e.body_text()),
    }
}

async fn post_query(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(req)) => answer(&state, id, None, &headers, req).await,
        Err(e) => error_response(&body_error(e), &id),
    }
}

async fn get_query(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    query: Result<Query<QueryRequest>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(req)) => answer(&state, id, None, &headers, req).await,
        Err(e) => error_response(&ApiError::new(ErrorCode::BadRequest, e.body_text()), &id),
    }
}

async fn post_kb_query(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(kb): Path<String>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(req)) => answer(&state, id, Some(kb), &headers, req).await,
        Err(e) => error_response(&body_error(e), &id),
    }
}

async fn get_kb_query(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(kb): Path<String>,
    headers: HeaderMap,
    query: Result<Query<QueryRequest>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(req)) => answer(&state, id, Some(kb), &headers, req).await,
        Err(e) => error_response(&ApiError::new(ErrorCode::BadRequest, e.body_text()), &id),
    }
}

/// The artifact a knowledge base's variant serves: the one `X-Lore-Variant` names, else the
/// first variant.
fn artifact_info(state: &AppState, id: &RequestId, kb: Option<&str>, headers: &HeaderMap) -> Response {
    let registry = state.service.registry();
    let kb = match registry.kb(kb) {
        Ok(kb) => kb,
        Err(e) => return error_response(&e, id),
    };
    let variant = match header_text(headers, &X_LORE_VARIANT) {
        Ok(v) => v,
        Err(e) => return error_response(&e, id),
    };
    let Some(v) = kb.variants.iter().find(|v| variant.as_deref().is_none_or(|n| n == v.name)) else {
        let e = ApiError::new(ErrorCode::UnknownVariant, format!("knowledge base \"{}\" has no such variant", kb.name))
            .with_available(kb.variants.iter().map(|v| v.name.clone()).collect());
        return error_response(&e, id);
    };
    let loaded = v.current();
    let engine = &loaded.engine;
    let h = engine.header();
    Json(json!({
        "kb": kb.name,
        "variant": v.name,
        "version": h.artifact_version,
        "build_id": h.build_id,
        "created_unix": h.created_unix,
        "compiler": h.compiler,
        "audience": h.audience,
        "embedder": {"id": h.embedder.id, "dims": h.embedder.dims},
        "sealed": matches!(h.cipher, format::Cipher::Aes256Gcm { .. }),
        "chunks": h.counts.chunks,
        "sources": engine.sources().len(),
        "header_sha256": loaded.digest,
    }))
    .into_response()
}

async fn artifact(State(state): State<AppState>, Extension(id): Extension<RequestId>, headers: HeaderMap) -> Response {
    artifact_info(&state, &id, None, &headers)
}

async fn kb_artifact(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(kb): Path<String>,
    headers: HeaderMap,
) -> Response {
    artifact_info(&state, &id, Some(&kb), &headers)
}

async fn readyz(State(state): State<AppState>, Extension(id): Extension<RequestId>) -> Response {
    match state.service.registry().check_intact() {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::error!(request_id = %id.0, "not ready: {e}");
            error_response(&ApiError::from(&e), &id)
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.service.metrics().encode(),
    )
        .into_response()
}

async fn not_found(Extension(id): Extension<RequestId>) -> Response {
    error_response(
        &ApiError::new(ErrorCode::NotFound, "no such endpoint; try POST /v1/query or /v1/kb/NAME/query"),
        &id,
    )
}

/// Take the client's `X-Request-Id` or make one; every response carries it, every handler can
/// read it.
async fn request_id(State(ids): State<Arc<RequestIds>>, mut req: Request, next: Next) -> Response {
    let id = ids.take_or_make(req.headers().get(&X_REQUEST_ID).map(HeaderValue::as_bytes));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

/// The application: every route with its limits. Chat routes are outside the request
/// timeout: an LLM answer may take longer, and the LLM call has its own deadline.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let ids = state.ids.clone();
    let chat = Router::new()
        .route("/v1/chat", post(super::chat::post_chat))
        .route("/v1/kb/{kb}/chat", post(super::chat::post_kb_chat))
        .route(
            "/v1/chat/completions",
            post(super::chat::completions).layer(DefaultBodyLimit::max(MAX_COMPLETIONS_BODY_BYTES)),
        )
        .route("/v1/sessions/{id}", get(super::chat::get_session).delete(super::chat::delete_session))
        .route("/v1/kb/{kb}/sessions/{id}", get(super::chat::get_kb_session).delete(super::chat::delete_kb_session));
    Router::new()
        .route("/", get(super::page::index))
        .route("/assets/chat.js", get(super::page::script))
        .route("/assets/chat.css", get(super::page::style))
        .route("/v1/persona", get(super::chat::persona))
        .route("/v1/kb/{kb}/persona", get(super::chat::kb_persona))
        .route("/v1/models", get(super::chat::models))
        .route("/v1/query", get(get_query).post(post_query))
        .route("/v1/kb/{kb}/query", get(get_kb_query).post(post_kb_query))
        .route("/v1/artifact", get(artifact))
        .route("/v1/kb/{kb}/artifact", get(kb_artifact))
        .route("/healthz", get(|| async { "ok" }))
        // Every engine was opened and checked before the router exists; the server stays
        // ready until a file is changed in place (see `Engine::check_intact`).
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/status", get(super::admin::status))
        .route("/admin/reload", post(super::admin::reload))
        .route("/admin/rollback", post(super::admin::rollback))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .merge(chat)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(ids, request_id))
}
