//! `outpost-license-server`: the activation service for Outpost per-device model
//! licences.
//!
//! Devices send an activation request (serial, vendor, product, device fingerprint);
//! the server applies the licence rules ([`rules::activation`]) and answers with a
//! licence file signed by its Ed25519 key ([`keys`]). Vendors manage vendors, models
//! and serials through the admin API ([`api::admin`]), or activate request files
//! offline ([`offline`]). See `docs/license-server.md`.
//!
//! Modules, one concern each:
//! - [`db`]: the SQLite / PostgreSQL pool and migrations; [`store`]: typed rows and
//!   admin queries; [`audit`]: the audit trail.
//! - [`keys`]: the key directory and rotation.
//! - [`rules::activation`]: the activation rules.
//! - [`api`]: HTTP routes ([`api::public`], [`api::admin`]); [`auth`]: admin tokens;
//!   [`limits`]: rate limits; [`metrics`]: Prometheus counters; [`codes`]: error
//!   codes and HTTP statuses.
//! - [`offline`]: offline and bulk activation; [`cli`]: the command line.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod codes;
pub mod db;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod offline;
pub mod rules;
pub mod store;
