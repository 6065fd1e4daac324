/* rx_direct.c - one-copy receive: the backend reads each frame straight
 * into the guest's posted buffers (the TAP's readv(), the benchmark
 * source's memcpy), instead of into a bounce buffer that rx_deliver then
 * copies into the guest again.
 *
 * Buffers are popped before the frame's size is known: the chains popped
 * ahead wait in qp->rxc, as many as the largest recent frame needed, and
 * the readv() ends in the bounce buffer, so a frame larger than that is
 * never cut short: its spill is copied into chains popped behind, or, if
 * the guest has posted too few, the frame moves whole to the bounce buffer
 * and waits for buffers there as every frame did before.  Chains are taken
 * in pop order (the packed ring's used descriptors follow it), and those
 * left at the end of the batch are given back.
 *
 * The backend's virtio-net header goes to the bounce buffer, never to the
 * guest, which is given its own header once it is fixed.  The receive
 * filter decides on the frame's headers before any buffer is used; a
 * refused frame's bytes are cleared from the buffers they landed in (on a
 * bridged TAP they are other machines' frames) and the buffers serve the
 * next frame.
 *
 * With coalescing on, a segment read this way starts a flow held in the
 * chains (gro_direct.c builds the super-frame there); while gro.c's own
 * table has flows (interleaved flows, the rest of that batch) frames go
 * the bounce way.  When the guest has posted nothing, nothing is read:
 * the frame stays with the backend until the guest kicks.
 *
 * With RSS steering each frame is hashed once it is read and filtered; one
 * RSS sends to another pair is gathered from the buffers it landed in into
 * that pair's inbox (common: the kernel spreads flows over the TAP's
 * queues by a hash of its own), and those buffers serve the next frame.
 * While frames other pairs handed over wait, or one waits for another
 * pair's room, frames go the bounce way, which takes turns with them.
 *
 * Security model: chains are popped and bounded by virtq.c like any
 * other; a chain with readable pieces, or a frame's first one shorter than
 * the header, is -VNIC_ERR_DESC_DIRECTION as in rx_deliver; memory reached
 * only through messages sends the batch the bounce way.  Every byte
 * written goes to a piece vq_chain_add translated and bounded. */
#include <string.h>
#include "backend.h"
#include "headers.h"

#define EXPECT_FIRST 1514         /* before any frame: an Ethernet MTU's */

enum { POP_BOUNCE = 2 };          /* a chain the cache cannot hold: read the bounce way */
enum { SPILL_PLACED = 16 };       /* beside enum rx_direct_result: a spill went behind */

static uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* ---- the chains held ------------------------------------------------------------ */

static struct rxc_chain *oldest(struct rx_cache *rc)
{
    return &rc->ch[rc->first];
}

static int first_seg(const struct rx_cache *rc)
{
    return rc->n ? rc->ch[rc->first].first : rc->seg_end;
}

/* Move what is held to the front of both arrays, to make room behind. */
static void compact(struct rx_cache *rc)
{
    int s0 = first_seg(rc);
    rc->seek_i = -1;
    memmove(rc->seg, rc->seg + s0, sizeof(*rc->seg) * (size_t)(rc->seg_end - s0));
    memmove(rc->ch, rc->ch + rc->first, sizeof(*rc->ch) * (size_t)rc->n);
    for (int i = 0; i < rc->n; i++)
        rc->ch[i].first = (uint16_t)(rc->ch[i].first - s0);
    rc->seg_end -= s0;
    rc->first = 0;
}

static bool all_mapped(const struct chain *c)
{
    for (int i = 0; i < c->nin; i++)
        if (unlikely(!c->seg[c->nout + i].host))
            return false;
    return true;
}

/* Pop one chain behind those held.  1 popped, 0 none (ring empty, or as
 * many held as the cache takes), POP_BOUNCE one it cannot hold (given
 * back), -enum vnic_error. */
static int pop_ahead(struct qpair *qp)
{
    struct rx_cache *rc = qp->rxc;
    struct chain *c = qp->chain;
    if (rc->first + rc->n == RXC_CHAINS || rc->seg_end > RXC_SEGS / 2)
        compact(rc);
    if (rc->n == RXC_CHAINS)
        return 0;
    int r = vq_pop(&qp->rx, c);
    if (r <= 0)
        return r;
    if (unlikely(c->nout)) {
        vq_rewind(&qp->rx, 1);
        return -VNIC_ERR_DESC_DIRECTION;
    }
    if (!all_mapped(c) || rc->seg_end + c->nin > RXC_SEGS) {
        vq_rewind(&qp->rx, 1);
        return POP_BOUNCE;
    }
    for (int i = 0; i < c->nin; i++)          /* mostly one: no memcpy call */
        rc->seg[rc->seg_end + i] = c->seg[i];
    uint32_t cap = (uint32_t)min64(c->in_len, UINT32_MAX);
    rc->ch[rc->first + rc->n++] = (struct rxc_chain){ c->head, (uint16_t)rc->seg_end, (uint16_t)c->nin, cap };
    rc->seg_end += c->nin;
    rc->cap += cap;
    return 1;
}

/* Without mergeable buffers: one chain. */
int rxc_fill(struct qpair *qp, uint64_t want)
{
    struct rx_cache *rc = qp->rxc;
    while (qp->dev->mrg_rxbuf ? rc->cap < want : rc->n < 1) {
        int r = pop_ahead(qp);
        if (r != 1)
            return r;
    }
    return 1;
}

/* The chains a frame of total bytes (header included) used: gone. */
static void consume(struct rx_cache *rc, uint16_t bufs)
{
    for (uint16_t i = 0; i < bufs; i++)
        rc->cap -= rc->ch[rc->first + i].cap;
    rc->first += bufs;
    rc->n -= bufs;
    rc->seek_i = -1;                       /* offsets start at the next chain now */
    if (!rc->n)
        rc->first = rc->seg_end = 0;
}

void rx_direct_release(struct qpair *qp)
{
    struct rx_cache *rc = qp->rxc;
    if (rc->n)
        vq_rewind(&qp->rx, (uint16_t)rc->n);
    rc->first = rc->n = rc->seg_end = 0;
    rc->cap = 0;
    rc->df.state = GRO_FREE;
    rc->seek_i = -1;
}

/* ---- the held chains' pieces as one run of bytes, from the oldest's first -- */

/* The piece holding byte *at; *at becomes the offset in it. */
int rxc_seek(struct rx_cache *rc, uint64_t *at)
{
    uint64_t want = *at;
    int i = first_seg(rc);
    if (rc->seek_i >= i && rc->seek_i < rc->seg_end && rc->seek_base <= want) {
        i = rc->seek_i;                    /* a flow's payload goes ever further on */
        *at -= rc->seek_base;
    }
    while (i < rc->seg_end && *at >= rc->seg[i].len)
        *at -= rc->seg[i++].len;
    rc->seek_i = i;
    rc->seek_base = want - *at;
    return i;
}

/* Bytes [at, at + n) of the run, piece by piece (rxc_next). */
struct rxc_span {
    const struct rx_cache *rc;
    int i;                        /* the piece the next bytes are in */
    uint64_t at, left;            /* offset in it, bytes still to go */
};

static struct rxc_span rxc_span(struct rx_cache *rc, uint64_t at, uint64_t n)
{
    int i = rxc_seek(rc, &at);
    return (struct rxc_span){ rc, i, at, n };
}

/* The span's next piece in *p: its length, 0 when the span (or what the
 * chains hold of it) is done. */
static uint64_t rxc_next(struct rxc_span *s, uint8_t **p)
{
    if (!s->left || s->i >= s->rc->seg_end)
        return 0;
    const struct seg *g = &s->rc->seg[s->i++];
    uint64_t k = min64(g->len - s->at, s->left);
    *p = g->host + s->at;
    s->at = 0;
    s->left -= k;
    return k;
}

void rxc_write(struct rx_cache *rc, uint64_t at, const uint8_t *src, uint64_t n)
{
    struct rxc_span s = rxc_span(rc, at, n);
    uint8_t *p;
    for (uint64_t k; (k = rxc_next(&s, &p)); src += k)
        memcpy(p, src, k);
}

void rxc_read(struct rx_cache *rc, uint64_t at, uint8_t *dst, uint64_t n)
{
    struct rxc_span s = rxc_span(rc, at, n);
    uint8_t *p;
    for (uint64_t k; (k = rxc_next(&s, &p)); dst += k)
        memcpy(dst, p, k);
}

void rxc_clear(struct rx_cache *rc, uint64_t at, uint64_t n)
{
    struct rxc_span s = rxc_span(rc, at, n);
    uint8_t *p;
    for (uint64_t k; (k = rxc_next(&s, &p));)
        memset(p, 0, k);
}

static uint64_t pieces_csum(struct rx_cache *rc, uint64_t at, uint64_t n, uint64_t sum)
{
    struct rxc_span s = rxc_span(rc, at, n);
    uint8_t *p;
    for (uint64_t k, done = 0; (k = rxc_next(&s, &p)); done += k)
        sum = csum_add(sum, csum_shift(csum_partial(p, k, 0), done));
    return sum;
}

/* ---- frames as rx.c sees them ------------------------------------------------------ */

uint64_t rx_ref_csum(const struct rx_ref *f, uint32_t from, uint32_t n, uint64_t sum)
{
    if (!f->qp)
        return csum_partial(f->bytes + from, n, sum);
    uint32_t k = from < f->split ? (uint32_t)min64(f->split - from, n) : 0;
    uint64_t s = csum_partial(f->bytes + from, k, 0);
    if (n > k)
        s = csum_add(s, csum_shift(pieces_csum(f->qp->rxc, f->at + (from + k - f->split), n - k, 0), k));
    return csum_add(sum, s);
}

void rx_ref_write(const struct rx_ref *f, uint32_t at, const void *src, uint32_t n)
{
    const uint8_t *s = src;
    if (!f->qp) {
        memcpy(f->bytes + at, s, n);
        return;
    }
    uint32_t k = at < f->split ? (uint32_t)min64(f->split - at, n) : 0;
    memcpy(f->bytes + at, s, k);
    if (n > k)
        rxc_write(f->qp->rxc, f->at + (at + k - f->split), s + k, n - k);
    uint64_t end = min64((uint64_t)at + n, f->have);    /* the header copy stays true */
    if (at + k < end)
        memcpy(f->bytes + at + k, s + k, end - at - k);
}

/* ---- one frame ------------------------------------------------------------------------- */

void rx_direct_begin(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    qp->rxc->predict_merge = false;        /* each batch tries coalescing in guest buffers first */
    bool steering = atomic_load_explicit(&dev->rss.steering, memory_order_relaxed);
    qp->rxc->steering = steering;          /* then handed-over frames are looked for before each frame */
    qp->rxc->off = !dev->backend->read_iov || atomic_load_explicit(&dev->rx_bounce_only, memory_order_relaxed) ||
                   faults_on(dev) || capture_wants(dev, CAP_WIRE_RX) || capture_wants(dev, CAP_GUEST_RX) ||
                   (!steering && (handoff_holding(qp) || handoff_pending(qp)));
}

bool rx_direct_possible(struct qpair *qp, bool coalescing)
{
    const struct rx_cache *rc = qp->rxc;
    /* while coalescing: only between flows, and while frames are not segments it merges */
    if (rc->off || (coalescing && (rc->predict_merge || !gro_idle(qp->gro))))
        return false;
    /* a frame held for another pair, or handed over by one: the bounce way takes turns with them */
    if (rc->steering && (handoff_holding(qp) || handoff_pending(qp)))
        return false;
    return !fault_holding(&qp->fault[FAULT_RX]) && !qp->fault_dup_len;
}

/* The readv() pieces: the backend's header into the bounce buffer, the
 * frame into the chains held from behind the guest's header on (as far as
 * the expected size, the oldest chain only without mergeable buffers),
 * the rest into the bounce buffer where it would lie there.  *room: the
 * frame bytes the chains take. */
static int build_iov(struct qpair *qp, struct iovec *iov, uint32_t *room)
{
    struct rx_cache *rc = qp->rxc;
    const struct rxc_chain *c0 = oldest(rc);
    int end = qp->dev->mrg_rxbuf ? rc->seg_end : c0->first + c0->nseg;
    uint64_t skip = qp->dev->hdr_len, take = 0;
    /* without mergeable buffers the frame must fit the chain: all of it */
    uint64_t want = qp->dev->mrg_rxbuf ? min64(rc->expect, VNIC_RX_FRAME_MAX) : VNIC_RX_FRAME_MAX;
    int n = 0;
    iov[n++] = (struct iovec){ qp->rx_frame, VNIC_NET_HDR_SIZE };
    for (int i = c0->first; i < end && take < want; i++) {
        const struct seg *s = &rc->seg[i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        uint64_t k = min64(s->len - skip, VNIC_RX_FRAME_MAX - take);
        iov[n++] = (struct iovec){ s->host + skip, k };
        take += k;
        skip = 0;
    }
    if (take < VNIC_RX_FRAME_MAX)
        iov[n++] = (struct iovec){ qp->rx_frame + VNIC_NET_HDR_SIZE + take, VNIC_RX_FRAME_MAX - take };
    *room = (uint32_t)take;
    return n;
}

/* The frame for rx.c: the piece it landed in if it is all there, else its
 * headers copied to the bounce buffer (where its spill already is). */
static struct rx_ref frame_ref(struct qpair *qp, const struct iovec *iov, uint32_t len, uint32_t room)
{
    if (len <= room && iov[1].iov_len >= len)
        return (struct rx_ref){ iov[1].iov_base, len, len, NULL, 0, 0 };
    uint8_t *copy = qp->rx_frame + VNIC_NET_HDR_SIZE;
    uint32_t have = (uint32_t)min64(len, VNIC_TPL_MAX);
    rxc_read(qp->rxc, qp->dev->hdr_len, copy, min64(have, room));
    return (struct rx_ref){ copy, have, len, qp, 0, qp->dev->hdr_len };
}

/* A frame larger than the chains it was read into: pop more and copy its
 * spill behind.  1 done, 0 the guest posted too few, -enum vnic_error. */
static int place_spill(struct qpair *qp, uint32_t len, uint32_t room, struct vnic_queue_stats *st)
{
    int r = rxc_fill(qp, qp->dev->hdr_len + (uint64_t)len);
    if (r != 1)
        return r < 0 ? r : 0;
    rxc_write(qp->rxc, qp->dev->hdr_len + (uint64_t)room, qp->rx_frame + VNIC_NET_HDR_SIZE + room, len - room);
    st->rx_copied_bytes += len - room;
    return 1;
}

/* The frame goes the bounce way after all (too few buffers, another
 * pair's, or for gro.c's table): all of it into the bounce buffer (a copy,
 * counted), the chains given back (to be popped again for it). */
static void move_to_bounce(struct qpair *qp, uint32_t len, uint32_t room, struct vnic_queue_stats *st)
{
    uint32_t in_guest = (uint32_t)min64(len, room);
    rxc_read(qp->rxc, qp->dev->hdr_len, qp->rx_frame + VNIC_NET_HDR_SIZE, in_guest);
    st->rx_copied_bytes += in_guest;
    rx_direct_release(qp);
    qp->rx_frame_len = VNIC_NET_HDR_SIZE + len;
}

/* Forget a frame that will not be delivered: its bytes out of the buffers. */
static int discard(struct qpair *qp, uint32_t len, uint32_t room)
{
    rxc_clear(qp->rxc, qp->dev->hdr_len, min64(len, room));
    return RX_DIRECT_DONE;
}

/* A frame larger than the chains it was read into.  SPILL_PLACED: its
 * spill is in chains behind; RX_DIRECT_BOUNCE: too few posted, it waits whole in the
 * bounce buffer, its header fixed; RX_DIRECT_DONE: dropped (counted);
 * -enum vnic_error. */
static int spill(struct qpair *qp, uint32_t len, uint32_t room, struct vnic_queue_stats *st)
{
    if (!qp->dev->mrg_rxbuf) {
        st->rx_drops_too_big++;            /* as rx_deliver: larger than the chain */
        return discard(qp, len, room);
    }
    int r = place_spill(qp, len, room, st);
    if (r != 0)
        return r < 0 ? r : SPILL_PLACED;
    move_to_bounce(qp, len, room, st);
    struct rx_ref b = { qp->rx_frame + VNIC_NET_HDR_SIZE, len, len, NULL, 0, 0 };
    if (!rx_fix_header(qp, (struct virtio_net_hdr *)qp->rx_frame, &b, st)) {
        qp->rx_frame_len = 0;
        return RX_DIRECT_DONE;
    }
    return rx_rss_active(qp->dev) && !rx_rss_steer(qp, st) ? RX_DIRECT_DONE : RX_DIRECT_BOUNCE;
}

/* The header's fields after the ones the frame's header fixed (a 64-bit
 * store of them reads nothing back from smaller stores just made). */
struct header_tail {
    uint16_t num_buffers;
    struct virtio_net_hdr_hash hash;
} __attribute__((packed));

#define HEADER_HEAD offsetof(struct virtio_net_hdr, num_buffers)

/* The guest's header (with its hash fields if negotiated) in front of
 * the frame: two inlined stores when the first piece holds it all. */
static void write_header(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_meta *meta)
{
    struct rx_cache *rc = qp->rxc;
    const struct seg *s0 = &rc->seg[oldest(rc)->first];
    bool hashed = meta->report != VNIC_HASH_REPORT_NONE;
    struct header_tail tail = { h->num_buffers, { hashed ? meta->hash : 0, meta->report, 0 } };
    _Static_assert(HEADER_HEAD + sizeof(tail) == VNIC_NET_HDR_HASH_SIZE, "the hash header follows the plain one");
    uint32_t len = qp->dev->hdr_len;
    if (likely(s0->len >= len)) {
        memcpy(s0->host, h, HEADER_HEAD);
        if (len == VNIC_NET_HDR_SIZE)       /* constant sizes: inlined stores */
            memcpy(s0->host + HEADER_HEAD, &tail, sizeof(tail.num_buffers));
        else
            memcpy(s0->host + HEADER_HEAD, &tail, sizeof(tail));
        return;
    }
    rxc_write(rc, 0, (const uint8_t *)h, HEADER_HEAD);
    rxc_write(rc, HEADER_HEAD, (const uint8_t *)&tail, len - HEADER_HEAD);
}

void rxc_deliver(struct qpair *qp, struct virtio_net_hdr *h, const struct rx_ref *f, const struct rx_meta *meta,
                 uint16_t *pending, struct vnic_queue_stats *st)
{
    struct rx_cache *rc = qp->rxc;
    struct vnic_dev *dev = qp->dev;
    uint16_t bufs = 0;
    for (uint64_t left = dev->hdr_len + (uint64_t)f->len; left; bufs++) {
        const struct rxc_chain *c = &rc->ch[rc->first + bufs];
        uint32_t k = (uint32_t)min64(left, c->cap);
        vq_push_used(&qp->rx, c->head, k, (uint16_t)(*pending + bufs));
        left -= k;
    }
    h->num_buffers = bufs;
    write_header(qp, h, meta);
    consume(rc, bufs);
    *pending += bufs;
    st->rx_direct_packets++;
    rx_count_delivered(qp, h, f, meta, bufs, st);
}

/* The largest recent frame, forgotten slowly (a 64th a frame): a flow's
 * ACKs and small frames between its full ones must not cost the next
 * full one a spill. */
static void learn_size(struct rx_cache *rc, uint32_t len)
{
    uint32_t decayed = rc->expect - rc->expect / 64;
    rc->expect = len > decayed ? len : decayed;
}

enum { RX_DIRECT_KEEP = 18 };     /* beside enum rx_direct_result: the frame stays with this pair */

/* Where a frame read into the chains lies, as pieces: its fixed header
 * in the bounce buffer, the room bytes in the chains, the spill behind
 * them in the bounce buffer.  How many pieces. */
static int frame_pieces(struct qpair *qp, uint32_t len, uint32_t room, struct iovec *piece)
{
    struct rxc_span s = rxc_span(qp->rxc, qp->dev->hdr_len, min64(len, room));
    int n = 0;
    piece[n++] = (struct iovec){ qp->rx_frame, VNIC_NET_HDR_SIZE };
    uint8_t *p;
    for (uint64_t k; (k = rxc_next(&s, &p));)
        piece[n++] = (struct iovec){ p, k };
    if (len > room)
        piece[n++] = (struct iovec){ qp->rx_frame + VNIC_NET_HDR_SIZE + room, len - room };
    return n;
}

/* Hash a frame read into the chains (its len bytes, room of them there)
 * and, if RSS names another pair, hand it there: gathered from where it
 * landed (the chains then serve the next frame), or, if that pair's inbox
 * is full, moved to the bounce buffer to wait.  RX_DIRECT_KEEP, or
 * RX_DIRECT_DONE: it went (or waits for the other pair). */
static int steer(struct qpair *qp, const struct rx_ref *f, uint32_t room, struct vnic_queue_stats *st)
{
    int to = rx_rss_away(qp, rx_rss_hash(qp, f->bytes, f->have, st));
    if (to < 0)
        return RX_DIRECT_KEEP;
    struct iovec piece[RXC_SEGS + 2];
    int n = frame_pieces(qp, f->len, room, piece);
    if (handoff_push_pieces(qp, to, piece, n, VNIC_NET_HDR_SIZE + f->len)) {
        rx_rss_count_handed(f->len, st);
        return RX_DIRECT_DONE;
    }
    move_to_bounce(qp, f->len, room, st);  /* the spill is in the bounce buffer already */
    rx_rss_hand_off(qp, to, st);
    return RX_DIRECT_DONE;
}

/* Chains for the next frame: RX_DIRECT_DONE with some held, else
 * RX_DIRECT_NO_BUFFERS, RX_DIRECT_OFF (memory the cache cannot hold: this
 * batch goes the bounce way) or -enum vnic_error. */
static int chains_for_frame(struct qpair *qp)
{
    struct rx_cache *rc = qp->rxc;
    if (!rc->expect)
        rc->expect = EXPECT_FIRST;
    int r = rxc_fill(qp, qp->dev->hdr_len + (uint64_t)rc->expect);
    if (r < 0)
        return r;
    if (r == POP_BOUNCE) {
        rx_direct_release(qp);
        rc->off = true;                /* until the batch ends */
        return RX_DIRECT_OFF;
    }
    if (!rc->n)
        return RX_DIRECT_NO_BUFFERS;
    if (unlikely(oldest(rc)->cap < qp->dev->hdr_len))
        return -VNIC_ERR_DESC_DIRECTION;
    return RX_DIRECT_DONE;
}

/* One frame read into the chains and delivered, held or sent the bounce
 * way.  As rx_direct(). */
static int direct_frame(struct qpair *qp, bool coalescing, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    int r = chains_for_frame(qp);
    if (r != RX_DIRECT_DONE)
        return r;
    struct iovec iov[VNIC_IOV_MAX];
    uint32_t room;
    int niov = build_iov(qp, iov, &room);
    int got = dev->backend->read_iov(qp, iov, niov, st);
    if (got <= 0)
        return RX_DIRECT_EMPTY;
    if (unlikely(got <= VNIC_NET_HDR_SIZE)) {
        st->rx_drops_backend++;            /* a runt: nothing of it in the buffers */
        return RX_DIRECT_DONE;
    }
    uint32_t len = (uint32_t)got - VNIC_NET_HDR_SIZE;
    if (unlikely(len > VNIC_RX_FRAME_MAX)) {
        st->rx_drops_too_big++;            /* the backend cut it short */
        return discard(qp, len, room);
    }
    learn_size(qp->rxc, len);
    struct rx_ref f = frame_ref(qp, iov, len, room);
    if (!rx_filter_accepts(dev, f.bytes, f.have, st))
        return discard(qp, len, room);
    if (len > room && (r = spill(qp, len, room, st)) != SPILL_PLACED)
        return r;
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)qp->rx_frame;
    if (!rx_fix_header(qp, h, &f, st))
        return discard(qp, len, len);
    if (rx_rss_active(dev) && (r = steer(qp, &f, room, st)) != RX_DIRECT_KEEP)
        return r;
    if (coalescing && gro_direct_start(qp, h, &f))
        return RX_DIRECT_DONE;             /* held: the flow's next segments go behind it */
    if (coalescing && gro_candidate(dev, h, f.bytes, f.have, len)) {
        qp->rxc->predict_merge = true;     /* coalescing merges it in its own buffer */
        move_to_bounce(qp, len, len, st);
        return RX_DIRECT_BOUNCE;
    }
    rxc_deliver(qp, h, &f, &qp->rx_meta, pending, st);
    return RX_DIRECT_DONE;
}

int rx_direct(struct qpair *qp, bool coalescing, int budget, int *frames, uint16_t *pending,
              struct vnic_queue_stats *st)
{
    int r = gro_direct_held(qp) ? gro_direct_next(qp, budget, frames, pending, st) : GRO_DIRECT_CLOSED;
    if (r != GRO_DIRECT_CLOSED)
        return r;
    r = direct_frame(qp, coalescing, pending, st);
    *frames += r == RX_DIRECT_DONE || r == RX_DIRECT_BOUNCE;
    return r;
}
