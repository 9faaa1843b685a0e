# Shared by the test-bed scripts (sourced, not run). A test-bed directory DIR
# holds: env (ports, binaries), pki/, tokens.csv, kubeconfig, etcd/ (data),
# *.pid (one per process), *.log.

KUBE_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "${0##*/}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Sets PORT to a TCP port on 127.0.0.1 that nothing listens on and that this
# shell has not handed out before (so call it directly, not in $(...)).
# Connecting succeeds only when something listens. The ports lie below the kernel's
# ephemeral range (32768 and up), so a socket bound to port 0 by a test running
# alongside, or an outgoing connection, cannot take one between this check and the bind.
declare -A _taken_ports=()
free_port() {
    local low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 200); do
        PORT=$((10000 + RANDOM % (low - 10000)))
        [[ -z ${_taken_ports[$PORT]:-} ]] || continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            _taken_ports[$PORT]=1
            return
        fi
    done
    die "no free port found"
}

# Runs a command in the background as process NAME: output to DIR/NAME.log,
# pid to DIR/NAME.pid. Standard streams are detached so a caller reading our
# output (e.g. a test capturing stdout) does not wait for the daemons.
spawn() {
    local dir=$1 name=$2
    shift 2
    "$@" </dev/null >>"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

# Ends process NAME (TERM, then KILL after 10 s) and removes its pid file.
kill_proc() {
    local dir=$1 name=$2 pid
    [[ -f $dir/$name.pid ]] || return 0
    pid=$(<"$dir/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
}

# curl against the API server as the admin, printing the HTTP status code.
api_status() {
    local dir=$1 path=$2
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$dir/pki/ca.crt" \
        -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$APISERVER_PORT$path" || true
}

# Waits (up to $2 seconds) until GET $3 answers 200; fails if the process died.
wait_for() {
    local dir=$1 timeout=$2 path=$3 pid
    for _ in $(seq $((timeout * 5))); do
        [[ $(api_status "$dir" "$path") == 200 ]] && return 0
        pid=$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)
        [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
            || die "kube-apiserver exited; last log lines:$(echo; tail -n 20 "$dir/kube-apiserver.log")"
        sleep 0.2
    done
    die "timed out waiting for $path; see $dir/*.log"
}

# Starts kube-apiserver from the settings in DIR/env and waits for /readyz.
start_apiserver() {
    local dir=$1
    # shellcheck source=/dev/null
    . "$dir/env"
    spawn "$dir" kube-apiserver "$KUBE_BIN/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --secure-port="$APISERVER_PORT" --insecure-port=0 \
        --cert-dir="$dir/pki" \
        --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
        --client-ca-file="$dir/pki/ca.crt" \
        --token-auth-file="$dir/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$dir/pki/sa.pub" \
        --service-account-signing-key-file="$dir/pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --audit-policy-file="$KUBE_SCRIPTS/audit-policy.yaml" \
        --audit-log-path="$dir/audit.log" --audit-log-maxbackup=1 \
        --profiling=false \
        --v=1
    wait_for "$dir" 60 /readyz
}

# Starts kube-controller-manager (only the controllers the tests need: no
# deployment/replicaset controllers, so Deployments get no ReplicaSets and
# their status is whatever a test writes; $KUBE_CONTROLLERS from DIR/env
# replaces the list for tests whose pods really run) and waits until its garbage
# collector has synced its informers for every resource the server knows.
start_controller_manager() {
    local dir=$1 from
    . "$dir/env"
    from=1
    [[ -f $dir/kube-controller-manager.log ]] && from=$(($(wc -l <"$dir/kube-controller-manager.log") + 1))
    spawn "$dir" kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
        --kubeconfig="$dir/kubeconfig" \
        --controllers="${KUBE_CONTROLLERS:-garbagecollector,namespace,serviceaccount,serviceaccount-token}" \
        --service-account-private-key-file="$dir/pki/sa.key" \
        --root-ca-file="$dir/pki/ca.crt" \
        --leader-elect=false --port=0 --secure-port=0 \
        --v=1
    for _ in $(seq 300); do
        tail -n "+$from" "$dir/kube-controller-manager.log" | grep -q 'Proceeding to collect garbage' && return 0
        kill -0 "$(<"$dir/kube-controller-manager.pid")" 2>/dev/null \
            || die "kube-controller-manager exited:$(echo; tail -n 20 "$dir/kube-controller-manager.log")"
        sleep 0.2
    done
    die "garbage collector did not sync in 60 s; see $dir/kube-controller-manager.log"
}
