//! Reading a `MailServer` manifest from a file, as `posthorn up` and `posthorn render`
//! do: the same object a user would `kubectl apply`, checked as strictly as the API
//! server would and then some.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use kube::Resource;
use serde_json::Value;

use super::spec::MailServer;
use super::validate::check_resource_name;

/// Reads a MailServer manifest (one YAML document), fills in defaults and validates it.
/// The error names the file and lists every problem found.
pub fn load_manifest(path: &Path) -> anyhow::Result<MailServer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading MailServer manifest {}", path.display()))?;
    parse_manifest(&text).with_context(|| format!("in MailServer manifest {}", path.display()))
}

/// Parses a MailServer manifest from YAML text: checks `apiVersion` and `kind`, rejects
/// unknown fields, fills in defaults and runs [`MailServerSpec::validate`].
///
/// [`MailServerSpec::validate`]: super::MailServerSpec::validate
pub fn parse_manifest(text: &str) -> anyhow::Result<MailServer> {
    // First the envelope, loosely, so that a wrong kind is reported as such rather than
    // as a confusing complaint about its fields.
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| anyhow!("not valid YAML: {e}"))?;
    let doc = match docs.as_slice() {
        [doc] => doc,
        [] => bail!("no YAML document: expected one MailServer"),
        _ => bail!(
            "{} YAML documents: expected one MailServer per file",
            docs.len()
        ),
    };
    check_envelope(doc).map_err(problem_list)?;

    // The API types read fields they do not know, so that an operator older than its CRD
    // keeps reading MailServers; a file is held to `kubectl apply --validate=strict`.
    let mut problems = Vec::new();
    let _: Result<MailServer, _> = serde_ignored::deserialize(doc, |path| {
        let path = path.to_string();
        // The derived type skips these two; check_envelope has checked them.
        if path != "apiVersion" && path != "kind" {
            problems.push(format!("{path}: unknown field"));
        }
    });
    let server: MailServer = match serde_saphyr::from_str(text) {
        Ok(server) => server,
        Err(e) => {
            problems.push(e.to_string());
            return Err(problem_list(problems));
        }
    };
    if let Some(name) = &server.metadata.name
        && let Err(e) = check_resource_name(name)
    {
        problems.push(format!("metadata.name: {e}"));
    }
    if let Err(spec_problems) = server.spec.validate() {
        problems.extend(spec_problems);
    }
    if problems.is_empty() {
        Ok(server)
    } else {
        Err(problem_list(problems))
    }
}

fn check_envelope(doc: &Value) -> Result<(), Vec<String>> {
    let api_version = MailServer::api_version(&());
    let kind = MailServer::kind(&());
    let Some(fields) = doc.as_object() else {
        return Err(vec![format!(
            "expected a {kind} object (a mapping with apiVersion, kind, metadata and spec)"
        )]);
    };
    let mut problems = Vec::new();
    match fields.get("kind") {
        None => problems.push(format!("kind is missing: expected `kind: {kind}`")),
        Some(Value::String(k)) if *k == kind => {}
        Some(other) => problems.push(format!(
            "kind is {}, expected {kind}: this file describes something else",
            show(other)
        )),
    }
    match fields.get("apiVersion") {
        None => problems.push(format!(
            "apiVersion is missing: expected `apiVersion: {api_version}`"
        )),
        Some(Value::String(v)) if *v == api_version => {}
        Some(other) => problems.push(format!(
            "apiVersion is {}, expected {api_version}",
            show(other)
        )),
    }
    match fields.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(_)) => {}
        _ => problems.push("metadata.name is missing: every MailServer needs a name".into()),
    }
    if !fields.contains_key("spec") {
        problems.push("spec is missing".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn problem_list(problems: Vec<String>) -> anyhow::Error {
    let count = problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    anyhow!(
        "invalid MailServer ({count} {noun}):\n  - {}",
        problems.join("\n  - ")
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::api::spec::{IssuerKind, QueueStorage, ServiceType, TlsSource};

    const MINIMAL: &str = "\
apiVersion: posthorn.dev/v1alpha1
kind: MailServer
metadata:
  name: mail
spec:
  hostname: mail.example.com
  domains: [example.com]
  users:
    secretName: mail-users
";

    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", parse_manifest(text).unwrap_err())
    }

    #[test]
    fn newcomer_example_loads() {
        let server = load_manifest(&example("mailserver.yaml")).unwrap();
        assert_eq!(server.metadata.name.as_deref(), Some("mail"));
        let spec = &server.spec;
        assert_eq!(spec.hostname, "mail.example.com");
        assert_eq!(spec.domains, ["example.com"]);
        assert_eq!(spec.users.secret_name, "mail-users");
        assert_eq!(spec.sender_logins[0].address, "info@example.com");
        assert_eq!(
            spec.sender_logins[0].logins,
            ["alice@example.com", "bob@example.com"]
        );
        assert_eq!(spec.submission.implicit_tls_port(), Some(465));
        assert!(spec.inbound.enabled);
        assert_eq!(spec.dkim.selector, "posthorn");
        assert_eq!(spec.dns.spf.as_deref(), Some("v=spf1 mx -all"));
        assert_eq!(spec.tls_source(), TlsSource::SelfSigned);
        assert!(spec.relay.is_none());
    }

    #[test]
    fn relay_example_loads() {
        let server = load_manifest(&example("mailserver-relay.yaml")).unwrap();
        let relay = server.spec.relay.as_ref().unwrap();
        assert_eq!(relay.host, "smtp.provider.example:587");
        assert_eq!(
            relay.credentials_secret.as_deref(),
            Some("relay-credentials")
        );
        match server.spec.tls_source() {
            TlsSource::Issuer(issuer) => {
                assert_eq!(issuer.kind, IssuerKind::ClusterIssuer);
                assert_eq!(issuer.name, "letsencrypt");
                assert_eq!(issuer.group, "cert-manager.io");
            }
            other => panic!("expected an issuer, got {other:?}"),
        }
    }

    #[test]
    fn absent_fields_get_defaults() {
        let spec = parse_manifest(MINIMAL).unwrap().spec;
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.tls_source(), TlsSource::SelfSigned);
        assert_eq!(spec.users.key, "passwd");
        assert!(spec.sender_logins.is_empty());
        assert_eq!(spec.submission.port, 587);
        assert_eq!(spec.submission.implicit_tls_port(), Some(465));
        assert_eq!(spec.submission.max_message_bytes(), Ok(25 * 1024 * 1024));
        assert!(spec.inbound.enabled);
        assert!(spec.relay.is_none());
        assert!(spec.delivery.local.lmtp.is_none());
        assert_eq!(spec.dkim.selector, "posthorn");
        assert!(spec.dkim.secret_name.is_none());
        assert!(spec.dns.external_dns);
        assert!(spec.dns.spf.is_none());
        assert_eq!(spec.dns.dmarc, "v=DMARC1; p=quarantine");
        assert_eq!(spec.service.r#type, ServiceType::LoadBalancer);
        assert!(spec.service.external_traffic_policy.is_none());
        assert!(spec.proxy_protocol.trusted_cidrs.is_empty());
        assert_eq!(spec.queue.storage, QueueStorage::PersistentVolumeClaim);
        assert!(spec.queue.size.is_none());
        assert_eq!(spec.shutdown.grace_period_seconds, 20);
        assert!(spec.image.is_none());
        assert!(spec.resources.is_none());
    }

    #[test]
    fn partial_sections_keep_their_other_defaults() {
        let text = format!(
            "{MINIMAL}  submission: {{implicitTls: {{enabled: false}}, maxMessageSize: 10485760}}\n"
        );
        let spec = parse_manifest(&text).unwrap().spec;
        assert_eq!(spec.submission.port, 587);
        assert_eq!(spec.submission.implicit_tls_port(), None);
        assert_eq!(spec.submission.max_message_bytes(), Ok(10 << 20));
    }

    #[test]
    fn listeners_follow_the_spec() {
        use crate::mail::ListenerKind::{Smtp, Submission, Submissions};
        let spec = parse_manifest(MINIMAL).unwrap().spec;
        assert_eq!(
            spec.listeners(),
            [(Smtp, 25), (Submission, 587), (Submissions, 465)]
        );
        let text = format!(
            "{MINIMAL}  inbound: {{enabled: false}}\n  submission: {{port: 2587, implicitTls: {{port: 2465}}}}\n"
        );
        let spec = parse_manifest(&text).unwrap().spec;
        assert_eq!(spec.listeners(), [(Submission, 2587), (Submissions, 2465)]);
        assert_eq!(spec.service_port(Smtp), None);
        let text = format!("{MINIMAL}  submission: {{implicitTls: {{enabled: false}}}}\n");
        let spec = parse_manifest(&text).unwrap().spec;
        assert_eq!(spec.listeners(), [(Smtp, 25), (Submission, 587)]);
    }

    #[test]
    fn serializes_without_nulls_and_round_trips() {
        let server = load_manifest(&example("mailserver.yaml")).unwrap();
        let yaml = serde_saphyr::to_string(&server).unwrap();
        assert!(!yaml.contains("null") && !yaml.contains('~'), "{yaml}");
        assert!(yaml.contains("apiVersion: posthorn.dev/v1alpha1"), "{yaml}");
        assert_eq!(parse_manifest(&yaml).unwrap(), server);
    }

    #[test]
    fn wrong_kind_is_named() {
        let text = MINIMAL.replace("kind: MailServer", "kind: Deployment");
        let err = error_of(&text);
        assert!(
            err.contains("kind is Deployment, expected MailServer"),
            "{err}"
        );
    }

    #[test]
    fn wrong_or_missing_api_version_is_named() {
        let err = error_of(&MINIMAL.replace("v1alpha1", "v1"));
        assert!(
            err.contains("apiVersion is posthorn.dev/v1, expected posthorn.dev/v1alpha1"),
            "{err}"
        );
        let err = error_of(&MINIMAL.replace("apiVersion: posthorn.dev/v1alpha1\n", ""));
        assert!(err.contains("apiVersion is missing"), "{err}");
    }

    /// What the operator's watch does: a MailServer written for a newer CRD (after a
    /// rollback of the operator) still reads, its new fields ignored.
    #[test]
    fn the_api_types_read_fields_they_do_not_know() {
        let mut doc: Value = serde_saphyr::from_str(MINIMAL).unwrap();
        doc["spec"]["futureField"] = serde_json::json!(1);
        doc["spec"]["users"]["futureToo"] = serde_json::json!("x");
        let server: MailServer = serde_json::from_value(doc).unwrap();
        assert_eq!(server.spec.users.secret_name, "mail-users");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = error_of(&format!("{MINIMAL}specs: {{}}\n"));
        assert!(err.contains("specs: unknown field"), "{err}");
        let err = error_of(&format!("{MINIMAL}  replica: 2\n"));
        assert!(err.contains("spec.replica: unknown field"), "{err}");
        let err = error_of(&format!("{MINIMAL}  submission: {{prot: 2525}}\n"));
        assert!(err.contains("spec.submission.prot: unknown field"), "{err}");
        let err = error_of(&MINIMAL.replace("secretName: mail-users", "secret: mail-users"));
        assert!(err.contains("spec.users.secret: unknown field"), "{err}");
    }

    #[test]
    fn missing_pieces_are_named() {
        let err = error_of("apiVersion: posthorn.dev/v1alpha1\nkind: MailServer\n");
        assert!(err.contains("metadata.name is missing"), "{err}");
        assert!(err.contains("spec is missing"), "{err}");
        let err = error_of(&MINIMAL.replace("  domains: [example.com]\n", ""));
        assert!(err.contains("domains"), "{err}");
        let err = error_of("- just\n- a list\n");
        assert!(err.contains("expected a MailServer object"), "{err}");
        let err = error_of("spec: [unclosed\n");
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn every_validation_problem_is_listed() {
        let text = MINIMAL
            .replace("  name: mail\n", "  name: Mail\n")
            .replace("mail.example.com", "mail")
            .replace("[example.com]", "[example.com, example.com]");
        let err = error_of(&text);
        assert!(err.contains("invalid MailServer (3 problems)"), "{err}");
        assert!(err.contains("\n  - metadata.name: \"Mail\""), "{err}");
        assert!(
            err.contains("\n  - spec.hostname: \"mail\" is not fully qualified"),
            "{err}"
        );
        assert!(
            err.contains("\n  - spec.domains[1]: \"example.com\" is listed more than once"),
            "{err}"
        );
    }

    #[test]
    fn one_document_per_file() {
        let err = error_of(&format!("{MINIMAL}---\n{MINIMAL}"));
        assert!(err.contains("2 YAML documents"), "{err}");
        let err = error_of("# nothing here\n");
        assert!(err.contains("no YAML document"), "{err}");
        assert!(parse_manifest(&format!("---\n{MINIMAL}")).is_ok());
    }

    #[test]
    fn load_errors_name_the_file() {
        let err = format!(
            "{:#}",
            load_manifest(Path::new("/nonexistent/ms.yaml")).unwrap_err()
        );
        assert!(err.contains("/nonexistent/ms.yaml"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, MINIMAL.replace("kind: MailServer", "kind: Service")).unwrap();
        let err = format!("{:#}", load_manifest(&path).unwrap_err());
        assert!(
            err.contains("bad.yaml") && err.contains("kind is Service"),
            "{err}"
        );
    }
}
