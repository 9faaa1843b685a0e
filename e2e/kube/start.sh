#!/usr/bin/env bash
# Starts a Kubernetes 1.20 control plane for tests in DIR, without containers:
# etcd, kube-apiserver (HTTPS on 127.0.0.1, token auth, RBAC, service-account
# keys, audit log of writes) and kube-controller-manager (garbage collector,
# namespace and service-account controllers). No scheduler or kubelet: Pods
# are stored but never run.
#
# Usage: e2e/kube/start.sh DIR
# Prints KUBECONFIG=DIR/kubeconfig when the server is ready and the default
# namespace has its default service account (about 6 s).
#
# Lifetime: every process's pid is in DIR/*.pid; e2e/kube/stop.sh DIR ends
# them. A watchdog also ends them when the owner process exits, so they die
# with the test even when it crashes: the owner is the caller of start.sh
# ($PPID) unless POSTHORN_KUBE_OWNER_PID names another pid (0: no watchdog).
#
# Controllers: $POSTHORN_KUBE_CONTROLLERS (a --controllers list) if set.
# Binaries: $POSTHORN_KUBE_BIN if set, else the cached build from build.sh
# (built on first use, which takes 11-17 minutes).
#
# DIR also gets: kubeconfig (admin token, group system:masters), env (ports,
# token, binary dir; sourceable), pki/ (ca.crt, apiserver.*, sa.*),
# tokens.csv, etcd/ (data), audit.log (one JSON line per API write) and
# etcd.log, kube-apiserver.log, kube-controller-manager.log.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
owner=${POSTHORN_KUBE_OWNER_PID:-$PPID}
mkdir -p "$1"
dir=$(cd "$1" && pwd)
for f in "$dir"/*.pid; do
    [[ -f $f ]] && kill -0 "$(<"$f")" 2>/dev/null && die "$dir already runs $(basename "$f" .pid); stop it first"
done

if [[ -n ${POSTHORN_KUBE_BIN:-} ]]; then
    bin=$POSTHORN_KUBE_BIN
else
    bin=$("$KUBE_SCRIPTS/build.sh" | tail -n 1)
fi
for b in kube-apiserver kube-controller-manager; do
    [[ -x $bin/$b ]] || die "$bin/$b missing"
done
command -v etcd >/dev/null || die "etcd not installed (apt-get install etcd-server, or run build.sh)"

started=$(date +%s%N)
# If anything below fails, do not leave half a control plane behind.
trap '[[ $? -eq 0 ]] || "$KUBE_SCRIPTS/stop.sh" "$dir"' EXIT

# --- certificates and keys -----------------------------------------------
pki=$dir/pki
mkdir -p "$pki"
if [[ ! -f $pki/apiserver.crt ]]; then
    openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj /CN=posthorn-test-ca \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -new -nodes -newkey rsa:2048 -subj /CN=kube-apiserver \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    cat >"$pki/apiserver.ext" <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
EXT
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

# --- settings shared with restart-apiserver.sh -----------------------------
if [[ -f $dir/env ]]; then
    . "$dir/env" # a restart of a stopped test bed keeps its ports and token
    KUBE_BIN=$bin
else
    ADMIN_TOKEN=$(openssl rand -hex 24)
    free_port; ETCD_PORT=$PORT
    free_port; ETCD_PEER_PORT=$PORT
    free_port; APISERVER_PORT=$PORT
    KUBE_BIN=$bin
fi
cat >"$dir/env" <<ENV
KUBE_BIN=$KUBE_BIN
KUBE_CONTROLLERS=${KUBE_CONTROLLERS:-${POSTHORN_KUBE_CONTROLLERS:-}}
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
ADMIN_TOKEN=$ADMIN_TOKEN
ENV
echo "$ADMIN_TOKEN,admin,admin,\"system:masters\"" >"$dir/tokens.csv"
chmod 600 "$dir/tokens.csv" "$dir/env"

cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: posthorn-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: posthorn-test
  context:
    cluster: posthorn-test
    user: admin
    namespace: default
current-context: posthorn-test
KUBECONFIG
chmod 600 "$dir/kubeconfig"

# --- processes -------------------------------------------------------------
if [[ $owner != 0 ]]; then
    # Polls the owner; when it is gone (or DIR's env is removed), stops the test bed.
    spawn "$dir" watchdog bash -c \
        'while kill -0 "$1" 2>/dev/null && [[ -f $2/env ]]; do sleep 1; done; exec "$3" "$2"' \
        watchdog "$owner" "$dir" "$KUBE_SCRIPTS/stop.sh"
fi

log "starting etcd on 127.0.0.1:$ETCD_PORT"
spawn "$dir" etcd etcd --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger=zap --log-level=warn
for _ in $(seq 100); do
    curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" >/dev/null && break
    kill -0 "$(<"$dir/etcd.pid")" 2>/dev/null || die "etcd exited:$(echo; tail -n 20 "$dir/etcd.log")"
    sleep 0.1
done

log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
start_apiserver "$dir"

log "starting kube-controller-manager"
start_controller_manager "$dir"

wait_for "$dir" 60 /api/v1/namespaces/default/serviceaccounts/default
log "ready in $((($(date +%s%N) - started) / 1000000)) ms"
echo "KUBECONFIG=$dir/kubeconfig"
