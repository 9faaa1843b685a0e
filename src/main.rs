//! Posthorn: a Kubernetes operator for mail submission stacks, and the mail server it runs.

mod api;
mod auth;
mod config;
mod delivery;
mod policy;
mod reload;
mod smtp;
mod spool;
mod telemetry;
mod tls;

fn main() {}
