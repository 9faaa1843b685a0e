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
cmd=$1 dir=$(realpath "$2")
case $cmd in
stop)
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    dovecot -c "$dir/dovecot.conf" stop >/dev/null 2>&1 || true
    [ -f "$dir/sink.pid" ] && kill "$(cat "$dir/sink.pid")" 2>/dev/null || true
    exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
port=$3 sink_port=$4 user=$5 password=$6
mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/dovecot-run" "$dir/sink"
chown postfix "$dir/data" "$dir/sink"
chmod 755 "$dir"

cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP
smtpd_tls_cert_file = $dir/tls.crt
smtpd_tls_key_file = $dir/tls.key
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
cat > "$dir/etc/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF

# Dovecot only for authentication: no protocols, one passwd-file user.
echo "$user:{PLAIN}$password" > "$dir/relay-users"
chown dovecot "$dir/relay-users"
chmod 600 "$dir/relay-users"
cat > "$dir/dovecot.conf" <<CF
protocols =
base_dir = $dir/dovecot-run
state_dir = $dir/dovecot-run
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = $dir/relay-users
}
userdb {
  driver = static
  args = uid=postfix gid=postfix home=/nonexistent
}
service auth {
  unix_listener $dir/queue/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service anvil {
  chroot =
}
CF

smtp-sink -u postfix -d "$dir/sink/%H%M%S." 127.0.0.1:"$sink_port" 100 >"$dir/sink.log" 2>&1 &
echo $! > "$dir/sink.pid"
# Daemons get no inherited stdout/stderr: a caller reading ours to its end must not
# wait for them. (`postfix check` reports only to a terminal or syslog, hence script.)
{
    script -qec "postfix -c $dir/etc check" /dev/null
    postfix -c "$dir/etc" start
    mkdir -p "$dir/queue/private"
    dovecot -c "$dir/dovecot.conf"
} </dev/null >>"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; exit 1; }
# Ready when both the auth socket and the SMTP port answer.
for _ in $(seq 100); do
    if [ -S "$dir/queue/private/auth" ] && (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
        exit 0
    fi
    sleep 0.1
done
echo "relay.sh: Postfix or Dovecot did not come up; see $dir/maillog $dir/dovecot.log" >&2
exit 1
