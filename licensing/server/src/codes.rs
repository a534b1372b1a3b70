//! The server's 5xxx error codes and the HTTP status of every code it sends.
//!
//! | code | meaning | HTTP |
//! | --- | --- | --- |
//! | 2001 | malformed serial (check digits) | 400 |
//! | 2002-2009 | licence rules | 403 |
//! | 5001 | bad request: malformed JSON or values | 400 (409 for a duplicate) |
//! | 5002 | missing or wrong admin token | 401 |
//! | 5003 | rate limit | 429 |
//! | 5004 | request body too large | 413 |
//! | 5005 | storage failure | 500 |
//! | 5006 | not found (admin API) | 404 |

use axum::http::StatusCode;
use outpost_licensing::error::LicenseError;
use outpost_licensing::protocol::ErrorBody;

/// Malformed JSON or values (same as `outpost_licensing::protocol::BAD_REQUEST`).
pub const BAD_REQUEST: u32 = outpost_licensing::protocol::BAD_REQUEST;
/// Missing or wrong admin token.
pub const UNAUTHORIZED: u32 = outpost_licensing::protocol::UNAUTHORIZED;
/// Too many requests from this client or for this serial.
pub const RATE_LIMITED: u32 = outpost_licensing::protocol::RATE_LIMITED;
/// The request body is larger than the endpoint accepts.
pub const TOO_LARGE: u32 = outpost_licensing::protocol::PAYLOAD_TOO_LARGE;
/// The database failed.
pub const STORAGE: u32 = outpost_licensing::protocol::INTERNAL;
/// The admin API's object does not exist.
pub const NOT_FOUND: u32 = outpost_licensing::protocol::NOT_FOUND;

/// The HTTP status for an error code.
pub fn status_of(code: u32) -> StatusCode {
    match code {
        2001 | BAD_REQUEST => StatusCode::BAD_REQUEST,
        2002..=2099 => StatusCode::FORBIDDEN,
        UNAUTHORIZED => StatusCode::UNAUTHORIZED,
        RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code for an HTTP error status produced outside a handler (the router, the
/// body limit): used to turn every error into a JSON body.
pub fn code_of_status(status: StatusCode) -> u32 {
    match status {
        StatusCode::UNAUTHORIZED => UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS => RATE_LIMITED,
        StatusCode::PAYLOAD_TOO_LARGE => TOO_LARGE,
        StatusCode::NOT_FOUND => NOT_FOUND,
        s if s.is_server_error() => STORAGE,
        _ => BAD_REQUEST,
    }
}

/// The JSON body of a licence error (server errors carry their bare message).
pub fn error_body(e: &LicenseError) -> ErrorBody {
    ErrorBody::from(e)
}
