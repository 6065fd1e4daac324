/* capture.c - packet capture, the workers' side: each pair's worker copies
 * at most snaplen bytes of a frame into its own ring and goes on; a writer
 * thread (pcapng.c) turns the rings into a pcapng file.  Nothing here
 * waits for the file: a full ring counts the frame as capture_drops, so a
 * slow disk costs captured frames, never the NIC's own.
 *
 * Start and stop while the workers run: start fills dev->capture before it
 * sets dev->capture_kinds; stop clears the kinds, then waits until no
 * worker is inside capture_frame() (each ring's busy flag, set before the
 * worker looks at the kinds again, both sequentially consistent), and only
 * then lets the writer finish and frees the rings. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define REC_ALIGN 8u

static uint32_t rec_size(uint32_t caplen)
{
    return (uint32_t)((sizeof(struct cap_rec) + caplen + REC_ALIGN - 1) & ~(REC_ALIGN - 1));
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Room for a record of size bytes at the ring's head, padding the end if
 * it would not fit there; NULL if the ring is too full. */
static struct cap_rec *reserve(struct cap_ring *r, uint32_t size)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint32_t off = (uint32_t)head & r->mask, to_end = r->mask + 1 - off;
    uint32_t pad = size <= to_end ? 0 : to_end;
    if (unlikely((uint64_t)r->mask + 1 - (head - tail) < (uint64_t)pad + size))
        return NULL;
    if (pad) {                    /* to_end >= 8: records and the ring are 8-aligned */
        struct cap_rec *p = (struct cap_rec *)(r->buf + off);
        p->size = pad;
        p->kind = 0;
        atomic_store_explicit(&r->head, head + pad, memory_order_release);
        off = 0;
    }
    return (struct cap_rec *)(r->buf + off);
}

static void fill_meta(struct cap_rec *rec, const struct cap_meta *m)
{
    rec->has_hdr = m != NULL;
    if (!m)
        return;
    rec->hdr = *m->hdr;
    rec->hdr.num_buffers = m->num_buffers;
    rec->report = m->report;
    rec->hash = m->hash;
}

/* The record proper, once the worker knows a capture is on. */
static void record(struct capture *c, struct cap_ring *r, unsigned kind, const struct iovec *iov,
                   int n, uint32_t len, const struct cap_meta *m, struct vnic_queue_stats *st)
{
    uint32_t caplen = len < c->cfg.snaplen ? len : c->cfg.snaplen;
    uint32_t size = rec_size(caplen);
    struct cap_rec *rec = reserve(r, size);
    if (unlikely(!rec)) {
        st->capture_drops++;
        return;
    }
    rec->size = size;
    rec->caplen = caplen;
    rec->origlen = len;
    rec->kind = (uint8_t)kind;
    rec->ts_ns = realtime_ns();
    fill_meta(rec, m);
    iov_gather((uint8_t *)(rec + 1), iov, n, caplen);
    atomic_store_explicit(&r->head, atomic_load_explicit(&r->head, memory_order_relaxed) + size,
                          memory_order_release);
    st->capture_packets++;
}

void capture_frame(struct qpair *qp, unsigned kind, const struct iovec *iov, int n, uint32_t len,
                   const struct cap_meta *m)
{
    struct vnic_dev *dev = qp->dev;
    struct cap_ring *r = &dev->capture->ring[qp->index];
    atomic_store(&r->busy, 1);
    /* stop may have cleared the kinds since capture_wants(): look again,
     * now that stop would wait for busy */
    if (atomic_load(&dev->capture_kinds) & kind)
        record(dev->capture, r, kind, iov, n, len, m, &dev->stats[qp->index]);
    atomic_store_explicit(&r->busy, 0, memory_order_release);   /* stop's load sees the record */
}

/* ---- start and stop ------------------------------------------------------ */

static uint32_t round_pow2(uint32_t v)
{
    uint32_t p = VNIC_CAPTURE_RING_MIN;
    while (p < v)
        p <<= 1;
    return p;
}

int vnic_capture_check(const struct vnic_capture_config *cfg)
{
    if (cfg->snaplen == 0 || cfg->snaplen > VNIC_CAPTURE_SNAPLEN_MAX)
        return -EINVAL;
    if (!cfg->directions || (cfg->directions & ~(uint32_t)VNIC_CAPTURE_BOTH))
        return -EINVAL;
    if (cfg->what != VNIC_CAPTURE_WIRE && cfg->what != VNIC_CAPTURE_GUEST)
        return -EINVAL;
    if (cfg->ring_bytes > VNIC_CAPTURE_RING_MAX || memchr(cfg->ifname, 0, sizeof(cfg->ifname)) == NULL)
        return -EINVAL;
    /* the largest record must fit the ring twice over, or one frame could
     * never be taken */
    if (2ull * rec_size(cfg->snaplen) > round_pow2(cfg->ring_bytes))
        return -EINVAL;
    return 0;
}

static void capture_free(struct capture *c)
{
    for (int i = 0; i < c->nring; i++)
        free(c->ring[i].buf);
    free(c->out);
    free(c);
}

static struct capture *capture_alloc(const struct vnic_dev *dev, const struct vnic_capture_config *cfg)
{
    struct capture *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cfg = *cfg;
    c->cfg.ring_bytes = round_pow2(cfg->ring_bytes);
    c->out = malloc(CAPTURE_OUT_BYTES);
    bool ok = c->out != NULL;
    for (int i = 0; ok && i < dev->nqp; i++, c->nring++) {
        c->ring[i].buf = aligned_alloc(REC_ALIGN, c->cfg.ring_bytes);
        c->ring[i].mask = c->cfg.ring_bytes - 1;
        ok = c->ring[i].buf != NULL;
    }
    if (!ok) {
        capture_free(c);
        return NULL;
    }
    return c;
}

static unsigned kinds_of(const struct vnic_capture_config *cfg)
{
    return cfg->directions << (cfg->what == VNIC_CAPTURE_GUEST ? 2 : 0);
}

int vnic_capture_start(struct vnic_dev *dev, const struct vnic_capture_config *cfg)
{
    if (dev->capture)
        return -EBUSY;
    int err = cfg->fd < 0 ? -EBADF : vnic_capture_check(cfg);
    if (err)
        return err;
    struct capture *c = capture_alloc(dev, cfg);
    if (!c)
        return -ENOMEM;
    err = capture_write_head(c);
    if (!err)
        err = -pthread_create(&c->writer, NULL, capture_writer, c);
    if (err) {
        capture_free(c);
        return err;
    }
    c->status.running = 1;
    dev->capture = c;
    atomic_store(&dev->capture_kinds, kinds_of(cfg));
    return 0;
}

/* Until no worker is inside capture_frame(): they are never long there. */
static void wait_workers_out(struct capture *c)
{
    for (int i = 0; i < c->nring; i++)
        while (atomic_load(&c->ring[i].busy))
            sched_yield();
}

int vnic_capture_stop(struct vnic_dev *dev, struct vnic_capture_status *out)
{
    struct capture *c = dev->capture;
    if (!c)
        return -ENOENT;
    atomic_store(&dev->capture_kinds, 0);
    wait_workers_out(c);
    atomic_store(&c->stopping, true);
    pthread_join(c->writer, NULL);
    dev->capture = NULL;
    c->status.running = 0;
    if (out)
        *out = c->status;
    capture_free(c);
    return 0;
}

void vnic_capture_status(struct vnic_dev *dev, struct vnic_capture_status *out)
{
    struct capture *c = dev->capture;
    if (c)
        *out = c->status;
    else
        memset(out, 0, sizeof(*out));
}

void capture_destroy(struct vnic_dev *dev)
{
    if (dev->capture)
        vnic_capture_stop(dev, NULL);
}
