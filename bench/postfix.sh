#!/bin/bash
# The hand-made setup the bench compares Posthorn with, private on loopback: Postfix
# submission with TLS required, SASL through Dovecot's auth socket against a passwd-file
# of {SHA512-CRYPT} users, smtpd_sender_login_maps, the recipient restrictions, and
# everything relayed to a counting smtp-sink. Queue files are fsynced as Postfix does by
# default. With DKIM_KEY, OpenDKIM signs every message (RSA key DKIM_KEY, selector
# `bench`, domain example.test) as a milter, as Posthorn signs. The milter socket is a
# Unix socket, as Debian's opendkim package sets up: over loopback TCP, libmilter's small
# writes meet Nagle and delayed ACKs and every message waited ~100 ms for nothing.
#
#   postfix.sh start DIR PORT SINK_PORT USERS SENDERS [DKIM_KEY]
#     (DIR/tls.crt and DIR/tls.key must exist; USERS and SENDERS are copied into DIR)
#   postfix.sh stop DIR
# Runs as root (Postfix, Dovecot and OpenDKIM drop privileges); touches nothing outside DIR.
set -eu
. "$(dirname "$0")/../e2e/lib/postfix.sh"
cmd=$1 dir=$(realpath "$2")
case $cmd in
stop)
    postfix_stop "$dir"
    [ -f "$dir/opendkim.pid" ] && kill "$(cat "$dir/opendkim.pid")" 2>/dev/null || true
    exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
port=$3 sink_port=$4 users=$5 senders=$6 dkim_key=${7:-}

postfix_configure "$dir" "$port" postfix.bench.test
cp "$senders" "$dir/senders"
postmap -c "$dir/etc" "hash:$dir/senders"
cat >> "$dir/etc/main.cf" <<CF
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_client_restrictions = permit_sasl_authenticated, reject
smtpd_sender_login_maps = hash:$dir/senders
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = reject_non_fqdn_recipient, permit_sasl_authenticated, reject
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
CF
cp "$users" "$dir/users"
dovecot_auth_configure "$dir" "$dir/users"

if [ -n "$dkim_key" ]; then
    install -d -o opendkim -m 0755 "$dir/milter"
    cp "$dkim_key" "$dir/dkim.key"
    chown opendkim "$dir/dkim.key"
    chmod 600 "$dir/dkim.key"
    cat > "$dir/opendkim.conf" <<CF
Syslog no
Mode s
Socket local:$dir/milter/opendkim.sock
# Postfix's smtpd (user postfix) connects to it.
UMask 0111
Domain example.test
Selector bench
KeyFile $dir/dkim.key
Canonicalization relaxed/simple
SignatureAlgorithm rsa-sha256
UserID opendkim
PidFile $dir/opendkim.pid
# The bench may live under a world-writable directory such as /tmp; the key itself is 0600.
RequireSafeKeys false
CF
    touch "$dir/opendkim.pid"
    chown opendkim "$dir/opendkim.pid"
    cat >> "$dir/etc/main.cf" <<CF
smtpd_milters = unix:$dir/milter/opendkim.sock
milter_default_action = tempfail
CF
    opendkim -x "$dir/opendkim.conf" </dev/null >>"$dir/start.log" 2>&1 ||
        { cat "$dir/start.log" >&2; exit 1; }
fi
postfix_start "$dir" "$port" with-dovecot
