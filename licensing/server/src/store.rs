//! Typed rows of the database and the queries behind the admin API.

use outpost_licensing::{LicenseKind, Serial};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::db::{to_u64, DbError};

/// Columns of `serials`, in the order [`SerialRow::from_row`] reads them.
pub const SERIAL_COLUMNS: &str = "serial, vendor_id, kind, models, edition, device_cap, \
     validity_days, package_name, not_after, revoked, activated_devices, created_at, batch_id";

/// Columns of `activations`, in the order [`ActivationRow::from_row`] reads them.
pub const ACTIVATION_COLUMNS: &str = "id, serial, device_key, fingerprint, package_name, \
     activation_count, first_at, last_at, expires_at, nonce, license_json";

/// Parses a stored licence kind.
pub fn parse_kind(text: &str) -> Option<LicenseKind> {
    match text {
        "trial" => Some(LicenseKind::Trial),
        "per_device" => Some(LicenseKind::PerDevice),
        "product_line" => Some(LicenseKind::ProductLine),
        _ => None,
    }
}

/// One serial.
#[derive(Debug, Clone, Serialize)]
pub struct SerialRow {
    /// The serial (serialised in the dashed form).
    pub serial: Serial,
    /// Vendor id.
    pub vendor: String,
    /// Licence kind.
    pub kind: LicenseKind,
    /// Product ids the serial covers.
    pub models: Vec<String>,
    /// Edition granted.
    pub edition: String,
    /// Devices allowed (1 for trial and per-device serials).
    pub device_cap: u64,
    /// Days a licence is valid from its first activation.
    pub validity_days: u64,
    /// App package name (product line only).
    pub package_name: Option<String>,
    /// Absolute expiry of the serial, Unix seconds.
    pub not_after: Option<u64>,
    /// Revoked by the vendor.
    pub revoked: bool,
    /// Devices activated so far.
    pub activated_devices: u64,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Batch the serial was created in.
    pub batch_id: String,
}

impl SerialRow {
    /// Reads a row selected with [`SERIAL_COLUMNS`].
    pub fn from_row(r: &AnyRow) -> Result<SerialRow, DbError> {
        let serial: String = r.try_get("serial")?;
        let kind: String = r.try_get("kind")?;
        let models: String = r.try_get("models")?;
        let not_after: Option<i64> = r.try_get("not_after")?;
        Ok(SerialRow {
            serial: Serial::parse(&serial)
                .map_err(|_| DbError::Invalid("malformed serial in the database".into()))?,
            vendor: r.try_get("vendor_id")?,
            kind: parse_kind(&kind)
                .ok_or_else(|| DbError::Invalid(format!("unknown licence kind {kind:?}")))?,
            models: serde_json::from_str(&models)
                .map_err(|_| DbError::Invalid("models is not a JSON array".into()))?,
            edition: r.try_get("edition")?,
            device_cap: to_u64(r.try_get("device_cap")?, "device_cap")?,
            validity_days: to_u64(r.try_get("validity_days")?, "validity_days")?,
            package_name: r.try_get("package_name")?,
            not_after: not_after.map(|v| to_u64(v, "not_after")).transpose()?,
            revoked: r.try_get::<i64, _>("revoked")? != 0,
            activated_devices: to_u64(r.try_get("activated_devices")?, "activated_devices")?,
            created_at: to_u64(r.try_get("created_at")?, "created_at")?,
            batch_id: r.try_get("batch_id")?,
        })
    }
}

/// One activation (a device a serial is activated on).
#[derive(Debug, Clone, Serialize)]
pub struct ActivationRow {
    /// Activation id (also in the licence's `activation_id`).
    pub id: String,
    /// The serial (dashed form).
    pub serial: Serial,
    /// SHA-256 hex identifying the device.
    pub device_key: String,
    /// The fingerprint of the first activation.
    pub fingerprint: Option<String>,
    /// The app package name, if any.
    pub package_name: Option<String>,
    /// Activations on this device so far, the first included.
    pub count: u64,
    /// First activation, Unix seconds.
    pub first_at: u64,
    /// Latest activation, Unix seconds.
    pub last_at: u64,
    /// Licence expiry, Unix seconds.
    pub expires_at: u64,
    /// Nonce of the latest request.
    pub nonce: String,
    /// The latest licence issued, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<serde_json::Value>,
}

impl ActivationRow {
    /// Reads a row selected with [`ACTIVATION_COLUMNS`]; `with_license` keeps the
    /// stored licence.
    pub fn from_row(r: &AnyRow, with_license: bool) -> Result<ActivationRow, DbError> {
        let serial: String = r.try_get("serial")?;
        let license = if with_license {
            let text: String = r.try_get("license_json")?;
            serde_json::from_str(&text).ok()
        } else {
            None
        };
        Ok(ActivationRow {
            id: r.try_get("id")?,
            serial: Serial::parse(&serial)
                .map_err(|_| DbError::Invalid("malformed serial in the database".into()))?,
            device_key: r.try_get("device_key")?,
            fingerprint: r.try_get("fingerprint")?,
            package_name: r.try_get("package_name")?,
            count: to_u64(r.try_get("activation_count")?, "activation_count")?,
            first_at: to_u64(r.try_get("first_at")?, "first_at")?,
            last_at: to_u64(r.try_get("last_at")?, "last_at")?,
            expires_at: to_u64(r.try_get("expires_at")?, "expires_at")?,
            nonce: r.try_get("nonce")?,
            license,
        })
    }
}

/// Takes the serial's row lock (PostgreSQL; SQLite already holds the database write
/// lock). False when the serial does not exist.
pub async fn lock_serial<'e, E>(exec: E, compact: &str) -> Result<bool, DbError>
where
    E: Executor<'e, Database = Any>,
{
    let locked =
        sqlx::query("UPDATE serials SET activated_devices = activated_devices WHERE serial = $1")
            .bind(compact.to_string())
            .execute(exec)
            .await?
            .rows_affected();
    Ok(locked != 0)
}

/// Reads one serial.
pub async fn get_serial<'e, E>(exec: E, compact: &str) -> Result<Option<SerialRow>, DbError>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(&format!(
        "SELECT {SERIAL_COLUMNS} FROM serials WHERE serial = $1"
    ))
    .bind(compact.to_string())
    .fetch_optional(exec)
    .await?;
    row.as_ref().map(SerialRow::from_row).transpose()
}

/// A serial's activations, oldest first.
pub async fn activations_of<'e, E>(
    exec: E,
    compact: &str,
    with_license: bool,
) -> Result<Vec<ActivationRow>, DbError>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {ACTIVATION_COLUMNS} FROM activations WHERE serial = $1 ORDER BY first_at, id"
    ))
    .bind(compact.to_string())
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| ActivationRow::from_row(r, with_license))
        .collect()
}

/// Filters of the serial list.
#[derive(Debug, Clone, Default)]
pub struct SerialFilter {
    /// Only this vendor.
    pub vendor: Option<String>,
    /// Only this kind.
    pub kind: Option<LicenseKind>,
    /// Only revoked (true) or not revoked (false) serials.
    pub revoked: Option<bool>,
    /// Substring of the serial (dashes and case ignored) or of the batch id.
    pub q: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Serials matching a filter (newest first) and the total number that match.
pub async fn list_serials(
    pool: &sqlx::AnyPool,
    f: &SerialFilter,
) -> Result<(Vec<SerialRow>, u64), DbError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let next = |binds: &mut Vec<String>, v: String| {
        binds.push(v);
        format!("${}", binds.len())
    };
    if let Some(v) = &f.vendor {
        let p = next(&mut binds, v.clone());
        clauses.push(format!("vendor_id = {p}"));
    }
    if let Some(k) = f.kind {
        let p = next(&mut binds, k.to_string());
        clauses.push(format!("kind = {p}"));
    }
    if let Some(r) = f.revoked {
        clauses.push(if r { "revoked <> 0" } else { "revoked = 0" }.into());
    }
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        let serial_part: String = q
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        let a = next(&mut binds, format!("%{}%", like_escape(&serial_part)));
        let b = next(&mut binds, format!("%{}%", like_escape(q)));
        clauses.push(format!(
            "(serial LIKE {a} ESCAPE '\\' OR batch_id LIKE {b} ESCAPE '\\')"
        ));
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let count_sql = format!("SELECT COUNT(*) AS n FROM serials{where_sql}");
    let mut count = sqlx::query(&count_sql);
    for b in &binds {
        count = count.bind(b.clone());
    }
    let total: i64 = count.fetch_one(pool).await?.try_get("n")?;
    let list_sql = format!(
        "SELECT {SERIAL_COLUMNS} FROM serials{where_sql} ORDER BY created_at DESC, serial \
         LIMIT ${} OFFSET ${}",
        binds.len() + 1,
        binds.len() + 2
    );
    let mut list = sqlx::query(&list_sql);
    for b in &binds {
        list = list.bind(b.clone());
    }
    let rows = list.bind(f.limit).bind(f.offset).fetch_all(pool).await?;
    let serials = rows
        .iter()
        .map(SerialRow::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((serials, to_u64(total, "count")?))
}

/// Activations, optionally of one serial and/or one vendor, newest first.
pub async fn list_activations(
    pool: &sqlx::AnyPool,
    serial: Option<&str>,
    vendor: Option<&str>,
    limit: i64,
) -> Result<Vec<ActivationRow>, DbError> {
    let cols = ACTIVATION_COLUMNS
        .split(", ")
        .map(|c| format!("a.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    if let Some(s) = serial {
        binds.push(s.to_string());
        clauses.push(format!("a.serial = ${}", binds.len()));
    }
    if let Some(v) = vendor {
        binds.push(v.to_string());
        clauses.push(format!("s.vendor_id = ${}", binds.len()));
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT {cols} FROM activations a JOIN serials s ON s.serial = a.serial{where_sql} \
         ORDER BY a.first_at DESC, a.id LIMIT ${}",
        binds.len() + 1
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.bind(limit).fetch_all(pool).await?;
    rows.iter()
        .map(|r| ActivationRow::from_row(r, false))
        .collect()
}

/// One line of the CSV export.
#[derive(Debug, Clone)]
pub struct ExportRow {
    /// The serial and its settings.
    pub serial: SerialRow,
    /// Activation rows (devices).
    pub devices: u64,
    /// Activations in total, re-activations included.
    pub activations: u64,
}

/// Every serial (of a vendor) with its activation counts, oldest first.
pub async fn export(pool: &sqlx::AnyPool, vendor: Option<&str>) -> Result<Vec<ExportRow>, DbError> {
    let cols = SERIAL_COLUMNS
        .split(", ")
        .map(|c| format!("s.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let where_sql = if vendor.is_some() {
        " WHERE s.vendor_id = $1"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {cols}, \
         CAST(COUNT(a.id) AS BIGINT) AS devices, \
         CAST(COALESCE(SUM(a.activation_count), 0) AS BIGINT) AS total_activations \
         FROM serials s LEFT JOIN activations a ON a.serial = s.serial{where_sql} \
         GROUP BY {cols} ORDER BY s.created_at, s.serial"
    );
    let mut q = sqlx::query(&sql);
    if let Some(v) = vendor {
        q = q.bind(v.to_string());
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(ExportRow {
                serial: SerialRow::from_row(r)?,
                devices: to_u64(r.try_get("devices")?, "devices")?,
                activations: to_u64(r.try_get("total_activations")?, "activations")?,
            })
        })
        .collect()
}
