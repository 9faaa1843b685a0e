//! Posthorn: a Kubernetes operator for mail submission stacks, and the mail server it runs.
//!
//! The `posthorn` binary is a thin command-line front; everything lives here so that
//! tests and fuzz targets can drive the pieces in-process.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crlf;
pub mod handover;
pub mod mail;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod queue;
pub mod reload;
pub mod serve;
pub mod signals;
pub mod smtp;
pub mod spool;
pub mod telemetry;
pub mod tls;
pub mod transport;
