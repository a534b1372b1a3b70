//! The HTTP API: routes, shared state, JSON errors, request metrics and logs.
//!
//! - Public: `POST /v1/activate`, `GET /v1/keys`, `GET /healthz`, `GET /metrics`
//!   ([`public`]).
//! - Admin, behind a bearer token: `/v1/admin/*` ([`admin`]).
//!
//! Every error, including those made by the router (unknown path, wrong method) and
//! the body limits, is a JSON [`ErrorBody`]. Logs and metrics name a route by its
//! template (`/v1/admin/serials/{serial}`), never by the raw path, so serials do not
//! end up in them.

pub mod admin;
pub mod public;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_licensing::error::LicenseError;
use outpost_licensing::protocol::{ErrorBody, ACTIVATE_PATH, MAX_REQUEST_BYTES};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::auth::AdminTokens;
use crate::codes::{self, code_of_status, status_of};
use crate::db::{Db, DbError};
use crate::keys::KeyRing;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::rules::activation::ActivationError;

/// Longest a request may take, body upload included (then 408, code 5001).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The signing keys.
    pub keys: KeyRing,
    /// Rate limiters.
    pub limits: RateLimits,
    /// Counters.
    pub metrics: Metrics,
    /// Admin tokens.
    pub tokens: AdminTokens,
}

/// State handle given to handlers.
pub type Shared = Arc<AppState>;

/// An error answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with this code and message; the status follows from the code.
    pub fn new(code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            body: ErrorBody {
                error_code: code,
                message: message.into(),
                detail: 0,
            },
        }
    }

    /// A bad request (5001).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(codes::BAD_REQUEST, message)
    }

    /// Not found (5006).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(codes::NOT_FOUND, message)
    }

    /// A duplicate (5001 with HTTP 409).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            ..ApiError::bad_request(message)
        }
    }
}

pub use crate::codes::error_body;

impl From<&LicenseError> for ApiError {
    fn from(e: &LicenseError) -> ApiError {
        let body = error_body(e);
        ApiError {
            status: status_of(body.error_code),
            body,
        }
    }
}

impl From<&ActivationError> for ApiError {
    fn from(e: &ActivationError) -> ApiError {
        let body = e.body();
        ApiError {
            status: status_of(body.error_code),
            body,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        tracing::error!(error = %e, "storage failure");
        ApiError::new(
            codes::STORAGE,
            "the licence database is unavailable; try again later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Turns any error response that is not JSON (router 404/405, body-limit 413,
/// extractor rejections) into an [`ErrorBody`].
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let code = code_of_status(status);
        let message = match code {
            codes::TOO_LARGE => "request body too large".to_string(),
            _ => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase(),
        };
        let mut out = ApiError::new(code, message);
        out.status = status;
        return out.into_response();
    }
    resp
}

/// Counts each request by route template and status, with its latency.
async fn record_metrics(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request(&route, resp.status().as_u16(), start.elapsed());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The application: every route with its limits and middleware.
pub fn router(state: Shared) -> Router {
    let activate = post(public::activate)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            public::precheck,
        ))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
    let public = Router::new()
        .route(ACTIVATE_PATH, activate)
        .route("/v1/keys", get(public::keys))
        .route("/healthz", get(public::healthz))
        .route("/metrics", get(public::metrics));
    let admin = admin::routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_ADMIN_BODY_BYTES))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES));
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(|| "unmatched".into());
            tracing::info_span!("request", method = %req.method(), route = %route)
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));
    Router::new()
        .merge(public)
        .nest("/v1/admin", admin)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(trace)
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
