#!/usr/bin/env bash
# Restarts only kube-apiserver of the test bed in DIR (same port, certificates
# and token), as an API-server outage for clients to recover from. With
# DOWN_SECONDS, it stays down that long before starting again.
# Usage: e2e/kube/restart-apiserver.sh DIR [DOWN_SECONDS]
set -euo pipefail

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 DIR [DOWN_SECONDS]" >&2; exit 2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir=$(cd "$1" && pwd)
[[ -f $dir/env ]] || die "$dir is not a test bed (no env file)"

log "stopping kube-apiserver"
kill_proc "$dir" kube-apiserver
sleep "${2:-0}"
log "starting kube-apiserver"
start_apiserver "$dir"
log "kube-apiserver ready"
