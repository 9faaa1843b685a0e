//! The listeners a mail server has, with their semantics and ports. Adding a listener or
//! changing a port is a change here; the config, the operator's Deployment and Service,
//! validation, status endpoints and `posthorn up` all derive theirs from this.

/// The three kinds of listener, with the semantics of Postfix's master.cf entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25: inbound for the local domains, STARTTLS offered, no AUTH.
    Smtp,
    /// Port 587: `smtpd_tls_security_level=encrypt`, SASL, `permit_sasl_authenticated,reject`.
    Submission,
    /// Port 465: as submission, but TLS from the first byte.
    Submissions,
}

/// The metrics and health endpoint's name (container port name, probe target).
pub const METRICS_NAME: &str = "metrics";
/// The metrics and health endpoint's port in the pod.
pub const METRICS_POD_PORT: u16 = 9090;
/// The handover listener's name and port in the pod: pods of one MailServer only.
pub const HANDOVER_NAME: &str = "handover";
pub const HANDOVER_POD_PORT: u16 = 5999;

impl ListenerKind {
    /// Every kind, in the order listeners are listed everywhere (config, summary line,
    /// container and Service ports).
    pub const ALL: [ListenerKind; 3] = [
        ListenerKind::Smtp,
        ListenerKind::Submission,
        ListenerKind::Submissions,
    ];

    /// The tag on every log line, as `syslog_name=postfix/submission` was; also the name
    /// of the container and Service port.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }

    /// SASL AUTH is offered (after TLS).
    pub fn auth_enabled(self) -> bool {
        self != ListenerKind::Smtp
    }

    /// Only EHLO/HELO/STARTTLS/NOOP/RSET/QUIT before TLS.
    pub fn tls_required(self) -> bool {
        self != ListenerKind::Smtp
    }

    /// TLS from the first byte (RFC 8314), no STARTTLS.
    pub fn implicit_tls(self) -> bool {
        self == ListenerKind::Submissions
    }

    /// The standard port clients expect: the Service's (fixed for smtp, the default for
    /// the others).
    pub fn service_port(self) -> u16 {
        match self {
            ListenerKind::Smtp => 25,
            ListenerKind::Submission => 587,
            ListenerKind::Submissions => 465,
        }
    }

    /// The port inside the pod: unprivileged, so the container runs as non-root.
    pub fn pod_port(self) -> u16 {
        match self {
            ListenerKind::Smtp => 2525,
            ListenerKind::Submission => 5587,
            ListenerKind::Submissions => 5465,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_their_ports() {
        let table: Vec<_> = ListenerKind::ALL
            .iter()
            .map(|k| {
                (
                    k.name(),
                    k.service_port(),
                    k.pod_port(),
                    k.auth_enabled(),
                    k.tls_required(),
                    k.implicit_tls(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                ("smtp", 25, 2525, false, false, false),
                ("submission", 587, 5587, true, true, false),
                ("submissions", 465, 5465, true, true, true),
            ]
        );
        assert_eq!((METRICS_NAME, METRICS_POD_PORT), ("metrics", 9090));
    }
}
