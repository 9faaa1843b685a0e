#!/usr/bin/env bash
# Installs what the test suite drives: swaks (with its TLS and SASL Perl modules), dnsmasq,
# doveadm (dovecot-core), mkpasswd (whois), openssl; and cargo-nextest. Idempotent: apt is
# only touched when a package is missing. Needs root (or sudo) for apt on a fresh machine.
set -euo pipefail

packages=(
  swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
  dnsmasq-base dovecot-core whois openssl ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "e2e/setup.sh: installing ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # Installing dovecot-core must not start a dovecot service (none runs in tests).
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "e2e/setup.sh: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

for tool in swaks dnsmasq doveadm mkpasswd openssl; do
  command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null || {
    echo "e2e/setup.sh: $tool still missing after install" >&2
    exit 1
  }
done
