/* tx.c - transmit: guest TX chains to the backend.
 *
 * A plain frame is gathered straight from guest memory into one writev().
 * A frame with offload requests (NEEDS_CSUM, GSO) goes through the offload
 * engine (gso.c), or, in passthrough mode on a TAP, to the kernel whole with
 * its header.  The device always writes its own virtio-net header to the
 * backend, so a guest never hands the host kernel offload requests it did
 * not negotiate. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "backend.h"
#include "headers.h"

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

/* Iovecs for the chain's bytes from 'skip' on.  Returns the count, or -1
 * when some piece lives in message-based memory or max is reached. */
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

/* ---- the backend as the engine's sink -------------------------------------- */

static const struct virtio_net_hdr plain_hdr;

/* A frame in iov[1..n] to the backend behind a header asking for nothing. */
static inline int write_plain(struct qpair *qp, struct iovec *iov, int n, uint32_t len)
{
    iov[0].iov_base = (void *)&plain_hdr;
    iov[0].iov_len = sizeof(plain_hdr);
    if (qp->dev->backend->write(qp, iov, n + 1) < 0)
        return -1;
    if (capture_wants(qp->dev, CAP_WIRE_TX))
        capture_frame(qp, CAP_WIRE_TX, iov + 1, n, len, NULL);
    qp->txc->st->tx_packets++;
    qp->txc->st->tx_bytes += len;
    return 0;
}

/* write_plain(), or what fault injection makes of it: nothing (a drop,
 * counted), a corrupted copy, or the frame twice. */
static inline int emit_plain(struct qpair *qp, struct iovec *iov, int n, uint32_t len)
{
    if (!faults_on(qp->dev))
        return write_plain(qp, iov, n, len);
    int copies = fault_tx(qp, iov, &n, len);
    for (int i = 0; i < copies; i++)
        if (!fault_tx_hold(qp, iov + 1, n, len) && write_plain(qp, iov, n, len) < 0)
            return -1;
    return 0;
}

void fault_tx_flush(struct qpair *qp)
{
    struct fault_dir *f = &qp->fault[FAULT_TX];
    uint64_t now = fault_now_ns();
    uint32_t len;
    const uint8_t *frame;
    while ((frame = fault_due(f, &len, now))) {
        struct iovec iov[2] = { { NULL, 0 }, { (void *)frame, len } };
        if (write_plain(qp, iov, 1, len) < 0)
            qp->dev->stats[qp->index].tx_drops_backend++;
        fault_release(f);
    }
}

static int emit_backend(struct tx_ctx *ctx, struct iovec *iov, int n, uint32_t len)
{
    return emit_plain(ctx->sink, iov, n, len);
}

void tx_count_drop(struct vnic_queue_stats *st, int reason)
{
    switch (reason) {
    case VNIC_TX_DROP_HEADERS: st->tx_drops_headers++; break;
    case VNIC_TX_DROP_CSUM_RANGE: st->tx_drops_csum_range++; break;
    case VNIC_TX_DROP_GSO_SIZE: st->tx_drops_gso_size++; break;
    case VNIC_TX_DROP_GSO_TYPE: st->tx_drops_gso_type++; break;
    case VNIC_TX_DROP_UNNEGOTIATED: st->tx_drops_unnegotiated++; break;
    case VNIC_TX_DROP_BACKEND: st->tx_drops_backend++; break;
    default: break;
    }
}

/* Hand a super-frame to the backend whole, with its header: the host
 * kernel segments it. */
static int passthrough(struct qpair *qp, const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    struct tx_ctx *ctx = qp->txc;
    int err = tx_check_whole(ctx, h, f);
    if (err)
        return err;
    struct virtio_net_hdr out = *h;
    out.num_buffers = 0;
    ctx->iov[0].iov_base = &out;
    ctx->iov[0].iov_len = sizeof(out);
    memcpy(ctx->iov + 1, f->iov, sizeof(f->iov[0]) * (size_t)f->n);
    if (qp->dev->backend->write(qp, ctx->iov, f->n + 1) < 0)
        return VNIC_TX_DROP_BACKEND;
    if (capture_wants(qp->dev, CAP_WIRE_TX))
        capture_frame(qp, CAP_WIRE_TX, f->iov, f->n, f->len, &(struct cap_meta){ .hdr = &out });
    ctx->st->tx_packets++;
    ctx->st->tx_bytes += f->len;
    ctx->st->tx_passthrough_packets++;
    return VNIC_TX_SENT;
}

/* The offloads a frame asked for, as flow statistics bits; whole: handed
 * to the TAP with its header, the kernel doing the work. */
static uint32_t flow_offloads(const struct virtio_net_hdr *h, bool whole)
{
    uint32_t bits = h->flags & VNIC_HDR_F_NEEDS_CSUM ? VNIC_FLOW_CSUM : 0;
    switch (h->gso_type & (uint8_t)~VNIC_GSO_ECN) {
    case VNIC_GSO_TCPV4:
    case VNIC_GSO_TCPV6: bits |= VNIC_FLOW_TSO; break;
    case VNIC_GSO_UDP: bits |= VNIC_FLOW_UFO; break;
    case VNIC_GSO_UDP_L4: bits |= VNIC_FLOW_USO; break;
    default: break;
    }
    return whole ? bits | VNIC_FLOW_PASSTHROUGH : bits;
}

static void tx_one(struct qpair *qp, const struct chain *c, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    struct tx_ctx *ctx = qp->txc;
    struct virtio_net_hdr h;
    uint32_t hdr_len = dev->hdr_len;      /* with HASH_REPORT: the hash fields, ignored */
    if (c->out_len < hdr_len + sizeof(struct eth_hdr) || c->out_len > hdr_len + VNIC_MAX_FRAME ||
        chain_read(dev, c, 0, (uint8_t *)&h, sizeof(h)) < 0) {
        st->tx_drops_malformed++;
        return;
    }
    uint32_t len = (uint32_t)(c->out_len - hdr_len);
    bool offload = (h.flags & VNIC_HDR_F_NEEDS_CSUM) || h.gso_type != VNIC_GSO_NONE;
    struct iovec *pieces = offload ? ctx->frame : ctx->iov + 1;
    int n = chain_iov(c, hdr_len, pieces, VNIC_IOV_MAX - 1);
    if (n < 0) {          /* message-based memory (or too scattered): gather it */
        if (chain_read(dev, c, hdr_len, qp->tx_bounce, len) < 0) {
            st->tx_drops_malformed++;
            return;
        }
        pieces[0].iov_base = qp->tx_bounce;
        pieces[0].iov_len = len;
        n = 1;
    }
    if (capture_wants(dev, CAP_GUEST_TX))
        capture_frame(qp, CAP_GUEST_TX, pieces, n, len, &(struct cap_meta){ .hdr = &h });
    /* the flow is credited with what this frame became on the wire */
    uint64_t packets = st->tx_packets, bytes = st->tx_bytes;
    uint32_t offloads = 0;
    if (!offload) {
        if (emit_plain(qp, ctx->iov, n, len))
            st->tx_drops_backend++;
    } else {
        struct tx_frame f = { pieces, n, len };
        bool whole = dev->tx_mode == VNIC_TX_PASSTHROUGH && backend_can(dev, BACKEND_CAP_GSO_PASSTHROUGH);
        int err = tx_check_negotiated(dev->features, &h);
        if (!err)
            err = whole ? passthrough(qp, &h, &f) : tx_offload(ctx, &h, &f);
        tx_count_drop(st, err);
        offloads = flow_offloads(&h, whole);
    }
    if (flows_on(&qp->flows) && st->tx_packets != packets) {
        struct flow_key k;
        flow_key_from_iov(&k, VNIC_FLOW_TX, pieces, n, len);
        flows_add(&qp->flows, &k, st->tx_packets - packets, st->tx_bytes - bytes, offloads);
    }
}

int tx_process(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    struct vq *vq = &qp->tx;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    struct tx_ctx *ctx = qp->txc;
    ctx->features = dev->features;
    ctx->emit = emit_backend;
    if (faults_on(dev) || fault_holding(&qp->fault[FAULT_TX]))
        fault_tx_flush(qp);                 /* held frames that are due go first */
    uint16_t done = 0;
    while (done < VNIC_BATCH && !qp->tx_blocked) {
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
    backend_flush(qp);                      /* what the backend kept back for one send */
    return done == VNIC_BATCH && !qp->tx_blocked;
}
