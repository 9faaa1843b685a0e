//! What the render tests share: the example manifests and options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{PdbApi, RenderOptions, SecretData};
use crate::api::MailServer;
use crate::plan::DKIM_KEY;

pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn load(relative: &str) -> MailServer {
    crate::api::load_manifest(&path(relative)).unwrap()
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
    let key = std::fs::read(path("src/operator/testdata/dkim-test.key")).unwrap();
    SecretData::from([(
        "submit-dkim".to_string(),
        BTreeMap::from([(DKIM_KEY.to_string(), key)]),
    )])
}
