//! Public endpoints: activation, the key list, health and metrics. None of them lists
//! or echoes serials.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_licensing::protocol::{ActivationRequest, ActivationResponse, MAX_REQUEST_BYTES};
use outpost_licensing::{unix_now, Serial};

use super::{ApiError, Shared};
use crate::audit::Actor;
use crate::codes;
use crate::rules::activation::{self, record_bad_request, ActivationError};

/// Checks made on `/v1/activate` before the body is read: the per-IP rate limit
/// (5003), then an announced `Content-Length` over 16 KiB (5004, without waiting for
/// the body).
pub async fn precheck(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !st.limits.ip.check(&addr.ip()) {
        st.metrics.rate_limited("ip");
        st.metrics.activation(codes::RATE_LIMITED);
        return ApiError::new(
            codes::RATE_LIMITED,
            "too many activation requests from this address; retry later",
        )
        .into_response();
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        let message = format!("request body larger than {MAX_REQUEST_BYTES} bytes");
        record_bad_request(
            &st.db,
            &Actor::device(addr.ip()),
            codes::TOO_LARGE,
            &message,
        )
        .await;
        st.metrics.activation(codes::TOO_LARGE);
        return ApiError::new(codes::TOO_LARGE, message).into_response();
    }
    next.run(req).await
}

/// `POST /v1/activate`.
pub async fn activate(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let actor = Actor::device(addr.ip());
    run_activation(&st, &actor, body).await
}

/// The activation endpoint's work, shared with the admin's offline activation.
pub async fn run_activation(
    st: &Shared,
    actor: &Actor,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let refuse = |e: ApiError| {
        st.metrics.activation(e.body.error_code);
        e.into_response()
    };
    let bytes = match body {
        Ok(b) if b.len() > MAX_REQUEST_BYTES => Err(codes::TOO_LARGE),
        Ok(b) => Ok(b),
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(codes::TOO_LARGE),
        Err(_) => Err(codes::BAD_REQUEST),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(code) => {
            let message = if code == codes::TOO_LARGE {
                format!("request body larger than {MAX_REQUEST_BYTES} bytes")
            } else {
                "cannot read the request body".to_string()
            };
            record_bad_request(&st.db, actor, code, &message).await;
            return refuse(ApiError::new(code, message));
        }
    };
    let req = match ActivationRequest::parse(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let err = ApiError::from(&e);
            record_bad_request(&st.db, actor, err.body.error_code, &err.body.message).await;
            tracing::info!(actor = %actor.0, code = err.body.error_code, "activation request rejected");
            return refuse(err);
        }
    };
    // `parse` checked the serial.
    let compact = Serial::parse(&req.serial)
        .map(|s| s.compact())
        .unwrap_or_default();
    if !st.limits.serial.peek(&compact) {
        st.metrics.rate_limited("serial");
        return refuse(ApiError::new(
            codes::RATE_LIMITED,
            "too many refused activation attempts for this serial; retry later",
        ));
    }
    let result = activation::activate(&st.db, &st.keys, &req, actor, unix_now()).await;
    if let Err(ActivationError::Refused(_)) = &result {
        st.limits.serial.check(&compact);
    }
    match result {
        Ok(granted) => {
            st.metrics.activation(0);
            Json(ActivationResponse {
                error_code: 0,
                license: granted.license,
            })
            .into_response()
        }
        Err(e) => refuse(ApiError::from(&e)),
    }
}

/// `GET /v1/keys`: every signing key, the root and the current one marked.
pub async fn keys(State(st): State<Shared>) -> Response {
    Json(serde_json::json!({ "keys": st.keys.list() })).into_response()
}

/// `GET /healthz`: `{"status":"ok","db":"ok"}` when the database answers.
pub async fn healthz(State(st): State<Shared>) -> Response {
    match st.db.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok", "db": "ok"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "error", "db": "error", "error_code": codes::STORAGE})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
