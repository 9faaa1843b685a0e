//! What the render tests share: the example manifests and options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{PdbApi, RenderOptions, Rendered, SecretData, render};
use crate::api::MailServer;
use crate::plan::DKIM_KEY;

pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn load(relative: &str) -> MailServer {
    crate::api::load_manifest(&path(relative)).unwrap()
}

/// An example manifest rendered with no Secrets and the test options.
pub fn render_example(relative: &str) -> Rendered {
    render(&load(relative), &SecretData::new(), &options()).unwrap()
}

pub fn options() -> RenderOptions {
    RenderOptions {
        image: "posthorn:test".into(),
        certificate_crd: true,
        dns_endpoint_crd: true,
        pdb_api: PdbApi::V1,
        claim_retention_policy: true,
    }
}

pub fn edge_case_secrets() -> SecretData {
    let key = |file: &str| {
        let pem = std::fs::read(path(&format!("src/operator/testdata/{file}"))).unwrap();
        BTreeMap::from([(DKIM_KEY.to_string(), pem)])
    };
    SecretData::from([
        ("submit-dkim".to_string(), key("dkim-test.key")),
        (
            "submit-dkim-ed25519".to_string(),
            key("dkim-ed25519-test.key"),
        ),
    ])
}
