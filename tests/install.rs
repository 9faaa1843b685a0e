//! What a platform team installs: the generated files under deploy/ (no drift), the
//! kustomize base, the chart's values schema, its monitors and namespace-scoped mode,
//! the Argo CD health check (Debian's Lua on real MailServer objects), and a real
//! `helm install` of the namespace-scoped mode on the 1.20 test API server.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;

use common::chart::*;
use common::kube::Kube;

#[test]
fn generated_install_files_have_not_drifted() {
    let out = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(repo().join("deploy/generate.sh"))
        .arg(out.path())
        .env("POSTHORN_BIN", env!("CARGO_BIN_EXE_posthorn")));
    for file in [
        "crds/mailservers.posthorn.dev.yaml",
        "charts/posthorn/crds/mailservers.posthorn.dev.yaml",
        "deploy/install.yaml",
        "deploy/argocd/argocd-cm.yaml",
    ] {
        let fresh = fs::read_to_string(out.path().join(file)).unwrap();
        let committed = fs::read_to_string(repo().join(file)).unwrap_or_default();
        assert!(
            fresh == committed,
            "{file} is stale: run deploy/generate.sh"
        );
    }
    let docs = documents(&fs::read_to_string(repo().join("deploy/install.yaml")).unwrap());
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    // The Argo CD ConfigMap carries the Lua file as it is.
    let cm: Value = serde_saphyr::from_str(
        &fs::read_to_string(repo().join("deploy/argocd/argocd-cm.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.posthorn.dev_MailServer"],
        fs::read_to_string(repo().join("deploy/argocd/mailserver-health.lua")).unwrap()
    );
}

#[test]
fn kustomize_base_is_install_yaml() {
    let built = run(Command::new("kubectl")
        .args(["kustomize", "deploy"])
        .current_dir(repo()));
    let names = |docs: Vec<Value>| -> BTreeSet<String> {
        docs.iter()
            .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
            .collect()
    };
    let install = fs::read_to_string(repo().join("deploy/install.yaml")).unwrap();
    assert_eq!(names(documents(&built)), names(documents(&install)));
    assert_eq!(documents(&built).len(), 9);
}

#[test]
fn values_schema_refuses_what_the_chart_cannot_use() {
    for major in ["3", "4"] {
        let helm = helm(major);
        for bad in [
            "replicas=two",
            "replicaCount=2",
            "logFormat=xml",
            "metrics.port=0",
            "image.pullPolicy=Sometimes",
            "watchNamespaces={Mail_1}",
            "metrics.podMonitor.enabled=yes",
        ] {
            for verb in ["template", "lint"] {
                let mut cmd = Command::new(&helm);
                if verb == "lint" {
                    cmd.args(["lint", "--strict", "charts/posthorn"]);
                } else {
                    cmd.args(["template", "posthorn", "charts/posthorn"]);
                }
                let out = cmd
                    .args(["--set", bad])
                    .current_dir(repo())
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(!out.status.success(), "helm {major} {verb} accepted {bad}");
                let said = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                assert!(said.contains("schema"), "helm {major} {verb} {bad}: {said}");
            }
        }
        template(
            &helm,
            &["replicas=2", "watchNamespaces={mail}", "logFormat=plain"],
        );
    }
}

/// The Role rules of the namespace mode are the ClusterRole's, without the
/// non-resource URLs.
fn resource_rules(role: &Value) -> Vec<Value> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("nonResourceURLs").is_none())
        .cloned()
        .collect()
}

#[test]
fn namespace_mode_and_monitors_render() {
    let helm = helm("3");
    let cluster = documents(&template(&helm, &[]));
    let namespaced = documents(&template(
        &helm,
        &[
            "watchNamespaces={mail,billing}",
            "metrics.serviceMonitor.enabled=true",
            "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.labels.release=prom",
        ],
    ));
    assert!(
        !cluster
            .iter()
            .any(|d| d["kind"].as_str().unwrap().starts_with("Pod"))
    );
    assert!(
        !namespaced
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
    );
    let roles: Vec<&Value> = namespaced
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "posthorn")
        .collect();
    let namespaces: Vec<&Value> = roles.iter().map(|r| &r["metadata"]["namespace"]).collect();
    assert_eq!(namespaces, [&json!("mail"), &json!("billing")]);
    for role in &roles {
        assert_eq!(
            resource_rules(role),
            resource_rules(find(&cluster, "ClusterRole"))
        );
    }
    let bindings = namespaced
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "posthorn")
        .count();
    assert_eq!(bindings, 2);
    let args =
        &find(&namespaced, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        strings(args).contains(&"--watch-namespace=mail,billing"),
        "{args}"
    );
    assert!(
        !strings(
            &find(&cluster, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        )
        .iter()
        .any(|a| a.starts_with("--watch-namespace"))
    );

    let service_monitor = find(&namespaced, "ServiceMonitor");
    assert_eq!(
        service_monitor["spec"]["selector"]["matchLabels"],
        find(&namespaced, "Service")["spec"]["selector"]
    );
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");

    // The PodMonitor selects the pods the operator renders, on their named port.
    let monitor = find(&namespaced, "PodMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": ["mail", "billing"]})
    );
    let rendered = run(Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["render", "-f", "examples/mailserver.yaml"])
        .current_dir(repo()));
    let objects = documents(&rendered);
    let pod = &find(&objects, "StatefulSet")["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(labels.get(key), Some(value), "pod label {key}");
    }
    // Mail pods run as their namespace's default ServiceAccount, whose imagePullSecrets
    // Kubernetes adds to them (README: "Private registries").
    assert!(pod["spec"].get("serviceAccountName").is_none(), "{pod}");
    assert!(pod["spec"].get("imagePullSecrets").is_none(), "{pod}");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let ports = &pod["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"] && p["containerPort"] == 9090),
        "{ports}"
    );
    let cluster_monitor = documents(&template(&helm, &["metrics.podMonitor.enabled=true"]));
    assert_eq!(
        find(&cluster_monitor, "PodMonitor")["spec"]["namespaceSelector"],
        json!({"any": true})
    );
}

/// A JSON value as a Lua table constructor.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Argo CD's verdict on a MailServer: (status, message) from deploy/argocd's Lua.
fn argocd_health(server: &Value) -> (String, String) {
    let script = repo().join("deploy/argocd/mailserver-health.lua");
    let out = run(Command::new("lua5.4").arg("-e").arg(format!(
        "obj = {}\nlocal hs = dofile({:?})\nio.write(hs.status, \"\\n\", hs.message)",
        lua(server),
        script.to_str().unwrap()
    )));
    let (status, message) = out.split_once('\n').unwrap();
    (status.into(), message.into())
}

fn with_conditions(generation: i64, observed: i64, conditions: Value) -> Value {
    json!({"metadata": {"name": "mail", "generation": generation},
           "status": {"observedGeneration": observed, "conditions": conditions}})
}

fn cond(type_: &str, status: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "R", "message": message})
}

#[test]
fn argocd_health_follows_conditions_and_generation() {
    let ready = cond("Ready", "True", "2 of 2 pods ready");
    let not_degraded = cond("Degraded", "False", "all fine");
    let cases = [
        (json!({"metadata": {"generation": 1}}), "Progressing"),
        (
            with_conditions(2, 1, json!([ready, not_degraded])),
            "Progressing",
        ),
        (
            with_conditions(2, 2, json!([ready, not_degraded])),
            "Healthy",
        ),
        // DNS is published by ExternalDNS at its own pace: health does not wait for it.
        (
            with_conditions(
                2,
                2,
                json!([
                    ready,
                    cond("DNSPublished", "Unknown", "waiting"),
                    not_degraded
                ]),
            ),
            "Healthy",
        ),
        (
            with_conditions(
                2,
                2,
                json!([cond("Ready", "False", "rolling"), not_degraded]),
            ),
            "Progressing",
        ),
        (
            with_conditions(
                1,
                1,
                json!([
                    cond("Ready", "False", "see Degraded"),
                    cond("Degraded", "True", "Secret mail-users is missing")
                ]),
            ),
            "Degraded",
        ),
        (
            with_conditions(
                1,
                1,
                json!([ready, cond("Stalled", "True", "spec.replicas: bad")]),
            ),
            "Degraded",
        ),
    ];
    for (server, want) in cases {
        assert_eq!(argocd_health(&server).0, want, "{server}");
    }
    assert_eq!(
        argocd_health(&cases_degraded_message()).1,
        "Secret mail-users is missing"
    );
}

fn cases_degraded_message() -> Value {
    with_conditions(
        1,
        1,
        json!([cond("Degraded", "True", "Secret mail-users is missing")]),
    )
}

/// `helm install` with `watchNamespaces`: the operator runs with the ServiceAccount's
/// token and `--watch-namespace`, reconciles the MailServer in its namespace under
/// Roles only, leaves another namespace's alone, and Argo CD's health check reads the
/// real objects.
#[test]
fn namespace_scoped_install_reconciles_its_namespace_only() {
    let bed = Kube::start();
    for namespace in ["mail", "elsewhere"] {
        bed.kubectl(&["create", "namespace", namespace]);
    }
    let installed = run(Command::new(helm("3"))
        .args([
            "install",
            "posthorn",
            "charts/posthorn",
            "--namespace",
            NAMESPACE,
        ])
        .args([
            "--create-namespace",
            "--set",
            "watchNamespaces={mail}",
            "--kubeconfig",
        ])
        .arg(bed.path("kubeconfig"))
        .current_dir(repo()));
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(get(&bed, "", "clusterrole/posthorn").is_none());
    let kubeconfig = service_account_kubeconfig(&bed);

    let example = fs::read_to_string(repo().join("examples/mailserver.yaml")).unwrap();
    for namespace in ["mail", "elsewhere"] {
        let server = example.replace(
            "name: mail\n",
            &format!("name: mail\n  namespace: {namespace}\n"),
        );
        bed.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &server);
    }
    let operator = spawn_operator(
        &bed,
        &kubeconfig,
        "operator-ns",
        &["--watch-namespace=mail"],
    );
    let _operators = Operators(vec![("operator-ns".into(), operator)]);
    let logs = || fs::read_to_string(bed.path("operator-ns.log")).unwrap_or_default();

    // The users Secret is missing: Degraded, and Argo CD says so.
    let server = wait_for("the MailServer's status", &logs, || {
        let server = get(&bed, "mail", "mailserver/mail")?;
        (server["status"]["observedGeneration"] == 1).then_some(server)
    });
    assert_eq!(condition(&server, "Degraded").unwrap().0, "True");
    let (health, message) = argocd_health(&server);
    assert_eq!(health, "Degraded", "{message}");
    assert!(message.contains("mail-users"), "{message}");
    let broken = bed.kubectl(&["-n", "mail", "get", "ms"]);
    let row: Vec<&str> = broken.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["mail", "mail.example.com", "0", "False", "Degraded"],
        "{broken}"
    );

    bed.kubectl(&[
        "-n",
        "mail",
        "create",
        "secret",
        "generic",
        "mail-users",
        "--from-literal=passwd=alice@example.com:{SHA512-CRYPT}$6$salt$hash",
    ]);
    let server = wait_for("Degraded=False", &logs, || {
        let server = get(&bed, "mail", "mailserver/mail")?;
        (condition(&server, "Degraded")?.0 == "False").then_some(server)
    });
    assert_eq!(argocd_health(&server).0, "Progressing");
    // The StatefulSet's controller reports every pod ready (no kubelet here).
    let statefulset = get(&bed, "mail", "statefulset/mail").expect("StatefulSet created");
    let replicas = statefulset["spec"]["replicas"].clone();
    let (code, body) = bed.api(
        "PATCH",
        "/apis/apps/v1/namespaces/mail/statefulsets/mail/status",
        "application/merge-patch+json",
        &json!({"status": {"observedGeneration": statefulset["metadata"]["generation"],
            "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
            "currentReplicas": replicas, "availableReplicas": replicas,
            "updateRevision": "r1", "currentRevision": "r1"}})
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let server = wait_for("Ready=True", &logs, || {
        let server = get(&bed, "mail", "mailserver/mail")?;
        (condition(&server, "Ready")?.0 == "True").then_some(server)
    });
    assert_eq!(argocd_health(&server).0, "Healthy");
    // `kubectl get ms` shows Ready's reason.
    let listed = bed.kubectl(&["-n", "mail", "get", "ms"]);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "HOSTNAME", "READY", "REPLICAS", "READY", "REASON", "AGE"
        ]
    );
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["mail", "mail.example.com", "1", "True", "Available"],
        "{listed}"
    );

    // The other namespace's MailServer is not the operator's to touch.
    let other = get(&bed, "elsewhere", "mailserver/mail").unwrap();
    assert!(other.get("status").is_none(), "{other}");
    assert!(get(&bed, "elsewhere", "configmap/mail-config").is_none());
    let all = logs();
    assert!(!all.to_lowercase().contains("forbidden"), "{all}");
    for refused in [
        &["list", "secrets", "-n", "elsewhere"][..],
        &["list", "secrets", "-n", "kube-system"],
        &["watch", "mailservers.posthorn.dev", "--all-namespaces"],
        &["create", "statefulsets.apps", "-n", "elsewhere"],
    ] {
        assert!(!operator_can(&bed, refused), "can {refused:?}");
    }
    assert!(operator_can(&bed, &["watch", "secrets", "-n", "mail"]));
}

/// The DNSEndpoints the operator renders (the goldens' and the examples') are valid
/// under ExternalDNS's own CRD schema, vendored in tests/data (its CEL rules stripped
/// for 1.20), on the test API server: a server-side dry-run create of each.
#[test]
fn rendered_dns_endpoints_fit_external_dns_crd() {
    let bed = Kube::start();
    let crd = run(Command::new("awk")
        .arg("-f")
        .arg(repo().join("e2e/kube/strip-cel.awk"))
        .arg(repo().join("tests/data/dnsendpoints.externaldns.k8s.io.yaml")));
    bed.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &crd,
    );
    // The stand-in's schema took any recordType; ExternalDNS's has an enum.
    let refused = json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"endpoints": [{"dnsName": "example.com", "recordType": "SPF",
                                "targets": ["v=spf1 -all"]}]}});
    let dry_run = |object: &Value| {
        bed.kubectl_output(
            &["create", "--dry-run=server", "-f", "-"],
            &object.to_string(),
        )
    };
    wait_for("ExternalDNS's schema to be served", &String::new, || {
        let out = dry_run(&refused);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("recordType"))
            .then_some(())
    });

    let mut endpoints = Vec::new();
    for golden in ["typical", "relay"] {
        let text =
            fs::read_to_string(repo().join(format!("src/operator/testdata/{golden}.golden.yaml")))
                .unwrap();
        endpoints.extend(
            documents(&text)
                .into_iter()
                .filter(|d| d["kind"] == "DNSEndpoint"),
        );
    }
    for example in ["examples/mailserver.yaml", "examples/mailserver-relay.yaml"] {
        let rendered = run(Command::new(env!("CARGO_BIN_EXE_posthorn"))
            .args(["render", "-f", example])
            .current_dir(repo()));
        endpoints.extend(
            documents(&rendered)
                .into_iter()
                .filter(|d| d["kind"] == "DNSEndpoint"),
        );
    }
    assert!(endpoints.len() >= 3, "{} DNSEndpoints", endpoints.len());
    let mut types = BTreeSet::new();
    for mut endpoint in endpoints {
        endpoint["metadata"]["namespace"] = json!("default");
        for record in endpoint["spec"]["endpoints"].as_array().unwrap() {
            types.insert(record["recordType"].as_str().unwrap().to_string());
        }
        let out = dry_run(&endpoint);
        assert!(
            out.status.success(),
            "{endpoint}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(types, BTreeSet::from(["MX".to_string(), "TXT".to_string()]));
}
