//! The shared vocabulary of the mail side, below everything else: it imports nothing of
//! the crate, so `api`, `config`, `operator`, `policy`, `smtp` and `delivery` all use it.

mod address;
mod listener;
pub mod name;
mod network;

pub use address::{Address, primary_domain};
pub use listener::{ListenerKind, METRICS_NAME, METRICS_POD_PORT};
pub use network::network;
