/* rx.c - receive: backend frames into the guest's posted RX buffers.
 *
 * With MRG_RXBUF a frame spans as many buffers as it needs and num_buffers
 * says how many; without it a frame must fit one chain (big-packets or
 * small-buffers layout, both are one chain per packet).  Used entries are
 * published only once the whole frame is in place, so the guest never sees
 * half a packet.  When the guest runs out of buffers the frame waits in
 * qp->rx_frame and the backend is not read again until a kick arrives. */
#include <poll.h>
#include <string.h>
#include "backend.h"
#include "headers.h"


/* Write src into guest pieces, starting at byte off of the first one. */
static int segs_write(struct vnic_dev *dev, const struct seg *seg, int nseg, uint64_t off,
                      const uint8_t *src, uint64_t len)
{
    for (int i = 0; i < nseg && len; i++) {
        const struct seg *s = &seg[i];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        uint64_t n = s->len - off < len ? s->len - off : len;
        if (s->host)
            memcpy(s->host + off, src, n);
        else if (mem_copy_to(&dev->mem, s->iova + off, src, n) < 0)
            return -VNIC_ERR_DMA;
        src += n;
        len -= n;
        off = 0;
    }
    return 0;
}

static bool guest_accepts_gso(uint64_t f, uint8_t gso_type)
{
    if ((gso_type & VNIC_GSO_ECN) && !(f >> VNIC_F_GUEST_ECN & 1))
        return false;
    switch (gso_type & (uint8_t)~VNIC_GSO_ECN) {
    case VNIC_GSO_TCPV4: return f >> VNIC_F_GUEST_TSO4 & 1;
    case VNIC_GSO_TCPV6: return f >> VNIC_F_GUEST_TSO6 & 1;
    case VNIC_GSO_UDP: return f >> VNIC_F_GUEST_UFO & 1;
    case VNIC_GSO_UDP_L4: return (f >> VNIC_F_GUEST_USO4 & 1) || (f >> VNIC_F_GUEST_USO6 & 1);
    default: return false;
    }
}

/* Verify a plain frame's TCP/UDP checksum so the guest need not: true when
 * it is right.  Frames the device cannot parse are left to the guest. */
static bool rx_checksum_ok(const struct rx_ref *f, struct vnic_queue_stats *st)
{
    struct layout lo;
    if (hdr_parse(f->bytes, f->have, &lo) < 0)
        return false;
    /* the IP length field is the sender's word: check it before any arithmetic */
    uint32_t ip_hdrs = lo.l4 - lo.l3;
    uint32_t ip_len = ip_claimed_len(f->bytes, &lo);
    if (unlikely(ip_len < ip_hdrs + (uint32_t)(lo.hdr_len - lo.l4) || (uint64_t)lo.l3 + ip_len > f->len))
        return false;                      /* lengths that lie: let the guest judge */
    uint32_t ip_payload = ip_len - ip_hdrs;
    if (lo.proto == IPPROTO_UDP && !lo.ipv6 && rd16(HDR_AT(const struct udp_hdr, f->bytes, lo.l4)->check) == 0)
        return true;                       /* IPv4 UDP without a checksum */
    uint64_t sum = rx_ref_csum(f, lo.l4, ip_payload, hdr_pseudo_sum(f->bytes, &lo, ip_payload));
    if (csum_fold(sum) == 0xffff) {       /* ones' complement zero: it adds up */
        st->rx_csum_valid++;
        return true;
    }
    st->rx_csum_bad++;
    return false;
}

/* Finish the partial checksum the backend's header names, for a guest
 * without GUEST_CSUM.  false if it lies outside the frame (dropped,
 * counted). */
static bool complete_partial_csum(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f,
                                  struct vnic_queue_stats *st)
{
    uint32_t start = h->csum_start, field = start + h->csum_offset;
    if (unlikely(field + CSUM_SIZE > f->len)) {
        st->rx_drops_offload++;
        return false;
    }
    uint16_t c = csum_finish(rx_ref_csum(f, start, f->len - start, 0), h->csum_offset == CSUM_OFFSET_UDP);
    rx_ref_write(f, field, &c, sizeof(c));
    st->rx_csum_completed++;
    qp->rx_meta.offloads |= VNIC_FLOW_CSUM_COMPLETED;
    return true;
}

bool rx_header_stays(const struct vnic_dev *dev, const struct virtio_net_hdr *h)
{
    return (rx_features(dev) >> VNIC_F_GUEST_CSUM & 1) && h->gso_type == VNIC_GSO_NONE &&
           (h->flags == VNIC_HDR_F_NEEDS_CSUM || h->flags == VNIC_HDR_F_DATA_VALID);
}

/* The TAP's offloads follow the guest's features, so this only fixes
 * stragglers: a partial checksum for a guest without GUEST_CSUM is
 * finished here. */

bool rx_fix_header(struct qpair *qp, struct virtio_net_hdr *h, const struct rx_ref *f,
                   struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    bool guest_csum = rx_features(dev) >> VNIC_F_GUEST_CSUM & 1;
    h->num_buffers = 0;
    qp->rx_meta = (struct rx_meta){ 0, 0, VNIC_HASH_REPORT_NONE };
    if (h->gso_type != VNIC_GSO_NONE) {
        if (!guest_accepts_gso(rx_features(dev), h->gso_type)) {
            st->rx_drops_offload++;
            return false;
        }
        st->rx_gso_packets++;
    }
    if ((h->flags & VNIC_HDR_F_NEEDS_CSUM) && !guest_csum && !complete_partial_csum(qp, h, f, st))
        return false;
    if (!guest_csum) {
        memset(h, 0, VNIC_NET_HDR_SIZE);    /* flags must be zero without GUEST_CSUM */
        return true;
    }
    /* read once, written once: a narrow store then a wider load of it stalls */
    uint8_t flags = h->flags & (VNIC_HDR_F_NEEDS_CSUM | VNIC_HDR_F_DATA_VALID);
    if (!flags && h->gso_type == VNIC_GSO_NONE && rx_checksum_ok(f, st))
        flags = VNIC_HDR_F_DATA_VALID;
    h->flags = flags;
    return true;
}

/* qp->rx_frame as a frame reference: all of it in one buffer. */
static struct rx_ref bounce_ref(struct qpair *qp)
{
    uint32_t len = qp->rx_frame_len - VNIC_NET_HDR_SIZE;
    return (struct rx_ref){ qp->rx_frame + VNIC_NET_HDR_SIZE, len, len, NULL, 0, 0 };
}

/* Credit a delivered frame to its flow: the offloads its header shows to
 * the guest, and those the caller knows of. */
static void count_flow(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f,
                       uint32_t offloads)
{
    if (h->flags & VNIC_HDR_F_DATA_VALID)
        offloads |= VNIC_FLOW_CSUM_VALID;
    if (h->gso_type != VNIC_GSO_NONE && !(offloads & VNIC_FLOW_COALESCED))
        offloads |= VNIC_FLOW_GSO;
    struct flow_key k;
    flow_key_parse(&k, VNIC_FLOW_RX, f->bytes, f->have);
    flows_add(&qp->flows, &k, 1, f->len, offloads);
}

void rx_count_delivered(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f,
                        const struct rx_meta *meta, uint16_t bufs, struct vnic_queue_stats *st)
{
    st->rx_packets++;
    st->rx_bytes += f->len;
    st->rx_buffers_used += bufs;
    if (qp->dev->hdr_len == VNIC_NET_HDR_HASH_SIZE && meta->report != VNIC_HASH_REPORT_NONE)
        st->rx_rss_hashed++;
    if (flows_on(&qp->flows))
        count_flow(qp, h, f, meta->offloads);
}

/* What the guest reads: its header (the frame's, with the hash fields
 * after it when HASH_REPORT is on), then the frame. */
struct rx_stream {
    const uint8_t *whole;         /* header and frame as they are in buf, or NULL */
    uint8_t hdr[VNIC_NET_HDR_HASH_SIZE];
    uint32_t hdr_len;
    const uint8_t *frame;
    uint32_t total;               /* header and frame */
};

static void stream_init(struct rx_stream *s, const struct vnic_dev *dev, const uint8_t *buf,
                        uint32_t total, const struct rx_meta *meta)
{
    s->hdr_len = dev->hdr_len;
    s->total = s->hdr_len + total - VNIC_NET_HDR_SIZE;
    s->whole = s->hdr_len == VNIC_NET_HDR_SIZE ? buf : NULL;    /* no hash: as it is */
    if (s->whole)
        return;
    bool hashed = meta->report != VNIC_HASH_REPORT_NONE;
    struct virtio_net_hdr_hash h = { hashed ? meta->hash : 0, meta->report, 0 };
    memcpy(s->hdr, buf, VNIC_NET_HDR_SIZE);
    memcpy(s->hdr + VNIC_NET_HDR_SIZE, &h, sizeof(h));
    s->frame = buf + VNIC_NET_HDR_SIZE;
}

/* Bytes [from, from + n) of the stream into a chain's writable pieces. */
static int stream_write(struct vnic_dev *dev, const struct chain *c, const struct rx_stream *s,
                        uint32_t from, uint32_t n)
{
    const struct seg *in = c->seg + c->nout;
    uint32_t off = 0;
    if (s->whole)
        return segs_write(dev, in, c->nin, 0, s->whole + from, n);
    if (from < s->hdr_len) {
        uint32_t k = n < s->hdr_len - from ? n : s->hdr_len - from;
        int err = segs_write(dev, in, c->nin, 0, s->hdr + from, k);
        if (err)
            return err;
        off = k;
        from += k;
        n -= k;
    }
    return n ? segs_write(dev, in, c->nin, off, s->frame + (from - s->hdr_len), n) : 0;
}

/* What the guest was given, for a capture: the frame behind its header. */
static void capture_delivered(struct qpair *qp, const uint8_t *buf, uint32_t total,
                              const struct rx_meta *meta, uint16_t bufs)
{
    bool hashed = qp->dev->hdr_len == VNIC_NET_HDR_HASH_SIZE && meta->report != VNIC_HASH_REPORT_NONE;
    struct cap_meta m = { (const struct virtio_net_hdr *)buf, bufs,
                          hashed ? meta->report : (uint16_t)VNIC_HASH_REPORT_NONE, hashed ? meta->hash : 0 };
    capture_buf(qp, CAP_GUEST_RX, buf + VNIC_NET_HDR_SIZE, total - VNIC_NET_HDR_SIZE, &m);
}

/* What the backend gave, for a capture: its header only if it asks for
 * something (a super-frame, a partial checksum). */
static void capture_read(struct qpair *qp)
{
    static const struct virtio_net_hdr plain;
    const struct virtio_net_hdr *h = (const struct virtio_net_hdr *)qp->rx_frame;
    bool offloads = memcmp(h, &plain, offsetof(struct virtio_net_hdr, num_buffers)) != 0;
    capture_buf(qp, CAP_WIRE_RX, qp->rx_frame + VNIC_NET_HDR_SIZE, qp->rx_frame_len - VNIC_NET_HDR_SIZE,
                offloads ? &(struct cap_meta){ .hdr = h } : NULL);
}

int rx_deliver(struct qpair *qp, const uint8_t *buf, uint32_t total, const struct rx_meta *meta,
               uint16_t *pending, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    struct vq *vq = &qp->rx;
    struct chain *c = qp->chain;
    struct rx_stream s;
    stream_init(&s, dev, buf, total, meta);
    uint32_t written = 0;
    uint16_t bufs = 0;
    /* where the header went: the first chain's pieces, kept to patch num_buffers */
    struct seg hdr_seg[VNIC_NET_HDR_SIZE];
    int hdr_nseg = 0;

    while (written < s.total) {
        int r = vq_pop(vq, c);
        if (r <= 0) {
            vq_rewind(vq, bufs);
            return r;
        }
        if (c->nout) {
            vq_rewind(vq, (uint16_t)(bufs + 1));
            return -VNIC_ERR_DESC_DIRECTION;
        }
        if (!dev->mrg_rxbuf && c->in_len < s.total) {
            /* the packet does not fit the chain: drop it, give the chain back */
            vq_rewind(vq, 1);
            st->rx_drops_too_big++;
            return 1;
        }
        if (bufs == 0) {
            if (c->in_len < s.hdr_len) {
                vq_rewind(vq, 1);
                return -VNIC_ERR_DESC_DIRECTION;
            }
            for (int i = c->nout; i < c->nout + c->nin && hdr_nseg < VNIC_NET_HDR_SIZE; i++)
                hdr_seg[hdr_nseg++] = c->seg[i];
        }
        uint32_t n = s.total - written < c->in_len ? s.total - written : (uint32_t)c->in_len;
        int err = stream_write(dev, c, &s, written, n);
        if (err) {
            vq_rewind(vq, (uint16_t)(bufs + 1));
            return err;
        }
        vq_push_used(vq, c->head, n, (uint16_t)(*pending + bufs));
        written += n;
        bufs++;
    }
    /* patch num_buffers now that we know it */
    uint16_t nb = bufs;
    segs_write(dev, hdr_seg, hdr_nseg, offsetof(struct virtio_net_hdr, num_buffers),
               (const uint8_t *)&nb, sizeof(nb));

    *pending += bufs;
    uint32_t len = total - VNIC_NET_HDR_SIZE;
    st->rx_copied_bytes += len;
    rx_count_delivered(qp, (const struct virtio_net_hdr *)buf,
                       &(struct rx_ref){ (uint8_t *)buf + VNIC_NET_HDR_SIZE, len, len, NULL, 0, 0 }, meta, bufs, st);
    if (capture_wants(dev, CAP_GUEST_RX))
        capture_delivered(qp, buf, total, meta, bufs);
    return 1;
}

static bool coalescing(const struct vnic_dev *dev)
{
    uint64_t f = rx_features(dev);
    return atomic_load(&dev->rx_coalesce) && dev->mrg_rxbuf && (f >> VNIC_F_GUEST_CSUM & 1) &&
           ((f >> VNIC_F_GUEST_TSO4 & 1) || (f >> VNIC_F_GUEST_TSO6 & 1));
}

/* The guest has too few buffers: ask for a kick.  false if buffers arrived
 * meanwhile (try again), true if RX must stop: with frame_waits the
 * backend waits for the kick (counted); without, nothing is pending and
 * the backend stays watched, so the first frame that comes is counted. */
static bool wait_for_buffers(struct qpair *qp, bool frame_waits, struct vnic_queue_stats *st)
{
    if (vq_enable_notify(&qp->rx))
        return false;
    if (!frame_waits)
        return true;
    st->rx_no_buffer++;
    qp->backend_paused = true;
    return true;
}

bool rx_rss_active(struct vnic_dev *dev)
{
    return atomic_load_explicit(&dev->rss.steering, memory_order_relaxed) ||
           (dev->hdr_len == VNIC_NET_HDR_HASH_SIZE &&
            atomic_load_explicit(&dev->rss.hash_types, memory_order_relaxed));
}

int rx_rss_hash(struct qpair *qp, const uint8_t *frame, uint32_t len, struct vnic_queue_stats *st)
{
    int to = rss_classify(qp->dev, frame, len, &qp->rx_meta);
    if (qp->rx_meta.report == VNIC_HASH_REPORT_NONE)
        st->rx_rss_unhashable++;
    return to;
}

/* Has the backend a frame to read?  Asked when the guest posted no
 * buffers and nothing was read, so that only a frame's wait is counted. */
static bool backend_has_frame(struct qpair *qp)
{
    struct pollfd p = { qp->dev->backend->poll_fd(qp), POLLIN, 0 };
    if (p.fd < 0)
        return true;
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

int rx_rss_away(struct qpair *qp, int to)
{
    struct vnic_dev *dev = qp->dev;
    if (!atomic_load_explicit(&dev->rss.steering, memory_order_relaxed))
        return -1;
    int active = atomic_load_explicit(&dev->active_pairs, memory_order_acquire);
    if (unlikely(to >= active))
        to %= active;                 /* a table older than the pair count */
    /* a pair whose RX queue the driver never enabled would hold the frame,
     * and this pair's reading, for ever: the frame stays here */
    const struct qpair *target = &dev->qp[to];
    if (to == qp->index || unlikely(!target->rx.enabled || !target->thread_started))
        return -1;
    return to;
}

void rx_rss_count_handed(uint32_t len, struct vnic_queue_stats *st)
{
    st->rx_copied_bytes += len;          /* into the pair's inbox */
    st->rx_rss_steered++;
}

void rx_rss_hand_off(struct qpair *qp, int to, struct vnic_queue_stats *st)
{
    rx_rss_count_handed(qp->rx_frame_len - VNIC_NET_HDR_SIZE, st);
    if (handoff_push(qp, to))
        st->rx_rss_handoff_waits++;      /* held: the backend waits until it went */
    qp->rx_frame_len = 0;
}

/* A frame another pair handed over into rx_frame (a copy out of the inbox,
 * counted): true, or false if none waits. */
static bool take_handed_over(struct qpair *qp, struct vnic_queue_stats *st)
{
    if (!handoff_pop(qp))
        return false;
    st->rx_copied_bytes += qp->rx_frame_len - VNIC_NET_HDR_SIZE;
    return true;
}

int rx_rss_steer(struct qpair *qp, struct vnic_queue_stats *st)
{
    int to = rx_rss_away(qp, rx_rss_hash(qp, qp->rx_frame + VNIC_NET_HDR_SIZE,
                                         qp->rx_frame_len - VNIC_NET_HDR_SIZE, st));
    if (to >= 0)
        rx_rss_hand_off(qp, to, st);
    return to < 0;
}

/* A frame from the backend, filtered and its header fixed: 1 one for
 * this pair's guest, 0 one dropped (counted) or handed to another pair,
 * -1 none (nothing to read, or an error the backend counted). */
static int read_backend_frame(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    bool again = fault_take_duplicate(qp);          /* an injected duplicate goes first */
    bool late = !again && (faults_on(dev) || fault_holding(&qp->fault[FAULT_RX])) &&
                fault_rx_take_due(qp);             /* then what was held, if due */
    if (!again && !late && dev->backend->read(qp, st) <= 0)
        return -1;
    if (!qp->rx_frame_len)
        return 0;                          /* a runt, dropped */
    if (faults_on(dev) && !late && ((!again && !fault_rx(qp)) || fault_rx_hold(qp))) {
        qp->rx_frame_len = 0;              /* dropped or held on purpose (counted) */
        return 0;
    }
    if (capture_wants(dev, CAP_WIRE_RX))
        capture_read(qp);
    struct rx_ref f = bounce_ref(qp);
    if (!rx_filter_accepts(dev, f.bytes, f.len, st) ||
        !rx_fix_header(qp, (struct virtio_net_hdr *)qp->rx_frame, &f, st)) {
        qp->rx_frame_len = 0;
        return 0;
    }
    if (faults_on(dev) && !again)
        fault_rx_lie(qp);
    return rx_rss_active(dev) ? rx_rss_steer(qp, st) : 1;
}

/* The next frame into qp->rx_frame: frames other pairs handed over and
 * frames of the backend take turns.  As read_backend_frame(). */
static int next_frame(struct qpair *qp, struct vnic_queue_stats *st)
{
    if (!handoff_retry(qp))                /* a frame waits for room: only take frames */
        return take_handed_over(qp, st) ? 1 : -1;
    qp->inbox_turn = !qp->inbox_turn;
    if (qp->inbox_turn && take_handed_over(qp, st))
        return 1;
    int r = read_backend_frame(qp, st);
    if (r < 0 && !qp->inbox_turn && take_handed_over(qp, st))
        return 1;
    return r;
}

int rx_process(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    struct vq *vq = &qp->rx;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    bool gro = coalescing(dev);
    uint16_t pending = 0;
    int handled = 0;              /* every frame read counts: a flood of refused
                                   * frames must not keep the worker here */
    int r = 1;
    bool more = false;
    bool frame_waits = true;      /* a wait for buffers holds a frame back */

    rx_direct_begin(qp);
    /* coalescing just turned off: open flows go out before anything newer */
    if (!gro) {
        int fr = gro_flush_all(qp, &pending, st);
        r = fr < 0 ? fr : 1;
    }
    while (r > 0 && handled < VNIC_BATCH) {
        /* flows waiting for buffers go before anything read after them */
        r = gro_deliver_ready(qp, &pending, st);
        bool direct = r == 1 && !qp->rx_frame_len && rx_direct_possible(qp, gro);
        if (!direct) {                     /* the bounce way pops for itself: */
            gro_direct_close(qp, &pending, st);   /* a flow in guest buffers goes first, */
            rx_direct_release(qp);             /* the chains held go back */
        } else {
            int d = rx_direct(qp, gro, VNIC_BATCH - handled, &handled, &pending, st);
            if (d < 0) {
                r = d;
                break;
            }
            if (d == RX_DIRECT_EMPTY)
                break;
            if (d == RX_DIRECT_DONE)
                continue;                  /* else in rx_frame, or read the bounce way */
            if (d == RX_DIRECT_NO_BUFFERS) {
                r = 0;                     /* the frame stays in the backend */
                frame_waits = backend_has_frame(qp);
            }
        }
        if (r == 1 && !qp->rx_frame_len) {
            int got = next_frame(qp, st);
            if (got < 0)
                break;
            handled++;
            if (!got)
                continue;
        }
        if (r == 1) {
            r = gro ? gro_receive(qp, &pending, st) : GRO_PASS;
            qp->rxc->predict_merge = gro && r == GRO_MERGED;
            if (r == GRO_PASS)
                r = rx_deliver(qp, qp->rx_frame, qp->rx_frame_len, &qp->rx_meta, &pending, st);
        }
        if (r < 0)
            break;
        if (r == 0) {
            if (wait_for_buffers(qp, frame_waits, st))
                break;
            frame_waits = true;
            r = 1;                         /* buffers came meanwhile: go on */
            continue;
        }
        qp->rx_frame_len = 0;
    }
    if (r >= 0)
        gro_direct_close(qp, &pending, st);
    rx_direct_release(qp);                 /* chains popped ahead go back before anything pops */
    more = handled == VNIC_BATCH;
    handoff_wake(qp);
    /* nothing is held past the batch */
    if (r > 0) {
        int fr = gro_flush_all(qp, &pending, st);
        if (fr < 0)
            r = fr;
        else if (fr == 0 && !wait_for_buffers(qp, true, st))
            more = true;                   /* buffers came meanwhile: deliver them now */
    }
    if (r < 0)
        dev_fail(dev, -r, st);
    if (pending) {
        vq_publish_used(vq, pending);
        dev_notify_queue(dev, vq, &st->rx_interrupts);
    }
    return more && r >= 0 && !qp->backend_paused && !handoff_holding(qp);
}
