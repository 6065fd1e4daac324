/* bench.c - the TX queue path measured without a guest: a synthetic driver
 * in host memory (rings and frames in one region registered as guest
 * memory) feeds the same tx_process() the workers run, into the null
 * backend.  Used by `vnic bench engine`; never on the data path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

#define BENCH_QSIZE 256
#define BENCH_IOVA  0x100000000ull

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

double vnic_bench_tx_path(int frame_size, int batch, int rounds)
{
    if (frame_size < 14 || frame_size > 9000 || batch < 1 || batch > BENCH_QSIZE || rounds < 1)
        return -EINVAL;
    size_t slot = (size_t)(VNIC_NET_HDR_LEN + frame_size + 63) & ~(size_t)63;
    size_t rings = 16 * BENCH_QSIZE + 8192 + 8192;
    size_t size = rings + slot * BENCH_QSIZE;
    uint8_t *mem = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    struct vnic_dev *dev = vnic_dev_new(1);
    if (!mem || !dev) {
        free(mem);
        vnic_dev_free(dev);
        return -ENOMEM;
    }
    memset(mem, 0, size);
    vnic_mem_add(dev, BENCH_IOVA, size, mem, 1);
    uint64_t desc = BENCH_IOVA, avail = desc + 16 * BENCH_QSIZE, used = avail + 8192;
    vnic_dev_set_features(dev, 1ull << 32 | 1ull << VIRTIO_F_EVENT_IDX);
    vnic_queue_setup(dev, 1, BENCH_QSIZE, desc, avail, used);
    struct qpair *qp = &dev->qp[0];
    qp->tx.enabled = true;
    vq_map(&qp->tx);

    /* one descriptor per frame: zero virtio header + an Ethernet frame */
    struct vring_desc *d = (struct vring_desc *)mem;
    for (int i = 0; i < BENCH_QSIZE; i++) {
        uint8_t *buf = mem + rings + slot * (size_t)i;
        memset(buf + VNIC_NET_HDR_LEN, 0xab, (size_t)frame_size);
        d[i] = (struct vring_desc){ BENCH_IOVA + rings + slot * (size_t)i,
                                    (uint32_t)(VNIC_NET_HDR_LEN + frame_size), 0, 0 };
    }
    uint16_t *av = (uint16_t *)(mem + (avail - BENCH_IOVA));
    uint16_t idx = 0;
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < batch; i++)
            av[2 + (idx + i) % BENCH_QSIZE] = (uint16_t)((idx + i) % BENCH_QSIZE);
        idx = (uint16_t)(idx + batch);
        double t0 = now_ns();
        __atomic_store_n(&av[1], idx, __ATOMIC_RELEASE);      /* the driver's publish */
        while (tx_process(qp) > 0)
            ;
        total += now_ns() - t0;
    }
    uint64_t sent = dev->stats[0].tx_packets;
    vnic_dev_free(dev);
    free(mem);
    if (sent != (uint64_t)batch * (uint64_t)rounds)
        return -EIO;
    return total / (double)sent;
}

double vnic_bench_rx_path(int frame_size, int batch, int rounds)
{
    const size_t buf = 1536;              /* Linux's usual mergeable buffer */
    size_t per_frame = (VNIC_NET_HDR_LEN + (size_t)frame_size + buf - 1) / buf;
    if (frame_size < 14 || frame_size > 9000 || batch < 1 || rounds < 1 ||
        (size_t)batch * per_frame > BENCH_QSIZE)
        return -EINVAL;
    size_t rings = 16 * BENCH_QSIZE + 8192 + 8192;
    size_t size = rings + buf * BENCH_QSIZE;
    uint8_t *mem = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    uint8_t *frame = calloc(1, VNIC_NET_HDR_LEN + (size_t)frame_size);
    struct vnic_dev *dev = vnic_dev_new(1);
    if (!mem || !dev || !frame) {
        free(mem);
        free(frame);
        vnic_dev_free(dev);
        return -ENOMEM;
    }
    memset(mem, 0, size);
    memset(frame + VNIC_NET_HDR_LEN, 0xcd, (size_t)frame_size);
    vnic_mem_add(dev, BENCH_IOVA, size, mem, 1);
    uint64_t desc = BENCH_IOVA, avail = desc + 16 * BENCH_QSIZE, used = avail + 8192;
    vnic_dev_set_features(dev, 1ull << 32 | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_NET_F_MRG_RXBUF);
    vnic_queue_setup(dev, 0, BENCH_QSIZE, desc, avail, used);
    struct qpair *qp = &dev->qp[0];
    qp->rx.enabled = true;
    vq_map(&qp->rx);
    qp->bench_frame = frame;
    qp->bench_len = VNIC_NET_HDR_LEN + (uint32_t)frame_size;

    struct vring_desc *d = (struct vring_desc *)mem;
    uint16_t *av = (uint16_t *)(mem + (avail - BENCH_IOVA));
    for (int i = 0; i < BENCH_QSIZE; i++) {
        d[i] = (struct vring_desc){ BENCH_IOVA + rings + buf * (size_t)i, (uint32_t)buf, VRING_DESC_F_WRITE, 0 };
        av[2 + i] = (uint16_t)i;
    }
    uint16_t posted = BENCH_QSIZE;        /* buffers handed to the device so far */
    __atomic_store_n(&av[1], posted, __ATOMIC_RELEASE);
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        uint16_t before = qp->rx.last_avail;
        qp->bench_left = (uint32_t)batch;
        double t0 = now_ns();
        while (rx_process(qp) > 0)
            ;
        total += now_ns() - t0;
        /* the driver hands back the buffers just used, in the same order */
        for (uint16_t u = before; u != qp->rx.last_avail; u++, posted++)
            av[2 + posted % BENCH_QSIZE] = (uint16_t)(u % BENCH_QSIZE);
        __atomic_store_n(&av[1], posted, __ATOMIC_RELEASE);
    }
    uint64_t got = dev->stats[0].rx_packets;
    vnic_dev_free(dev);
    free(mem);
    free(frame);
    if (got != (uint64_t)batch * (uint64_t)rounds)
        return -EIO;
    return total / (double)got;
}
