#!/usr/bin/env bash
# Stops the test bed started by start.sh in DIR (all processes with a pid file
# there). Keeps DIR, with its logs, for the caller to inspect or remove.
# Usage: e2e/kube/stop.sh DIR
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir=$1
[[ -d $dir ]] || exit 0
# The watchdog runs this script by exec, so never kill our own pid.
if [[ -f $dir/watchdog.pid && $(<"$dir/watchdog.pid") != "$$" ]]; then
    kill_proc "$dir" watchdog
fi
rm -f "$dir/watchdog.pid"
for name in kube-controller-manager kube-apiserver etcd; do
    kill_proc "$dir" "$name"
done
