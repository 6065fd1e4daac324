/* virtq.c - split virtqueue engine (virtio 1.2, section 2.7).
 *
 * Ring memory is shared with a guest that may be hostile: every value is
 * read once into a local, validated, and only then used.  Rings in mapped
 * memory are accessed directly; rings in message-based memory go through
 * mem_copy_* (slow but correct). */
#include <errno.h>
#include <string.h>
#include "internal.h"

/* The rings' layout (virtio 1.2, 2.7.6 and 2.7.8): le16 flags, le16 idx,
 * then the ring, then one le16 event field (used_event, avail_event). */
#define AVAIL_FLAGS   0
#define AVAIL_IDX     2
#define AVAIL_RING    4
#define AVAIL_ELEM    sizeof(uint16_t)             /* a descriptor head */
#define USED_FLAGS    0
#define USED_IDX      2
#define USED_RING     4
#define USED_ELEM     (2 * sizeof(uint32_t))        /* struct virtq_used_elem: id, len */
#define RING_EVENT    sizeof(uint16_t)
#define DESC_SIZE     sizeof(struct vring_desc)
#define VRING_USED_F_NO_NOTIFY 1

_Static_assert(sizeof(struct vring_desc) == 16, "virtq_desc");

static size_t avail_bytes(uint16_t size) { return AVAIL_RING + AVAIL_ELEM * (size_t)size + RING_EVENT; }
static size_t used_bytes(uint16_t size) { return USED_RING + USED_ELEM * (size_t)size + RING_EVENT; }

/* ---- raw ring access ---------------------------------------------------- */

/* A ring access through DMA messages failed: counted with the queue's pair
 * (the control queue's with pair 0, as its commands are). */
static void ring_dma_failed(struct vq *vq)
{
    struct vnic_dev *dev = vq->dev;
    int pair = vq->index / 2 < dev->nqp ? vq->index / 2 : 0;
    dev_fail(dev, VNIC_ERR_RING_DMA, &dev->stats[pair]);
}

static uint16_t ring_load16(struct vq *vq, uint8_t *base, uint64_t addr, size_t off, bool acquire)
{
    uint16_t v = 0;
    if (base)
        v = __atomic_load_n((uint16_t *)(base + off), acquire ? __ATOMIC_ACQUIRE : __ATOMIC_RELAXED);
    else if (mem_copy_from(&vq->dev->mem, addr + off, &v, 2) < 0)
        ring_dma_failed(vq);
    return v;
}

static void ring_store16(struct vq *vq, uint8_t *base, uint64_t addr, size_t off, uint16_t v, bool release)
{
    if (base)
        __atomic_store_n((uint16_t *)(base + off), v, release ? __ATOMIC_RELEASE : __ATOMIC_RELAXED);
    else if (mem_copy_to(&vq->dev->mem, addr + off, &v, 2) < 0)
        ring_dma_failed(vq);
}

static uint16_t avail_load(struct vq *vq, size_t off, bool acquire)
{
    return ring_load16(vq, (uint8_t *)vq->avail, vq->avail_addr, off, acquire);
}

static void used_store16(struct vq *vq, size_t off, uint16_t v, bool release)
{
    ring_store16(vq, (uint8_t *)vq->used, vq->used_addr, off, v, release);
}

static int desc_load(struct vq *vq, const struct vring_desc *table, uint64_t table_addr,
                     uint16_t i, struct vring_desc *out)
{
    if (table) {
        /* one copy: the guest may rewrite the descriptor under us */
        memcpy(out, (const void *)&table[i], sizeof(*out));
        return 0;
    }
    if (mem_copy_from(&vq->dev->mem, table_addr + (uint64_t)DESC_SIZE * i, out, sizeof(*out)) < 0)
        return -VNIC_ERR_DMA;
    return 0;
}

/* ---- setup --------------------------------------------------------------- */

int vq_map(struct vq *vq)
{
    struct vnic_mem *mem = &vq->dev->mem;
    uint8_t *probe;
    if (!vq->configured || vq->size == 0)
        return -EINVAL;
    if ((vq->desc_addr & 15) || (vq->avail_addr & 1) || (vq->used_addr & 3))
        return -EINVAL;
    /* Rings must be in guest memory; direct access where it is mapped. */
    if (!mem_piece(mem, vq->desc_addr, 1, false, &probe) ||
        !mem_piece(mem, vq->avail_addr, 1, false, &probe) ||
        !mem_piece(mem, vq->used_addr, 1, true, &probe))
        return -EFAULT;
    vq->desc = mem_direct(mem, vq->desc_addr, (uint64_t)DESC_SIZE * vq->size, false);
    vq->avail = mem_direct(mem, vq->avail_addr, avail_bytes(vq->size), false);
    vq->used = mem_direct(mem, vq->used_addr, used_bytes(vq->size), true);
    return 0;
}

/* ---- driver -> device ---------------------------------------------------- */

bool vq_has_avail(struct vq *vq, uint16_t *count)
{
    vq->avail_seen = avail_load(vq, AVAIL_IDX, true);
    uint16_t n = (uint16_t)(vq->avail_seen - vq->last_avail);
    if (count)
        *count = n;
    return n != 0;
}

/* Append the guest range [addr, addr+len) to the chain, split where it
 * crosses mapped regions. */
static int chain_add(struct vq *vq, struct chain *c, uint64_t addr, uint32_t len, bool write)
{
    if (len == 0)
        return -VNIC_ERR_DESC_ZERO_LEN;
    if (!write && c->nin)
        return -VNIC_ERR_DESC_DIRECTION;
    while (len) {
        uint8_t *host;
        uint64_t n = mem_piece(&vq->dev->mem, addr, len, write, &host);
        if (!n)
            return -VNIC_ERR_DMA;
        if (c->nout + c->nin == VNIC_MAX_SEGS)
            return -VNIC_ERR_DESC_LOOP;
        c->seg[c->nout + c->nin] = (struct seg){ addr, host, (uint32_t)n };
        if (write) {
            c->nin++;
            c->in_len += n;
        } else {
            c->nout++;
            c->out_len += n;
        }
        addr += n;
        len -= (uint32_t)n;
    }
    return 0;
}

int vq_pop(struct vq *vq, struct chain *c)
{
    uint16_t n;
    if (!vq_has_avail(vq, &n))
        return 0;
    if (n > vq->size)
        return -VNIC_ERR_AVAIL_IDX;
    uint16_t head = avail_load(vq, AVAIL_RING + AVAIL_ELEM * (size_t)(vq->last_avail % vq->size), false);
    if (head >= vq->size)
        return -VNIC_ERR_DESC_INDEX;

    c->head = head;
    c->nout = c->nin = 0;
    c->out_len = c->in_len = 0;

    const struct vring_desc *table = vq->desc;
    uint64_t table_addr = vq->desc_addr;
    uint32_t table_size = vq->size;
    bool in_indirect = false;
    uint32_t seen = 0;
    uint16_t i = head;
    for (;;) {
        struct vring_desc d;
        int err = desc_load(vq, table, table_addr, i, &d);
        if (err)
            return err;
        if (++seen > table_size)
            return -VNIC_ERR_DESC_LOOP;
        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (in_indirect || !vq->dev->indirect || (d.flags & VRING_DESC_F_NEXT) ||
                d.len == 0 || (d.len % DESC_SIZE) || d.len / DESC_SIZE > VNIC_MAX_INDIRECT)
                return -VNIC_ERR_DESC_INDIRECT;
            table_addr = d.addr;
            table_size = d.len / DESC_SIZE;
            table = mem_direct(&vq->dev->mem, d.addr, d.len, false);
            if (!table && !mem_piece(&vq->dev->mem, d.addr, d.len, false, &(uint8_t *){0}))
                return -VNIC_ERR_DMA;
            in_indirect = true;
            seen = 0;
            i = 0;
            continue;
        }
        err = chain_add(vq, c, d.addr, d.len, d.flags & VRING_DESC_F_WRITE);
        if (err)
            return err;
        if (!(d.flags & VRING_DESC_F_NEXT))
            break;
        i = d.next;
        if (i >= table_size)
            return -VNIC_ERR_DESC_INDEX;
    }
    vq->last_avail++;
    return 1;
}

void vq_rewind(struct vq *vq, uint16_t n)
{
    vq->last_avail -= n;
}

/* ---- device -> driver ---------------------------------------------------- */

void vq_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset)
{
    size_t slot = USED_RING + USED_ELEM * (size_t)((uint16_t)(vq->used_idx + offset) % vq->size);
    uint32_t elem[2] = { head, len };
    if (vq->used)
        memcpy((uint8_t *)vq->used + slot, elem, sizeof(elem));
    else if (mem_copy_to(&vq->dev->mem, vq->used_addr + slot, elem, sizeof(elem)) < 0)
        ring_dma_failed(vq);
}

void vq_publish_used(struct vq *vq, uint16_t count)
{
    vq->used_idx += count;
    /* release: the entries (and the buffers they describe) before the index */
    used_store16(vq, USED_IDX, vq->used_idx, true);
}

void vq_disable_notify(struct vq *vq)
{
    if (!vq->dev->event_idx)
        used_store16(vq, USED_FLAGS, VRING_USED_F_NO_NOTIFY, false);
}

bool vq_enable_notify(struct vq *vq)
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

bool vq_should_interrupt(struct vq *vq)
{
    atomic_thread_fence(memory_order_seq_cst);
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
