/* gso.c - the TX offload engine: checksum completion and segmentation
 * (TSO4/TSO6, USO) and UDP fragmentation (UFO), done by the device.
 *
 * A super-frame is never copied.  Its headers are read once into a small
 * template; for every output frame the template's length, ID, sequence,
 * flag and checksum fields are patched in place, and the frame is handed to
 * the sink as [template, payload pieces] where the payload pieces point
 * straight into guest memory.  Each payload byte is read exactly once, by
 * the checksum, and once more by the sink's writev().  No allocation. */
#include <string.h>
#include "headers.h"

_Static_assert(FIELD_SIZE(struct tx_ctx, udp_hdr) == sizeof(struct udp_hdr), "UFO header copy");

/* ---- reading the frame ------------------------------------------------------ */

/* Copy frame bytes [pos, pos+len) into dst; false if the frame is shorter. */
static bool frame_copy(const struct tx_frame *f, uint32_t pos, uint8_t *dst, uint32_t len)
{
    if ((uint64_t)pos + len > f->len)
        return false;
    for (int i = 0; i < f->n && len; i++) {
        size_t plen = f->iov[i].iov_len;
        if (pos >= plen) {
            pos -= (uint32_t)plen;
            continue;
        }
        size_t n = plen - pos < len ? plen - pos : len;
        memcpy(dst, (uint8_t *)f->iov[i].iov_base + pos, n);
        dst += n;
        len -= (uint32_t)n;
        pos = 0;
    }
    return len == 0;
}

/* A position in the frame's pieces, advanced as segments are cut. */
struct cursor {
    const struct tx_frame *f;
    int i;
    size_t off;
};

static void cursor_seek(struct cursor *c, const struct tx_frame *f, uint32_t pos)
{
    c->f = f;
    c->i = 0;
    while (c->i < f->n && pos >= f->iov[c->i].iov_len) {
        pos -= (uint32_t)f->iov[c->i].iov_len;
        c->i++;
    }
    c->off = pos;
}

/* Append the next len bytes as iovecs (at most max) and add their checksum
 * to *sum; parity is the offset of these bytes within the summed range.
 * Returns the number of iovecs, or -1 if max is too small. */
static int cursor_take(struct cursor *c, uint32_t len, struct iovec *out, int max,
                       uint64_t *sum, uint32_t parity)
{
    int n = 0;
    while (len) {
        if (n == max || c->i >= c->f->n)
            return -1;
        const struct iovec *p = &c->f->iov[c->i];
        size_t k = p->iov_len - c->off < len ? p->iov_len - c->off : len;
        out[n].iov_base = (uint8_t *)p->iov_base + c->off;
        out[n].iov_len = k;
        if (sum)
            *sum = csum_add(*sum, csum_shift(csum_partial(out[n].iov_base, k, 0), parity));
        parity += (uint32_t)k;
        n++;
        len -= (uint32_t)k;
        c->off += k;
        if (c->off == p->iov_len) {
            c->i++;
            c->off = 0;
        }
    }
    return n;
}

/* ---- plain checksum completion ---------------------------------------------- */

/* csum_start/csum_offset name a checksum field inside the frame. */
static bool csum_range_ok(const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    uint32_t field = (uint32_t)h->csum_start + h->csum_offset;
    return field + CSUM_SIZE <= f->len && f->len - h->csum_start >= CSUM_SIZE;
}

/* NEEDS_CSUM without GSO: sum [csum_start, end) as the driver left it (its
 * partial pseudo-header sum sits in the field) and store the result. */
static int complete_csum(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    uint32_t start = h->csum_start, field = (uint32_t)h->csum_start + h->csum_offset;
    if (!csum_range_ok(h, f))
        return VNIC_TX_DROP_CSUM_RANGE;
    struct cursor c;
    uint64_t sum = 0;
    cursor_seek(&c, f, start);
    if (cursor_take(&c, f->len - start, ctx->iov + 1, VNIC_IOV_MAX - 1, &sum, 0) < 0)
        return VNIC_TX_DROP_HEADERS;
    uint16_t value = csum_finish(sum, h->csum_offset == CSUM_OFFSET_UDP);
    /* emit [0, field) + the patched field + [field + CSUM_SIZE, end) */
    struct iovec *iov = ctx->iov + 1;
    int n = 0;
    cursor_seek(&c, f, 0);
    int k = cursor_take(&c, field, iov, VNIC_IOV_MAX - 3, NULL, 0);
    if (k < 0)
        return VNIC_TX_DROP_HEADERS;
    n += k;
    memcpy(ctx->tpl, &value, CSUM_SIZE);
    iov[n].iov_base = ctx->tpl;
    iov[n].iov_len = CSUM_SIZE;
    n++;
    cursor_seek(&c, f, field + CSUM_SIZE);
    k = cursor_take(&c, f->len - field - CSUM_SIZE, iov + n, VNIC_IOV_MAX - 1 - n, NULL, 0);
    if (k < 0)
        return VNIC_TX_DROP_HEADERS;
    n += k;
    ctx->st->tx_csum_offloaded++;
    return ctx->emit(ctx, ctx->iov, n, f->len) ? VNIC_TX_DROP_BACKEND : 0;
}

/* ---- segmentation: TSO4/TSO6 and USO --------------------------------------- */

/* What a super-frame's headers say before they are cut: the fields each
 * segment rewrites start from these. */
struct seg_origin {
    uint16_t id;                  /* IPv4 ID of the first segment */
    uint32_t seq;                 /* TCP sequence of the first segment */
    uint8_t flags;                /* TCP flags of the super-frame */
};

/* Zero the per-segment fields of the template (lengths, ID, sequence,
 * flags, checksums) and return the IPv4 header's sum without them. */
static uint64_t clear_per_segment(uint8_t *t, const struct layout *lo, bool tcp)
{
    uint64_t ip_base = 0;
    if (lo->ipv6) {
        wr16(HDR_AT(struct ipv6_hdr, t, lo->l3)->payload_len, 0);
    } else {
        struct ipv4_hdr *ip = HDR_AT(struct ipv4_hdr, t, lo->l3);
        wr16(ip->tot_len, 0);
        wr16(ip->id, 0);
        wr16(ip->check, 0);
        ip_base = csum_partial(ip, lo->l4 - lo->l3, 0);
    }
    if (tcp) {
        struct tcp_hdr *th = HDR_AT(struct tcp_hdr, t, lo->l4);
        wr32(th->seq, 0);
        th->flags = 0;
        wr16(th->check, 0);
    } else {
        struct udp_hdr *uh = HDR_AT(struct udp_hdr, t, lo->l4);
        wr16(uh->len, 0);
        wr16(uh->check, 0);
    }
    return ip_base;
}

/* Segment i's IP length (and IPv4 ID and header checksum). */
static void set_segment_ip(uint8_t *t, const struct layout *lo, uint32_t l4_len, uint16_t id,
                           uint64_t ip_base)
{
    uint32_t ip_hlen = lo->l4 - lo->l3;
    if (lo->ipv6) {
        wr16(HDR_AT(struct ipv6_hdr, t, lo->l3)->payload_len,
             (uint16_t)(ip_hlen - sizeof(struct ipv6_hdr) + l4_len));
        return;
    }
    struct ipv4_hdr *ip = HDR_AT(struct ipv4_hdr, t, lo->l3);
    uint16_t tot = (uint16_t)(ip_hlen + l4_len);
    wr16(ip->tot_len, tot);
    wr16(ip->id, id);
    uint16_t ipc = (uint16_t)~csum_fold(csum_add(csum_add(ip_base, be16_word(tot)), be16_word(id)));
    memcpy(ip->check, &ipc, sizeof(ipc));
}

/* Segment i of nseg's TCP sequence and flags (FIN and PSH only on the
 * last, CWR only on the first); returns what they add to the checksum. */
static uint64_t set_segment_tcp(struct tcp_hdr *th, const struct seg_origin *o, uint32_t off,
                                uint32_t i, uint32_t nseg)
{
    uint32_t s = o->seq + off;
    uint8_t fl = o->flags;
    if (i + 1 < nseg)
        fl &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (i > 0)
        fl &= (uint8_t)~TCP_CWR;
    wr32(th->seq, s);
    th->flags = fl;
    /* flags sit in the high byte of their 16-bit word (after doff) */
    return be16_word((uint16_t)(s >> 16)) + be16_word((uint16_t)s) + fl * 256u;
}

static void count_segmented(struct vnic_queue_stats *st, bool tcp, uint32_t nseg)
{
    if (tcp) {
        st->tx_tso_packets++;
        st->tx_tso_segments += nseg;
    } else {
        st->tx_uso_packets++;
        st->tx_uso_segments += nseg;
    }
}

static int segment(struct tx_ctx *ctx, const struct tx_frame *f, const struct layout *lo,
                   uint32_t mss, bool tcp)
{
    uint8_t *t = ctx->tpl;
    struct tcp_hdr *th = HDR_AT(struct tcp_hdr, t, lo->l4);
    struct udp_hdr *uh = HDR_AT(struct udp_hdr, t, lo->l4);
    uint32_t hlen = lo->hdr_len, payload = f->len - hlen;
    uint32_t l4_hlen = hlen - lo->l4;
    struct seg_origin o = {
        .id = lo->ipv6 ? 0 : rd16(HDR_AT(struct ipv4_hdr, t, lo->l3)->id),
        .seq = tcp ? rd32(th->seq) : 0,
        .flags = tcp ? th->flags : 0,
    };
    uint32_t nseg = (payload + mss - 1) / mss;

    /* Sum the headers once with every per-segment field zeroed; each
     * segment then adds just its own lengths, ID, sequence and flags. */
    uint64_t ip_base = clear_per_segment(t, lo, tcp);
    uint64_t l4_base = csum_partial(t + lo->l4, l4_hlen, hdr_pseudo_sum(t, lo, 0));

    struct cursor c;
    cursor_seek(&c, f, hlen);
    for (uint32_t i = 0, off = 0; i < nseg; i++, off += mss) {
        uint32_t len = payload - off < mss ? payload - off : mss;
        uint32_t l4_len = l4_hlen + len;
        uint64_t sum = csum_add(l4_base, be16_word((uint16_t)l4_len));   /* pseudo-header length */
        set_segment_ip(t, lo, l4_len, (uint16_t)(o.id + i), ip_base);
        if (tcp) {
            sum = csum_add(sum, set_segment_tcp(th, &o, off, i, nseg));
        } else {
            wr16(uh->len, (uint16_t)l4_len);
            sum = csum_add(sum, be16_word((uint16_t)l4_len));       /* the UDP length field */
        }
        ctx->iov[1].iov_base = t;
        ctx->iov[1].iov_len = hlen;
        int n = cursor_take(&c, len, ctx->iov + 2, VNIC_IOV_MAX - 2, &sum, 0);
        if (n < 0)
            return VNIC_TX_DROP_HEADERS;
        uint16_t value = csum_finish(sum, !tcp);
        memcpy(tcp ? th->check : uh->check, &value, sizeof(value));
        if (ctx->emit(ctx, ctx->iov, n + 1, hlen + len))
            return VNIC_TX_DROP_BACKEND;
    }
    count_segmented(ctx->st, tcp, nseg);
    return 0;
}

/* ---- UFO: fragment one UDP datagram at the IP layer ------------------------ */

/* The UDP checksum covers the whole datagram: computed once, into the
 * template's UDP header.  0 or VNIC_TX_DROP_HEADERS. */
static int ufo_checksum(struct tx_ctx *ctx, const struct tx_frame *f, const struct layout *lo,
                        uint32_t dlen)
{
    struct udp_hdr *uh = HDR_AT(struct udp_hdr, ctx->tpl, lo->l4);
    wr16(uh->len, (uint16_t)dlen);
    memset(uh->check, 0, sizeof(uh->check));
    uint64_t sum = csum_partial(uh, sizeof(*uh), hdr_pseudo_sum(ctx->tpl, lo, dlen));
    struct cursor c;
    cursor_seek(&c, f, lo->l4 + (uint32_t)sizeof(*uh));
    if (cursor_take(&c, dlen - (uint32_t)sizeof(*uh), ctx->iov + 2, VNIC_IOV_MAX - 2, &sum, 0) < 0)
        return VNIC_TX_DROP_HEADERS;
    uint16_t value = csum_finish(sum, true);
    memcpy(uh->check, &value, sizeof(value));
    return 0;
}

/* The IP header(s) of the fragment at byte off of the datagram, len bytes
 * long: IPv4 gets offset and MF, IPv6 a fragment header after its own
 * (RFC 8200 4.5).  Returns the length of the headers. */
static uint32_t set_fragment_ip(uint8_t *t, const struct layout *lo, uint32_t off, uint32_t len,
                                bool more, uint32_t id6)
{
    if (lo->ipv6) {
        struct ipv6_frag_hdr *fh = HDR_AT(struct ipv6_frag_hdr, t, lo->l4);
        wr16(HDR_AT(struct ipv6_hdr, t, lo->l3)->payload_len, (uint16_t)(sizeof(*fh) + len));
        fh->nexthdr = IPPROTO_UDP;
        fh->reserved = 0;
        wr16(fh->frag_off, (uint16_t)(off | (more ? IP6_MF : 0)));   /* off is a multiple of 8 */
        wr32(fh->identification, id6);
        return lo->l4 + (uint32_t)sizeof(*fh);
    }
    struct ipv4_hdr *ip = HDR_AT(struct ipv4_hdr, t, lo->l3);
    wr16(ip->tot_len, (uint16_t)(sizeof(*ip) + len));
    wr16(ip->frag_off, (uint16_t)((off >> 3) | (more ? IP_MF : 0)));
    ipv4_header_csum((uint8_t *)ip);
    return lo->l4;
}

static int fragment(struct tx_ctx *ctx, const struct tx_frame *f, const struct layout *lo, uint32_t mss)
{
    uint8_t *t = ctx->tpl;
    uint8_t *udp = t + lo->l4;
    uint32_t frag_size = mss & ~7u;                /* offsets count 8-byte units */
    uint32_t dlen = f->len - lo->l4;               /* UDP header + data */
    if (!frag_size)
        return VNIC_TX_DROP_GSO_SIZE;
    if (lo->ipv6 ? lo->ipv6_ext : lo->l4 - lo->l3 != sizeof(struct ipv4_hdr))
        return VNIC_TX_DROP_HEADERS;                    /* options/extensions: not fragmented here */
    int err = ufo_checksum(ctx, f, lo, dlen);
    if (err)
        return err;

    uint32_t id6 = 0;
    if (lo->ipv6) {
        /* the UDP header moves after the fragment header, which takes its place */
        memcpy(ctx->udp_hdr, udp, sizeof(struct udp_hdr));
        id6 = atomic_fetch_add(ctx->frag_id, 1);
        HDR_AT(struct ipv6_hdr, t, lo->l3)->nexthdr = IPPROTO_FRAGMENT;
    }
    uint32_t nfrag = (dlen + frag_size - 1) / frag_size;
    struct cursor c;
    cursor_seek(&c, f, lo->l4 + (uint32_t)sizeof(struct udp_hdr));
    for (uint32_t i = 0, off = 0; i < nfrag; i++, off += frag_size) {
        uint32_t len = dlen - off < frag_size ? dlen - off : frag_size;
        uint32_t hdrs = set_fragment_ip(t, lo, off, len, i + 1 < nfrag, id6);
        int n = 0;
        ctx->iov[1 + n].iov_base = t;
        ctx->iov[1 + n].iov_len = hdrs;
        n++;
        uint32_t body = len;
        if (off == 0) {                            /* the UDP header rides in fragment 0 */
            ctx->iov[1 + n].iov_base = lo->ipv6 ? ctx->udp_hdr : udp;
            ctx->iov[1 + n].iov_len = sizeof(struct udp_hdr);
            n++;
            body -= (uint32_t)sizeof(struct udp_hdr);
        }
        int k = cursor_take(&c, body, ctx->iov + 1 + n, VNIC_IOV_MAX - 1 - n, NULL, 0);
        if (k < 0)
            return VNIC_TX_DROP_HEADERS;
        if (ctx->emit(ctx, ctx->iov, n + k, hdrs + len))
            return VNIC_TX_DROP_BACKEND;
    }
    ctx->st->tx_ufo_packets++;
    ctx->st->tx_ufo_fragments += nfrag;
    return 0;
}

/* ---- entry ------------------------------------------------------------------ */

int tx_check_negotiated(uint64_t features, const struct virtio_net_hdr *h)
{
    uint8_t type = h->gso_type & (uint8_t)~VNIC_GSO_ECN;
    if ((h->flags & VNIC_HDR_F_NEEDS_CSUM) && !(features >> VNIC_F_CSUM & 1))
        return VNIC_TX_DROP_UNNEGOTIATED;
    if ((h->gso_type & VNIC_GSO_ECN) && !(features >> VNIC_F_HOST_ECN & 1))
        return VNIC_TX_DROP_UNNEGOTIATED;
    switch (type) {
    case VNIC_GSO_NONE:
        return 0;
    case VNIC_GSO_TCPV4:
        return features >> VNIC_F_HOST_TSO4 & 1 ? 0 : VNIC_TX_DROP_UNNEGOTIATED;
    case VNIC_GSO_TCPV6:
        return features >> VNIC_F_HOST_TSO6 & 1 ? 0 : VNIC_TX_DROP_UNNEGOTIATED;
    case VNIC_GSO_UDP:
        return features >> VNIC_F_HOST_UFO & 1 ? 0 : VNIC_TX_DROP_UNNEGOTIATED;
    case VNIC_GSO_UDP_L4:
        return features >> VNIC_F_HOST_USO & 1 ? 0 : VNIC_TX_DROP_UNNEGOTIATED;
    default:
        return VNIC_TX_DROP_GSO_TYPE;
    }
}

/* The checks segmentation relies on, for a GSO request: headers that parse
 * and match the GSO type, hdr_len as promised, a usable gso_size.  lo gets
 * the parsed layout (ctx->tpl the header bytes).  0 or a VNIC_TX_DROP_ reason. */
static int gso_check(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f,
                     struct layout *lo)
{
    uint8_t type = h->gso_type & (uint8_t)~VNIC_GSO_ECN;
    uint32_t have = f->len < VNIC_TPL_MAX ? f->len : VNIC_TPL_MAX;
    if (!frame_copy(f, 0, ctx->tpl, have))
        return VNIC_TX_DROP_HEADERS;
    if (hdr_parse(ctx->tpl, have, lo) < 0)
        return VNIC_TX_DROP_HEADERS;
    bool v6 = lo->ipv6;
    bool want_tcp = type == VNIC_GSO_TCPV4 || type == VNIC_GSO_TCPV6;
    if ((type == VNIC_GSO_TCPV4 && v6) || (type == VNIC_GSO_TCPV6 && !v6) ||
        (want_tcp != (lo->proto == IPPROTO_TCP)))
        return VNIC_TX_DROP_GSO_TYPE;
    if ((ctx->features >> VNIC_F_GUEST_HDRLEN & 1) && h->hdr_len != lo->hdr_len)
        return VNIC_TX_DROP_HEADERS;                /* the driver promised the exact length */
    /* UFO cuts the whole datagram (UDP header included), the others the payload */
    uint32_t payload = f->len - (type == VNIC_GSO_UDP ? lo->l4 : lo->hdr_len);
    if (h->gso_size == 0 || f->len == lo->hdr_len || h->gso_size > payload)
        return VNIC_TX_DROP_GSO_SIZE;
    if (lo->hdr_len + (uint32_t)h->gso_size > VNIC_MAX_FRAME)
        return VNIC_TX_DROP_GSO_SIZE;
    return 0;
}

int tx_check_whole(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    if ((h->flags & VNIC_HDR_F_NEEDS_CSUM) && !csum_range_ok(h, f))
        return VNIC_TX_DROP_CSUM_RANGE;
    if (h->gso_type == VNIC_GSO_NONE)
        return 0;
    struct layout lo;
    return gso_check(ctx, h, f, &lo);
}

int tx_offload(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    uint8_t type = h->gso_type & (uint8_t)~VNIC_GSO_ECN;
    if (type == VNIC_GSO_NONE)
        return complete_csum(ctx, h, f);
    struct layout lo;
    int err = gso_check(ctx, h, f, &lo);
    if (err)
        return err;
    if (type == VNIC_GSO_UDP)
        return fragment(ctx, f, &lo, h->gso_size);
    bool want_tcp = type == VNIC_GSO_TCPV4 || type == VNIC_GSO_TCPV6;
    return segment(ctx, f, &lo, h->gso_size, want_tcp);
}
