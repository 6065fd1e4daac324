/* gro_direct.c - receive coalescing in the guest's buffers: a TCP flow's
 * super-frame is built where the guest will read it, so each byte is
 * copied once (by the backend's readv()) instead of three times (read,
 * merge, guest) as in gro.c's own buffers.
 *
 * One flow at a time is held this way, in the chains rx_direct.c popped
 * ahead: its first segment read there whole, each next segment's headers
 * read apart (into the bounce buffer, where they are checked as gro.c
 * checks any segment) and its payload straight behind the flow's.  When
 * the flow closes (PSH, a short segment, the batch's end, 64 KiB, the
 * guest's buffers running out) its headers are patched in place and it is
 * delivered as gro.c would deliver it.
 *
 * A frame that does not continue the flow (another flow, flags, a gap) is
 * a misprediction: its payload is copied out of the guest's buffers to
 * join its headers in the bounce buffer and cleared from where it landed,
 * the flow is delivered first (never reordered), and the frame goes the
 * bounce way; if it starts another flow, coalescing goes on in gro.c's
 * table for the rest of the batch (interleaved flows).
 *
 * Security model: the bytes checked are the copies in the bounce buffer
 * and in the flow's header copy, never the guest's; every write goes to
 * pieces rx_direct.c translated and bounded; the frame's payload is read
 * only into room the chains held have (bounded by the flow's MSS and
 * 64 KiB), the rest lands in the bounce buffer. */
#include <string.h>
#include "backend.h"
#include "headers.h"

static uint32_t min32(uint64_t a, uint64_t b)
{
    return (uint32_t)(a < b ? a : b);
}

static struct gro_flow *held_flow(struct qpair *qp)
{
    return &qp->rxc->df;
}

/* Where the flow's next payload byte goes in the chains held. */
static uint64_t flow_end(const struct qpair *qp)
{
    return qp->dev->hdr_len + (uint64_t)qp->rxc->df.len - VNIC_NET_HDR_SIZE;
}

bool gro_direct_held(const struct qpair *qp)
{
    return qp->rxc->df.state == GRO_OPEN;
}

bool gro_direct_start(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f)
{
    struct gro_flow *df = held_flow(qp);
    df->buf = qp->rxc->df_hdrs;
    return gro_direct_open(qp, df, h, f->bytes, f->have, f->len);
}

void gro_direct_close(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro_flow *f = held_flow(qp);
    if (f->state != GRO_OPEN)
        return;
    gro_finish(f, st);
    uint8_t *hdrs = f->buf + VNIC_NET_HDR_SIZE;
    if (f->segs > 1)
        rxc_write(qp->rxc, qp->dev->hdr_len, hdrs, f->lo.hdr_len);
    struct rx_ref r = { hdrs, f->lo.hdr_len, f->len - VNIC_NET_HDR_SIZE, NULL, 0, 0 };
    f->state = GRO_FREE;
    rxc_deliver(qp, (struct virtio_net_hdr *)f->buf, &r, gro_flow_meta(f), pending, st);
}

/* Room for one more segment behind the flow, within 64 KiB of IP?  1 yes,
 * 0 no, -enum vnic_error. */
static int room_for_next(struct qpair *qp)
{
    const struct gro_flow *f = held_flow(qp);
    if (f->len - VNIC_NET_HDR_SIZE - f->lo.l3 + (uint32_t)f->mss > IP_MAX_LEN)
        return 0;
    int r = rxc_fill(qp, flow_end(qp) + f->mss);
    return r < 0 ? r : r == 1;
}

/* The readv() pieces: the backend's header and the frame's headers (as
 * long as the flow's) into the bounce buffer, one piece as they lie there
 * together, then up to an MSS of payload behind the flow, the rest into
 * the bounce buffer where it would lie there.  *took: the payload bytes
 * the guest's pieces take. */
static int next_iov(struct qpair *qp, struct iovec *iov, uint32_t *took)
{
    struct rx_cache *rc = qp->rxc;
    uint32_t hdrs = rc->df.lo.hdr_len, mss = rc->df.mss, take = 0;
    uint64_t off = flow_end(qp);
    int n = 0;
    iov[n++] = (struct iovec){ qp->rx_frame, VNIC_NET_HDR_SIZE + hdrs };
    for (int i = rxc_seek(rc, &off); i < rc->seg_end && take < mss && n < VNIC_IOV_MAX - 1; i++, off = 0) {
        uint32_t k = min32(rc->seg[i].len - off, mss - take);
        iov[n++] = (struct iovec){ rc->seg[i].host + off, k };
        take += k;
    }
    iov[n++] = (struct iovec){ qp->rx_frame + VNIC_NET_HDR_SIZE + hdrs + take, VNIC_RX_FRAME_MAX - hdrs - take };
    *took = take;
    return n;
}

/* The frame does not continue the flow: all of it into the bounce buffer
 * (its payload copied out of the guest's pieces, which are cleared), the
 * flow delivered before it, the chains held given back.  fixed: its
 * header was fixed already.  RX_DIRECT_BOUNCE, or RX_DIRECT_DONE if it
 * was dropped (counted). */
static int mispredict(struct qpair *qp, uint32_t len, uint32_t in_guest, bool fixed, uint16_t *pending,
                      struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    uint8_t *frame = qp->rx_frame + VNIC_NET_HDR_SIZE;
    uint64_t at = flow_end(qp);
    rxc_read(qp->rxc, at, frame + held_flow(qp)->lo.hdr_len, in_guest);
    rxc_clear(qp->rxc, at, in_guest);
    st->rx_copied_bytes += in_guest;
    gro_direct_close(qp, pending, st);
    rx_direct_release(qp);
    struct rx_ref b = { frame, len, len, NULL, 0, 0 };
    if (!fixed && (!rx_filter_accepts(dev, frame, len, st) ||
                   !rx_fix_header(qp, (struct virtio_net_hdr *)qp->rx_frame, &b, st)))
        return RX_DIRECT_DONE;
    qp->rx_frame_len = VNIC_NET_HDR_SIZE + len;
    return rx_rss_active(dev) && !rx_rss_steer(qp, st) ? RX_DIRECT_DONE : RX_DIRECT_BOUNCE;
}

/* The frame joined the flow: the flow closes if the burst ends. */
static int joined(struct qpair *qp, bool close, uint16_t *pending, struct vnic_queue_stats *st)
{
    if (close)
        gro_direct_close(qp, pending, st);
    return RX_DIRECT_DONE;
}

/* A frame whose payload lies behind the flow: filtered, added to the flow
 * as it came if its header needs no fixing, else fixed first, then added
 * to the flow or taken out again. */
static int place(struct qpair *qp, uint32_t len, uint32_t took, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro_flow *f = held_flow(qp);
    uint32_t hdrs = f->lo.hdr_len;
    uint32_t in_guest = len > hdrs ? min32(len - hdrs, took) : 0;
    if (len <= hdrs || len - hdrs > took)
        return mispredict(qp, len, in_guest, false, pending, st);   /* not all of it behind the flow */
    uint8_t *frame = qp->rx_frame + VNIC_NET_HDR_SIZE;
    if (!rx_filter_accepts(qp->dev, frame, hdrs, st)) {
        rxc_clear(qp->rxc, flow_end(qp), in_guest);
        return RX_DIRECT_DONE;
    }
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)qp->rx_frame;
    bool close;
    if (rx_header_stays(qp->dev, h) && gro_direct_extend(qp, f, h, frame, hdrs, len, &close))
        return joined(qp, close, pending, st);
    struct rx_ref r = { frame, hdrs, len, qp, hdrs, flow_end(qp) };
    if (!rx_fix_header(qp, h, &r, st)) {
        rxc_clear(qp->rxc, flow_end(qp), in_guest);
        return RX_DIRECT_DONE;
    }
    if (!gro_direct_extend(qp, f, h, frame, hdrs, len, &close))
        return mispredict(qp, len, in_guest, true, pending, st);
    return joined(qp, close, pending, st);
}

/* The next frame, its payload read behind the flow's.  As gro_direct_next(). */
static int next_segment(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    int r = room_for_next(qp);
    if (r <= 0) {
        if (r == 0)
            gro_direct_close(qp, pending, st);
        return r < 0 ? r : GRO_DIRECT_CLOSED;
    }
    struct iovec iov[VNIC_IOV_MAX];
    uint32_t took;
    int niov = next_iov(qp, iov, &took);
    int got = qp->dev->backend->read_iov(qp, iov, niov, st);
    if (got <= 0)
        return RX_DIRECT_EMPTY;
    if (unlikely(got <= VNIC_NET_HDR_SIZE)) {
        st->rx_drops_backend++;            /* a runt: nothing of it in the buffers */
        return RX_DIRECT_DONE;
    }
    return place(qp, (uint32_t)got - VNIC_NET_HDR_SIZE, took, pending, st);
}

int gro_direct_next(struct qpair *qp, int budget, int *frames, uint16_t *pending, struct vnic_queue_stats *st)
{
    int r;
    do {
        r = next_segment(qp, pending, st);
        *frames += r == RX_DIRECT_DONE || r == RX_DIRECT_BOUNCE;
    } while (r == RX_DIRECT_DONE && *frames < budget && gro_direct_held(qp));
    return r;
}
