/* dgram.c - the datagram socket backend: a frame per datagram over a
 * connected UDP or UNIX datagram socket (QEMU's -netdev dgram).  As with
 * streams no virtio-net header crosses: the device segments and checksums
 * what it sends, what arrives is whole and plain.  The control plane
 * (vnic/backends/socket.py) binds the socket and names the far end
 * (vnic_dgram_set_remote); the socket is not connected, so a far end
 * bound after us, or again, is reached.  There is no connection to lose:
 * the link stays up, and a datagram sent while nobody is bound there is
 * dropped, counted.
 *
 * Several frames per system call: read() hands out frames one at a time
 * from a batch recvmmsg() fetched, write() keeps frames for one
 * sendmmsg() at flush() (or once a batch is full).  What the socket does
 * not take waits, with tx_blocked set, until the fd is writable (a UNIX
 * datagram peer whose queue is full); a datagram the socket refuses for
 * itself (too big, nobody bound at the far end) is dropped and counted.
 * One pair only, as for streams. */
#define _GNU_SOURCE               /* recvmmsg, sendmmsg */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include "backend.h"

#define DGRAM_ETH_HLEN 14                  /* shorter is a runt */

enum { DGRAM_BATCH = 32 };                 /* datagrams per recvmmsg() / sendmmsg() */

struct dgram {
    uint8_t *in;                           /* DGRAM_BATCH slots of VNIC_SOCKET_FRAME_MAX */
    struct mmsghdr in_msg[DGRAM_BATCH];
    struct iovec in_iov[DGRAM_BATCH];
    int in_next, in_count;                 /* [next, count): received, not yet read */
    uint8_t *out;                          /* DGRAM_BATCH slots of VNIC_SOCKET_FRAME_MAX */
    struct mmsghdr out_msg[DGRAM_BATCH];
    struct iovec out_iov[DGRAM_BATCH];
    int out_sent, out_count;               /* [sent, count): kept, not yet sent */
    struct sockaddr_storage remote;        /* where every datagram goes */
    socklen_t remote_len;                  /* 0: not set, nothing can be sent */
};

static int dgram_open(struct vnic_dev *dev, const int *fds, int nfds)
{
    if (nfds != 1 || dev->nqp != 1)
        return -EINVAL;           /* one socket, one pair */
    return fds[0] < 0 ? -EBADF : 0;
}

/* Each message's one iovec at its slot of buf. */
static void point_slots(struct mmsghdr *msg, struct iovec *iov, uint8_t *buf)
{
    for (int i = 0; i < DGRAM_BATCH; i++) {
        iov[i].iov_base = buf + (size_t)i * VNIC_SOCKET_FRAME_MAX;
        iov[i].iov_len = VNIC_SOCKET_FRAME_MAX;
        memset(&msg[i], 0, sizeof(msg[i]));
        msg[i].msg_hdr.msg_iov = &iov[i];
        msg[i].msg_hdr.msg_iovlen = 1;
    }
}

static int dgram_attach(struct qpair *qp)
{
    struct dgram *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->in = malloc((size_t)DGRAM_BATCH * VNIC_SOCKET_FRAME_MAX);
    d->out = malloc((size_t)DGRAM_BATCH * VNIC_SOCKET_FRAME_MAX);
    qp->backend_priv = d;
    if (!d->in || !d->out)
        return -ENOMEM;           /* detach frees what was allocated */
    point_slots(d->in_msg, d->in_iov, d->in);
    point_slots(d->out_msg, d->out_iov, d->out);
    return 0;
}

int vnic_dgram_set_remote(struct vnic_dev *dev, const uint8_t *addr, uint32_t len)
{
    struct dgram *d = dev->qp[0].backend_priv;
    if (dev->running || dev->backend != &dgram_backend || !d || !addr || !len || len > sizeof(d->remote))
        return -EINVAL;
    memcpy(&d->remote, addr, len);
    d->remote_len = (socklen_t)len;
    for (int i = 0; i < DGRAM_BATCH; i++) {
        d->out_msg[i].msg_hdr.msg_name = &d->remote;
        d->out_msg[i].msg_hdr.msg_namelen = d->remote_len;
    }
    return 0;
}

static void dgram_detach(struct qpair *qp)
{
    struct dgram *d = qp->backend_priv;
    if (!d)
        return;
    free(d->in);
    free(d->out);
    free(d);
    qp->backend_priv = NULL;
}

static int dgram_poll_fd(const struct qpair *qp)
{
    return qp->backend_fd;
}

/* ---- receiving ------------------------------------------------------------- */

/* A batch of datagrams: how many came (0: none yet, or an error the far
 * end's absence causes, which a datagram socket reports and forgets). */
static int fetch_batch(struct qpair *qp, struct dgram *d, struct vnic_queue_stats *st)
{
    for (int i = 0; i < DGRAM_BATCH; i++)
        d->in_msg[i].msg_hdr.msg_flags = 0;
    int n;
    do {
        n = recvmmsg(qp->backend_fd, d->in_msg, DGRAM_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNREFUSED)
        st->rx_drops_backend++;
    d->in_next = 0;
    d->in_count = n > 0 ? n : 0;
    return d->in_count;
}

static int dgram_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct dgram *d = qp->backend_priv;
    if (d->in_next == d->in_count && !fetch_batch(qp, d, st))
        return 0;
    const struct mmsghdr *m = &d->in_msg[d->in_next];
    const uint8_t *frame = d->in_iov[d->in_next].iov_base;
    d->in_next++;
    if (unlikely(m->msg_len < DGRAM_ETH_HLEN || (m->msg_hdr.msg_flags & MSG_TRUNC))) {
        st->rx_drops_backend++;              /* a runt, or larger than any frame */
        return 1;
    }
    memset(qp->rx_frame, 0, VNIC_NET_HDR_SIZE);
    memcpy(qp->rx_frame + VNIC_NET_HDR_SIZE, frame, m->msg_len);
    qp->rx_frame_len = VNIC_NET_HDR_SIZE + m->msg_len;
    return 1;
}

/* ---- sending ----------------------------------------------------------------- */

/* One sendmmsg() of what is kept.  0: all of it went (or was refused for
 * itself, counted), 1: the socket is full. */
static int send_kept(struct qpair *qp, struct dgram *d)
{
    while (d->out_sent < d->out_count) {
        int n = sendmmsg(qp->backend_fd, d->out_msg + d->out_sent, (unsigned)(d->out_count - d->out_sent),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            d->out_sent += n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 1;
        } else if (!(n < 0 && errno == EINTR)) {
            qp->dev->stats[qp->index].tx_drops_backend++;   /* this datagram, refused */
            d->out_sent++;
        }
    }
    d->out_sent = d->out_count = 0;
    return 0;
}

static int dgram_flush(struct qpair *qp)
{
    struct dgram *d = qp->backend_priv;
    int r = send_kept(qp, d);
    if (r && !qp->tx_blocked)
        qp->dev->stats[qp->index].tx_backend_waits++;
    qp->tx_blocked = r != 0;
    return r;
}

/* Keep the frame in iov[1..n) for the next sendmmsg(); the header in
 * iov[0] asks for nothing and stays behind.  -1 if it is larger than
 * any frame, or if every slot is still waiting for the socket. */
static int dgram_write(struct qpair *qp, const struct iovec *iov, int n)
{
    struct dgram *d = qp->backend_priv;
    uint32_t len = iov_bytes(iov + 1, n - 1);
    if (unlikely(len > VNIC_SOCKET_FRAME_MAX))
        return -1;
    if (d->out_count == DGRAM_BATCH && (send_kept(qp, d) || d->out_count == DGRAM_BATCH))
        return -1;
    int i = d->out_count++;
    iov_gather(d->out_iov[i].iov_base, iov + 1, n - 1, len);
    d->out_iov[i].iov_len = len;
    if (d->out_count == DGRAM_BATCH && send_kept(qp, d) && !qp->tx_blocked) {
        qp->tx_blocked = true;               /* no new chain until the socket has room */
        qp->dev->stats[qp->index].tx_backend_waits++;
    }
    return 0;
}

const struct backend_ops dgram_backend = {
    .name = "dgram",
    .open = dgram_open,
    .attach = dgram_attach,
    .detach = dgram_detach,
    .poll_fd = dgram_poll_fd,
    .read = dgram_read,
    .write = dgram_write,
    .flush = dgram_flush,
};
