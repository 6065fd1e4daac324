/* handoff.c - frames one pair's worker read from its backend queue but
 * RSS assigns to another pair, passed to that pair's worker.
 *
 * The TAP steers a flow to one of its queues by the kernel's own flow
 * hash; the driver's indirection table may name another.  Rather than
 * lock the receive path, every ordered pair of workers has its own
 * single-producer single-consumer byte ring: the producer copies the
 * frame in and publishes its tail with a release store, the consumer
 * copies it out into its frame buffer and publishes its head.  A flow
 * read on one queue always takes the same ring, so its frames stay in
 * order.  A full ring makes the producer hold the frame aside (counted in
 * rx_rss_handoff_waits) and stop reading its backend, so the host kernel
 * queues what follows, until the consumer makes room and wakes it; while
 * it holds, it still takes the frames handed to it, so two pairs sending
 * to each other cannot deadlock.  The rings' memory is reserved once per
 * device (nqp * nqp rings, untouched pages cost nothing) and never
 * allocated on the receive path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "backend.h"

/* Before each frame in a ring; len HANDOFF_WRAP: the rest of the ring up
 * to its end is unused, the next record is at its start. */
struct handoff_rec {
    uint32_t len;
    uint32_t offloads;
    uint32_t hash;
    uint16_t report;
    uint16_t pad;
};

#define HANDOFF_WRAP UINT32_MAX
#define HANDOFF_ALIGN sizeof(struct handoff_rec)

_Static_assert(HANDOFF_RING_BYTES % HANDOFF_ALIGN == 0, "records tile the ring");
_Static_assert(VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX + HANDOFF_ALIGN < HANDOFF_RING_BYTES / 2,
               "a ring holds at least two of the largest frames");

static size_t ring_count(const struct vnic_dev *dev)
{
    return (size_t)dev->nqp * (size_t)dev->nqp;
}

int handoff_init(struct vnic_dev *dev)
{
    if (dev->nqp < 2)
        return 0;
    size_t n = ring_count(dev);
    dev->rings = aligned_alloc(VNIC_CACHE_LINE, n * sizeof(struct handoff_ring));
    void *mem = mmap(NULL, n * HANDOFF_RING_BYTES, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!dev->rings || mem == MAP_FAILED)
        return -ENOMEM;
    dev->handoff_mem = mem;
    for (int to = 0; to < dev->nqp; to++) {
        for (int from = 0; from < dev->nqp; from++) {
            struct handoff_ring *r = &dev->rings[to * dev->nqp + from];
            atomic_init(&r->head, 0);
            atomic_init(&r->tail, 0);
            r->buf = dev->handoff_mem + (size_t)(to * dev->nqp + from) * HANDOFF_RING_BYTES;
            r->from = from;
            atomic_init(&r->waiting, false);
            dev->qp[to].inbox[from] = from == to ? NULL : r;
        }
    }
    return 0;
}

void handoff_destroy(struct vnic_dev *dev)
{
    if (dev->handoff_mem)
        munmap(dev->handoff_mem, ring_count(dev) * HANDOFF_RING_BYTES);
    free(dev->rings);
    dev->handoff_mem = NULL;
    dev->rings = NULL;
}

void handoff_reset(struct vnic_dev *dev)
{
    for (size_t i = 0; dev->rings && i < ring_count(dev); i++) {
        atomic_store(&dev->rings[i].head, 0);
        atomic_store(&dev->rings[i].tail, 0);
        atomic_store(&dev->rings[i].waiting, false);
    }
    for (int i = 0; i < dev->nqp; i++)
        dev->qp[i].held_to = -1;
}

static uint32_t record_bytes(uint32_t len)
{
    return (uint32_t)(HANDOFF_ALIGN + (len + HANDOFF_ALIGN - 1) / HANDOFF_ALIGN * HANDOFF_ALIGN);
}

/* Copy a frame, gathered from its n pieces, into r: false if it does not
 * fit now. */
static bool ring_put(struct handoff_ring *r, const struct iovec *piece, int n, uint32_t len,
                     const struct rx_meta *m)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load(&r->head);
    uint32_t need = record_bytes(len);
    uint64_t pos = tail % HANDOFF_RING_BYTES;
    /* a record never wraps: if it does not fit before the end, skip there */
    uint64_t skip = HANDOFF_RING_BYTES - pos < need ? HANDOFF_RING_BYTES - pos : 0;
    if (tail + skip + need - head > HANDOFF_RING_BYTES)
        return false;
    if (skip) {
        ((struct handoff_rec *)(r->buf + pos))->len = HANDOFF_WRAP;
        tail += skip;
        pos = 0;
    }
    struct handoff_rec *rec = (struct handoff_rec *)(r->buf + pos);
    *rec = (struct handoff_rec){ len, m->offloads, m->hash, m->report, 0 };
    uint8_t *to = (uint8_t *)(rec + 1);
    for (int i = 0; i < n; i++) {          /* the caller's pieces add up to len */
        memcpy(to, piece[i].iov_base, piece[i].iov_len);
        to += piece[i].iov_len;
    }
    atomic_store_explicit(&r->tail, tail + need, memory_order_release);
    return true;
}

/* Put a frame into r, or say we wait for room (then look once more: the
 * consumer may have made it before it saw the flag). */
static bool ring_put_or_wait(struct handoff_ring *r, const struct iovec *piece, int n, uint32_t len,
                             const struct rx_meta *m)
{
    if (ring_put(r, piece, n, len, m))
        return true;
    atomic_store(&r->waiting, true);
    if (!ring_put(r, piece, n, len, m))
        return false;
    atomic_store(&r->waiting, false);
    return true;
}

static bool put_whole(struct handoff_ring *r, uint8_t *frame, uint32_t len, const struct rx_meta *m)
{
    struct iovec whole = { frame, len };
    return ring_put_or_wait(r, &whole, 1, len, m);
}

bool handoff_push_pieces(struct qpair *qp, int to, const struct iovec *piece, int n, uint32_t len)
{
    struct handoff_ring *r = qp->dev->qp[to].inbox[qp->index];
    if (len > VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX || !ring_put_or_wait(r, piece, n, len, &qp->rx_meta))
        return false;
    qp->handed_to |= 1u << to;
    return true;
}

int handoff_push(struct qpair *qp, int to)
{
    struct handoff_ring *r = qp->dev->qp[to].inbox[qp->index];
    if (put_whole(r, qp->rx_frame, qp->rx_frame_len, &qp->rx_meta)) {
        qp->handed_to |= 1u << to;
        return 0;
    }
    /* held aside by swapping buffers: rx_frame is free for handed frames */
    uint8_t *spare = qp->held;
    qp->held = qp->rx_frame;
    qp->rx_frame = spare;
    qp->held_len = qp->rx_frame_len;
    qp->held_meta = qp->rx_meta;
    qp->held_to = to;
    return 1;
}

bool handoff_retry(struct qpair *qp)
{
    if (!handoff_holding(qp))
        return true;
    struct handoff_ring *r = qp->dev->qp[qp->held_to].inbox[qp->index];
    if (!put_whole(r, qp->held, qp->held_len, &qp->held_meta))
        return false;
    qp->handed_to |= 1u << qp->held_to;
    qp->held_to = -1;
    handoff_wake(qp);                 /* callers outside a batch wake nobody else */
    return true;
}

bool handoff_holding(const struct qpair *qp)
{
    return qp->held_to >= 0;
}

void handoff_wake(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    while (qp->handed_to) {
        int to = __builtin_ctz(qp->handed_to);
        qp->handed_to &= qp->handed_to - 1;
        /* the consumer sets sleeping, then looks at its rings once more */
        if (atomic_exchange(&dev->qp[to].sleeping, false))
            eventfd_signal(dev->qp[to].stop_fd);   /* the device's own eventfd */
    }
}

/* The next record of r into qp's frame buffer: 1, or 0 if r is empty. */
static int ring_pop(struct qpair *qp, struct handoff_ring *r)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head == tail)
            return 0;
        uint64_t pos = head % HANDOFF_RING_BYTES;
        const struct handoff_rec *rec = (const struct handoff_rec *)(r->buf + pos);
        if (rec->len == HANDOFF_WRAP) {
            head += HANDOFF_RING_BYTES - pos;
            atomic_store_explicit(&r->head, head, memory_order_release);
            continue;
        }
        memcpy(qp->rx_frame, rec + 1, rec->len);    /* our own producer wrote len */
        qp->rx_frame_len = rec->len;
        qp->rx_meta = (struct rx_meta){ rec->offloads, rec->hash, rec->report };
        atomic_store(&r->head, head + record_bytes(rec->len));
        if (atomic_load(&r->waiting) && atomic_exchange(&r->waiting, false))
            eventfd_signal(qp->dev->qp[r->from].stop_fd);   /* room for its held frame */
        return 1;
    }
}

int handoff_pop(struct qpair *qp)
{
    int n = qp->dev->nqp;
    for (int k = 0; k < n && qp->dev->rings; k++) {
        int from = (qp->inbox_next + k) % n;
        if (qp->inbox[from] && ring_pop(qp, qp->inbox[from])) {
            qp->inbox_next = (from + 1) % n;
            return 1;
        }
    }
    return 0;
}

bool handoff_pending(struct qpair *qp)
{
    for (int from = 0; from < qp->dev->nqp && qp->dev->rings; from++) {
        struct handoff_ring *r = qp->inbox[from];
        if (r && atomic_load_explicit(&r->head, memory_order_relaxed) !=
                     atomic_load_explicit(&r->tail, memory_order_acquire))
            return true;
    }
    return false;
}
