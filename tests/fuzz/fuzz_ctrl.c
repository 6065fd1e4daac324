/* fuzz_ctrl.c - control-queue commands (virtio 1.2, 5.1.6.5): every
 * class and command with any payload, as the guest posts them (the
 * command split over one to three readable descriptors, then the
 * writable ack byte, or a broken chain when the input asks), through
 * ctrl_process().  The input picks the negotiated features (RX mode,
 * MAC and VLAN tables, MQ with RSS and hash reports, guest offloads,
 * announce). */
#include <string.h>
#include "harness.h"

#define CTRL_QSIZE 64

static const uint64_t fuzz_ctrl_features = 1ull << VNIC_F_CTRL_RX | 1ull << VNIC_F_CTRL_VLAN |
    1ull << VNIC_F_CTRL_RX_EXTRA | 1ull << VNIC_F_GUEST_ANNOUNCE | 1ull << VNIC_F_MQ |
    1ull << VNIC_F_CTRL_MAC_ADDR | 1ull << VNIC_F_CTRL_GUEST_OFFLOADS | 1ull << VNIC_F_RSS |
    1ull << VNIC_F_HASH_REPORT | 1ull << VNIC_F_GUEST_CSUM | 1ull << VNIC_F_GUEST_TSO4 |
    1ull << VNIC_F_GUEST_TSO6 | 1ull << VNIC_F_GUEST_UFO | 1ull << VNIC_F_GUEST_USO4;

static struct chain chain;

/* One command of the input as a chain at desc; descriptors used, 0 when
 * the input or the ring ran out. */
static uint16_t post_command(struct fuzz_in *in, uint16_t desc, uint64_t *at)
{
    uint16_t len = fuzz_u16(in) % 8192;
    uint8_t shape = fuzz_u8(in);
    if (in->n == 0 || *at + len + 8 > FUZZ_MEM || desc + 4 > CTRL_QSIZE)
        return 0;
    uint32_t got = (uint32_t)fuzz_take(in, fuzz_guest() + *at, len);
    int pieces = 1 + shape % 3;
    uint32_t off = 0;
    for (int i = 0; i < pieces; i++) {
        uint32_t n = i == pieces - 1 ? got - off : (got - off) / 2;
        fuzz_desc((uint16_t)(desc + i), *at + off, n, VRING_DESC_F_NEXT, (uint16_t)(desc + i + 1));
        off += n;
    }
    /* the ack: normally one writable byte; the input may break it */
    uint16_t ack_flags = shape & 0x80 ? 0 : VRING_DESC_F_WRITE;
    fuzz_desc((uint16_t)(desc + pieces), *at + got, shape & 0x40 ? 0 : 1, ack_flags, 0);
    *at += (got + 8 + 7) & ~7u;
    return (uint16_t)(pieces + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    uint64_t features = (fuzz_u64(&in) & fuzz_ctrl_features) | 1ull << VNIC_F_CTRL_VQ;
    struct vnic_dev *dev = fuzz_device(features, NULL);
    int pairs = features >> VNIC_F_MQ & 1 ? dev->nqp : 1;
    struct vq *vq = fuzz_queue(dev, 2 * pairs, CTRL_QSIZE);
    if (!vq)
        return 0;
    fuzz_post_chains(&in, CTRL_QSIZE, post_command);
    for (int i = 0; i < 4 && !vnic_dev_error(dev) && ctrl_process(dev, &chain, &dev->stats[0]) > 0; i++)
        ;
    return 0;
}
