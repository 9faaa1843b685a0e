#!/usr/bin/env bash
# Smoke test of the e2e test bed: build (cached) -> start -> apply CRDs ->
# apply examples/mailserver.yaml -> read it back (API-server defaults, explain,
# printer columns) -> garbage collection by owner reference -> API-server
# restart -> stop. Exits non-zero on any failure.
# Usage: e2e/kube/smoke.sh   (KEEP=1 keeps the test-bed directory)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
repo=$(cd "$KUBE_SCRIPTS/../.." && pwd)
bin=$("$KUBE_SCRIPTS/build.sh" | tail -n 1)
dir=$(mktemp -d /tmp/posthorn-kube.XXXXXX)
cleanup() {
    "$KUBE_SCRIPTS/stop.sh" "$dir"
    if [[ ${KEEP:-} == 1 ]]; then log "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

POSTHORN_KUBE_BIN=$bin "$KUBE_SCRIPTS/start.sh" "$dir"
"$KUBE_SCRIPTS/apply-crds.sh" "$dir"
"$KUBE_SCRIPTS/apply-crds.sh" "$dir" --server-side # re-apply: idempotent, and SSA works
export KUBECONFIG=$dir/kubeconfig
kubectl=${KUBECTL:-$bin/kubectl}
k() { "$kubectl" "$@"; }
check() { log "ok: $*"; }

k version --short >&2 2>/dev/null || k version >&2
k apply -f "$repo/examples/mailserver.yaml" >&2
ms=$(k get ms mail -o json)
# Defaults from the CRD schema are applied by the API server.
[[ $(jq -r .spec.submission.maxMessageSize <<<"$ms") == 25Mi ]] || die "spec not stored: $ms"
[[ $(jq -r '.spec.service.type' <<<"$ms") == LoadBalancer ]] || die "default service.type not applied: $ms"
check "MailServer stored with defaults (service.type=LoadBalancer)"
k get ms mail -o yaml >"$dir/mailserver.yaml"
k explain mailserver.spec.hostname | grep -q 'MX target' || die "kubectl explain has no field description"
check "kubectl explain mailserver.spec.hostname"
k get ms | tee "$dir/get-ms.txt" >&2
head -n 1 "$dir/get-ms.txt" | grep -q 'HOSTNAME.*READY REPLICAS.*READY.*AGE' || die "printer columns missing"
grep -q 'mail.example.com' "$dir/get-ms.txt" || die "hostname column empty"
check "printer columns"

# A bad spec is rejected by the OpenAPI schema (pattern/required), not by CEL.
if k apply -f - >/dev/null 2>&1 <<'YAML'; then die "invalid MailServer accepted"; fi
apiVersion: posthorn.dev/v1alpha1
kind: MailServer
metadata: {name: bad}
spec: {hostname: "NOT A HOSTNAME", users: {secretName: x}, domains: [example.com]}
YAML
check "schema validation rejects a bad hostname"

# The stand-in CRDs of cert-manager and ExternalDNS take objects.
k apply -f - >&2 <<'YAML'
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: mail-tls}
spec:
  secretName: mail-tls
  dnsNames: [mail.example.com]
  issuerRef: {name: letsencrypt, kind: ClusterIssuer, group: cert-manager.io}
---
apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: mail}
spec:
  endpoints:
    - {dnsName: example.com, recordType: MX, recordTTL: 300, targets: ["10 mail.example.com"]}
YAML
check "Certificate and DNSEndpoint accepted"

# kube-controller-manager's garbage collector removes objects whose owner is gone.
uid=$(jq -r .metadata.uid <<<"$ms")
k apply -f - >&2 <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: mail-owned
  ownerReferences:
    - {apiVersion: posthorn.dev/v1alpha1, kind: MailServer, name: mail, uid: "$uid", controller: true, blockOwnerDeletion: true}
YAML
k delete ms mail --wait=true >&2
for _ in $(seq 60); do
    k get configmap mail-owned >/dev/null 2>&1 || break
    sleep 0.5
done
k get configmap mail-owned >/dev/null 2>&1 && die "owned ConfigMap not garbage-collected"
check "garbage collection by owner reference"

"$KUBE_SCRIPTS/restart-apiserver.sh" "$dir" 1
k get namespace default >/dev/null || die "API server not back after restart"
check "API server restart"
[[ $(grep -c '"verb":"create"' "$dir/audit.log") -gt 0 ]] || die "audit log has no writes"
check "audit log records writes ($(wc -l <"$dir/audit.log") lines)"
log "all checks passed"
