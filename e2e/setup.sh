#!/bin/sh
# Installs the real peers the end-to-end tests talk to (Debian/Ubuntu, as root):
#   postfix        private relay-host instances and smtp-sink (delivery tests)
#   dovecot-core   SASL for that Postfix, doveadm for hash cross-checks
#   dovecot-lmtpd  the LMTP mailbox server of the local-delivery test
#   dnsmasq-base   MX/A records for test domains on a loopback port
#   swaks openssl  submitting test mail, test certificates
# The packages' own services are not started (policy-rc.d in containers, and the tests
# run private instances on high loopback ports).
set -eu
packages="postfix dovecot-core dovecot-lmtpd dnsmasq-base swaks openssl python3"
missing=""
for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
