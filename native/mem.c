/* mem.c - the guest memory (DMA) table and bounds-checked translation.
 *
 * Every guest address the data plane touches goes through mem_piece():
 * a range is accepted only if it lies inside a region QEMU mapped, checked
 * without overflow.  Regions without a host mapping are reached through
 * DMA_READ/DMA_WRITE messages on the channel. */
#include <errno.h>
#include <string.h>
#include "internal.h"

/* Binary search for the region containing iova; -1 if none. */
static int find_region(const struct vnic_mem *mem, uint64_t iova)
{
    int lo = 0, hi = mem->count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const struct mem_region *r = &mem->region[mid];
        if (iova < r->iova)
            hi = mid - 1;
        else if (iova - r->iova >= r->len)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

uint64_t mem_piece(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write, uint8_t **host)
{
    int i = find_region(mem, iova);
    if (i < 0 || len == 0)
        return 0;
    const struct mem_region *r = &mem->region[i];
    if (write && !r->writable)
        return 0;
    uint64_t off = iova - r->iova;
    uint64_t avail = r->len - off;
    *host = r->host ? r->host + off : NULL;
    return len < avail ? len : avail;
}

void *mem_direct(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write)
{
    uint8_t *host;
    if (mem_piece(mem, iova, len, write, &host) != len)
        return NULL;
    return host;
}

int mem_copy_from(struct vnic_mem *mem, uint64_t iova, void *dst, uint64_t len)
{
    uint8_t *out = dst;
    while (len) {
        uint8_t *host;
        uint64_t n = mem_piece(mem, iova, len, false, &host);
        if (!n)
            return -EFAULT;
        if (host)
            memcpy(out, host, n);
        else if (!mem->chan || chan_dma_read(mem->chan, iova, out, n) < 0)
            return -EIO;
        out += n;
        iova += n;
        len -= n;
    }
    return 0;
}

int mem_copy_to(struct vnic_mem *mem, uint64_t iova, const void *src, uint64_t len)
{
    const uint8_t *in = src;
    while (len) {
        uint8_t *host;
        uint64_t n = mem_piece(mem, iova, len, true, &host);
        if (!n)
            return -EFAULT;
        if (host)
            memcpy(host, in, n);
        else if (!mem->chan || chan_dma_write(mem->chan, iova, in, n) < 0)
            return -EIO;
        in += n;
        iova += n;
        len -= n;
    }
    return 0;
}

/* ---- table maintenance (control plane, workers stopped) --------------- */

int vnic_mem_add(struct vnic_dev *dev, uint64_t iova, uint64_t len, void *host, int writable)
{
    struct vnic_mem *mem = &dev->mem;
    if (len == 0 || iova + len - 1 < iova)
        return -EINVAL;
    if (mem->count == VNIC_MAX_DMA_REGIONS)
        return -ENOSPC;
    int pos = 0;
    while (pos < mem->count && mem->region[pos].iova < iova)
        pos++;
    /* refuse overlap with the neighbours */
    if (pos > 0) {
        const struct mem_region *p = &mem->region[pos - 1];
        if (p->iova + p->len > iova)
            return -EEXIST;
    }
    if (pos < mem->count && iova + len > mem->region[pos].iova)
        return -EEXIST;
    memmove(&mem->region[pos + 1], &mem->region[pos],
            (size_t)(mem->count - pos) * sizeof(mem->region[0]));
    mem->region[pos] = (struct mem_region){ iova, len, host, writable != 0 };
    mem->count++;
    return 0;
}

int vnic_mem_remove(struct vnic_dev *dev, uint64_t iova, uint64_t len)
{
    struct vnic_mem *mem = &dev->mem;
    for (int i = 0; i < mem->count; i++) {
        if (mem->region[i].iova == iova && mem->region[i].len == len) {
            memmove(&mem->region[i], &mem->region[i + 1],
                    (size_t)(mem->count - i - 1) * sizeof(mem->region[0]));
            mem->count--;
            return 0;
        }
    }
    return -ENOENT;
}

void vnic_mem_clear(struct vnic_dev *dev)
{
    dev->mem.count = 0;
}

int vnic_mem_count(struct vnic_dev *dev)
{
    return dev->mem.count;
}

int vnic_mem_read(struct vnic_dev *dev, uint64_t iova, void *dst, uint64_t len)
{
    return mem_copy_from(&dev->mem, iova, dst, len);
}

int vnic_mem_write(struct vnic_dev *dev, uint64_t iova, const void *src, uint64_t len)
{
    return mem_copy_to(&dev->mem, iova, src, len);
}
