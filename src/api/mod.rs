//! The `MailServer` API: types, defaults and validation, the single source of the CRD.
//! `posthorn crd` prints the CRD from here, `posthorn up` and `posthorn render` read
//! manifests through here, and the operator works on these types.

mod crd;
mod manifest;
mod spec;
mod status;
mod validate;

pub use crd::crd_yaml;
pub use manifest::{load_manifest, parse_manifest};
pub use spec::{
    DeliverySpec, DkimSpec, DnsSpec, ExternalTrafficPolicy, ImplicitTlsSpec, InboundSpec,
    IssuerKind, IssuerRef, LocalDelivery, MailServer, MailServerSpec, ProxyProtocolSpec, QueueSpec,
    QueueStorage, RelaySpec, SenderLogin, ServiceSpec, ServiceType, SubmissionSpec, TlsSource,
    TlsSpec, UsersSpec,
};
pub use status::{DnsRecord, Endpoints, MailServerStatus};
pub use validate::{parse_size, split_host_port};
