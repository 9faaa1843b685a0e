#!/bin/bash
# A private Postfix on loopback whose smtpd checks SASL logins through a Dovecot auth
# socket (`smtpd_sasl_type = dovecot`) that something else serves: Posthorn's
# `auth.dovecotSocket` in tests/auth.rs. STARTTLS is offered and AUTH only after it.
#
#   postfix-sasl.sh start DIR PORT SOCKET   (DIR/tls.crt, DIR/tls.key must exist)
#   postfix-sasl.sh stop DIR
# Runs as root (Postfix drops to its `postfix` user); touches nothing outside DIR.
set -eu
. "$(dirname "$0")/../lib/postfix.sh"
cmd=$1 dir=$(realpath "$2")
case $cmd in
stop) postfix_stop "$dir"; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
port=$3 socket=$4
postfix_configure "$dir" "$port" postfix.test
cat >> "$dir/etc/main.cf" <<CF
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $socket
smtpd_relay_restrictions = permit_sasl_authenticated, reject
CF
postfix_start "$dir" "$port"
