#!/usr/bin/env bash
# The one test command: installs the test peers, then runs every unit and integration
# test (integration tests start their own posthorn, dnsmasq and clients on loopback, and
# the operator test its own Kubernetes control plane).
set -euo pipefail
cd "$(dirname "$0")/.."

bash e2e/setup.sh
# The Kubernetes 1.20 test bed of tests/operator.rs: builds kube-apiserver,
# kube-controller-manager and kubectl once (11-21 min on a fresh machine), then reuses
# them from the cache (/var/cache/posthorn); the test finds them the same way.
bash e2e/kube/build.sh >/dev/null
# helm (v3 and v4) and kubernetes-validate for tests/chart.rs, cached the same way.
bash e2e/chart/setup.sh
# Every fuzz target for a few seconds over its corpus (installs cargo-fuzz if absent).
bash fuzz/smoke.sh
# The benchmark against Postfix + Dovecot for a few seconds: fails if a side loses mail.
bash bench/run.sh --smoke
# dnsmasq lives in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
# Goldens and generated files: no test may change them (a leaked UPDATE_GOLDEN=1 would
# rewrite a golden and pass). Compared by content, untracked files included.
generated=(src/operator/testdata src/spool/testdata crds charts/posthorn/crds)
snapshot() { find "${generated[@]}" -type f -print0 | sort -z | xargs -0 sha256sum; }
before=$(snapshot)
status=0
# --workspace: the unit tests of the process kubelet (e2e/kubelet) and the bench load
# generator (bench/loadgen) too.
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
if [ "$(snapshot)" != "$before" ]; then
    git status --short -- "${generated[@]}" >&2
    git diff --exit-code -- "${generated[@]}" >&2 || true
    echo "golden or generated files changed during the tests" >&2
    status=1
fi
exit "$status"
