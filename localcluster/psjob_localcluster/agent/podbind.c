/*
 * LD_PRELOAD shim for pods run by the local node agent.
 *
 * Pods share the machine's network namespace. A server that binds the wildcard address
 * (0.0.0.0 or ::, as torch's TCPStore does) would take its port on every pod's address, so two
 * pods could not listen on the same port as they can on a real node. This shim rewrites such a
 * bind to the pod's own address, LOCALCLUSTER_POD_IP (::ffff:<ip> for IPv6 sockets), as a pod network
 * namespace would. Binds to a specific address are left alone, and if the rewritten bind is
 * refused (an IPv6-only socket) the original one is tried.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function real_bind;
    if (real_bind == NULL) {
        real_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
    }
    const char *pod_ip = getenv("LOCALCLUSTER_POD_IP");
    struct in_addr pod;
    if (address == NULL || pod_ip == NULL || inet_pton(AF_INET, pod_ip, &pod) != 1) {
        return real_bind(fd, address, length);
    }
    if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in own;
        memcpy(&own, address, sizeof own);
        if (own.sin_addr.s_addr == htonl(INADDR_ANY)) {
            own.sin_addr = pod;
            return real_bind(fd, (const struct sockaddr *)&own, sizeof own);
        }
    } else if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 own;
        memcpy(&own, address, sizeof own);
        if (IN6_IS_ADDR_UNSPECIFIED(&own.sin6_addr)) {
            memset(&own.sin6_addr, 0, sizeof own.sin6_addr);
            own.sin6_addr.s6_addr[10] = 0xff;
            own.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&own.sin6_addr.s6_addr[12], &pod, sizeof pod);
            int saved = errno;
            if (real_bind(fd, (const struct sockaddr *)&own, sizeof own) == 0) {
                return 0;
            }
            errno = saved;
        }
    }
    return real_bind(fd, address, length);
}
