//! The database: one connection pool over SQLite or PostgreSQL, and the migrations.
//!
//! Both back ends are driven through `sqlx::Any` with the same SQL: portable types
//! (`TEXT`, `BIGINT`), text ids, `$1`-style placeholders (understood by both drivers).
//!
//! - SQLite (`sqlite://path/to/file.db`): the file is created on first start, put in
//!   WAL mode, and every connection runs with `synchronous=FULL`, so a committed
//!   activation survives `kill -9` and power loss. Write transactions go through a
//!   pool of one connection and start with `BEGIN IMMEDIATE`: writers of this process
//!   wait in the pool's fair queue rather than in SQLite's sleeping busy handler (which
//!   stretched the p99 latency under load to a second), and a writer from another
//!   process still waits on the busy timeout instead of failing on a stale snapshot.
//! - PostgreSQL (`postgres://user:pass@host/db`): several server processes may share
//!   one database; the activation rules take a row lock on the serial and claim device
//!   slots with one conditional `UPDATE`, so caps hold across processes.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Executor, Transaction};

/// Failure of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("unsupported database URL (use sqlite://FILE or postgres://...)")]
    UnsupportedUrl,
    /// A query or the connection failed.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not have the expected form (the database was edited by hand).
    #[error("database holds an invalid value: {0}")]
    Invalid(String),
}

impl DbError {
    /// True for a violated UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Connection pool with its back end.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// Write transactions: one connection on SQLite, the same pool on PostgreSQL.
    writer: AnyPool,
    backend: Backend,
}

/// How long a SQLite writer waits for the lock before failing.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 30_000;

/// The SQL migrations, embedded in the binary (files in `licensing/server/migrations/`).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial schema",
    include_str!("../migrations/0001_initial.sql"),
)];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core_box::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// `BoxFuture` as `sqlx`'s `MigrationSource` spells it.
mod futures_core_box {
    /// A boxed, sendable future.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Normalises a SQLite URL so a missing file is created (`mode=rwc`).
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

impl Db {
    /// Connects, creates a missing SQLite file, applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let options: AnyConnectOptions = url.parse()?;
        let options = options.disable_statement_logging();
        if backend == Backend::Sqlite {
            // Switching to WAL needs an exclusive lock that the busy timeout does not
            // cover: do it once, on one connection, before the pool opens more.
            let mut conn = options.connect().await?;
            conn.execute("PRAGMA journal_mode=WAL").await?;
            conn.close().await?;
        }
        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        format!(
                            "PRAGMA synchronous=FULL; PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}; PRAGMA foreign_keys=ON"
                        )
                        .as_str(),
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let writer_options = pool.clone();
        let pool = pool.connect_with(options.clone()).await?;
        let writer = match backend {
            Backend::Sqlite => {
                writer_options
                    .max_connections(1)
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => pool.clone(),
        };
        let db = Db {
            pool,
            writer,
            backend,
        };
        Migrator::new(Embedded).await?.run(&db.pool).await?;
        Ok(db)
    }

    /// The pool, for queries outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The back end.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write: on SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), waiting up to the busy timeout for other writers.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        Ok(match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        })
    }

    /// `SELECT 1`, for the health check.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Waits for borrowed connections to come back and closes them all.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Converts a stored integer that must be non-negative.
pub fn to_u64(v: i64, what: &str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Invalid(format!("negative {what}")))
}

/// Converts a time or count for storage (saturating; times are far below `i64::MAX`).
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A random id: 16 random bytes as 32 hex characters.
pub fn random_id() -> Result<String, DbError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| DbError::Invalid(format!("no random source: {e}")))?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyRow;
    use sqlx::AnyConnection;
    use sqlx::Row;

    /// Runs `PRAGMA name` on one connection.
    async fn pragma(conn: &mut AnyConnection, name: &str) -> AnyRow {
        let sql = format!("PRAGMA {name}");
        sqlx::query(&sql).fetch_one(conn).await.unwrap()
    }

    #[tokio::test]
    async fn sqlite_file_is_created_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()), 2)
            .await
            .unwrap();
        assert!(path.exists());
        assert_eq!(db.backend(), Backend::Sqlite);
        let mut conn = db.pool().acquire().await.unwrap();
        let mode: String = pragma(&mut conn, "journal_mode").await.try_get(0).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = pragma(&mut conn, "synchronous").await.try_get(0).unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        drop(conn);
        db.ping().await.unwrap();
        db.close().await;
        // Migrations are applied once; reopening is fine.
        let again = Db::connect(&format!("sqlite://{}", path.display()), 1)
            .await
            .unwrap();
        again.ping().await.unwrap();
        assert!(matches!(
            Db::connect("mysql://x", 1).await,
            Err(DbError::UnsupportedUrl)
        ));
    }
}
