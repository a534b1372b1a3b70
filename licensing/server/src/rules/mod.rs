//! Business rules of the licence server.

pub mod activation;
