/* split.c - the split virtqueue layout (virtio 1.2, 2.7): a descriptor
 * table, an avail ring of heads the driver fills and a used ring the
 * device fills, each with a free-running 16-bit index.  virtq.c dispatches
 * here and holds what this layout shares with the packed one. */
#include <errno.h>
#include <string.h>
#include "internal.h"

/* The rings' layout (2.7.6 and 2.7.8): le16 flags, le16 idx, then the
 * ring, then one le16 event field (used_event, avail_event). */
#define AVAIL_FLAGS   0
#define AVAIL_IDX     2
#define AVAIL_RING    4
#define AVAIL_ELEM    sizeof(uint16_t)             /* a descriptor head */
#define USED_FLAGS    0
#define USED_IDX      2
#define USED_RING     4
#define USED_ELEM     (2 * sizeof(uint32_t))        /* struct virtq_used_elem: id, len */
#define RING_EVENT    sizeof(uint16_t)
#define VRING_USED_F_NO_NOTIFY 1

static size_t avail_bytes(uint16_t size) { return AVAIL_RING + AVAIL_ELEM * (size_t)size + RING_EVENT; }
static size_t used_bytes(uint16_t size) { return USED_RING + USED_ELEM * (size_t)size + RING_EVENT; }

static uint16_t avail_load(struct vq *vq, size_t off, bool acquire)
{
    return vq_load16(vq, vq->avail, vq->avail_addr, off, acquire);
}

static void used_store16(struct vq *vq, size_t off, uint16_t v, bool release)
{
    vq_store16(vq, vq->used, vq->used_addr, off, v, release);
}

int split_map(struct vq *vq)
{
    struct vnic_mem *mem = &vq->dev->mem;
    if ((vq->desc_addr & 15) || (vq->avail_addr & 1) || (vq->used_addr & 3))
        return -EINVAL;
    vq->desc = mem_direct(mem, vq->desc_addr, (uint64_t)VQ_DESC_SIZE * vq->size, false);
    vq->avail = mem_direct(mem, vq->avail_addr, avail_bytes(vq->size), false);
    vq->used = mem_direct(mem, vq->used_addr, used_bytes(vq->size), true);
    return 0;
}

/* ---- driver -> device ---------------------------------------------------- */

/* Walk the chain from head (through at most one indirect table). */
static int walk(struct vq *vq, struct chain *c, uint16_t head)
{
    const void *table = vq->desc;
    uint64_t table_addr = vq->desc_addr;
    uint32_t table_size = vq->size, seen = 0;
    bool in_indirect = false;
    uint16_t i = head;
    for (;;) {
        struct vring_desc d;
        int err = vq_desc_copy(vq, table, table_addr, i, &d);
        if (err)
            return err;
        if (++seen > table_size)
            return -VNIC_ERR_DESC_LOOP;
        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (in_indirect || (d.flags & VRING_DESC_F_NEXT))
                return -VNIC_ERR_DESC_INDIRECT;
            if ((err = vq_indirect_table(vq, d.addr, d.len, &table, &table_size)))
                return err;
            table_addr = d.addr;
            in_indirect = true;
            seen = 0;
            i = 0;
            continue;
        }
        if ((err = vq_chain_add(vq, c, d.addr, d.len, d.flags & VRING_DESC_F_WRITE)))
            return err;
        if (!(d.flags & VRING_DESC_F_NEXT))
            return 0;
        i = d.next;
        if (i >= table_size)
            return -VNIC_ERR_DESC_INDEX;
    }
}

/* The ring slot of a free-running index: sizes are powers of two
 * (queue.c refuses others), so no division on the per-packet path. */
static uint16_t slot_of(const struct vq *vq, uint16_t idx)
{
    return idx & (uint16_t)(vq->size - 1);
}

/* How many heads the driver has made available beyond last_avail: the
 * index is read again only once those seen are used up (one acquire load
 * a batch, not a chain).  -VNIC_ERR_AVAIL_IDX if it claims more than the
 * ring holds. */
static int avail_count(struct vq *vq)
{
    uint16_t n = (uint16_t)(vq->avail_seen - vq->last_avail);
    if (n && n <= vq->size)
        return n;
    vq->avail_seen = avail_load(vq, AVAIL_IDX, true);
    n = (uint16_t)(vq->avail_seen - vq->last_avail);
    return unlikely(n > vq->size) ? -VNIC_ERR_AVAIL_IDX : n;
}

int split_pop(struct vq *vq, struct chain *c)
{
    int n = avail_count(vq);
    if (n <= 0)
        return n;
    uint16_t head = avail_load(vq, AVAIL_RING + AVAIL_ELEM * (size_t)slot_of(vq, vq->last_avail), false);
    if (head >= vq->size)
        return -VNIC_ERR_DESC_INDEX;
    vq_chain_start(c, head);
    int err = walk(vq, c, head);
    if (err)
        return err;
    vq->last_avail++;
    return 1;
}

/* ---- device -> driver ---------------------------------------------------- */

void split_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset)
{
    size_t slot = USED_RING + USED_ELEM * (size_t)slot_of(vq, (uint16_t)(vq->used_idx + offset));
    uint32_t elem[2] = { head, len };
    vq_store(vq, vq->used, vq->used_addr, slot, elem, sizeof(elem));
}

void split_publish_used(struct vq *vq, uint16_t count)
{
    vq->used_idx += count;
    /* release: the entries (and the buffers they describe) before the index */
    used_store16(vq, USED_IDX, vq->used_idx, true);
}

void split_disable_notify(struct vq *vq)
{
    if (!vq->dev->event_idx)
        used_store16(vq, USED_FLAGS, VRING_USED_F_NO_NOTIFY, false);
}

bool split_enable_notify(struct vq *vq)
{
    /* Compare against what the last look at the ring saw, not against
     * last_avail: RX may leave buffers unused because they are too few for
     * its frame (mergeable), and retrying on those would spin forever.  For
     * the same reason EVENT_IDX must ask for a kick on the next buffer
     * beyond those, not beyond last_avail, or the driver never kicks. */
    uint16_t seen = vq->avail_seen;
    if (vq->dev->event_idx)
        used_store16(vq, USED_RING + USED_ELEM * (size_t)vq->size, seen, false);
    else
        used_store16(vq, USED_FLAGS, 0, false);
    /* the driver may have added buffers before it saw our request */
    atomic_thread_fence(memory_order_seq_cst);
    return avail_load(vq, AVAIL_IDX, true) != seen;
}

bool split_should_interrupt(struct vq *vq)
{
    if (!vq->dev->event_idx)
        return !(avail_load(vq, AVAIL_FLAGS, false) & VRING_AVAIL_F_NO_INTERRUPT);
    uint16_t old = vq->signalled_used, now = vq->used_idx;
    bool valid = vq->signalled_valid;
    vq->signalled_used = now;
    vq->signalled_valid = true;
    if (!valid)
        return true;
    uint16_t event = avail_load(vq, AVAIL_RING + AVAIL_ELEM * (size_t)vq->size, false);
    /* vring_need_event: did used idx step over the driver's used_event? */
    return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}
