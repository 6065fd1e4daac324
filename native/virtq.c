/* virtq.c - the one virtqueue interface tx.c, rx.c and ctrl.c call, and
 * what both ring layouts share: address translation of a chain's buffers,
 * the chain and indirect-table limits, ring access that falls back to DMA
 * messages, and the counters of ring failures.  The layouts themselves are
 * split.c (virtio 1.2, 2.7) and packed.c (2.8); a queue is one or the
 * other for as long as the driver's features last (VIRTIO_F_RING_PACKED).
 *
 * Security model: ring memory is shared with a guest that may be hostile.
 * Every descriptor is copied once into a local and validated before use;
 * every walk is bounded by the ring's size or the indirect table's; every
 * buffer address goes through mem_piece, which refuses what is not guest
 * memory.  A violation returns -enum vnic_error and the caller fails the
 * device (NEEDS_RESET), counted by reason. */
#include <errno.h>
#include <string.h>
#include "internal.h"

_Static_assert(sizeof(struct vring_desc) == VQ_DESC_SIZE, "virtq_desc");
_Static_assert(sizeof(struct vring_packed_desc) == VQ_DESC_SIZE, "pvirtq_desc");

/* ---- ring access --------------------------------------------------------- */

void vq_ring_dma_failed(struct vq *vq)
{
    struct vnic_dev *dev = vq->dev;
    int pair = vq->index / 2 < dev->nqp ? vq->index / 2 : 0;
    dev_fail(dev, VNIC_ERR_RING_DMA, &dev->stats[pair]);
}

/* ---- chains -------------------------------------------------------------- */

void vq_chain_start(struct chain *c, uint16_t head)
{
    c->head = head;
    c->nout = c->nin = 0;
    c->out_len = c->in_len = 0;
}

int vq_chain_add(struct vq *vq, struct chain *c, uint64_t addr, uint32_t len, bool write)
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

int vq_indirect_table(struct vq *vq, uint64_t addr, uint32_t len, const void **table, uint32_t *entries)
{
    if (!vq->dev->indirect || len == 0 || (len % VQ_DESC_SIZE) || len / VQ_DESC_SIZE > VNIC_MAX_INDIRECT)
        return -VNIC_ERR_DESC_INDIRECT;
    *table = mem_direct(&vq->dev->mem, addr, len, false);
    if (!*table && !mem_piece(&vq->dev->mem, addr, len, false, &(uint8_t *){0}))
        return -VNIC_ERR_DMA;
    *entries = len / VQ_DESC_SIZE;
    return 0;
}

/* ---- the interface: one layout or the other ------------------------------ */

int vq_map(struct vq *vq)
{
    struct vnic_mem *mem = &vq->dev->mem;
    uint8_t *probe;
    if (!vq->configured || vq->size == 0)
        return -EINVAL;
    vq->packed = vq->dev->features >> VNIC_F_RING_PACKED & 1;
    /* Rings must be in guest memory; direct access where it is mapped. */
    if (!mem_piece(mem, vq->desc_addr, 1, false, &probe) ||
        !mem_piece(mem, vq->avail_addr, 1, false, &probe) ||
        !mem_piece(mem, vq->used_addr, 1, true, &probe))
        return -EFAULT;
    return vq->packed ? packed_map(vq) : split_map(vq);
}

int vq_pop(struct vq *vq, struct chain *c)
{
    return vq->packed ? packed_pop(vq, c) : split_pop(vq, c);
}

void vq_rewind(struct vq *vq, uint16_t n)
{
    if (vq->packed)
        packed_rewind(vq, n);
    else
        vq->last_avail -= n;
}

void vq_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset)
{
    if (vq->packed)
        packed_push_used(vq, head, len, offset);
    else
        split_push_used(vq, head, len, offset);
}

void vq_publish_used(struct vq *vq, uint16_t count)
{
    if (vq->packed)
        packed_publish_used(vq, count);
    else
        split_publish_used(vq, count);
}

bool vq_enable_notify(struct vq *vq)
{
    return vq->packed ? packed_enable_notify(vq) : split_enable_notify(vq);
}

void vq_disable_notify(struct vq *vq)
{
    if (vq->packed)
        packed_disable_notify(vq);
    else
        split_disable_notify(vq);
}

bool vq_should_interrupt(struct vq *vq)
{
    atomic_thread_fence(memory_order_seq_cst);
    return vq->packed ? packed_should_interrupt(vq) : split_should_interrupt(vq);
}
