/* fuzz_virtq.c - both ring layouts' chain walk (vq_pop) on rings the input
 * writes: split (descriptor table, avail ring) or packed (descriptor ring
 * of any size up to 256, power of two or not, and the driver's event
 * suppression), and whatever indirect tables and buffers it places after
 * them.  Every chain popped has its pieces read through the host pointers
 * the walk translated, so a translation outside guest memory is an ASan
 * report; a bad chain must end in -enum vnic_error, never a loop.  Some
 * pops are given back (vq_rewind, as RX does) and popped again, and the
 * used entries published, so that the packed ring's counters are driven
 * through wraps and rewinds. */
#include <string.h>
#include "harness.h"

static struct chain chain;

static void read_pieces(const struct chain *c)
{
    volatile uint8_t sum = 0;
    for (int i = 0; i < c->nout + c->nin; i++)
        if (c->seg[i].host)
            for (uint32_t j = 0; j < c->seg[i].len; j += 61)
                sum ^= c->seg[i].host[j];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    uint8_t cfg = fuzz_u8(&in), rewinds = fuzz_u8(&in);
    bool packed = cfg & 0x80;
    uint16_t qsize = packed ? (uint16_t)(1 + fuzz_u8(&in)) : (uint16_t)(1u << (cfg % 9));
    uint64_t features = (cfg & 0x10 ? 1ull << VNIC_F_RING_INDIRECT_DESC : 0) |
                        (cfg & 0x20 ? 1ull << VNIC_F_RING_EVENT_IDX : 0) |
                        (packed ? 1ull << VNIC_F_RING_PACKED : 0);
    struct vnic_dev *dev = fuzz_device(features, NULL);
    uint8_t *g = fuzz_guest();
    fuzz_take(&in, g + FUZZ_DESC, (size_t)qsize * VQ_DESC_SIZE);
    fuzz_take(&in, g + FUZZ_AVAIL, packed ? 4 : 6 + 2 * (size_t)qsize);
    fuzz_take(&in, g + FUZZ_BUFS, FUZZ_MEM - FUZZ_BUFS);
    struct vq *vq = fuzz_queue(dev, cfg & 0x40 ? 0 : 1, qsize);
    if (!vq)
        return 0;
    uint16_t popped = 0;
    for (int i = 0; i < 2 * qsize + 2; i++) {
        int r = vq_pop(vq, &chain);
        if (r <= 0)
            break;
        read_pieces(&chain);
        vq_push_used(vq, chain.head, (uint32_t)chain.in_len, popped++);
        if (rewinds & 1 && popped) {          /* give the last one back, pop it again */
            vq_rewind(vq, 1);
            popped--;
        }
        rewinds = (uint8_t)(rewinds >> 1 | rewinds << 7);
        if (popped && (rewinds & 6) == 6) {   /* publish mid-way: the used side moves */
            vq_publish_used(vq, popped);
            popped = 0;
        }
    }
    vq_publish_used(vq, popped);
    vq_should_interrupt(vq);
    vq_enable_notify(vq);
    return 0;
}
