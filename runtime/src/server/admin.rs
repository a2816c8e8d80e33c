//! The admin endpoints: status, reload and rollback, behind a bearer token
//! (`LORE_ADMIN_TOKEN`) compared in constant time. Without a token configured they are off.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::http::{AppState, RequestId, error_response};
use crate::api::{ApiError, ErrorCode};
use crate::registry::{Outcome, Trigger};

/// `Ok` when the request carries the admin token. Both sides are hashed first so the
/// comparison takes the same time whatever the lengths.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::new(
            ErrorCode::AdminDisabled,
            "the admin endpoints are off: start lore with LORE_ADMIN_TOKEN (or --admin-token-file) to turn them on",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    let ok: bool = Sha256::digest(given).ct_eq(&Sha256::digest(token.as_bytes())).into();
    if given.is_empty() || !ok {
        tracing::warn!("admin call refused: missing or wrong bearer token");
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <LORE_ADMIN_TOKEN>` is required",
        ));
    }
    Ok(())
}

pub async fn status(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return error_response(&e, &id);
    }
    Json(state.service.registry().status()).into_response()
}

/// Re-read the configuration and load every artifact that changed (also those rejected
/// before). 200 when nothing was rejected; 422 with the same reports when something was.
pub async fn reload(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return error_response(&e, &id);
    }
    match state.service.reload(Trigger::Admin, true).await {
        Err(e) => error_response(&e, &id),
        Ok(reports) => {
            let rejected = reports.iter().filter(|r| matches!(r.outcome, Outcome::Rejected { .. })).count();
            let swapped = reports.iter().filter(|r| matches!(r.outcome, Outcome::Swapped { .. })).count();
            let body = json!({
                "swapped": swapped,
                "rejected": rejected,
                "variants": reports.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
            });
            if rejected == 0 {
                Json(body).into_response()
            } else {
                let e = ApiError::new(
                    ErrorCode::ReloadFailed,
                    format!("{rejected} artifact(s) were rejected; the old ones keep serving"),
                );
                let mut error = e.body(Some(&id.0));
                error["error"]["details"] = body;
                (axum::http::StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response()
            }
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackQuery {
    kb: Option<String>,
    variant: Option<String>,
}

/// Restore the previous artifact of every variant (or of `?kb=` and `?variant=`) at once.
pub async fn rollback(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    query: Result<Query<RollbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return error_response(&e, &id);
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error_response(&ApiError::new(ErrorCode::BadRequest, e.body_text()), &id),
    };
    match state.service.registry().rollback(q.kb.as_deref(), q.variant.as_deref()) {
        Ok(done) => Json(json!({"rolled_back": done})).into_response(),
        Err(e) => error_response(&e, &id),
    }
}
