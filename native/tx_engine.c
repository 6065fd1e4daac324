/* tx_engine.c - the TX offload engine on its own, for tests and
 * benchmarks (vnic_test.h): a frame from a buffer, split where the caller
 * says, through tx_offload() into an output buffer instead of a backend. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "vnic_test.h"

struct vnic_tx_engine {
    struct tx_ctx ctx;
    atomic_uint frag_id;
    uint8_t *out;
    uint32_t out_cap, out_len;
    uint32_t *frame_lens;
    int max_frames, frames;
};

static int emit_buffer(struct tx_ctx *ctx, struct iovec *iov, int n, uint32_t len)
{
    struct vnic_tx_engine *e = ctx->sink;
    if (e->out) {
        if (e->frames == e->max_frames || e->out_len + len > e->out_cap)
            return -1;
        for (int i = 1; i <= n; i++) {
            memcpy(e->out + e->out_len, iov[i].iov_base, iov[i].iov_len);
            e->out_len += (uint32_t)iov[i].iov_len;
        }
        e->frame_lens[e->frames] = len;
    }
    e->frames++;
    ctx->st->tx_packets++;
    ctx->st->tx_bytes += len;
    return 0;
}

struct vnic_tx_engine *vnic_tx_engine_new(uint64_t features)
{
    struct vnic_tx_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->ctx.features = features;
    e->ctx.frag_id = &e->frag_id;
    e->ctx.emit = emit_buffer;
    e->ctx.sink = e;
    return e;
}

void vnic_tx_engine_free(struct vnic_tx_engine *e)
{
    free(e);
}

int vnic_tx_engine_run(struct vnic_tx_engine *e, const uint8_t *pkt, uint32_t len,
                       const uint32_t *cuts, int ncuts, uint8_t *out, uint32_t out_cap,
                       uint32_t *frame_lens, int max_frames, int repeat,
                       struct vnic_queue_stats *st)
{
    struct virtio_net_hdr h;
    if (len < sizeof(h) || ncuts < 0 || ncuts >= VNIC_IOV_MAX - 1)
        return -VNIC_TX_DROP_HEADERS;
    memcpy(&h, pkt, sizeof(h));
    struct iovec *pieces = e->ctx.frame;
    uint32_t flen = len - (uint32_t)sizeof(h), prev = 0;
    int n = 0;
    for (int i = 0; i <= ncuts; i++) {
        uint32_t end = i < ncuts ? cuts[i] : flen;
        if (end < prev || end > flen)
            return -VNIC_TX_DROP_HEADERS;
        if (end == prev)
            continue;
        pieces[n].iov_base = (void *)(pkt + sizeof(h) + prev);
        pieces[n].iov_len = end - prev;
        n++;
        prev = end;
    }
    struct tx_frame f = { pieces, n, flen };
    e->ctx.st = st;
    int err = tx_check_negotiated(e->ctx.features, &h);
    for (int r = 0; r < repeat && !err; r++) {
        e->out = out;
        e->out_cap = out_cap;
        e->out_len = 0;
        e->frame_lens = frame_lens;
        e->max_frames = max_frames;
        e->frames = 0;
        bool offload = (h.flags & VNIC_HDR_F_NEEDS_CSUM) || h.gso_type != VNIC_GSO_NONE;
        if (offload) {
            err = tx_offload(&e->ctx, &h, &f);
        } else {
            memcpy(e->ctx.iov + 1, pieces, sizeof(pieces[0]) * (size_t)n);
            err = emit_buffer(&e->ctx, e->ctx.iov, n, flen) ? VNIC_TX_DROP_BACKEND : 0;
        }
    }
    if (err) {
        tx_count_drop(st, err);
        return -err;
    }
    return e->frames;
}
