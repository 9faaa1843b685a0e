/* LD_PRELOAD shim for the test kubelet: a container binds 0.0.0.0 as it would inside its
 * own network namespace; here every pod shares the host's network, so a bind to
 * INADDR_ANY goes to the pod's own address (POSTHORN_TEST_POD_IP) instead. Every other
 * address, and every other family, is left alone. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *pod_ip = getenv("POSTHORN_TEST_POD_IP");
    if (pod_ip && addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY)) {
            struct sockaddr_in pod = *in;
            if (inet_pton(AF_INET, pod_ip, &pod.sin_addr) == 1)
                return real_bind(fd, (const struct sockaddr *)&pod, sizeof pod);
        }
    }
    return real_bind(fd, addr, len);
}
