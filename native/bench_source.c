/* bench_source.c - the benchmark frame source: a backend whose read()
 * copies prepared frames in turn, as a TAP's read() would copy them from
 * the kernel, so vnic_bench_rx_path/vnic_bench_coalesce time the real RX
 * path.  TX is discarded like the null backend's.  Never used by a device
 * Python builds. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"

/* left frames still to hand out, taken in turn from count frames of len
 * bytes, stride apart from frames on */
struct bench_source {
    const uint8_t *frames;
    uint32_t len, stride, count, next, left;
};

static int bench_attach(struct qpair *qp)
{
    /* a line of its own: read() updates it per frame, beside other pairs' */
    size_t size = (sizeof(struct bench_source) + VNIC_CACHE_LINE - 1) & ~(size_t)(VNIC_CACHE_LINE - 1);
    qp->backend_priv = aligned_alloc(VNIC_CACHE_LINE, size);
    if (qp->backend_priv)
        memset(qp->backend_priv, 0, size);
    return qp->backend_priv ? 0 : -ENOMEM;
}

static void bench_detach(struct qpair *qp)
{
    free(qp->backend_priv);
    qp->backend_priv = NULL;
}

static int bench_poll_fd(const struct qpair *qp)
{
    return -1;
}

/* The next frame, or NULL when the round has handed out its share. */
static const uint8_t *next_frame(struct bench_source *b)
{
    if (!b->left)
        return NULL;
    const uint8_t *f = b->frames + (size_t)b->stride * b->next;
    b->next = (b->next + 1) % b->count;
    b->left--;
    return f;
}

static int bench_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct bench_source *b = qp->backend_priv;
    const uint8_t *f = next_frame(b);
    if (!f)
        return 0;
    memcpy(qp->rx_frame, f, b->len);   /* what read() would copy */
    qp->rx_frame_len = b->len;
    return 1;
}

/* As readv() scatters a frame: one copy, piece by piece. */
static int bench_read_iov(struct qpair *qp, const struct iovec *iov, int n, struct vnic_queue_stats *st)
{
    struct bench_source *b = qp->backend_priv;
    const uint8_t *f = next_frame(b);
    if (!f)
        return 0;
    uint32_t done = 0;
    for (int i = 0; i < n && done < b->len; i++) {
        size_t k = b->len - done < iov[i].iov_len ? b->len - done : iov[i].iov_len;
        memcpy(iov[i].iov_base, f + done, k);
        done += (uint32_t)k;
    }
    return (int)b->len;
}

static int bench_write(struct qpair *qp, const struct iovec *iov, int n)
{
    return 0;
}

const struct backend_ops bench_source_backend = {
    .name = "bench",
    .attach = bench_attach,
    .detach = bench_detach,
    .poll_fd = bench_poll_fd,
    .read = bench_read,
    .read_iov = bench_read_iov,
    .write = bench_write,
};

void bench_source_load(struct qpair *qp, const uint8_t *frames, uint32_t len, uint32_t stride,
                       uint32_t count)
{
    struct bench_source *b = qp->backend_priv;
    *b = (struct bench_source){ frames, len, stride, count, 0, 0 };
}

void bench_source_refill(struct qpair *qp, uint32_t n)
{
    struct bench_source *b = qp->backend_priv;
    b->left = n;
}
