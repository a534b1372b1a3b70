//! The audit trail: one row per admin action and per activation attempt.
//!
//! Rows are written in the same transaction as the change they describe when there
//! is one (a granted activation, an admin change), so the trail never claims a change
//! that was rolled back. Refused activations are written on their own.

use serde::Serialize;
use sqlx::{Any, Executor, Row};

use crate::db::{to_i64, DbError};

/// Who did something, as stored in `audit.actor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// A device calling `/v1/activate` from this address.
    pub fn device(ip: std::net::IpAddr) -> Actor {
        Actor(format!("device {ip}"))
    }

    /// An administrator, named by the id of their token.
    pub fn admin(token_id: &str) -> Actor {
        Actor(format!("admin {token_id}"))
    }

    /// A command-line subcommand working on the database directly.
    pub fn cli(command: &str) -> Actor {
        Actor(format!("cli {command}"))
    }
}

/// One audit row to write.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Who.
    pub actor: &'a Actor,
    /// What, e.g. `activate`, `create_serials`, `revoke`.
    pub action: &'a str,
    /// On what: a serial (compact form), a vendor id, a batch id; empty when unknown.
    pub subject: &'a str,
    /// 0, or the error code of a refusal.
    pub outcome: u32,
    /// More facts, as JSON.
    pub detail: serde_json::Value,
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// Row id (sorts by time).
    pub id: String,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// 0 or the error code.
    pub outcome: i64,
    /// More facts.
    pub detail: serde_json::Value,
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Writes one row, on a transaction or the pool.
pub async fn record<'e, E>(exec: E, entry: &AuditEntry<'_>) -> Result<(), DbError>
where
    E: Executor<'e, Database = Any>,
{
    let micros = now_micros();
    let mut rand = [0u8; 6];
    getrandom::fill(&mut rand).map_err(|e| DbError::Invalid(format!("no random source: {e}")))?;
    let id = format!("{micros:020}-{}", hex::encode(rand));
    let at = to_i64(u64::try_from(micros / 1_000_000).unwrap_or(u64::MAX));
    sqlx::query(
        "INSERT INTO audit (id, at, actor, action, subject, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(at)
    .bind(entry.actor.0.clone())
    .bind(entry.action.to_string())
    .bind(entry.subject.to_string())
    .bind(i64::from(entry.outcome))
    .bind(entry.detail.to_string())
    .execute(exec)
    .await?;
    Ok(())
}

/// The newest `limit` rows, newest first.
pub async fn list<'e, E>(exec: E, limit: i64) -> Result<Vec<AuditRow>, DbError>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT id, at, actor, action, subject, outcome, detail FROM audit \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| {
            let detail: String = r.try_get("detail")?;
            Ok(AuditRow {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                subject: r.try_get("subject")?,
                outcome: r.try_get("outcome")?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            })
        })
        .collect()
}
