// Unix-socket calls Swift cannot make directly: sendmsg/recvmsg with SCM_RIGHTS ancillary
// data (the CMSG_* macros) and accept4 (GNU only). Each returns a non-negative count on success and -errno on failure.
#ifndef CVARLINK_SYS_H
#define CVARLINK_SYS_H

#include <stddef.h>
#include <sys/types.h>

/* The most descriptors one message carries (the kernel's SCM_MAX_FD is 253). */
#define CVL_MAX_FDS 253

/* sendmsg(2) of len bytes with nfds descriptors attached (MSG_NOSIGNAL: a closed peer is
   EPIPE, not a signal). Returns the bytes sent. */
ssize_t cvl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/* recvmsg(2) of up to len bytes; descriptors that came along are stored in fds (up to
   maxfds, the rest closed) with MSG_CMSG_CLOEXEC, their count in *nfds. Returns the bytes
   read, 0 at end of stream. */
ssize_t cvl_receive_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds);

/* accept4(2) with SOCK_CLOEXEC, retried on EINTR. Returns the connection's descriptor. */
int cvl_accept(int listener);

#endif
