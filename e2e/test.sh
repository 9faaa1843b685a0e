#!/usr/bin/env bash
# The one test command: installs the test peers, then runs every unit and integration
# test (integration tests start their own posthorn, dnsmasq and clients on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

bash e2e/setup.sh
# dnsmasq lives in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
exec cargo nextest run --no-fail-fast "$@"
