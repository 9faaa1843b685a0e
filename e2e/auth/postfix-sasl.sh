#!/bin/bash
# A private Postfix on loopback whose smtpd checks SASL logins through a Dovecot auth
# socket (`smtpd_sasl_type = dovecot`) that something else serves: Posthorn's
# `auth.dovecotSocket` in tests/auth.rs. STARTTLS is offered and AUTH only after it.
#
#   postfix-sasl.sh start DIR PORT SOCKET   (DIR/tls.crt, DIR/tls.key must exist)
#   postfix-sasl.sh stop DIR
# Runs as root (Postfix drops to its `postfix` user); touches nothing outside DIR.
set -eu
cmd=$1 dir=$(realpath "$2")
case $cmd in
stop)
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
port=$3 socket=$4
mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
chown postfix "$dir/data"
chmod 755 "$dir"

cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP
smtpd_tls_cert_file = $dir/tls.crt
smtpd_tls_key_file = $dir/tls.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $socket
smtpd_relay_restrictions = permit_sasl_authenticated, reject
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
proxymap  unix - - n - - proxymap
error     unix - - n - - error
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF

# Daemons get no inherited stdout/stderr: a caller reading ours to its end must not
# wait for them. (`postfix check` reports only to a terminal or syslog, hence script.)
{
    script -qec "postfix -c $dir/etc check" /dev/null
    postfix -c "$dir/etc" start
} </dev/null >>"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; exit 1; }
for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
        exit 0
    fi
    sleep 0.1
done
echo "postfix-sasl.sh: Postfix did not come up; see $dir/maillog" >&2
exit 1
