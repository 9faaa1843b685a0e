#!/bin/bash
# A private Postfix on loopback as an authenticating relay host (smarthost), the way a
# mail provider runs one: STARTTLS required, SASL through its own Dovecot auth-only
# instance, and everything it accepts relayed on to a local smtp-sink that dumps each
# message into DIR/sink/.
#
#   relay.sh start DIR PORT SINK_PORT USER PASSWORD   (DIR/tls.crt, DIR/tls.key must exist)
#   relay.sh stop DIR
# Runs as root (Postfix drops to its `postfix` user); touches nothing outside DIR.
set -eu
. "$(dirname "$0")/../lib/postfix.sh"
cmd=$1 dir=$(realpath "$2")
case $cmd in
stop)
    postfix_stop "$dir"
    [ -f "$dir/sink.pid" ] && kill "$(cat "$dir/sink.pid")" 2>/dev/null || true
    exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
port=$3 sink_port=$4 user=$5 password=$6
postfix_configure "$dir" "$port" relay.test
cat >> "$dir/etc/main.cf" <<CF
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
CF

# Dovecot only for authentication: one passwd-file user.
echo "$user:{PLAIN}$password" > "$dir/relay-users"
dovecot_auth_configure "$dir" "$dir/relay-users"

mkdir -p "$dir/sink"
chown postfix "$dir/sink"
smtp-sink -u postfix -d "$dir/sink/%H%M%S." 127.0.0.1:"$sink_port" 100 >"$dir/sink.log" 2>&1 &
echo $! > "$dir/sink.pid"
postfix_start "$dir" "$port" with-dovecot
