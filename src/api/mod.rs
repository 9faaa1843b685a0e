//! The `MailServer` API: types, defaults and validation, the single source of the CRD.
//! `posthorn crd` prints the CRD from here, `posthorn up` and `posthorn render` read
//! manifests through here, and the operator works on these types.

mod aliases;
mod crd;
mod mailboxes;
mod manifest;
mod platform;
mod spec;
mod status;
mod units;
pub(crate) mod validate;

pub use aliases::{Alias, AliasesSpec};
pub use crd::crd_yaml;
pub use mailboxes::{
    DEFAULT_DOVECOT_IMAGE, DEFAULT_MAILBOX_STORAGE, DovecotSpec, ImapServiceSpec, MailboxesSpec,
};
pub use manifest::load_manifest;
pub use platform::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST, OPERATOR_LABELS, PodOptions};
pub use spec::{
    DEFAULT_QUEUE_SIZE, Ed25519DkimSpec, ExternalTrafficPolicy, IssuerKind, MailServer,
    MailServerSpec, QueueStorage, ServiceType, TlsSource,
};
pub use status::{DnsRecord, Endpoints, MailServerStatus};
