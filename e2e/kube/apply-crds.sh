#!/usr/bin/env bash
# Installs the CRDs the operator works with into the test bed in DIR and waits
# until they are Established: Posthorn's MailServer (crds/), and minimal
# cert-manager Certificate and ExternalDNS DNSEndpoint CRDs (e2e/crds/).
#
# Known 1.20 limit: CEL rules (x-kubernetes-validations, Kubernetes >= 1.23)
# are not part of 1.20's CRD schema; kubectl's validation rejects the field and
# the server would drop it. They are stripped here for the test server only, so
# CEL rules are not enforced in e2e tests (the controller validates too).
#
# kube-controller-manager's garbage collector learns about new resource types
# only every 30 s, and owner references to an unknown kind are retried with a
# growing backoff; so when a CRD was created, the controller manager is
# restarted, after which garbage collection of MailServer-owned objects is
# immediate.
#
# Usage: e2e/kube/apply-crds.sh DIR [--server-side]
# kubectl: $KUBECTL if set, else the 1.20 kubectl built next to the server.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 DIR [--server-side]" >&2; exit 2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir=$(cd "$1" && pwd)
shift
. "$dir/env"
repo=$(cd "$KUBE_SCRIPTS/../.." && pwd)
kubectl=${KUBECTL:-$KUBE_BIN/kubectl}
export KUBECONFIG=$dir/kubeconfig

crds=("$repo"/crds/*.yaml "$repo"/e2e/crds/*.yaml)
names=()
created=0
for crd in "${crds[@]}"; do
    name=crd/$(awk '/^metadata:/ { m = 1; next } m && /^  name:/ { print $2; exit }' "$crd")
    names+=("$name")
    "$kubectl" get "$name" >/dev/null 2>&1 || created=1
    log "applying $(basename "$crd")"
    awk -f "$KUBE_SCRIPTS/strip-cel.awk" "$crd" | "$kubectl" apply "$@" -f - >&2
done
"$kubectl" wait --for=condition=Established --timeout=60s "${names[@]}" >&2
if ((created)); then
    log "restarting kube-controller-manager so its garbage collector knows the new kinds"
    kill_proc "$dir" kube-controller-manager
    start_controller_manager "$dir"
fi
