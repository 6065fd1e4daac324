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

/* ---- header parsing ---------------------------------------------------------- */

/* ---- checksums ------------------------------------------------------------- */

/* ---- plain checksum completion ---------------------------------------------- */

/* NEEDS_CSUM without GSO: sum [csum_start, end) as the driver left it (its
 * partial pseudo-header sum sits in the field) and store the result. */
/* csum_start/csum_offset name a checksum field inside the frame. */
static bool csum_range_ok(const struct virtio_net_hdr *h, const struct tx_frame *f)
{
    uint32_t field = (uint32_t)h->csum_start + h->csum_offset;
    return field + 2 <= f->len && f->len - h->csum_start >= 2;
}

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
    /* emit [0, field) + patched 2 bytes + [field+2, end) */
    struct iovec *iov = ctx->iov + 1;
    int n = 0;
    cursor_seek(&c, f, 0);
    int k = cursor_take(&c, field, iov, VNIC_IOV_MAX - 3, NULL, 0);
    if (k < 0)
        return VNIC_TX_DROP_HEADERS;
    n += k;
    memcpy(ctx->tpl, &value, 2);
    iov[n].iov_base = ctx->tpl;
    iov[n].iov_len = 2;
    n++;
    cursor_seek(&c, f, field + 2);
    k = cursor_take(&c, f->len - field - 2, iov + n, VNIC_IOV_MAX - 1 - n, NULL, 0);
    if (k < 0)
        return VNIC_TX_DROP_HEADERS;
    n += k;
    ctx->st->tx_csum_offloaded++;
    return ctx->emit(ctx, ctx->iov, n, f->len) ? VNIC_TX_DROP_BACKEND : 0;
}

/* ---- segmentation: TSO4/TSO6 and USO --------------------------------------- */

static int segment(struct tx_ctx *ctx, const struct tx_frame *f, const struct layout *lo,
                   uint32_t mss, bool tcp)
{
    uint8_t *t = ctx->tpl;
    uint8_t *ip = t + lo->l3, *l4 = t + lo->l4;
    uint32_t hlen = lo->hdr_len, payload = f->len - hlen;
    uint32_t l4_hlen = hlen - lo->l4;
    uint32_t ip_hlen = lo->l4 - lo->l3;
    uint16_t id = lo->ipv6 ? 0 : rd16(ip + 4);
    uint32_t seq = tcp ? rd32(l4 + 4) : 0;
    uint8_t flags = tcp ? l4[13] : 0;
    uint32_t nseg = (payload + mss - 1) / mss;

    /* Sum the headers once with every per-segment field zeroed; each
     * segment then adds just its own lengths, ID, sequence and flags. */
    uint64_t ip_base = 0;
    if (lo->ipv6) {
        wr16(ip + 4, 0);
    } else {
        wr16(ip + 2, 0);
        wr16(ip + 4, 0);
        wr16(ip + 10, 0);
        ip_base = csum_partial(ip, ip_hlen, 0);
    }
    if (tcp) {
        wr32(l4 + 4, 0);
        l4[13] = 0;
        wr16(l4 + 16, 0);
    } else {
        wr16(l4 + 4, 0);
        wr16(l4 + 6, 0);
    }
    uint64_t l4_base = csum_partial(l4, l4_hlen, hdr_pseudo_sum(t, lo, 0));

    struct cursor c;
    cursor_seek(&c, f, hlen);
    for (uint32_t i = 0, off = 0; i < nseg; i++, off += mss) {
        uint32_t len = payload - off < mss ? payload - off : mss;
        uint32_t l4_len = l4_hlen + len;
        uint64_t sum = csum_add(l4_base, be16_word((uint16_t)l4_len));   /* pseudo-header length */
        if (lo->ipv6) {
            wr16(ip + 4, (uint16_t)(ip_hlen - 40 + l4_len));
        } else {
            uint16_t tot = (uint16_t)(ip_hlen + l4_len), seg_id = (uint16_t)(id + i);
            wr16(ip + 2, tot);
            wr16(ip + 4, seg_id);
            uint16_t ipc = (uint16_t)~csum_fold(csum_add(csum_add(ip_base, be16_word(tot)),
                                                         be16_word(seg_id)));
            memcpy(ip + 10, &ipc, 2);
        }
        if (tcp) {
            uint32_t s = seq + off;
            uint8_t fl = flags;
            if (i + 1 < nseg)
                fl &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (i > 0)
                fl &= (uint8_t)~TCP_CWR;
            wr32(l4 + 4, s);
            l4[13] = fl;
            sum = csum_add(sum, be16_word((uint16_t)(s >> 16)) + be16_word((uint16_t)s) + fl * 256u);
        } else {
            wr16(l4 + 4, (uint16_t)l4_len);
            sum = csum_add(sum, be16_word((uint16_t)l4_len));       /* the UDP length field */
        }
        ctx->iov[1].iov_base = t;
        ctx->iov[1].iov_len = hlen;
        int n = cursor_take(&c, len, ctx->iov + 2, VNIC_IOV_MAX - 2, &sum, 0);
        if (n < 0)
            return VNIC_TX_DROP_HEADERS;
        uint16_t value = csum_finish(sum, !tcp);
        memcpy(l4 + (tcp ? 16 : 6), &value, 2);
        if (ctx->emit(ctx, ctx->iov, n + 1, hlen + len))
            return VNIC_TX_DROP_BACKEND;
    }
    if (tcp) {
        ctx->st->tx_tso_packets++;
        ctx->st->tx_tso_segments += nseg;
    } else {
        ctx->st->tx_uso_packets++;
        ctx->st->tx_uso_segments += nseg;
    }
    return 0;
}

/* ---- UFO: fragment one UDP datagram at the IP layer ------------------------ */

static int fragment(struct tx_ctx *ctx, const struct tx_frame *f, const struct layout *lo, uint32_t mss)
{
    uint8_t *t = ctx->tpl;
    uint8_t *ip = t + lo->l3, *udp = t + lo->l4;
    uint32_t frag_size = mss & ~7u;
    uint32_t dlen = f->len - lo->l4;               /* UDP header + data */
    if (!frag_size)
        return VNIC_TX_DROP_GSO_SIZE;
    if (lo->ipv6 ? lo->ipv6_ext : lo->l4 - lo->l3 != 20)
        return VNIC_TX_DROP_HEADERS;                    /* options/extensions: not fragmented here */

    /* the UDP checksum covers the whole datagram, computed once */
    wr16(udp + 4, (uint16_t)dlen);
    udp[6] = udp[7] = 0;
    uint64_t sum = csum_partial(udp, 8, hdr_pseudo_sum(t, lo, dlen));
    struct cursor c;
    cursor_seek(&c, f, lo->l4 + 8);
    if (cursor_take(&c, dlen - 8, ctx->iov + 2, VNIC_IOV_MAX - 2, &sum, 0) < 0)
        return VNIC_TX_DROP_HEADERS;
    uint16_t value = csum_finish(sum, true);
    memcpy(udp + 6, &value, 2);

    /* fragment headers live in the template after the L2+L3 header */
    uint32_t l3end = lo->l4;
    uint8_t *fh = t + l3end;                      /* IPv6 fragment header, if any */
    uint32_t id6 = 0;
    if (lo->ipv6) {
        memcpy(ctx->udp_hdr, udp, 8);             /* the header moves after the fragment header */
        id6 = atomic_fetch_add(ctx->frag_id, 1);
        ip[6] = 44;
    }
    uint32_t nfrag = (dlen + frag_size - 1) / frag_size;
    cursor_seek(&c, f, lo->l4 + 8);
    for (uint32_t i = 0, off = 0; i < nfrag; i++, off += frag_size) {
        uint32_t len = dlen - off < frag_size ? dlen - off : frag_size;
        bool more = i + 1 < nfrag;
        uint32_t hdrs = l3end;
        if (lo->ipv6) {
            wr16(ip + 4, (uint16_t)(8 + len));
            fh[0] = IPPROTO_UDP_;
            fh[1] = 0;
            wr16(fh + 2, (uint16_t)(off | (more ? 1 : 0)));
            wr32(fh + 4, id6);
            hdrs += 8;
        } else {
            wr16(ip + 2, (uint16_t)(20 + len));
            wr16(ip + 6, (uint16_t)((off >> 3) | (more ? IP_MF : 0)));
            ipv4_header_csum(ip);
        }
        int n = 0;
        ctx->iov[1 + n].iov_base = t;
        ctx->iov[1 + n].iov_len = hdrs;
        n++;
        uint32_t body = len;
        if (off == 0) {                            /* the UDP header rides in fragment 0 */
            ctx->iov[1 + n].iov_base = lo->ipv6 ? ctx->udp_hdr : udp;
            ctx->iov[1 + n].iov_len = 8;
            n++;
            body -= 8;
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
        (want_tcp != (lo->proto == IPPROTO_TCP_)))
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
