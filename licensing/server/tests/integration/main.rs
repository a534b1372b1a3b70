//! Integration tests of `outpost-license-server`: the real binary on 127.0.0.1:0 with
//! a SQLite file in a temporary directory (and PostgreSQL when
//! OUTPOST_TEST_POSTGRES_URL is set).

mod admin;
mod common;
mod crash;
mod hostile;
mod keys;
mod offline;
mod postgres;
mod rules;
