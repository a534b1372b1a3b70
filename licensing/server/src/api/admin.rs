//! Admin endpoints under `/v1/admin`, behind `Authorization: Bearer <token>`.
//!
//! Every call leaves an audit row. Changes write theirs in the same transaction as the
//! change; reads write theirs after answering succeeded (best effort).

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use outpost_licensing::license_file::valid_id;
use outpost_licensing::protocol::valid_package_name;
use outpost_licensing::{unix_now, LicenseKind, Serial};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::any::AnyArguments;
use sqlx::query::Query as SqlQuery;
use sqlx::{Any, Row, Transaction};

use super::{ApiError, Shared};
use crate::audit::{self, Actor, AuditEntry};
use crate::auth::AdminTokens;
use crate::codes;
use crate::db::{random_id, to_i64, DbError};
use crate::store::{self, parse_kind, SerialFilter, SerialRow};

/// Most serials one `POST /v1/admin/serials` creates.
pub const MAX_BATCH: u64 = 10_000;
/// Largest device cap of a product-line serial.
pub const MAX_DEVICE_CAP: u64 = 10_000;
/// Largest page of `GET /v1/admin/serials`.
pub const MAX_PAGE: i64 = 1000;
/// Longest validity or extension, in days (100 years).
pub const MAX_DAYS: u64 = 36_500;
/// Rows per multi-row INSERT when creating serials.
const INSERT_CHUNK: usize = 100;

/// The authenticated administrator (the id of their token), set by [`require_admin`].
#[derive(Debug, Clone)]
pub struct Admin(pub Actor);

/// The admin routes (relative to `/v1/admin`).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/vendors", post(create_vendor).get(list_vendors))
        .route("/vendors/{vendor}/models", post(create_model))
        .route("/serials", post(create_serials).get(list_serials))
        .route("/serials/{serial}", get(get_serial))
        .route("/serials/{serial}/extend", post(extend))
        .route("/serials/{serial}/revoke", post(revoke))
        .route("/serials/{serial}/reset", post(reset))
        .route("/activations", get(list_activations))
        .route("/export.csv", get(export_csv))
        .route("/offline-activate", post(offline_activate))
        .route("/audit", get(list_audit))
}

/// Refuses requests without a valid admin token (401, code 5002).
pub async fn require_admin(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(AdminTokens::bearer);
    match presented.and_then(|t| st.tokens.check(t)) {
        Some(id) => {
            req.extensions_mut().insert(Admin(Actor::admin(&id)));
            next.run(req).await
        }
        None => {
            tracing::warn!("admin request without a valid token");
            ApiError::new(codes::UNAUTHORIZED, "missing or invalid admin token").into_response()
        }
    }
}

/// Parses a JSON body (5001 on failure).
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(codes::TOO_LARGE, "request body too large")
        } else {
            ApiError::bad_request("cannot read the request body")
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Unwraps query parameters (5001 on failure).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
}

/// Parses a serial from a path (2001 when its check fails).
fn path_serial(text: &str) -> Result<Serial, ApiError> {
    Serial::parse(text).map_err(|e| ApiError::from(&e))
}

/// Runs an INSERT on a transaction; a unique violation becomes a conflict (409) with
/// the given message.
async fn insert_unique<'q>(
    tx: &mut Transaction<'static, Any>,
    insert: SqlQuery<'q, Any, AnyArguments<'q>>,
    conflict: String,
) -> Result<(), ApiError> {
    match insert.execute(&mut **tx).await.map_err(DbError::from) {
        Err(e) if e.is_unique_violation() => Err(ApiError::conflict(conflict)),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Writes the change's audit row on its transaction, then commits it.
async fn audit_commit(
    mut tx: Transaction<'static, Any>,
    admin: &Admin,
    action: &str,
    subject: &str,
    detail: Value,
) -> Result<(), DbError> {
    audit::record(
        &mut *tx,
        &AuditEntry {
            actor: &admin.0,
            action,
            subject,
            outcome: 0,
            detail,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Writes the audit row of a read (best effort).
async fn audit_read(st: &Shared, admin: &Admin, action: &str, subject: &str, detail: Value) {
    let entry = AuditEntry {
        actor: &admin.0,
        action,
        subject,
        outcome: 0,
        detail,
    };
    if let Err(e) = audit::record(st.db.pool(), &entry).await {
        tracing::warn!(error = %e, action, "cannot write an audit row");
    }
}

/// `POST /v1/admin/vendors` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVendor {
    id: String,
    name: String,
}

async fn create_vendor(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v: NewVendor = json_body(body)?;
    if !valid_id(&v.id) {
        return Err(ApiError::bad_request(
            "vendor id must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    if v.name.trim().is_empty() || v.name.len() > 256 {
        return Err(ApiError::bad_request(
            "vendor name must be 1-256 characters",
        ));
    }
    let now = unix_now();
    let mut tx = st.db.begin_write().await?;
    let insert = sqlx::query("INSERT INTO vendors (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(v.id.clone())
        .bind(v.name.clone())
        .bind(to_i64(now));
    insert_unique(&mut tx, insert, format!("vendor {} already exists", v.id)).await?;
    let detail = json!({ "name": v.name });
    audit_commit(tx, &admin, "create_vendor", &v.id, detail).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": v.id, "name": v.name, "created_at": now })),
    )
        .into_response())
}

async fn list_vendors(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, ApiError> {
    let vendors = sqlx::query("SELECT id, name, created_at FROM vendors ORDER BY id")
        .fetch_all(st.db.pool())
        .await
        .map_err(DbError::from)?;
    let models =
        sqlx::query("SELECT vendor_id, product_id FROM models ORDER BY vendor_id, product_id")
            .fetch_all(st.db.pool())
            .await
            .map_err(DbError::from)?;
    let mut out = Vec::new();
    for v in &vendors {
        let id: String = v.try_get("id").map_err(DbError::from)?;
        let mut ms = Vec::new();
        for m in &models {
            let vid: String = m.try_get("vendor_id").map_err(DbError::from)?;
            if vid == id {
                ms.push(
                    m.try_get::<String, _>("product_id")
                        .map_err(DbError::from)?,
                );
            }
        }
        out.push(json!({
            "id": id,
            "name": v.try_get::<String, _>("name").map_err(DbError::from)?,
            "created_at": v.try_get::<i64, _>("created_at").map_err(DbError::from)?,
            "models": ms,
        }));
    }
    audit_read(&st, &admin, "list_vendors", "", json!({})).await;
    Ok(Json(json!({ "vendors": out })).into_response())
}

/// `POST /v1/admin/vendors/{vendor}/models` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewModel {
    product_id: String,
}

async fn vendor_exists(tx: &mut Transaction<'static, Any>, vendor: &str) -> Result<bool, DbError> {
    Ok(sqlx::query("SELECT id FROM vendors WHERE id = $1")
        .bind(vendor.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .is_some())
}

async fn create_model(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    Path(vendor): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let m: NewModel = json_body(body)?;
    if !valid_id(&m.product_id) {
        return Err(ApiError::bad_request(
            "product_id must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let mut tx = st.db.begin_write().await?;
    if !vendor_exists(&mut tx, &vendor).await? {
        return Err(ApiError::not_found("vendor not found"));
    }
    let insert =
        sqlx::query("INSERT INTO models (vendor_id, product_id, created_at) VALUES ($1, $2, $3)")
            .bind(vendor.clone())
            .bind(m.product_id.clone())
            .bind(to_i64(unix_now()));
    let conflict = format!("model {} already exists for vendor {vendor}", m.product_id);
    insert_unique(&mut tx, insert, conflict).await?;
    let detail = json!({ "product_id": m.product_id });
    audit_commit(tx, &admin, "create_model", &vendor, detail).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "vendor": vendor, "product_id": m.product_id })),
    )
        .into_response())
}

/// `POST /v1/admin/serials` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSerials {
    vendor: String,
    kind: String,
    models: Vec<String>,
    #[serde(default)]
    edition: Option<String>,
    count: u64,
    #[serde(default)]
    device_cap: Option<u64>,
    #[serde(default)]
    validity_days: Option<u64>,
    #[serde(default)]
    package_name: Option<String>,
    #[serde(default)]
    not_after: Option<u64>,
}

/// A validated batch request.
struct Batch {
    vendor: String,
    kind: LicenseKind,
    models: Vec<String>,
    edition: String,
    count: u64,
    device_cap: u64,
    validity_days: u64,
    package_name: Option<String>,
    not_after: Option<u64>,
}

fn validate_batch(n: NewSerials, now: u64) -> Result<Batch, ApiError> {
    let bad = |m: &str| ApiError::bad_request(m);
    let kind =
        parse_kind(&n.kind).ok_or_else(|| bad("kind must be trial, per_device or product_line"))?;
    if !valid_id(&n.vendor) {
        return Err(bad(
            "vendor must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let models: Vec<String> = n
        .models
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if models.is_empty() || models.len() > 1000 || !models.iter().all(|m| valid_id(m)) {
        return Err(bad(
            "models must be 1-1000 product ids of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let edition = n.edition.unwrap_or_else(|| "standard".into());
    if edition.is_empty() || edition.len() > 64 {
        return Err(bad("edition must be 1-64 characters"));
    }
    if !(1..=MAX_BATCH).contains(&n.count) {
        return Err(bad(&format!("count must be 1-{MAX_BATCH}")));
    }
    let device_cap = match kind {
        LicenseKind::ProductLine => {
            let cap = n.device_cap.unwrap_or(MAX_DEVICE_CAP);
            if !(1..=MAX_DEVICE_CAP).contains(&cap) {
                return Err(bad(&format!("device_cap must be 1-{MAX_DEVICE_CAP}")));
            }
            cap
        }
        _ => 1,
    };
    let validity_days = n.validity_days.unwrap_or(match kind {
        LicenseKind::Trial => 90,
        _ => 365,
    });
    if !(1..=MAX_DAYS).contains(&validity_days) {
        return Err(bad(&format!("validity_days must be 1-{MAX_DAYS}")));
    }
    let package_name =
        match (kind, n.package_name) {
            (LicenseKind::ProductLine, Some(p)) if valid_package_name(&p) => Some(p),
            (LicenseKind::ProductLine, _) => return Err(bad(
                "a product_line serial needs a package_name of letters, digits, '.', '_' or '-'",
            )),
            (_, Some(_)) => return Err(bad("package_name is only for product_line serials")),
            (_, None) => None,
        };
    if n.not_after.is_some_and(|t| t <= now) {
        return Err(bad("not_after must be in the future"));
    }
    Ok(Batch {
        vendor: n.vendor,
        kind,
        models,
        edition,
        count: n.count,
        device_cap,
        validity_days,
        package_name,
        not_after: n.not_after,
    })
}

async fn create_serials(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let now = unix_now();
    let b = validate_batch(json_body(body)?, now)?;
    // A serial has 56 random bits: a collision with an existing one is a matter of
    // astronomically bad luck, and simply retried with fresh serials.
    for _ in 0..3 {
        match insert_batch(&st, &admin, &b, now).await {
            Err(InsertError::Db(e)) if e.is_unique_violation() => continue,
            Err(InsertError::Db(e)) => return Err(e.into()),
            Err(InsertError::Api(e)) => return Err(e),
            Ok((batch_id, serials)) => {
                tracing::info!(vendor = %b.vendor, kind = %b.kind, count = b.count, batch_id = %batch_id, "serials created");
                return Ok((
                    StatusCode::CREATED,
                    Json(json!({
                        "batch_id": batch_id,
                        "serials": serials.iter().map(Serial::to_string).collect::<Vec<_>>(),
                    })),
                )
                    .into_response());
            }
        }
    }
    Err(ApiError::from(DbError::Invalid(
        "serial collisions three times in a row".into(),
    )))
}

enum InsertError {
    Db(DbError),
    Api(ApiError),
}

impl From<DbError> for InsertError {
    fn from(e: DbError) -> InsertError {
        InsertError::Db(e)
    }
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> InsertError {
        InsertError::Db(e.into())
    }
}

async fn insert_batch(
    st: &Shared,
    admin: &Admin,
    b: &Batch,
    now: u64,
) -> Result<(String, Vec<Serial>), InsertError> {
    let mut tx = st.db.begin_write().await?;
    if !vendor_exists(&mut tx, &b.vendor).await? {
        return Err(InsertError::Api(ApiError::not_found("vendor not found")));
    }
    for m in &b.models {
        let found =
            sqlx::query("SELECT product_id FROM models WHERE vendor_id = $1 AND product_id = $2")
                .bind(b.vendor.clone())
                .bind(m.clone())
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(InsertError::Api(ApiError::not_found(format!(
                "model {m} not found for vendor {}",
                b.vendor
            ))));
        }
    }
    let batch_id = format!("b-{}", &random_id()?[..20]);
    let models_json = serde_json::to_string(&b.models).unwrap_or_else(|_| "[]".into());
    let mut serials = Vec::with_capacity(usize::try_from(b.count).unwrap_or(0));
    for _ in 0..b.count {
        serials.push(Serial::generate().map_err(|e| DbError::Invalid(e.to_string()))?);
    }
    const COLS: usize = 11;
    for chunk in serials.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO serials (serial, vendor_id, kind, models, edition, device_cap, \
             validity_days, package_name, not_after, created_at, batch_id) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let params: Vec<String> = (1..=COLS).map(|c| format!("${}", i * COLS + c)).collect();
            sql.push('(');
            sql.push_str(&params.join(", "));
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(s.compact())
                .bind(b.vendor.clone())
                .bind(b.kind.to_string())
                .bind(models_json.clone())
                .bind(b.edition.clone())
                .bind(to_i64(b.device_cap))
                .bind(to_i64(b.validity_days))
                .bind(b.package_name.clone())
                .bind(b.not_after.map(to_i64))
                .bind(to_i64(now))
                .bind(batch_id.clone());
        }
        q.execute(&mut *tx).await?;
    }
    audit_commit(
        tx,
        admin,
        "create_serials",
        &batch_id,
        json!({
            "vendor": b.vendor,
            "kind": b.kind,
            "models": b.models,
            "edition": b.edition,
            "count": b.count,
            "device_cap": b.device_cap,
            "validity_days": b.validity_days,
            "package_name": b.package_name,
            "not_after": b.not_after,
        }),
    )
    .await?;
    Ok((batch_id, serials))
}

/// `GET /v1/admin/serials` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SerialQuery {
    vendor: Option<String>,
    kind: Option<String>,
    revoked: Option<bool>,
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_serials(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    q: Result<Query<SerialQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let kind = match q.kind.as_deref() {
        Some(k) => Some(parse_kind(k).ok_or_else(|| {
            ApiError::bad_request("kind must be trial, per_device or product_line")
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1-{MAX_PAGE}")));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    if q.q.as_ref().is_some_and(|s| s.len() > 64) {
        return Err(ApiError::bad_request("q must be at most 64 characters"));
    }
    let filter = SerialFilter {
        vendor: q.vendor.clone(),
        kind,
        revoked: q.revoked,
        q: q.q.clone(),
        limit,
        offset,
    };
    let (serials, total) = store::list_serials(st.db.pool(), &filter).await?;
    audit_read(
        &st,
        &admin,
        "list_serials",
        "",
        json!({ "vendor": q.vendor, "kind": q.kind, "revoked": q.revoked, "q": q.q, "limit": limit, "offset": offset }),
    )
    .await;
    Ok(Json(json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "serials": serials,
    }))
    .into_response())
}

async fn get_serial(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let serial = path_serial(&serial)?;
    let compact = serial.compact();
    let row = serial_row(&st, &compact).await?;
    let activations = store::activations_of(st.db.pool(), &compact, true).await?;
    audit_read(&st, &admin, "get_serial", &compact, json!({})).await;
    Ok(Json(json!({ "serial": row, "activations": activations })).into_response())
}

/// `GET /v1/admin/activations` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivationQuery {
    serial: Option<String>,
    vendor: Option<String>,
    limit: Option<i64>,
}

async fn list_activations(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    q: Result<Query<ActivationQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let serial = q.serial.as_deref().map(path_serial).transpose()?;
    let compact = serial.as_ref().map(Serial::compact);
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-10000"));
    }
    let rows =
        store::list_activations(st.db.pool(), compact.as_deref(), q.vendor.as_deref(), limit)
            .await?;
    audit_read(
        &st,
        &admin,
        "list_activations",
        compact.as_deref().unwrap_or(""),
        json!({ "vendor": q.vendor, "limit": limit }),
    )
    .await;
    Ok(Json(json!({ "activations": rows })).into_response())
}

/// `POST .../extend` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extend {
    days: u64,
}

/// Takes the serial's row lock; 404 when the serial does not exist.
async fn lock_serial(tx: &mut Transaction<'static, Any>, compact: &str) -> Result<(), ApiError> {
    if !store::lock_serial(&mut **tx, compact).await? {
        return Err(ApiError::not_found("serial not found"));
    }
    Ok(())
}

/// Reads a serial's row; 404 when it does not exist.
async fn serial_row(st: &Shared, compact: &str) -> Result<SerialRow, ApiError> {
    store::get_serial(st.db.pool(), compact)
        .await?
        .ok_or_else(|| ApiError::not_found("serial not found"))
}

async fn extend(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    Path(serial): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let serial = path_serial(&serial)?;
    let e: Extend = json_body(body)?;
    if !(1..=MAX_DAYS).contains(&e.days) {
        return Err(ApiError::bad_request(format!("days must be 1-{MAX_DAYS}")));
    }
    let secs = to_i64(e.days * 86_400);
    let compact = serial.compact();
    let mut tx = st.db.begin_write().await?;
    lock_serial(&mut tx, &compact).await?;
    sqlx::query(
        "UPDATE serials SET not_after = not_after + $2 WHERE serial = $1 AND not_after IS NOT NULL",
    )
    .bind(compact.clone())
    .bind(secs)
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    let extended =
        sqlx::query("UPDATE activations SET expires_at = expires_at + $2 WHERE serial = $1")
            .bind(compact.clone())
            .bind(secs)
            .execute(&mut *tx)
            .await
            .map_err(DbError::from)?
            .rows_affected();
    let detail = json!({ "days": e.days, "activations": extended });
    audit_commit(tx, &admin, "extend", &compact, detail).await?;
    let row = serial_row(&st, &compact).await?;
    Ok(Json(json!({ "serial": row, "activations_extended": extended })).into_response())
}

async fn revoke(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    let compact = path_serial(&serial)?.compact();
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query("UPDATE serials SET revoked = 1 WHERE serial = $1")
        .bind(compact.clone())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("serial not found"));
    }
    audit_commit(tx, &admin, "revoke", &compact, json!({})).await?;
    let row = serial_row(&st, &compact).await?;
    Ok(Json(json!({ "serial": row })).into_response())
}

/// `POST .../reset` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    activation_id: String,
}

async fn reset(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    Path(serial): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let compact = path_serial(&serial)?.compact();
    let r: Reset = json_body(body)?;
    let mut tx = st.db.begin_write().await?;
    lock_serial(&mut tx, &compact).await?;
    let deleted = sqlx::query("DELETE FROM activations WHERE id = $1 AND serial = $2")
        .bind(r.activation_id.clone())
        .bind(compact.clone())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("activation not found for this serial"));
    }
    sqlx::query(
        "UPDATE serials SET activated_devices = activated_devices - 1 \
         WHERE serial = $1 AND activated_devices > 0",
    )
    .bind(compact.clone())
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    let detail = json!({ "activation_id": r.activation_id });
    audit_commit(tx, &admin, "reset", &compact, detail).await?;
    let row = serial_row(&st, &compact).await?;
    Ok(Json(json!({ "serial": row, "removed_activation": r.activation_id })).into_response())
}

/// `GET /v1/admin/export.csv` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    vendor: Option<String>,
}

/// Header of the CSV export.
pub const CSV_HEADER: [&str; 15] = [
    "serial",
    "vendor",
    "kind",
    "models",
    "edition",
    "device_cap",
    "validity_days",
    "package_name",
    "not_after",
    "revoked",
    "activated_devices",
    "activation_rows",
    "activations_total",
    "created_at",
    "batch_id",
];

async fn export_csv(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let rows = store::export(st.db.pool(), q.vendor.as_deref()).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| ApiError::from(DbError::Invalid(format!("csv: {e}")));
    w.write_record(CSV_HEADER).map_err(csv_err)?;
    for r in &rows {
        let s = &r.serial;
        w.write_record([
            s.serial.to_string(),
            s.vendor.clone(),
            s.kind.to_string(),
            s.models.join(";"),
            s.edition.clone(),
            s.device_cap.to_string(),
            s.validity_days.to_string(),
            s.package_name.clone().unwrap_or_default(),
            s.not_after.map(|t| t.to_string()).unwrap_or_default(),
            u8::from(s.revoked).to_string(),
            s.activated_devices.to_string(),
            r.devices.to_string(),
            r.activations.to_string(),
            s.created_at.to_string(),
            s.batch_id.clone(),
        ])
        .map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::from(DbError::Invalid(format!("csv: {e}"))))?;
    audit_read(
        &st,
        &admin,
        "export_csv",
        q.vendor.as_deref().unwrap_or(""),
        json!({ "rows": rows.len() }),
    )
    .await;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"outpost-serials.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn offline_activate(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    super::public::run_activation(&st, &admin.0, body).await
}

/// `GET /v1/admin/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
}

async fn list_audit(
    State(st): State<Shared>,
    Extension(admin): Extension<Admin>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1-{MAX_PAGE}")));
    }
    let entries = audit::list(st.db.pool(), limit).await?;
    audit_read(&st, &admin, "list_audit", "", json!({ "limit": limit })).await;
    Ok(Json(json!({ "entries": entries })).into_response())
}
