//! The shared vocabulary of the mail side, below everything else: it imports nothing of
//! the crate, so `api`, `config`, `operator`, `policy`, `smtp`, `queue` and `transport`
//! all use it.

mod address;
pub mod dkim;
pub mod dns;
mod listener;
pub mod name;
mod network;
pub mod srs;

pub use address::{Address, Delimiter, primary_domain};
pub use listener::{
    HANDOVER_NAME, HANDOVER_POD_PORT, ListenerKind, METRICS_NAME, METRICS_POD_PORT,
};
pub use network::network;
