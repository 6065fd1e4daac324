/* fuzz_rx.c - the receive path: frames from the backend (virtio_net_hdr
 * as a TAP gives it, then the packet) into the guest's posted buffers
 * through rx_process(), with or without mergeable buffers, offloads,
 * hash reports and receive coalescing, as the input chooses.  The input
 * also picks how many buffers the guest posted and their size, and whether
 * injected faults (corruption, duplicates, lying checksums, drops) and a
 * capture (wire or guest side, into /dev/null) see the frames too, and
 * whether frames are read straight into the guest's buffers (one-copy
 * receive, coalescing there) or through the bounce buffer. */
#include <fcntl.h>
#include <string.h>
#include "harness.h"

#define RX_QSIZE 256

static const uint64_t fuzz_rx_features = 1ull << VNIC_F_GUEST_CSUM | 1ull << VNIC_F_GUEST_TSO4 |
    1ull << VNIC_F_GUEST_TSO6 | 1ull << VNIC_F_GUEST_ECN | 1ull << VNIC_F_GUEST_UFO |
    1ull << VNIC_F_GUEST_USO4 | 1ull << VNIC_F_GUEST_USO6 | 1ull << VNIC_F_MRG_RXBUF |
    1ull << VNIC_F_HASH_REPORT | 1ull << VNIC_F_CTRL_VQ | 1ull << VNIC_F_CTRL_RX |
    1ull << VNIC_F_CTRL_VLAN | 1ull << VNIC_F_RING_EVENT_IDX;

static void post_buffers(uint16_t count, uint32_t len)
{
    for (uint16_t i = 0; i < count; i++) {
        fuzz_desc(i, FUZZ_BUFS + (uint64_t)len * i, len, VRING_DESC_F_WRITE, 0);
        fuzz_avail(i, i, RX_QSIZE);
    }
    fuzz_avail_idx(count);
}

/* Frames copied for a capture, written to /dev/null by its thread. */
static void start_capture(struct vnic_dev *dev, uint32_t what)
{
    static int null_fd = -1;
    if (null_fd < 0)
        null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct vnic_capture_config c = { .fd = null_fd, .snaplen = 256, .directions = VNIC_CAPTURE_BOTH,
                                     .what = what, .ring_bytes = VNIC_CAPTURE_RING_MIN };
    vnic_capture_start(dev, &c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    uint64_t features = fuzz_u64(&in) & fuzz_rx_features;
    uint8_t cfg = fuzz_u8(&in);
    uint16_t count = (uint16_t)(1 + fuzz_u8(&in));          /* 1..256 buffers */
    uint32_t len = 1 + fuzz_u16(&in) % 4096;
    if ((uint64_t)count * len > FUZZ_MEM - FUZZ_BUFS)
        count = (uint16_t)((FUZZ_MEM - FUZZ_BUFS) / len);
    struct vnic_dev *dev = fuzz_device(features, &in);
    vnic_dev_set_rx_coalesce(dev, cfg & 1);
    vnic_dev_set_rx_copy(dev, cfg & 16 ? VNIC_RX_COPY_BOUNCE : VNIC_RX_COPY_DIRECT);
    struct vq *vq = fuzz_queue(dev, 0, RX_QSIZE);
    if (!vq)
        return 0;
    post_buffers(count, len);
    if (cfg & 2)
        vnic_faults_set(dev, 0, VNIC_CAPTURE_RX, &(struct vnic_faults){
            .drop_ppm = 100000, .duplicate_ppm = 500000, .corrupt_ppm = 500000,
            .bad_csum_ppm = 500000, .seed = cfg });
    if (cfg & 4)
        start_capture(dev, cfg & 8 ? VNIC_CAPTURE_GUEST : VNIC_CAPTURE_WIRE);
    struct qpair *qp = &dev->qp[0];
    for (int i = 0; i < 64 && (rx_process(qp) > 0 || in.n); i++)
        flows_batch_begin(&qp->flows);
    return 0;
}
