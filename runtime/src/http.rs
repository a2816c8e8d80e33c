//! The HTTP API (axum): queries, health, readiness and artifact info, with request limits and
//! timeouts. The accept loop, with the connection limits and graceful shutdown, is
//! [`crate::listener`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::{Engine, QueryRequest};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The message of every 500: engine errors name server paths, so their detail is only logged.
pub const INTERNAL_ERROR_MESSAGE: &str = "internal error; see the server log";

#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.to_string()}}))).into_response()
}

fn answer(state: &AppState, req: QueryRequest) -> Response {
    let opts = match req.options() {
        Ok(o) => o,
        Err(e @ crate::RequestError::QuestionTooLong(_)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "question_too_long", e);
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    match state.engine.query_with(&req.q, opts) {
        Ok(a) => Json(a).into_response(),
        Err(e @ crate::EngineError::ArtifactChanged { .. }) => {
            tracing::error!("query refused: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "artifact_changed",
                "the artifact file was changed in place; see the server log",
            )
        }
        Err(e @ crate::EngineError::Embed(_)) => {
            tracing::warn!("query failed: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "embedder_unavailable", e)
        }
        Err(e) => {
            // The detail names the artifact's path: it goes to the log, never to the client.
            tracing::error!(error = %e, "query failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", INTERNAL_ERROR_MESSAGE)
        }
    }
}

async fn post_query(State(state): State<AppState>, body: Result<Json<QueryRequest>, JsonRejection>) -> Response {
    match body {
        Ok(Json(req)) => answer(&state, req),
        Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body exceeds {MAX_BODY_BYTES} bytes"))
        }
        Err(JsonRejection::MissingJsonContentType(e)) => {
            error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", e.body_text())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    }
}

async fn get_query(State(state): State<AppState>, query: Result<Query<QueryRequest>, QueryRejection>) -> Response {
    match query {
        Ok(Query(req)) => answer(&state, req),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    }
}

async fn artifact(State(state): State<AppState>) -> Response {
    let h = state.engine.header();
    let digest: String = state.engine.header_digest().iter().map(|b| format!("{b:02x}")).collect();
    Json(json!({
        "version": h.artifact_version,
        "build_id": h.build_id,
        "created_unix": h.created_unix,
        "compiler": h.compiler,
        "audience": h.audience,
        "embedder": {"id": h.embedder.id, "dims": h.embedder.dims},
        "sealed": matches!(h.cipher, format::Cipher::Aes256Gcm { .. }),
        "chunks": h.counts.chunks,
        "sources": state.engine.sources().len(),
        "header_sha256": digest,
    }))
    .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.check_intact() {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::error!("not ready: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "artifact_changed",
                "the artifact file was changed in place; see the server log",
            )
        }
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; try POST /v1/query")
}

/// The application: every route with its limits.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/v1/query", get(get_query).post(post_query))
        .route("/v1/artifact", get(artifact))
        .route("/healthz", get(|| async { "ok" }))
        // The engine was opened and checked before the router exists; it stays ready until its
        // file is changed in place (see `Engine::check_intact`).
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .with_state(state)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
