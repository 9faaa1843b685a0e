#!/usr/bin/env bash
# Operator scale (issue 9 item 6): N MailServers (default 500) on the e2e/kube control
# plane (Kubernetes 1.20, no kubelet), one `posthorn operator` over every namespace.
# Prints the time from the first create until every MailServer's status has its
# observedGeneration, the operator's peak RSS (VmHWM), and the API writes of one
# steady-state resync window (65 s > the 60 s resync: every MailServer is looked at
# once), counted in the API server's audit log by verb and resource. Goal: 0 writes.
# Exits non-zero if the steady state writes anything besides the Lease renewals.
#
# Usage: bench/operator-scale.sh [N]
#   POSTHORN_BIN: a built posthorn (default: cargo build --release).
#   KEEP=1: keep the test-bed directory (logs, audit.log) after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}

if [[ -z ${POSTHORN_BIN:-} ]]; then
    cargo build --quiet --release --bin posthorn
    POSTHORN_BIN=${CARGO_TARGET_DIR:-target}/release/posthorn
fi
kube_bin=$(bash e2e/kube/build.sh | tail -n 1)
dir=$(mktemp -d /tmp/posthorn-scale.XXXXXX)
operator=
cleanup() {
    [[ -n $operator ]] && kill "$operator" 2>/dev/null
    bash e2e/kube/stop.sh "$dir" >/dev/null 2>&1 || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "test bed kept: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
POSTHORN_KUBE_BIN=$kube_bin POSTHORN_KUBE_OWNER_PID=$$ bash e2e/kube/start.sh "$dir" >"$dir/setup.log" 2>&1 ||
    { cat "$dir/setup.log"; exit 1; }
KUBECTL=$kube_bin/kubectl bash e2e/kube/apply-crds.sh "$dir" >>"$dir/setup.log" 2>&1 ||
    { cat "$dir/setup.log"; exit 1; }
export KUBECONFIG=$dir/kubeconfig
kubectl() { "$kube_bin/kubectl" "$@"; }
now() { date +%s.%N; }

kubectl create secret generic mail-users --from-literal=passwd='alice@example.com:{SHA512-CRYPT}$6$x$y' >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$POSTHORN_BIN" operator --identity scale --image posthorn:scale --metrics "127.0.0.1:$port" \
    2>"$dir/operator.log" &
operator=$!
until curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^posthorn_operator_leader 1'; do
    kill -0 "$operator" || { cat "$dir/operator.log"; exit 1; }
    sleep 0.5
done
metric() { curl -sf "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }

# N copies of the example, each its own name and hostname (one users Secret for all).
for i in $(seq -w 1 "$n"); do
    sed -e "s/^  name: mail$/  name: ms-$i/" -e "s/hostname: mail.example.com/hostname: ms-$i.example.com/" \
        examples/mailserver.yaml
    echo ---
done >"$dir/servers.yaml"

start=$(now)
kubectl create -f "$dir/servers.yaml" >/dev/null
created=$(now)
observed() {
    kubectl get mailservers -o json |
        jq '[.items[] | select(.status.observedGeneration == .metadata.generation)] | length'
}
while [[ $(observed) -lt $n ]]; do
    kill -0 "$operator" || { tail -n 50 "$dir/operator.log"; exit 1; }
    sleep 5
done
done_at=$(now)
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$operator/status")

# Settle (the watch events of the first writes reconcile once more), then one resync.
sleep 10
from=$(wc -l <"$dir/audit.log")
reconciles=$(metric posthorn_operator_reconciles_total)
sleep 65
reconciled=$(($(metric posthorn_operator_reconciles_total) - reconciles))
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$operator/status")
writes=$(tail -n +"$((from + 1))" "$dir/audit.log" |
    jq -r 'select(.userAgent | startswith("posthorn-operator/")) |
           "\(.verb) \(.objectRef.resource)\(if .objectRef.subresource then "/" + .objectRef.subresource else "" end)"' |
    sort | uniq -c)
others=$(grep -v ' leases$' <<<"$writes" | grep -c . || true)

printf 'MailServers: %d\n' "$n"
printf 'created (kubectl create, one file): %.1f s\n' "$(echo "$created - $start" | bc)"
printf 'all reconciled (observedGeneration), from the first create: %.1f s\n' "$(echo "$done_at - $start" | bc)"
printf 'operator peak RSS (VmHWM): %d MiB; RSS after the resync: %d MiB\n' $((hwm_kib / 1024)) $((rss_kib / 1024))
printf 'steady-state resync window (65 s): %d reconciles, writes by verb and resource:\n' "$reconciled"
printf '%s\n' "${writes:-  (none)}"
[[ $others -eq 0 ]] || { echo "FAIL: the steady state wrote besides the Lease" >&2; exit 1; }
