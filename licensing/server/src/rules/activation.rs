//! The activation rules: one request in, a signed licence or a coded refusal out.
//!
//! Shared by `POST /v1/activate`, `POST /v1/admin/offline-activate` and the
//! `offline-activate` / `bulk-activate` subcommands. The checks run in this order,
//! inside one write transaction that starts by locking the serial's row:
//!
//! | step | check | code |
//! | --- | --- | --- |
//! | 2 | the serial exists | 2002 |
//! | 3 | not revoked | 2003 |
//! | 4 | `not_after` not passed | 2004 |
//! | 5 | vendor and product id match the serial | 2009 |
//! | 6 | product line: the package name matches | 2008 |
//! | 7 | device identity; a known device is re-activated (at most [`MAX_ACTIVATIONS_PER_DEVICE`] times, same expiry) | 5001, 2007, 2004 |
//! | 8 | a new device needs a free slot, claimed with one conditional `UPDATE` | 2005, 2006 |
//! | 9 | sign, store the licence and an audit row, commit | 5005 |
//!
//! Step 1 (size, JSON, serial check: 5004, 5001, 2001) is
//! [`ActivationRequest::parse`], done by the caller. The licence is handed back only
//! after the commit, so an answered activation is durable.

use outpost_licensing::error::LicenseError;
use outpost_licensing::license_file::{Claims, LicenseFile};
use outpost_licensing::protocol::{ActivationRequest, ErrorBody, BAD_REQUEST};
use outpost_licensing::{format_time, Fingerprint, LicenseKind, Serial};
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::audit::{self, Actor, AuditEntry};
use crate::codes::{error_body, STORAGE};
use crate::db::{random_id, to_i64, to_u64, Db, DbError};
use crate::keys::KeyRing;
use crate::store::{self, SerialRow, SERIAL_COLUMNS};

/// How many times one device may activate the same serial (the first included).
pub const MAX_ACTIVATIONS_PER_DEVICE: u32 = 50;
/// Seconds in a day.
const DAY: u64 = 86_400;
/// Attempts when two inserts for the same device race (the loser re-reads).
const ATTEMPTS: usize = 3;

/// Why an activation was not granted.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A licence rule (2xxx) or a bad request (5001) refused it.
    #[error("{0}")]
    Refused(LicenseError),
    /// The database failed; nothing was changed.
    #[error("{0}")]
    Storage(#[from] DbError),
}

impl From<LicenseError> for ActivationError {
    fn from(e: LicenseError) -> ActivationError {
        ActivationError::Refused(e)
    }
}

impl ActivationError {
    /// The stable code: 2xxx, 5001 or 5005.
    pub fn code(&self) -> u32 {
        match self {
            ActivationError::Refused(e) => e.code(),
            ActivationError::Storage(_) => STORAGE,
        }
    }

    /// The JSON error body. Storage failures do not describe the database.
    pub fn body(&self) -> ErrorBody {
        match self {
            ActivationError::Refused(e) => error_body(e),
            ActivationError::Storage(_) => ErrorBody {
                error_code: STORAGE,
                message: "the licence database is unavailable; try again later".into(),
                detail: 0,
            },
        }
    }
}

/// A granted activation.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The signed licence.
    pub license: LicenseFile,
    /// True when the device already had an activation of this serial.
    pub reactivation: bool,
}

fn server_error(code: u32, message: String) -> LicenseError {
    LicenseError::Server { code, message }
}

/// The device key: SHA-256 hex of the fingerprint text, or for a product-line request
/// without a fingerprint, of the package name and nonce.
pub fn device_key(req: &ActivationRequest) -> Option<String> {
    let text = match (&req.fingerprint, &req.package_name) {
        (Some(fp), _) => fp.to_string(),
        (None, Some(p)) => format!("{p}\n{}", req.nonce),
        (None, None) => return None,
    };
    Some(hex::encode(Sha256::digest(text.as_bytes())))
}

/// An existing activation found for the requesting device.
struct Existing {
    id: String,
    count: u64,
    expires_at: u64,
}

/// Applies the rules to a parsed request and, when granted, stores and signs the
/// licence. Every attempt, granted or refused, leaves an audit row (a refusal's row
/// is best effort: a failing database cannot record its own failure).
pub async fn activate(
    db: &Db,
    keys: &KeyRing,
    req: &ActivationRequest,
    actor: &Actor,
    now: u64,
) -> Result<Granted, ActivationError> {
    let serial = Serial::parse(&req.serial)?;
    let mut tries = 0;
    let result = loop {
        tries += 1;
        let r = async {
            let mut tx = db.begin_write().await?;
            let r = rules(&mut tx, keys, req, &serial, actor, now).await;
            match r {
                Ok(_) => tx.commit().await.map_err(DbError::from)?,
                // Release the write lock now rather than when the pool recycles the
                // connection.
                Err(_) => {
                    let _ = tx.rollback().await;
                }
            }
            r
        }
        .await;
        match &r {
            // Two requests of one new device raced past the device search: the loser
            // retries and finds the winner's activation.
            Err(ActivationError::Storage(e)) if e.is_unique_violation() && tries < ATTEMPTS => {}
            _ => break r,
        }
    };
    match &result {
        Ok(g) => {
            tracing::info!(
                serial = %serial.masked(),
                actor = %actor.0,
                reactivation = g.reactivation,
                activation_id = %g.license.claims.activation_id,
                "licence issued"
            );
        }
        Err(e) => {
            let code = e.code();
            if let ActivationError::Storage(err) = e {
                tracing::error!(serial = %serial.masked(), error = %err, "activation failed: storage");
            } else {
                tracing::info!(serial = %serial.masked(), actor = %actor.0, code, "activation refused");
            }
            record_refusal(db, actor, Some(&serial), req, e).await;
        }
    }
    result
}

/// Writes the audit row of a refused attempt (best effort).
async fn record_refusal(
    db: &Db,
    actor: &Actor,
    serial: Option<&Serial>,
    req: &ActivationRequest,
    e: &ActivationError,
) {
    let subject = serial.map(Serial::compact).unwrap_or_default();
    let entry = AuditEntry {
        actor,
        action: "activate",
        subject: &subject,
        outcome: e.code(),
        detail: serde_json::json!({
            "vendor": req.vendor,
            "product_id": req.product_id,
            "package_name": req.package_name,
            "nonce": req.nonce,
            "message": e.body().message,
        }),
    };
    if let Err(err) = audit::record(db.pool(), &entry).await {
        tracing::warn!(error = %err, "cannot write the audit row of a refused activation");
    }
}

/// Writes the audit row of a request refused before it could be parsed (best effort).
pub async fn record_bad_request(db: &Db, actor: &Actor, code: u32, message: &str) {
    let entry = AuditEntry {
        actor,
        action: "activate",
        subject: "",
        outcome: code,
        detail: serde_json::json!({ "message": message }),
    };
    if let Err(err) = audit::record(db.pool(), &entry).await {
        tracing::warn!(error = %err, "cannot write the audit row of a refused activation");
    }
}

/// Steps 2 to 9 on an open write transaction; [`activate`] commits or rolls back.
async fn rules(
    tx: &mut Transaction<'static, Any>,
    keys: &KeyRing,
    req: &ActivationRequest,
    serial: &Serial,
    actor: &Actor,
    now: u64,
) -> Result<Granted, ActivationError> {
    let compact = serial.compact();
    // Row lock on the serial (PostgreSQL): concurrent activations of one serial run
    // one after the other, so the device search below cannot race. SQLite already
    // holds the database write lock.
    if !store::lock_serial(&mut **tx, &compact).await? {
        return Err(LicenseError::UnknownSerial.into());
    }
    let row = sqlx::query(&format!(
        "SELECT {SERIAL_COLUMNS} FROM serials WHERE serial = $1"
    ))
    .bind(compact.clone())
    .fetch_optional(&mut **tx)
    .await
    .map_err(DbError::from)?
    .ok_or(LicenseError::UnknownSerial)?;
    let s = SerialRow::from_row(&row)?;

    // 3. Revoked.
    if s.revoked {
        return Err(LicenseError::Revoked.into());
    }
    // 4. Serial-level expiry.
    if let Some(not_after) = s.not_after {
        if not_after <= now {
            return Err(server_error(
                2004,
                format!("serial expired on {}", format_time(not_after)),
            )
            .into());
        }
    }
    // 5. Vendor and model.
    if req.vendor != s.vendor || !s.models.contains(&req.product_id) {
        return Err(LicenseError::VendorOrModelMismatch(
            "the serial is not valid for this vendor and product".into(),
        )
        .into());
    }
    // 6. Product line: the app.
    if s.kind == LicenseKind::ProductLine && req.package_name != s.package_name {
        return Err(LicenseError::WrongPackageName {
            found: req.package_name.clone().unwrap_or_else(|| "none".into()),
        }
        .into());
    }
    // 7. Device identity.
    if s.kind != LicenseKind::ProductLine && req.fingerprint.is_none() {
        return Err(server_error(
            BAD_REQUEST,
            format!("a {} activation needs a device fingerprint", s.kind),
        )
        .into());
    }
    let key = device_key(req).ok_or_else(|| {
        server_error(
            BAD_REQUEST,
            "a request needs a fingerprint or a package name".into(),
        )
    })?;
    let existing = find_existing(tx, &compact, &key, req.fingerprint.as_ref()).await?;

    let activation_id;
    let expires_at;
    let reactivation = existing.is_some();
    if let Some(ex) = existing {
        if ex.count >= u64::from(MAX_ACTIVATIONS_PER_DEVICE) {
            return Err(LicenseError::TooManyActivations {
                limit: MAX_ACTIVATIONS_PER_DEVICE,
            }
            .into());
        }
        if ex.expires_at <= now {
            return Err(server_error(
                2004,
                format!(
                    "licence for this device expired on {}",
                    format_time(ex.expires_at)
                ),
            )
            .into());
        }
        activation_id = ex.id;
        expires_at = ex.expires_at;
    } else {
        let full = || -> ActivationError {
            match s.kind {
                LicenseKind::ProductLine => LicenseError::DeviceCapReached {
                    cap: u32::try_from(s.device_cap).unwrap_or(u32::MAX),
                },
                _ => LicenseError::AlreadyActivated,
            }
            .into()
        };
        if s.activated_devices >= s.device_cap {
            return Err(full());
        }
        // 8. Claim a slot: one conditional statement, the guard that holds even
        // without the row lock.
        let claimed = sqlx::query(
            "UPDATE serials SET activated_devices = activated_devices + 1 \
             WHERE serial = $1 AND activated_devices < device_cap",
        )
        .bind(compact.clone())
        .execute(&mut **tx)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        if claimed != 1 {
            return Err(full());
        }
        activation_id = random_id()?;
        let by_validity = now.saturating_add(s.validity_days.saturating_mul(DAY));
        expires_at = s.not_after.map_or(by_validity, |n| n.min(by_validity));
    }

    // 9. Sign and store.
    let claims = Claims {
        serial: serial.clone(),
        kind: s.kind,
        vendor: s.vendor.clone(),
        models: s.models.clone(),
        edition: s.edition.clone(),
        fingerprint: req.fingerprint.clone(),
        package_name: match s.kind {
            LicenseKind::ProductLine => s.package_name.clone(),
            _ => None,
        },
        issued_at: now,
        expires_at,
        activation_id: activation_id.clone(),
        key_id: String::new(),
    };
    let current = keys.current();
    let license = LicenseFile::sign(claims, &current.signing, keys.endorsement().cloned());
    // Serialising strings and integers cannot fail.
    let license_json = serde_json::to_string(&license).unwrap_or_default();
    if reactivation {
        sqlx::query(
            "UPDATE activations SET activation_count = activation_count + 1, last_at = $1, \
             nonce = $2, license_json = $3 WHERE id = $4",
        )
        .bind(to_i64(now))
        .bind(req.nonce.clone())
        .bind(license_json)
        .bind(activation_id.clone())
        .execute(&mut **tx)
        .await
        .map_err(DbError::from)?;
    } else {
        sqlx::query(
            "INSERT INTO activations (id, serial, device_key, fingerprint, package_name, \
             activation_count, first_at, last_at, expires_at, nonce, license_json) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8, $9)",
        )
        .bind(activation_id.clone())
        .bind(compact.clone())
        .bind(key)
        .bind(req.fingerprint.as_ref().map(Fingerprint::to_string))
        .bind(req.package_name.clone())
        .bind(to_i64(now))
        .bind(to_i64(expires_at))
        .bind(req.nonce.clone())
        .bind(license_json)
        .execute(&mut **tx)
        .await
        .map_err(DbError::from)?;
    }
    audit::record(
        &mut **tx,
        &AuditEntry {
            actor,
            action: "activate",
            subject: &compact,
            outcome: 0,
            detail: serde_json::json!({
                "activation_id": activation_id,
                "reactivation": reactivation,
                "vendor": req.vendor,
                "product_id": req.product_id,
                "package_name": req.package_name,
                "nonce": req.nonce,
                "expires_at": expires_at,
                "key_id": current.id,
            }),
        },
    )
    .await?;
    Ok(Granted {
        license,
        reactivation,
    })
}

/// The serial's activation for this device: same device key, or a stored fingerprint
/// that accepts the request's under the tolerance rule.
async fn find_existing(
    tx: &mut Transaction<'static, Any>,
    compact: &str,
    key: &str,
    fingerprint: Option<&Fingerprint>,
) -> Result<Option<Existing>, DbError> {
    let read = |r: &sqlx::any::AnyRow| -> Result<Existing, DbError> {
        Ok(Existing {
            id: r.try_get("id")?,
            count: to_u64(r.try_get("activation_count")?, "activation_count")?,
            expires_at: to_u64(r.try_get("expires_at")?, "expires_at")?,
        })
    };
    let exact = sqlx::query(
        "SELECT id, activation_count, expires_at FROM activations \
         WHERE serial = $1 AND device_key = $2",
    )
    .bind(compact.to_string())
    .bind(key.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = exact {
        return read(&r).map(Some);
    }
    let Some(fp) = fingerprint else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT id, fingerprint, activation_count, expires_at FROM activations \
         WHERE serial = $1 AND fingerprint IS NOT NULL ORDER BY first_at, id",
    )
    .bind(compact.to_string())
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let stored: String = r.try_get("fingerprint")?;
        if Fingerprint::parse(&stored).is_ok_and(|s| s.accepts(fp)) {
            return read(r).map(Some);
        }
    }
    Ok(None)
}
