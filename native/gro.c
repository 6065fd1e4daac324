/* gro.c - receive coalescing: consecutive in-order TCP segments of a flow
 * become one super-frame for a guest that negotiated GUEST_TSO4/6, so the
 * guest's stack handles one packet where the wire carried dozens.
 *
 * Rules that keep it safe: a segment joins its flow only if it continues
 * the sequence exactly, carries only ACK (PSH closes the super-frame), has
 * a checksum the device verified (or a local sender left partial), and every header field but lengths, IPv4
 * ID, sequence and checksums matches the flow's first segment (options
 * included).  Anything else closes the flow first, so a flow is never
 * reordered, and every flow is closed at the end of the batch, so nothing
 * is held back.  The flow table grows with the number of concurrent flows
 * up to GRO_FLOWS_MAX, then evicts the least recently extended flow. */
#include <stdlib.h>
#include <string.h>
#include "headers.h"

#define FRAME_BUF (VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX)

/* The bytes of the IP source and destination address, adjacent in both
 * versions, and where they start in the IP header. */
static size_t addr_offset(bool ipv6)
{
    return ipv6 ? offsetof(struct ipv6_hdr, saddr) : offsetof(struct ipv4_hdr, saddr);
}

static size_t addr_bytes(bool ipv6)
{
    return ipv6 ? 2 * FIELD_SIZE(struct ipv6_hdr, saddr) : 2 * FIELD_SIZE(struct ipv4_hdr, saddr);
}

static bool same_flow(const struct layout *a, const uint8_t *fa, const struct layout *b, const uint8_t *fb)
{
    if (a->ipv6 != b->ipv6 || a->l3 != b->l3 || a->l4 != b->l4)
        return false;
    size_t addr_off = addr_offset(a->ipv6), ports = offsetof(struct tcp_hdr, seq);
    return !memcmp(fa + a->l3 + addr_off, fb + b->l3 + addr_off, addr_bytes(a->ipv6)) &&
           !memcmp(fa + a->l4, fb + b->l4, ports);
}

/* Zero the fields each segment owns in a copy of its headers: IP lengths,
 * IPv4 ID and header checksum, TCP sequence, PSH and checksum. */
static void clear_segment_fields(uint8_t *hdrs, const struct layout *lo)
{
    if (!lo->ipv6) {
        struct ipv4_hdr *ip = HDR_AT(struct ipv4_hdr, hdrs, lo->l3);
        memset(ip->tot_len, 0, sizeof(ip->tot_len));
        memset(ip->id, 0, sizeof(ip->id));
        memset(ip->check, 0, sizeof(ip->check));
    } else {
        struct ipv6_hdr *ip = HDR_AT(struct ipv6_hdr, hdrs, lo->l3);
        memset(ip->payload_len, 0, sizeof(ip->payload_len));
    }
    struct tcp_hdr *tcp = HDR_AT(struct tcp_hdr, hdrs, lo->l4);
    memset(tcp->seq, 0, sizeof(tcp->seq));
    tcp->flags &= (uint8_t)~TCP_PSH;            /* PSH may end the flow */
    memset(tcp->check, 0, sizeof(tcp->check));
}

/* Which header bits every segment of a flow must share: all but those
 * clear_segment_fields() clears. */
static void build_mask(uint8_t *mask, const struct layout *lo)
{
    memset(mask, 0xff, lo->hdr_len);
    clear_segment_fields(mask, lo);
}

typedef uint64_t u64x2 __attribute__((vector_size(16)));   /* SSE2 on x86-64, two words elsewhere */

/* a and b equal where mask has bits, 16 bytes at a time; the last block
 * overlaps the one before it rather than going byte by byte. */
static bool masked_equal(const uint8_t *a, const uint8_t *b, const uint8_t *mask, size_t n)
{
    u64x2 diff = { 0, 0 }, x, y, m;
    if (unlikely(n < sizeof(x))) {
        uint8_t d = 0;
        for (size_t i = 0; i < n; i++)
            d |= (uint8_t)((a[i] ^ b[i]) & mask[i]);
        return !d;
    }
    for (size_t i = 0;; i += sizeof(x)) {
        i = i + sizeof(x) > n ? n - sizeof(x) : i;
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        memcpy(&m, mask + i, sizeof(m));
        diff |= (x ^ y) & m;
        if (i + sizeof(x) == n)
            return !(diff[0] | diff[1]);
    }
}

/* Does a segment of the flow's layout follow on: sequence and ID continue,
 * its size keeps the flow under 64 KiB? */
static bool follows(const struct gro_flow *f, const uint8_t *frame, uint32_t payload)
{
    const struct layout *lo = &f->lo;
    if (payload > f->mss || f->len - VNIC_NET_HDR_SIZE - lo->l3 + payload > IP_MAX_LEN)
        return false;
    if (rd32(tcp_at(frame, lo)->seq) != f->next_seq)
        return false;
    return lo->ipv6 || rd16(HDR_AT(const struct ipv4_hdr, frame, lo->l3)->id) == f->next_id;
}

/* Are the frame's headers the flow's first's but for the fields each
 * segment owns?  Then its layout is the flow's too: every byte the parse
 * reads (types, versions, lengths of headers, flags) is among those. */
static bool shares_headers(const struct gro_flow *f, const uint8_t *frame, uint32_t have)
{
    uint32_t n = f->lo.hdr_len;
    return have >= n && masked_equal(f->buf + VNIC_NET_HDR_SIZE, frame, f->mask, n);
}

/* Could this frame extend the flow?  Headers equal but for the fields each
 * segment owns; sequence and ID continue; size keeps it under 64 KiB. */
static bool continues(const struct gro_flow *f, const uint8_t *frame, const struct layout *lo, uint32_t payload)
{
    return lo->hdr_len == f->lo.hdr_len && follows(f, frame, payload) && shares_headers(f, frame, lo->hdr_len);
}

/* Rewrite the assembled frame's headers for the guest: lengths, IPv4
 * header checksum, and a partial TCP checksum with a GSO header, or a
 * plain DATA_VALID frame if only one segment came. */
void gro_finish(struct gro_flow *f, struct vnic_queue_stats *st)
{
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)f->buf;
    uint8_t *frame = f->buf + VNIC_NET_HDR_SIZE;
    const struct layout *lo = &f->lo;
    if (f->segs == 1)
        return;                                     /* the frame as it came, header and all */
    memset(h, 0, sizeof(*h));
    uint32_t l4_len = f->len - VNIC_NET_HDR_SIZE - lo->l4;
    ip_set_len(frame, lo, l4_len);
    uint16_t partial = csum_fold(hdr_pseudo_sum(frame, lo, l4_len));  /* as CHECKSUM_PARTIAL wants */
    memcpy(HDR_AT(struct tcp_hdr, frame, lo->l4)->check, &partial, sizeof(partial));
    h->flags = VNIC_HDR_F_NEEDS_CSUM;
    h->gso_type = lo->ipv6 ? VNIC_GSO_TCPV6 : VNIC_GSO_TCPV4;
    h->gso_size = f->mss;
    h->hdr_len = lo->hdr_len;
    h->csum_start = lo->l4;
    h->csum_offset = CSUM_OFFSET_TCP;
    st->rx_coalesced_packets++;
    st->rx_coalesced_segments += f->segs;
}

/* What the flow statistics learn of a flow's frame beyond its header. */
const struct rx_meta *gro_flow_meta(struct gro_flow *f)
{
    f->meta.offloads = f->segs > 1 ? VNIC_FLOW_COALESCED : 0;
    return &f->meta;
}

/* Close a flow: deliver it, or queue it until the guest posts buffers.
 * 1 delivered, 0 queued, <0 error. */
static int close_flow(struct qpair *qp, struct gro_flow *f, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro *g = qp->gro;
    g->nopen--;
    gro_finish(f, st);
    int r = g->ready_n ? 0 : rx_deliver(qp, f->buf, f->len, gro_flow_meta(f), pending, st);
    if (r == 1) {
        f->state = GRO_FREE;
    } else if (r == 0) {
        f->state = GRO_READY;
        g->ready[(g->ready_head + g->ready_n++) % GRO_FLOWS_MAX] = (int)(f - g->flow);
    }
    return r;
}

int gro_deliver_ready(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro *g = qp->gro;
    while (g->ready_n) {
        struct gro_flow *f = &g->flow[g->ready[g->ready_head]];
        int r = rx_deliver(qp, f->buf, f->len, gro_flow_meta(f), pending, st);
        if (r <= 0)
            return r;
        f->state = GRO_FREE;
        g->ready_head = (g->ready_head + 1) % GRO_FLOWS_MAX;
        g->ready_n--;
    }
    return 1;
}

int gro_flush_all(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro *g = qp->gro;
    for (int i = 0; i < g->allocated; i++) {
        if (g->flow[i].state != GRO_OPEN)
            continue;
        int r = close_flow(qp, &g->flow[i], pending, st);
        if (r < 0)
            return r;
    }
    g->batch++;
    return g->ready_n ? 0 : 1;
}

/* A free slot: a released one, a new one (the table grows), or the least
 * recently extended flow, closed early.  NULL if none can be had. */
static struct gro_flow *slot(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct gro *g = qp->gro;
    struct gro_flow *oldest = NULL;
    for (int i = 0; i < g->allocated; i++) {
        struct gro_flow *f = &g->flow[i];
        if (f->state == GRO_FREE)
            return f;
        if (f->state == GRO_OPEN && (!oldest || f->touched < oldest->touched))
            oldest = f;
    }
    if (g->allocated < GRO_FLOWS_MAX) {
        struct gro_flow *f = &g->flow[g->allocated];
        f->buf = malloc(FRAME_BUF);          /* once per slot, as concurrency grows */
        if (f->buf) {
            g->allocated++;
            return f;
        }
    }
    if (!oldest)
        return NULL;
    st->rx_coalesce_evictions++;
    return close_flow(qp, oldest, pending, st) == 1 ? oldest : NULL;
}

static bool may_coalesce(const struct vnic_dev *dev, const struct layout *lo)
{
    return lo->ipv6 ? (rx_features(dev) >> VNIC_F_GUEST_TSO6 & 1) && !lo->ipv6_ext
                    : rx_features(dev) >> VNIC_F_GUEST_TSO4 & 1;
}

/* A segment's virtio header as coalescing takes it: no GSO, and the
 * checksum verified by us or left partial by a local sender. */
static bool header_may_merge(const struct virtio_net_hdr *h, const struct layout *lo)
{
    bool csum_ok = h->flags == VNIC_HDR_F_DATA_VALID ||
                   (h->flags == VNIC_HDR_F_NEEDS_CSUM && h->csum_start == lo->l4 && h->csum_offset == CSUM_OFFSET_TCP);
    return csum_ok && h->gso_type == VNIC_GSO_NONE;
}

/* Does the IP header claim exactly the frame's len bytes (no padding, no lies)? */
static bool ip_len_is_frame(const uint8_t *frame, const struct layout *lo, uint32_t len)
{
    return lo->l3 + ip_claimed_len(frame, lo) == len;
}

/* May this TCP segment join a flow (its flags aside from PSH, checksum,
 * lengths, the guest's features)? */
static bool may_merge(const struct vnic_dev *dev, const struct virtio_net_hdr *h, const uint8_t *frame,
                      uint32_t len, const struct layout *lo)
{
    uint8_t flags = tcp_at(frame, lo)->flags;
    return header_may_merge(h, lo) && ip_len_is_frame(frame, lo, len) &&
           (flags == TCP_ACK || flags == (TCP_ACK | TCP_PSH)) && len > lo->hdr_len &&
           lo->hdr_len <= VNIC_TPL_MAX && may_coalesce(dev, lo);
}

/* Open f with its first segment (len bytes, headers in frame): the
 * sequence and ID the next must carry, its payload as the MSS. */
static void start(struct gro_flow *f, const uint8_t *frame, uint32_t len, const struct layout *lo,
                  const struct rx_meta *meta, uint64_t batch)
{
    uint32_t payload = len - lo->hdr_len;
    f->state = GRO_OPEN;
    f->len = VNIC_NET_HDR_SIZE + len;
    f->lo = *lo;
    f->next_seq = rd32(tcp_at(frame, lo)->seq) + payload;
    f->next_id = lo->ipv6 ? 0 : (uint16_t)(rd16(HDR_AT(const struct ipv4_hdr, frame, lo->l3)->id) + 1);
    f->mss = (uint16_t)payload;
    f->segs = 1;
    f->touched = batch;
    f->meta = *meta;
    build_mask(f->mask, lo);
}

/* A segment's payload joined f (the caller placed it).  true: PSH or a
 * short segment ends what the sender meant as one burst. */
static bool extend(struct gro_flow *f, uint32_t payload, uint8_t flags, uint64_t batch)
{
    f->len += payload;
    f->next_seq += payload;
    f->next_id++;
    f->segs++;
    f->touched = batch;
    HDR_AT(struct tcp_hdr, f->buf + VNIC_NET_HDR_SIZE, f->lo.l4)->flags |= flags & TCP_PSH;
    return (flags & TCP_PSH) || payload < f->mss;
}

/* May this frame open a flow?  *lo: its layout if so. */
static bool opens_flow(const struct vnic_dev *dev, const struct virtio_net_hdr *h, const uint8_t *frame,
                       uint32_t have, uint32_t len, struct layout *lo)
{
    if (hdr_parse(frame, have, lo) < 0 || lo->proto != IPPROTO_TCP)
        return false;
    return may_merge(dev, h, frame, len, lo) && !(tcp_at(frame, lo)->flags & TCP_PSH);
}

bool gro_candidate(const struct vnic_dev *dev, const struct virtio_net_hdr *h, const uint8_t *frame,
                   uint32_t have, uint32_t len)
{
    struct layout lo;
    return opens_flow(dev, h, frame, have, len, &lo);
}

bool gro_idle(const struct gro *g)
{
    return !g->nopen && !g->ready_n;
}

int gro_receive(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    struct gro *g = qp->gro;
    const struct virtio_net_hdr *h = (const struct virtio_net_hdr *)qp->rx_frame;
    uint8_t *frame = qp->rx_frame + VNIC_NET_HDR_SIZE;
    uint32_t len = qp->rx_frame_len - VNIC_NET_HDR_SIZE;
    struct layout lo;
    if (hdr_parse(frame, len, &lo) < 0 || lo.proto != IPPROTO_TCP)
        return GRO_PASS;

    struct gro_flow *f = NULL;
    for (int i = 0; i < g->allocated && !f; i++)
        if (g->flow[i].state == GRO_OPEN &&
            same_flow(&g->flow[i].lo, g->flow[i].buf + VNIC_NET_HDR_SIZE, &lo, frame))
            f = &g->flow[i];

    uint8_t flags = tcp_at(frame, &lo)->flags;
    uint32_t payload = len - lo.hdr_len;
    bool eligible = may_merge(dev, h, frame, len, &lo);

    if (f && eligible && continues(f, frame, &lo, payload)) {
        memcpy(f->buf + f->len, frame + lo.hdr_len, payload);
        st->rx_copied_bytes += payload;
        if (extend(f, payload, flags, g->batch)) {
            int r = close_flow(qp, f, pending, st);
            if (r < 0)
                return r;
        }
        return GRO_MERGED;
    }
    if (f) {                                  /* the flow breaks here: it goes first */
        int r = close_flow(qp, f, pending, st);
        if (r <= 0)
            return r < 0 ? r : GRO_STUCK;
    }
    if (!eligible || (flags & TCP_PSH))
        return GRO_PASS;
    struct gro_flow *n = slot(qp, pending, st);
    if (g->ready_n)
        return GRO_STUCK;                     /* an evicted flow waits: nothing overtakes it */
    if (!n)
        return GRO_PASS;
    /* the flow adopts the frame's buffer; the frame buffer becomes the slot's old one */
    uint8_t *spare = n->buf;
    n->buf = qp->rx_frame;
    qp->rx_frame = spare;
    g->nopen++;
    start(n, frame, len, &lo, &qp->rx_meta, g->batch);
    return GRO_MERGED;
}

bool gro_direct_open(struct qpair *qp, struct gro_flow *f, const struct virtio_net_hdr *h, const uint8_t *frame,
                     uint32_t have, uint32_t len)
{
    struct layout lo;
    if (!qp->dev->mrg_rxbuf || !opens_flow(qp->dev, h, frame, have, len, &lo))
        return false;
    memcpy(f->buf, h, VNIC_NET_HDR_SIZE);
    memcpy(f->buf + VNIC_NET_HDR_SIZE, frame, lo.hdr_len);
    start(f, frame, len, &lo, &qp->rx_meta, qp->gro->batch);
    return true;
}

bool gro_direct_extend(struct qpair *qp, struct gro_flow *f, const struct virtio_net_hdr *h, const uint8_t *frame,
                       uint32_t have, uint32_t len, bool *close)
{
    /* no parse: shares_headers() says the layout is the flow's, and so
     * are the TCP flags but PSH and the header lengths may_merge() checked
     * when the flow opened; what each segment owns is checked here */
    const struct layout *lo = &f->lo;
    if (!shares_headers(f, frame, have) || !header_may_merge(h, lo) || !ip_len_is_frame(frame, lo, len) ||
        len <= lo->hdr_len || !may_coalesce(qp->dev, lo) || !follows(f, frame, len - lo->hdr_len))
        return false;
    *close = extend(f, len - lo->hdr_len, tcp_at(frame, lo)->flags, qp->gro->batch);
    return true;
}

void gro_reset(struct gro *g)
{
    for (int i = 0; i < g->allocated; i++)
        g->flow[i].state = GRO_FREE;
    g->ready_head = g->ready_n = 0;
    g->nopen = 0;
}

int gro_discard(struct gro *g)
{
    int segs = 0;
    for (int i = 0; i < g->allocated; i++)
        if (g->flow[i].state != GRO_FREE)
            segs += g->flow[i].segs;
    gro_reset(g);
    return segs;
}

void gro_free(struct gro *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->allocated; i++)
        free(g->flow[i].buf);
    free(g);
}
