/* fuzz_tx.c - the transmit path: virtio_net_hdr plus frame, as the guest
 * posts them, through tx_process() into checksum completion, TSO/USO/UFO
 * segmentation or passthrough checks.  The input picks the negotiated
 * features and the TX mode, then gives frames (header included), each
 * split over one to four descriptors as it says.  The backend reads every
 * byte it is handed.  The mode byte may also turn on injected faults
 * (drops, corrupted copies, duplicates) on the frames sent. */
#include <string.h>
#include "harness.h"

#define TX_QSIZE 256

/* the guest's TX features; the rest are not the TX path's business */
static const uint64_t fuzz_tx_features = 1ull << VNIC_F_CSUM | 1ull << VNIC_F_HOST_TSO4 |
    1ull << VNIC_F_HOST_TSO6 | 1ull << VNIC_F_HOST_ECN | 1ull << VNIC_F_HOST_UFO |
    1ull << VNIC_F_HOST_USO | 1ull << VNIC_F_HASH_REPORT | 1ull << VNIC_F_MRG_RXBUF |
    1ull << VNIC_F_RING_INDIRECT_DESC | 1ull << VNIC_F_RING_EVENT_IDX;

/* One frame of the input as a chain of 1-4 descriptors at desc; how many
 * descriptors it took, 0 when the input or guest memory ran out. */
static uint16_t post_frame(struct fuzz_in *in, uint16_t desc, uint64_t *at)
{
    uint16_t len = fuzz_u16(in);
    uint8_t split = fuzz_u8(in);
    if (in->n == 0 || *at + len > FUZZ_MEM || desc + 4 > TX_QSIZE)
        return 0;
    uint32_t got = (uint32_t)fuzz_take(in, fuzz_guest() + *at, len);
    int pieces = 1 + split % 4;
    uint32_t off = 0;
    for (int i = 0; i < pieces; i++) {
        uint32_t n = i == pieces - 1 ? got - off : (got - off) * (uint32_t)(split >> 2 & 3) / 4;
        bool last = i == pieces - 1;
        fuzz_desc((uint16_t)(desc + i), *at + off, n, last ? 0 : VRING_DESC_F_NEXT, (uint16_t)(desc + i + 1));
        off += n;
    }
    *at += (got + 7) & ~7u;
    return (uint16_t)pieces;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    uint64_t features = fuzz_u64(&in) & fuzz_tx_features;
    uint8_t mode = fuzz_u8(&in);
    struct vnic_dev *dev = fuzz_device(features, NULL);
    vnic_dev_set_tx_mode(dev, mode & 1 ? VNIC_TX_PASSTHROUGH : VNIC_TX_SEGMENT);
    struct vq *vq = fuzz_queue(dev, 1, TX_QSIZE);
    if (!vq)
        return 0;
    if (mode & 2)
        vnic_faults_set(dev, 0, VNIC_CAPTURE_TX, &(struct vnic_faults){
            .drop_ppm = 100000, .duplicate_ppm = 500000, .corrupt_ppm = 500000, .seed = mode });
    fuzz_post_chains(&in, TX_QSIZE, post_frame);
    struct qpair *qp = &dev->qp[0];
    for (int i = 0; i < 8 && tx_process(qp) > 0; i++)
        flows_batch_begin(&qp->flows);
    return 0;
}
