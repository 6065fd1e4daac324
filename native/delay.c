/* delay.c - the delay line of fault injection: the frames a direction of a
 * pair holds back (a delay, its jitter, a rate limit) kept in order in a
 * byte ring until they are due, then sent (TX, tx.c) or received (RX,
 * rx.c).  Only the pair's worker touches its lines, so there is no lock;
 * it sleeps no longer than its next frame is due (fault_next_due_ms).
 * The ring is allocated with the pair: holding a frame is one copy. */
#include <string.h>
#include <time.h>
#include "internal.h"

#define HELD_ALIGN 8u
#define HELD_PAD UINT32_MAX      /* len of the record that pads the ring's end */

struct held {
    uint32_t size;               /* the whole record, 8-aligned */
    uint32_t len;                /* the frame's bytes behind it, or HELD_PAD */
    uint64_t due_ns;             /* CLOCK_MONOTONIC */
};

uint64_t fault_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool fault_delays(const struct fault_dir *f)
{
    return atomic_load_explicit(&f->delay_us, memory_order_relaxed) ||
           atomic_load_explicit(&f->jitter_us, memory_order_relaxed) ||
           atomic_load_explicit(&f->rate_kbps, memory_order_relaxed);
}

static uint32_t held_size(uint32_t len)
{
    return (uint32_t)((sizeof(struct held) + len + HELD_ALIGN - 1) & ~(HELD_ALIGN - 1));
}

/* When a frame of len bytes put in now may leave: after the delay, give
 * or take the jitter, after the link sent what it holds, and never before
 * the frame ahead of it. */
static uint64_t due_time(struct qpair *qp, struct fault_dir *f, uint32_t len, uint64_t now)
{
    uint64_t due = now + 1000ull * atomic_load_explicit(&f->delay_us, memory_order_relaxed);
    uint64_t jitter = 1000ull * atomic_load_explicit(&f->jitter_us, memory_order_relaxed);
    if (jitter) {
        uint64_t r = fault_random(qp, f) % (2 * jitter + 1);
        due = due + r < jitter || due + r - jitter < now ? now : due + r - jitter;
    }
    uint32_t kbps = atomic_load_explicit(&f->rate_kbps, memory_order_relaxed);
    if (kbps) {
        uint64_t start = f->link_free_ns > now ? f->link_free_ns : now;
        f->link_free_ns = start + (uint64_t)len * 8000000u / kbps;   /* bits / (kbit/s), in ns */
        due = due > f->link_free_ns ? due : f->link_free_ns;
    }
    if (due < f->last_due_ns)
        due = f->last_due_ns;
    f->last_due_ns = due;
    return due;
}

bool fault_hold(struct qpair *qp, struct fault_dir *f, const struct iovec *iov, int n, uint32_t len)
{
    uint32_t size = held_size(len);
    uint32_t off = (uint32_t)f->line_head & (FAULT_LINE_BYTES - 1), to_end = FAULT_LINE_BYTES - off;
    uint32_t pad = size <= to_end ? 0 : to_end;
    if (FAULT_LINE_BYTES - (f->line_head - f->line_tail) < (uint64_t)pad + size)
        return false;
    if (pad) {
        *(struct held *)(f->line + off) = (struct held){ pad, HELD_PAD, 0 };
        f->line_head += pad;
        off = 0;
    }
    struct held *h = (struct held *)(f->line + off);
    *h = (struct held){ size, len, due_time(qp, f, len, fault_now_ns()) };
    iov_gather((uint8_t *)(h + 1), iov, n, len);
    f->line_head += size;
    return true;
}

/* The oldest record (padding skipped), or NULL if the line is empty. */
static struct held *oldest(struct fault_dir *f)
{
    while (f->line_tail < f->line_head) {
        struct held *h = (struct held *)(f->line + ((uint32_t)f->line_tail & (FAULT_LINE_BYTES - 1)));
        if (h->len != HELD_PAD)
            return h;
        f->line_tail += h->size;
    }
    return NULL;
}

const uint8_t *fault_due(struct fault_dir *f, uint32_t *len, uint64_t now_ns)
{
    struct held *h = oldest(f);
    if (!h || h->due_ns > now_ns)
        return NULL;
    *len = h->len;
    return (const uint8_t *)(h + 1);
}

void fault_release(struct fault_dir *f)
{
    struct held *h = oldest(f);
    if (h)
        f->line_tail += h->size;
}

/* ms until f's oldest frame is due (0: now), or -1 if it holds none. */
static int due_in_ms(struct fault_dir *f, uint64_t now)
{
    struct held *h = oldest(f);
    if (!h)
        return -1;
    return h->due_ns <= now ? 0 : (int)((h->due_ns - now + 999999) / 1000000);
}

int fault_next_due_ms(struct qpair *qp)
{
    uint64_t now = fault_now_ns();
    int tx = due_in_ms(&qp->fault[FAULT_TX], now);
    /* held received frames wait with the rest while the guest has no buffers */
    bool rx_may = !qp->backend_paused && !rx_starving(qp->dev);
    int rx = rx_may ? due_in_ms(&qp->fault[FAULT_RX], now) : -1;
    if (tx < 0 || (rx >= 0 && rx < tx))
        return rx;
    return tx;
}

void fault_lines_clear(struct qpair *qp)
{
    for (int d = 0; d < 2; d++) {
        qp->fault[d].line_tail = qp->fault[d].line_head;
        qp->fault[d].last_due_ns = qp->fault[d].link_free_ns = 0;
    }
}
