#!/usr/bin/env bash
# Installs the independent peers of the DKIM and DSN tests: Debian's dkimpy (python3-dkim,
# with dnspython and PyNaCl for Ed25519) as the DKIM verifier, dnsmasq to serve the
# published key, openssl for keys made elsewhere. The DSN tests use python3's own `email`
# package. Idempotent: apt is only touched when a package is missing.
set -euo pipefail

packages=(python3 python3-dkim python3-dnspython python3-nacl dnsmasq-base openssl)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "e2e/setup-dkim.sh: installing ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

/usr/bin/python3 -c 'import dkim, dns.resolver, nacl' || {
  echo "e2e/setup-dkim.sh: dkimpy not importable by /usr/bin/python3" >&2
  exit 1
}
