#!/bin/bash
# A private Dovecot LMTP server: mailboxes for the users given, stored as Maildir under
# DIR/mail/<domain>/<user>/Maildir, owned by `nobody`; LMTP on the unix socket
# DIR/lmtp.sock and on 127.0.0.1:PORT.
#
#   lmtp.sh start DIR PORT USER...
#   lmtp.sh stop DIR
set -eu
cmd=$1 dir=$(realpath "$2")
if [ "$cmd" = stop ]; then
    dovecot -c "$dir/dovecot.conf" stop >/dev/null 2>&1 || true
    exit 0
fi
port=$3
shift 3
mkdir -p "$dir/run" "$dir/mail"
chown nobody "$dir/mail"
chmod 755 "$dir"
: > "$dir/users"
for user in "$@"; do
    echo "$user::65534:65534::$dir/mail/${user#*@}/${user%@*}::" >> "$dir/users"
done
cat > "$dir/dovecot.conf" <<CF
protocols = lmtp
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/run
log_path = $dir/dovecot.log
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = $dir/users
}
userdb {
  driver = passwd-file
  args = $dir/users
}
service lmtp {
  unix_listener $dir/lmtp.sock {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $port
  }
}
service anvil {
  chroot =
}
CF
dovecot -c "$dir/dovecot.conf" </dev/null >>"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; exit 1; }
for _ in $(seq 100); do
    if [ -S "$dir/lmtp.sock" ] && (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
        exit 0
    fi
    sleep 0.1
done
echo "lmtp.sh: Dovecot did not come up; see $dir/dovecot.log" >&2
exit 1
