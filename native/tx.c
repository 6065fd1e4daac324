/* tx.c - transmit: guest TX chains to the backend.
 *
 * The payload is gathered straight from guest memory into one writev();
 * the device supplies its own virtio-net header to the backend so that a
 * guest can never hand the host kernel offload requests it did not
 * negotiate. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#define VNIC_IOV_MAX 1024   /* UIO_MAXIOV */
#include "internal.h"

#define ETH_HLEN 14

/* Copy bytes [off, off+len) of the chain's readable part into dst. */
static int chain_read(struct vnic_dev *dev, const struct chain *c, uint64_t off, uint8_t *dst, uint64_t len)
{
    for (int i = 0; i < c->nout && len; i++) {
        const struct seg *s = &c->seg[i];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        uint64_t n = s->len - off < len ? s->len - off : len;
        if (s->host)
            memcpy(dst, s->host + off, n);
        else if (mem_copy_from(&dev->mem, s->iova + off, dst, n) < 0)
            return -EIO;
        dst += n;
        len -= n;
        off = 0;
    }
    return len ? -EINVAL : 0;
}

/* Build iovecs for the chain's bytes from 'skip' on.  Returns the count, or
 * -1 when some piece lives in message-based memory or VNIC_IOV_MAX is hit. */
static int chain_iov(const struct chain *c, uint64_t skip, struct iovec *iov, int max)
{
    int n = 0;
    for (int i = 0; i < c->nout; i++) {
        const struct seg *s = &c->seg[i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        if (!s->host || n == max)
            return -1;
        iov[n].iov_base = s->host + skip;
        iov[n].iov_len = s->len - skip;
        n++;
        skip = 0;
    }
    return n;
}

static void tx_one(struct qpair *qp, const struct chain *c, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    uint8_t guest_hdr[VNIC_NET_HDR_LEN];
    if (c->out_len < VNIC_NET_HDR_LEN + ETH_HLEN || c->out_len > VNIC_NET_HDR_LEN + VNIC_MAX_FRAME ||
        chain_read(dev, c, 0, guest_hdr, sizeof(guest_hdr)) < 0) {
        st->tx_drops_malformed++;
        return;
    }
    /* flags (byte 0) and gso_type (byte 1): nothing offloaded is offered yet */
    if (guest_hdr[0] || guest_hdr[1]) {
        st->tx_drops_malformed++;
        return;
    }
    uint64_t frame_len = c->out_len - VNIC_NET_HDR_LEN;
    if (dev->backend_kind == VNIC_BACKEND_TAP) {
        static const uint8_t plain_hdr[VNIC_NET_HDR_LEN];
        struct iovec iov[VNIC_IOV_MAX];
        iov[0].iov_base = (void *)plain_hdr;
        iov[0].iov_len = sizeof(plain_hdr);
        int n = chain_iov(c, VNIC_NET_HDR_LEN, iov + 1, VNIC_IOV_MAX - 1);
        if (n < 0) {   /* message-based memory: gather into the bounce buffer */
            if (chain_read(dev, c, VNIC_NET_HDR_LEN, qp->tx_bounce, frame_len) < 0) {
                st->tx_drops_malformed++;
                return;
            }
            iov[1].iov_base = qp->tx_bounce;
            iov[1].iov_len = frame_len;
            n = 1;
        }
        ssize_t w;
        do {
            w = writev(dev->backend_fd, iov, n + 1);
        } while (w < 0 && errno == EINTR);
        if (w < 0) {
            st->tx_drops_backend++;
            return;
        }
    }
    st->tx_packets++;
    st->tx_bytes += frame_len;
}

int tx_process(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    struct vq *vq = &qp->tx;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    uint16_t done = 0;
    while (done < VNIC_BATCH) {
        int r = vq_pop(vq, qp->chain);
        if (r == 0)
            break;
        if (r < 0 || qp->chain->nin) {
            dev_fail(dev, r < 0 ? -r : VNIC_ERR_DESC_DIRECTION, st);
            break;
        }
        tx_one(qp, qp->chain, st);
        vq_push_used(vq, qp->chain->head, 0, done);
        done++;
    }
    if (done) {
        vq_publish_used(vq, done);
        dev_notify_queue(dev, vq, &st->tx_interrupts);
    }
    return done == VNIC_BATCH;
}
