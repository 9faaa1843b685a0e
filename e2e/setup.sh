#!/usr/bin/env bash
# Installs what the test suite drives: swaks (with its TLS and SASL Perl modules), dnsmasq,
# doveadm (dovecot-core), mkpasswd (whois), openssl; for the delivery tests Postfix (private
# relay-host instances, smtp-sink) and Dovecot LMTP, and Dovecot IMAP (tests/mailboxes.rs);
# python3 (load client; its `email` package reads our bounces) with Debian's dkimpy
# (python3-dkim, the independent DKIM verifier, with dnspython and PyNaCl for Ed25519); nmap and testssl.sh for the audits
# (tests/audit.rs); OpenDKIM for the benchmark's Postfix variant (bench/); buildah,
# umoci and skopeo for the image build (image/build.sh, tests/image.rs); and
# cargo-nextest. The packages' own services are not used: tests run private instances.
# Idempotent: apt is only touched when a package is missing. Needs root (or sudo) for
# apt on a fresh machine.
set -euo pipefail

packages=(
  swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
  dnsmasq-base dovecot-core whois openssl ca-certificates
  postfix dovecot-lmtpd dovecot-imapd
  python3 python3-dkim python3-dnspython python3-nacl
  nmap testssl.sh
  opendkim
  lua5.4
  buildah umoci skopeo
)

missing=()
for p in "${packages[@]}"; do
  # "triggers-pending" is installed too (seen while another apt run is under way).
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
    grep -Eq "install ok (installed|triggers-pending|triggers-awaited)"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "e2e/setup.sh: installing ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  # Postfix unconfigured: the tests write their own main.cf per instance.
  echo "postfix postfix/main_mailer_type select No configuration" |
    "${sudo[@]}" debconf-set-selections
  # Wait for a concurrent apt/dpkg run instead of failing on its lock.
  apt_opts=(-o DPkg::Lock::Timeout=600)
  "${sudo[@]}" apt-get "${apt_opts[@]}" update -qq
  # Keep any existing config files without asking (no stdin in CI).
  "${sudo[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "e2e/setup.sh: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

for tool in swaks dnsmasq doveadm mkpasswd openssl postfix smtp-sink python3 nmap testssl \
  opendkim buildah umoci skopeo; do
  command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null || {
    echo "e2e/setup.sh: $tool still missing after install" >&2
    exit 1
  }
done

# python3-dkim is installed for the system interpreter, which a pyenv python3 may shadow.
/usr/bin/python3 -c 'import dkim, dns.resolver, nacl' || {
  echo "e2e/setup.sh: dkimpy not importable by /usr/bin/python3" >&2
  exit 1
}
