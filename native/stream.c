/* stream.c - the stream socket backend: frames to and from a peer over a
 * connected UNIX or TCP socket, each behind a 4-byte big-endian length
 * (the framing of QEMU's -netdev stream, which passt speaks too).  No
 * virtio-net header crosses: the device segments and checksums what it
 * sends (TX passthrough is refused) and what arrives is whole and plain.
 *
 * The control plane (vnic/backends/socket.py) makes the connection and
 * hands its fd over, or -1 while there is none; this file never connects.
 *
 * Receiving: recv() fills a per-pair buffer, read() cuts one frame out of
 * it at a time.  A peer that closes, or fails, leaves the pair
 * backend_down (counted) until the control plane attaches a new fd.  A
 * length past VNIC_SOCKET_FRAME_MAX means the peer is not speaking this
 * framing: the connection is shut down (counted), never trusted to resync.
 *
 * Sending: write() appends length and frame to a per-pair buffer, flush()
 * (once per TX batch, or when the buffer is nearly full) sends it in one
 * call.  What the socket does not take waits there: the pair sets
 * tx_blocked and its worker sleeps until the fd is writable, so a slow
 * peer holds back the guest's TX ring, never loses frames and never
 * blocks the worker (two devices cabled to each other must not wait on
 * each other).  Only one pair: frames of two workers would interleave. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include "backend.h"

#define STREAM_LEN_BYTES 4                 /* the big-endian length before each frame */
#define STREAM_ETH_HLEN 14                 /* shorter is a runt */

enum {
    STREAM_IN_BYTES = 512 * 1024,          /* received, not yet cut into frames */
    STREAM_OUT_BYTES = 1024 * 1024,        /* written, not yet sent */
    /* TX takes no new chain while more than this is unsent: room stays for
     * the wire frames of one 64 KiB super-frame at any usual MSS */
    STREAM_OUT_HIGH = STREAM_OUT_BYTES - 256 * 1024,
    STREAM_SEND_AT = 128 * 1024,           /* write() sends once this much is kept */
};

struct stream {
    uint8_t *in;
    uint32_t in_head, in_tail;             /* [head, tail): received, not yet read */
    uint8_t *out;
    uint32_t out_head, out_tail;           /* [head, tail): written, not yet sent */
    uint32_t out_frames;                   /* frames in [0, tail) since it last emptied */
};

static struct vnic_queue_stats *pair_stats(struct qpair *qp)
{
    return &qp->dev->stats[qp->index];
}

static int stream_open(struct vnic_dev *dev, const int *fds, int nfds)
{
    if (nfds != 1 || dev->nqp != 1)
        return -EINVAL;           /* one connection, one pair: frames must not interleave */
    return 0;
}

static int stream_attach(struct qpair *qp)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->in = malloc(STREAM_IN_BYTES);
    s->out = malloc(STREAM_OUT_BYTES);
    qp->backend_priv = s;
    if (!s->in || !s->out)
        return -ENOMEM;           /* detach frees what was allocated */
    qp->backend_down = qp->backend_fd < 0;
    return 0;
}

static void stream_detach(struct qpair *qp)
{
    struct stream *s = qp->backend_priv;
    if (!s)
        return;
    free(s->in);
    free(s->out);
    free(s);
    qp->backend_priv = NULL;
}

static int stream_poll_fd(const struct qpair *qp)
{
    return qp->backend_fd;
}

/* The peer is gone, or sent away: counted once, what was unsent counted
 * as dropped, the socket shut down so the control plane sees it too. */
static void hang_up(struct qpair *qp, struct stream *s)
{
    if (qp->backend_down)
        return;
    struct vnic_queue_stats *st = pair_stats(qp);
    qp->backend_down = true;
    qp->tx_blocked = false;
    st->backend_disconnects++;
    if (s->out_head < s->out_tail)
        st->tx_drops_backend += s->out_frames;
    s->out_head = s->out_tail = s->out_frames = 0;
    shutdown(qp->backend_fd, SHUT_RDWR);
}

/* ---- receiving ------------------------------------------------------------- */

static uint32_t be32_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return ntohl(v);
}

/* Cut the next frame out of the buffer into qp->rx_frame behind a plain
 * header.  1: a frame (rx_frame_len 0 for a runt, counted), 0: not all
 * of it here yet, -1: a length no frame has (the stream is garbage). */
static int cut_frame(struct qpair *qp, struct stream *s, struct vnic_queue_stats *st)
{
    uint32_t have = s->in_tail - s->in_head;
    if (have < STREAM_LEN_BYTES)
        return 0;
    uint32_t len = be32_at(s->in + s->in_head);
    if (unlikely(len > VNIC_SOCKET_FRAME_MAX))
        return -1;
    if (have - STREAM_LEN_BYTES < len)
        return 0;
    const uint8_t *frame = s->in + s->in_head + STREAM_LEN_BYTES;
    s->in_head += STREAM_LEN_BYTES + len;
    if (unlikely(len < STREAM_ETH_HLEN)) {
        st->rx_drops_backend++;              /* a runt: dropped, the stream goes on */
        return 1;
    }
    memset(qp->rx_frame, 0, VNIC_NET_HDR_SIZE);
    memcpy(qp->rx_frame + VNIC_NET_HDR_SIZE, frame, len);
    qp->rx_frame_len = VNIC_NET_HDR_SIZE + len;
    return 1;
}

/* Room behind what is buffered: move the part not yet read to the front. */
static void compact_in(struct stream *s)
{
    uint32_t have = s->in_tail - s->in_head;
    if (s->in_head && have)
        memmove(s->in, s->in + s->in_head, have);
    s->in_head = 0;
    s->in_tail = have;
}

/* recv() what the socket holds.  1: some came, 0: nothing yet, -1: the
 * peer closed or failed. */
static int fill_in(struct qpair *qp, struct stream *s)
{
    compact_in(s);
    ssize_t n;
    do {
        n = recv(qp->backend_fd, s->in + s->in_tail, STREAM_IN_BYTES - s->in_tail, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        s->in_tail += (uint32_t)n;
        return 1;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

static int stream_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct stream *s = qp->backend_priv;
    if (qp->backend_down)
        return 0;
    for (int round = 0; round < 2; round++) {
        int r = cut_frame(qp, s, st);
        if (unlikely(r < 0)) {
            st->rx_drops_framing++;
            hang_up(qp, s);
            return 0;
        }
        if (r)
            return 1;
        r = round ? 0 : fill_in(qp, s);
        if (r <= 0) {
            if (r < 0)
                hang_up(qp, s);
            return 0;
        }
    }
    return 0;
}

/* ---- sending ----------------------------------------------------------------- */

/* Send what is kept.  0: all of it, 1: the socket is full, -1: gone. */
static int send_out(struct qpair *qp, struct stream *s)
{
    while (s->out_head < s->out_tail) {
        ssize_t w = send(qp->backend_fd, s->out + s->out_head, s->out_tail - s->out_head,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            s->out_head += (uint32_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else
            return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
    }
    s->out_head = s->out_tail = s->out_frames = 0;
    return 0;
}

/* Room at the end of the buffer: move what is unsent to the front. */
static void compact_out(struct stream *s)
{
    uint32_t have = s->out_tail - s->out_head;
    if (s->out_head && have)
        memmove(s->out, s->out + s->out_head, have);
    s->out_head = 0;
    s->out_tail = have;
}

static int stream_flush(struct qpair *qp)
{
    struct stream *s = qp->backend_priv;
    if (qp->backend_down)
        return -1;
    int r = send_out(qp, s);
    if (r < 0) {
        hang_up(qp, s);
        return -1;
    }
    if (r && !qp->tx_blocked)
        pair_stats(qp)->tx_backend_waits++;
    qp->tx_blocked = r != 0;
    return r;
}

/* Send what is kept before the batch ends; TX stops taking chains only
 * once what the socket refused reaches the high mark.  A peer found gone
 * has the frames kept counted as dropped (hang_up). */
static void send_early(struct qpair *qp, struct stream *s)
{
    int r = send_out(qp, s);
    if (r < 0) {
        hang_up(qp, s);
        return;
    }
    if (r && s->out_tail - s->out_head > STREAM_OUT_HIGH && !qp->tx_blocked) {
        qp->tx_blocked = true;
        pair_stats(qp)->tx_backend_waits++;
    }
}

/* Keep the frame in iov[1..n) behind its length; the header in iov[0]
 * asks for nothing (no passthrough here) and stays behind.  A frame kept
 * counts as sent (tx_packets); if the peer then goes before it was, it
 * counts as dropped too (tx_drops_backend). */
static int stream_write(struct qpair *qp, const struct iovec *iov, int n)
{
    struct stream *s = qp->backend_priv;
    uint32_t len = iov_bytes(iov + 1, n - 1);
    if (qp->backend_down || unlikely(len > VNIC_SOCKET_FRAME_MAX))
        return -1;
    if (STREAM_OUT_BYTES - s->out_tail < STREAM_LEN_BYTES + len)
        compact_out(s);
    if (STREAM_OUT_BYTES - s->out_tail < STREAM_LEN_BYTES + len)
        return -1;                /* a guest's tiny MSS filled even the reserve: dropped */
    uint32_t be = htonl(len);
    memcpy(s->out + s->out_tail, &be, sizeof(be));
    iov_gather(s->out + s->out_tail + STREAM_LEN_BYTES, iov + 1, n - 1, len);
    s->out_tail += STREAM_LEN_BYTES + len;
    s->out_frames++;
    if (s->out_tail - s->out_head >= STREAM_SEND_AT)
        send_early(qp, s);
    return 0;
}

const struct backend_ops stream_backend = {
    .name = "stream",
    .open = stream_open,
    .attach = stream_attach,
    .detach = stream_detach,
    .poll_fd = stream_poll_fd,
    .read = stream_read,
    .write = stream_write,
    .flush = stream_flush,
};
