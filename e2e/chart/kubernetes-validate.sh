#!/usr/bin/env bash
# Prints the path of a kubernetes-validate (PyPI) command, installing it into a venv in
# the cache first when missing. It validates manifests offline against bundled schemas
# (custom resources are skipped).
# Cache: ${POSTHORN_CHART_CACHE:-/var/cache/posthorn}/kubernetes-validate-<version>/
set -euo pipefail

version=1.37.0
venv="${POSTHORN_CHART_CACHE:-${POSTHORN_KUBE_CACHE:-/var/cache/posthorn}}/kubernetes-validate-$version"
bin="$venv/bin/kubernetes-validate"

if [ ! -e "$venv/.complete" ]; then
  mkdir -p "$(dirname "$venv")"
  # One installer at a time; a venv's scripts name their interpreter by absolute path,
  # so it is built in place and marked complete at the end.
  exec 9>"$venv.lock"
  flock 9
  if [ ! -e "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version" >&2
    "$bin" --version >/dev/null
    touch "$venv/.complete"
  fi
fi
echo "$bin"
