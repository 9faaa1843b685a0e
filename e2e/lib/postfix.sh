# Shell functions for private Postfix and Dovecot (auth only) instances on loopback,
# shared by e2e/auth/postfix-sasl.sh, e2e/delivery/relay.sh and bench/postfix.sh.
# Source it; every function keeps to its DIR. Needs root: Postfix drops to its `postfix`
# user, Dovecot to its own.

# postfix_configure DIR PORT HOSTNAME: DIR/etc/main.cf with what every instance shares
# (its own queue, log file, banner, TLS certificate DIR/tls.crt and DIR/tls.key) and
# DIR/etc/master.cf with smtpd on 127.0.0.1:PORT. Callers append their own main.cf lines.
postfix_configure() {
    local dir=$1 port=$2 hostname=$3
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix "$dir/data"
    chmod 755 "$dir"
    cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $hostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
smtpd_banner = \$myhostname ESMTP
smtpd_tls_cert_file = $dir/tls.crt
smtpd_tls_key_file = $dir/tls.key
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
}

# dovecot_auth_configure DIR USERS_FILE: DIR/dovecot.conf for a Dovecot that only
# authenticates (no protocols) users of a passwd-file, serving Postfix's SASL on
# DIR/queue/private/auth.
dovecot_auth_configure() {
    local dir=$1 users=$2
    mkdir -p "$dir/dovecot-run"
    chown dovecot "$users"
    chmod 600 "$users"
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
  args = $users
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
}

# postfix_start DIR PORT [with-dovecot]: checks and starts the instance (and its Dovecot),
# then waits until the port answers (and the auth socket exists). Daemons get no
# inherited stdout/stderr: a caller reading ours to its end must not wait for them.
# (`postfix check` reports only to a terminal or syslog, hence script.)
postfix_start() {
    local dir=$1 port=$2 dovecot=${3:-}
    {
        script -qec "postfix -c $dir/etc check" /dev/null
        postfix -c "$dir/etc" start
        if [ -n "$dovecot" ]; then
            mkdir -p "$dir/queue/private"
            dovecot -c "$dir/dovecot.conf"
        fi
    } </dev/null >>"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; return 1; }
    for _ in $(seq 100); do
        if { [ -z "$dovecot" ] || [ -S "$dir/queue/private/auth" ]; } &&
            (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "Postfix${dovecot:+ or Dovecot} in $dir did not come up; see $dir/maillog $dir/dovecot.log" >&2
    return 1
}

# postfix_stop DIR: stops the instance and its Dovecot, if running.
postfix_stop() {
    local dir=$1
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    if [ -f "$dir/dovecot.conf" ]; then
        dovecot -c "$dir/dovecot.conf" stop >/dev/null 2>&1 || true
    fi
}
