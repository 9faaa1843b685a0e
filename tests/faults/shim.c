/* LD_PRELOAD shim for the durability tests: records every fsync, fdatasync, link and
 * rename, every write to a regular file and every send on a socket (with the first line
 * sent), one line per call, in call order, to $POSTHORN_FAULT_LOG; and fails those calls
 * on demand.
 *
 * Log lines are tab-separated: op, path (of the fd, or "from -> to"), result (0 or the
 * errno name), and for sockets the first line of the data. A sync is logged once it has
 * returned, a send before it is made: a sync line above a send line finished before the
 * send began.
 *
 * Faults: $POSTHORN_FAULT_CONTROL names a file read at every call; "OPS PATTERN ERRNO"
 * (e.g. "fdatasync,fsync /spool/tmp/ EIO") makes the listed ops on paths containing
 * PATTERN fail with ERRNO (EIO or ENOSPC) without doing anything. An empty or missing
 * file lifts the fault. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);
static int (*real_linkat)(int, const char *, int, const char *, int);
static int log_fd = -1;

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_send = dlsym(RTLD_NEXT, "send");
    real_sendto = dlsym(RTLD_NEXT, "sendto");
    real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_renameat2 = dlsym(RTLD_NEXT, "renameat2");
    real_linkat = dlsym(RTLD_NEXT, "linkat");
    const char *log = getenv("POSTHORN_FAULT_LOG");
    if (log)
        log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static void fd_path(int fd, char *out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    out[n < 0 ? 0 : n] = 0;
}

static const char *errno_name(int e) {
    return e == 0 ? "0" : e == EIO ? "EIO" : e == ENOSPC ? "ENOSPC" : strerrorname_np(e);
}

/* One line per call, written with a single write(2) on an O_APPEND file so that lines
 * from concurrent threads do not mix. */
static void record(const char *op, const char *path, int err, const char *data, size_t len) {
    if (log_fd < 0)
        return;
    char line[4352];
    int n = snprintf(line, sizeof line, "%s\t%s\t%s\t", op, path, errno_name(err));
    for (size_t i = 0; i < len && data[i] != '\r' && data[i] != '\n' && n < 4300; i++)
        line[n++] = data[i] >= 32 && data[i] < 127 ? data[i] : '?';
    line[n++] = '\n';
    real_write(log_fd, line, n);
}

/* The errno the control file asks for `op` on `path`, or 0. */
static int fault(const char *op, const char *path) {
    const char *control = getenv("POSTHORN_FAULT_CONTROL");
    if (!control)
        return 0;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char ops[256], pattern[256], name[32];
    if (sscanf(buf, "%255s %255s %31s", ops, pattern, name) != 3 || !strstr(path, pattern))
        return 0;
    int matched = 0;
    for (char *save, *o = strtok_r(ops, ",", &save); o; o = strtok_r(NULL, ",", &save))
        matched |= strcmp(o, op) == 0;
    if (!matched)
        return 0;
    return strcmp(name, "ENOSPC") == 0 ? ENOSPC : EIO;
}

static int finish(const char *op, const char *path, int ret) {
    record(op, path, ret < 0 ? errno : 0, "", 0);
    return ret;
}

#define FAIL_IF_ASKED(op, path)                                                                  \
    do {                                                                                         \
        int e = fault(op, path);                                                                 \
        if (e) {                                                                                 \
            record(op, path, e, "", 0);                                                          \
            errno = e;                                                                           \
            return -1;                                                                           \
        }                                                                                        \
    } while (0)

static int sync_with(const char *op, int (*real)(int), int fd) {
    char path[4096];
    fd_path(fd, path, sizeof path);
    FAIL_IF_ASKED(op, path);
    return finish(op, path, real(fd));
}

int fsync(int fd) { return sync_with("fsync", real_fsync, fd); }
int fdatasync(int fd) { return sync_with("fdatasync", real_fdatasync, fd); }

/* What a write on `fd` is: 1 a socket, 2 a regular file (other than the log), 0 neither. */
static int kind(int fd) {
    struct stat st;
    if (fd == log_fd || fstat(fd, &st) != 0)
        return 0;
    return S_ISSOCK(st.st_mode) ? 1 : S_ISREG(st.st_mode) ? 2 : 0;
}

/* Called before a write of `data` on `fd`: records it and answers the injected errno. */
static int before_write(int fd, const void *data, size_t len) {
    int k = kind(fd);
    if (!k)
        return 0;
    char path[4096];
    fd_path(fd, path, sizeof path);
    int e = k == 2 ? fault("write", path) : 0;
    record(k == 1 ? "send" : "write", path, e, k == 1 ? data : "", k == 1 ? len : 0);
    return e;
}

#define WRITE_WITH(fd, data, len, call)                                                          \
    do {                                                                                         \
        int e = before_write(fd, data, len);                                                     \
        if (e) {                                                                                 \
            errno = e;                                                                           \
            return -1;                                                                           \
        }                                                                                        \
        return call;                                                                             \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n) { WRITE_WITH(fd, buf, n, real_write(fd, buf, n)); }

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    const void *first = cnt > 0 ? iov[0].iov_base : "";
    size_t len = cnt > 0 ? iov[0].iov_len : 0;
    WRITE_WITH(fd, first, len, real_writev(fd, iov, cnt));
}

ssize_t send(int fd, const void *buf, size_t n, int flags) {
    WRITE_WITH(fd, buf, n, real_send(fd, buf, n, flags));
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
               socklen_t tolen) {
    WRITE_WITH(fd, buf, n, real_sendto(fd, buf, n, flags, to, tolen));
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    const void *first = msg->msg_iovlen > 0 ? msg->msg_iov[0].iov_base : "";
    size_t len = msg->msg_iovlen > 0 ? msg->msg_iov[0].iov_len : 0;
    WRITE_WITH(fd, first, len, real_sendmsg(fd, msg, flags));
}

/* Paths of a link or rename: "from -> to", relative to the cwd (the server's paths are
 * absolute). */
static int two_paths(const char *op, const char *from, const char *to, int (*call)(void *),
                     void *args) {
    char both[8200];
    snprintf(both, sizeof both, "%s -> %s", from, to);
    FAIL_IF_ASKED(op, both);
    return finish(op, both, call(args));
}

struct at_args {
    int from_dir;
    const char *from;
    int to_dir;
    const char *to;
    int flags;
};

static int call_rename(void *a) {
    struct at_args *x = a;
    return real_renameat2(x->from_dir, x->from, x->to_dir, x->to, (unsigned)x->flags);
}

static int call_link(void *a) {
    struct at_args *x = a;
    return real_linkat(x->from_dir, x->from, x->to_dir, x->to, x->flags);
}

int rename(const char *from, const char *to) {
    struct at_args a = {AT_FDCWD, from, AT_FDCWD, to, 0};
    return two_paths("rename", from, to, call_rename, &a);
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
    struct at_args a = {fd1, from, fd2, to, 0};
    return two_paths("rename", from, to, call_rename, &a);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned int flags) {
    struct at_args a = {fd1, from, fd2, to, (int)flags};
    return two_paths("rename", from, to, call_rename, &a);
}

int link(const char *from, const char *to) {
    struct at_args a = {AT_FDCWD, from, AT_FDCWD, to, 0};
    return two_paths("link", from, to, call_link, &a);
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags) {
    struct at_args a = {fd1, from, fd2, to, flags};
    return two_paths("link", from, to, call_link, &a);
}
