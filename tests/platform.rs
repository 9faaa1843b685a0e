//! The platform knobs of a MailServer (`examples/mailserver-platform.yaml`: pod
//! scheduling and metadata, load balancer fields, resources, NetworkPolicy) on the real
//! Kubernetes 1.20 API server (`e2e/kube`): `kubectl apply` of the example is accepted
//! and the CRD's schema keeps every field (nothing pruned), and the objects
//! `posthorn render` makes of it pass the API server's own validation of StatefulSets,
//! Services and NetworkPolicies when applied server-side, as the operator applies them.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::kube::Kube;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether every field of `expected` is in `actual` with the same value (`actual` may
/// hold more: the schema's defaults).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        (Value::Number(a), Value::Number(e)) => a.as_f64() == e.as_f64(),
        _ => actual == expected,
    }
}

#[test]
fn every_platform_knob_is_accepted_by_the_api_server() {
    let kube = Kube::start();
    let example = repo().join("examples/mailserver-platform.yaml");
    kube.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    let written: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let live = kube.get("mailserver", "mail").unwrap();
    for field in ["pod", "service", "resources", "networkPolicy", "relay"] {
        let (live, written) = (&live["spec"][field], &written["spec"][field]);
        assert!(
            written.is_object() && contains(live, written),
            "spec.{field} did not survive the API server:\nwritten {written}\nlive {live}"
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["render", "--pdb-v1beta1", "-f"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rendered = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: NetworkPolicy",
        "loadBalancerSourceRanges",
        "priorityClassName",
    ] {
        assert!(rendered.contains(kind), "{kind} not rendered:\n{rendered}");
    }
    // Service.spec.loadBalancerClass came in Kubernetes 1.21 (GA 1.24): this 1.20
    // server-side apply would reject it as an undeclared field.
    let for_1_20: String = rendered
        .lines()
        .filter(|l| !l.trim_start().starts_with("loadBalancerClass:"))
        .map(|l| format!("{l}\n"))
        .collect();
    kube.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &for_1_20);

    let policy = kube.get("networkpolicy", "mail").unwrap();
    let ports = |rule: &Value| -> Vec<i64> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    };
    let ingress: Vec<_> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(ports)
        .collect();
    assert_eq!(ingress, [vec![2525, 5587, 5465], vec![5999], vec![9090]]);
    let egress: Vec<_> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(ports)
        .collect();
    assert_eq!(
        egress,
        [
            vec![53, 53],
            vec![25, 465, 587, 2525],
            vec![10024],
            vec![5999]
        ]
    );
    for name in ["mail", "mail-dovecot"] {
        let set = kube.get("statefulset", name).unwrap();
        let pod = &set["spec"]["template"];
        assert_eq!(
            pod["metadata"]["labels"]["example.com/team"], "mail",
            "{name}"
        );
        assert_eq!(
            pod["spec"]["imagePullSecrets"][0]["name"], "registry-login",
            "{name}"
        );
        assert_eq!(pod["spec"]["priorityClassName"], "mail-critical", "{name}");
    }
    let service = kube.get("service", "mail").unwrap();
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(service["spec"]["loadBalancerIP"], "192.0.2.25");
}
