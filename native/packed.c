/* packed.c - the packed virtqueue layout (virtio 1.2, 2.8): one ring of
 * descriptors that the driver makes available and the device marks used
 * in place, each side keeping a wrap counter, and two event suppression
 * structures instead of flags and event indices.  virtq.c dispatches here
 * and holds what this layout shares with the split one.
 *
 * Positions are ring counters in [0, 2 * size): the slot is ctr % size and
 * the wrap counter is 1 in the first lap (ctr < size), 0 in the second.
 * vnic uses buffers in the order the driver made them available, so a
 * chain's used descriptor goes where its first descriptor was (2.8.7), and
 * the chains popped but not yet published wait in vq->flight, oldest
 * first, with the number of ring descriptors each occupied.
 *
 * Security model, beyond virtq.c's: the flags the walk reads are the
 * guest's, and a ring whose flags never change must not loop, so every
 * walk stops at the ring's size, and the descriptors held (popped, not yet
 * used) never exceed it: a driver that marks available what the device
 * still holds gets -VNIC_ERR_DESC_LOOP, not a second copy of its chain. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define PDESC_LEN      offsetof(struct vring_packed_desc, len)
#define PDESC_FLAGS    offsetof(struct vring_packed_desc, flags)
#define EVENT_OFF_WRAP 0          /* struct pvirtq_event_suppress: le16 desc (offset | wrap << 15) */
#define EVENT_FLAGS    2          /* le16 flags: RING_EVENT_FLAGS_* */
#define EVENT_BYTES    4
#define EVENT_WRAP     0x8000

/* No divisions on the per-packet path (the size need not be a power of
 * two): every step is shorter than a lap, so one subtraction wraps it. */
static bool wrap_of(const struct vq *vq, uint32_t ctr) { return ctr < vq->size; }
static uint32_t slot_of(const struct vq *vq, uint32_t ctr) { return wrap_of(vq, ctr) ? ctr : ctr - vq->size; }
static uint32_t ring_span(const struct vq *vq) { return 2u * vq->size; }

static uint32_t advance(const struct vq *vq, uint32_t ctr, uint32_t n)
{
    ctr += n;
    return ctr >= ring_span(vq) ? ctr - ring_span(vq) : ctr;
}

/* From a to b going forward, in descriptors. */
static uint32_t distance(const struct vq *vq, uint32_t a, uint32_t b)
{
    return b >= a ? b - a : b + ring_span(vq) - a;
}

/* 2.8.1: available when AVAIL matches the wrap counter and USED does not. */
static bool is_avail(uint16_t flags, bool wrap)
{
    return !!(flags & VRING_PACKED_DESC_F_AVAIL) == wrap && !!(flags & VRING_PACKED_DESC_F_USED) != wrap;
}

static uint16_t desc_flags(struct vq *vq, uint32_t ctr)
{
    return vq_load16(vq, vq->desc, vq->desc_addr, (size_t)VQ_DESC_SIZE * slot_of(vq, ctr) + PDESC_FLAGS, true);
}

static struct vq_flight *flight(struct vq *vq, uint16_t k)
{
    uint32_t i = (uint32_t)vq->flight_head + k;          /* k < size */
    return &vq->flight[i >= vq->size ? i - vq->size : i];
}

static uint16_t held_chains(const struct vq *vq) { return (uint16_t)(vq->last_avail - vq->used_idx); }

int packed_map(struct vq *vq)
{
    struct vnic_mem *mem = &vq->dev->mem;
    if ((vq->desc_addr & 15) || (vq->avail_addr & 3) || (vq->used_addr & 3))
        return -EINVAL;
    if (!vq->flight || vq->flight_size != vq->size) {
        free(vq->flight);
        vq->flight = calloc(vq->size, sizeof(*vq->flight));
        if (!vq->flight)
            return -ENOMEM;
        vq->flight_size = vq->size;
    }
    vq->desc = mem_direct(mem, vq->desc_addr, (uint64_t)VQ_DESC_SIZE * vq->size, true);
    vq->avail = mem_direct(mem, vq->avail_addr, EVENT_BYTES, false);   /* driver event suppression */
    vq->used = mem_direct(mem, vq->used_addr, EVENT_BYTES, true);      /* device event suppression */
    if (!mem_piece(mem, vq->desc_addr, 1, true, &(uint8_t *){0}))
        return -EFAULT;                                                /* we write used descriptors */
    return 0;
}

/* ---- driver -> device ---------------------------------------------------- */

/* One descriptor of an indirect table: only WRITE means anything there. */
static int walk_indirect(struct vq *vq, struct chain *c, const struct vring_packed_desc *d)
{
    const void *table;
    uint32_t entries;
    int err = vq_indirect_table(vq, d->addr, d->len, &table, &entries);
    for (uint32_t i = 0; !err && i < entries; i++) {
        struct vring_packed_desc e;
        if ((err = vq_desc_copy(vq, table, d->addr, i, &e)))
            break;
        if (e.flags & VRING_DESC_F_INDIRECT)
            return -VNIC_ERR_DESC_INDIRECT;
        err = vq_chain_add(vq, c, e.addr, e.len, e.flags & VRING_DESC_F_WRITE);
    }
    return err;
}

/* Walk the chain that starts at ring counter ctr; *ndesc its ring
 * descriptors, *id its buffer ID (the last descriptor's, 2.8.6). */
static int walk(struct vq *vq, struct chain *c, uint32_t ctr, uint32_t room, uint16_t *ndesc, uint16_t *id)
{
    for (uint32_t n = 1;; n++) {
        struct vring_packed_desc d;
        int err = vq_desc_copy(vq, vq->desc, vq->desc_addr, slot_of(vq, ctr), &d);
        if (err)
            return err;
        if (n > room)
            return -VNIC_ERR_DESC_LOOP;
        if (d.flags & VRING_DESC_F_INDIRECT)
            err = (d.flags & VRING_DESC_F_NEXT) ? -VNIC_ERR_DESC_INDIRECT : walk_indirect(vq, c, &d);
        else
            err = vq_chain_add(vq, c, d.addr, d.len, d.flags & VRING_DESC_F_WRITE);
        if (err)
            return err;
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            *ndesc = (uint16_t)n;
            *id = d.id;
            return d.id < vq->size ? 0 : -VNIC_ERR_DESC_INDEX;
        }
        ctr = advance(vq, ctr, 1);
    }
}

int packed_pop(struct vq *vq, struct chain *c)
{
    uint32_t ctr = vq->next_avail;
    if (!is_avail(desc_flags(vq, ctr), wrap_of(vq, ctr))) {
        vq->seen_empty = ctr;
        return 0;
    }
    /* the ring holds size descriptors, and some are still ours */
    uint32_t room = vq->size - distance(vq, vq->next_used, ctr);
    uint16_t ndesc, id;
    vq_chain_start(c, 0);
    int err = walk(vq, c, ctr, room, &ndesc, &id);
    if (err)
        return err;
    c->head = id;
    *flight(vq, held_chains(vq)) = (struct vq_flight){ .id = id, .ndesc = ndesc };
    vq->last_avail++;
    vq->next_avail = advance(vq, ctr, ndesc);
    /* seen_empty stays the first slot not known available, never behind */
    if (distance(vq, ctr, vq->seen_empty) < ndesc)
        vq->seen_empty = vq->next_avail;
    return 1;
}

void packed_rewind(struct vq *vq, uint16_t n)
{
    for (; n && held_chains(vq); n--) {
        vq->last_avail--;
        uint32_t back = flight(vq, held_chains(vq))->ndesc;
        vq->next_avail = advance(vq, vq->next_avail, ring_span(vq) - back);
    }
}

/* ---- device -> driver ---------------------------------------------------- */

void packed_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset)
{
    if (offset >= held_chains(vq))
        return;                                /* nothing popped there: the caller's bug */
    struct vq_flight *f = flight(vq, offset);
    f->id = head;
    f->len = len;
}

static uint16_t used_flags(const struct vq *vq, uint32_t ctr)
{
    return wrap_of(vq, ctr) ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0;
}

/* The used descriptor's ID and length, not yet its flags. */
static void write_used(struct vq *vq, uint32_t ctr, const struct vq_flight *f)
{
    struct { uint32_t len; uint16_t id; } __attribute__((packed)) elem = { f->len, f->id };
    vq_store(vq, vq->desc, vq->desc_addr, (size_t)VQ_DESC_SIZE * slot_of(vq, ctr) + PDESC_LEN, &elem, sizeof(elem));
}

static void mark_used(struct vq *vq, uint32_t ctr)
{
    vq_store16(vq, vq->desc, vq->desc_addr, (size_t)VQ_DESC_SIZE * slot_of(vq, ctr) + PDESC_FLAGS,
               used_flags(vq, ctr), true);
}

void packed_publish_used(struct vq *vq, uint16_t count)
{
    if (count > held_chains(vq))
        count = held_chains(vq);
    if (!count)
        return;
    uint32_t first = vq->next_used, ctr = first;
    for (uint16_t k = 0; k < count; k++) {
        const struct vq_flight *f = flight(vq, k);
        write_used(vq, ctr, f);
        if (k)
            mark_used(vq, ctr);
        ctr = advance(vq, ctr, f->ndesc);
    }
    /* the first one last: the driver sees the batch whole (2.8.9) */
    mark_used(vq, first);
    vq->next_used = ctr;
    vq->flight_head = (uint16_t)(flight(vq, count) - vq->flight);
    vq->used_idx += count;
}

static void device_event(struct vq *vq, uint16_t flags, uint32_t ctr)
{
    if (flags == VRING_PACKED_EVENT_FLAG_DESC)
        vq_store16(vq, vq->used, vq->used_addr, EVENT_OFF_WRAP,
                   (uint16_t)(slot_of(vq, ctr) | (wrap_of(vq, ctr) ? EVENT_WRAP : 0)), false);
    vq_store16(vq, vq->used, vq->used_addr, EVENT_FLAGS, flags, true);
}

void packed_disable_notify(struct vq *vq)
{
    device_event(vq, VRING_PACKED_EVENT_FLAG_DISABLE, 0);
}

bool packed_enable_notify(struct vq *vq)
{
    /* as split.c: ask about the first slot not seen available, which RX
     * may be ahead of (too few buffers for its frame) */
    uint32_t target = vq->seen_empty;
    device_event(vq, vq->dev->event_idx ? VRING_PACKED_EVENT_FLAG_DESC : VRING_PACKED_EVENT_FLAG_ENABLE, target);
    atomic_thread_fence(memory_order_seq_cst);
    return is_avail(desc_flags(vq, target), wrap_of(vq, target));
}

bool packed_should_interrupt(struct vq *vq)
{
    /* where the last check left off, whatever the driver's mode was then */
    uint32_t old = vq->signalled_used, now = vq->next_used;
    bool valid = vq->signalled_valid;
    vq->signalled_used = (uint16_t)now;
    vq->signalled_valid = true;
    uint16_t flags = vq_load16(vq, vq->avail, vq->avail_addr, EVENT_FLAGS, true);
    if (flags == VRING_PACKED_EVENT_FLAG_DISABLE)
        return false;
    if (flags != VRING_PACKED_EVENT_FLAG_DESC || !vq->dev->event_idx || !valid)
        return true;
    uint16_t off_wrap = vq_load16(vq, vq->avail, vq->avail_addr, EVENT_OFF_WRAP, false);
    uint32_t off = off_wrap & ~EVENT_WRAP;
    if (off >= vq->size)
        return true;                           /* nonsense: interrupt rather than stall */
    uint32_t event = (off_wrap & EVENT_WRAP) ? off : off + vq->size;
    /* vring_need_event over ring counters: did we step over the event? */
    return distance(vq, event, now) - 1 < distance(vq, old, now);
}
