#!/usr/bin/env bash
# The side-by-side benchmark of bench/RESULTS.md: installs the peers (e2e/setup.sh),
# builds posthorn and the load generator, and runs bench/bench.py.
#
#   bench/run.sh [bench.py options]   release build; e.g. --clients 10,50 --runs 3
#   bench/run.sh --smoke [options]    a few seconds (C=4 M=2, one run per server, debug
#                                     build); fails if any side loses mail or errors
# Needs root, as the private Postfix, Dovecot and OpenDKIM instances do.
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/setup.sh
# smtp-sink, postfix, dnsmasq and opendkim live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
if [ "${1:-}" = --smoke ]; then
    shift
    # The smoke checks correctness, not speed: the debug build the tests use will do.
    cargo build -q -p posthorn -p posthorn-bench-loadgen
    exec python3 bench/bench.py --clients 4 --messages 2 --runs 1 --duration 3 \
        --dir target/bench-smoke --posthorn target/debug/posthorn \
        --loadgen target/debug/loadgen "$@"
fi
cargo build -q --release -p posthorn -p posthorn-bench-loadgen
exec python3 bench/bench.py "$@"
