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
    qp->bench_frames = frame;
    qp->bench_len = VNIC_NET_HDR_LEN + (uint32_t)frame_size;
    qp->bench_stride = qp->bench_len;
    qp->bench_count = 1;

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

/* A TCP/IPv4 segment with the virtio header a local sender's TAP gives:
 * partial checksum, so coalescing is measured without verification. */
static void make_segment(uint8_t *buf, uint32_t seq, uint16_t id, uint32_t mss)
{
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)buf;
    memset(h, 0, sizeof(*h));
    h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h->csum_start = 34;
    h->csum_offset = 16;
    uint8_t *f = buf + VNIC_NET_HDR_LEN;
    memset(f, 0, 54);
    f[12] = 0x08;                                   /* IPv4 */
    uint8_t *ip = f + 14, *tcp = ip + 20;
    ip[0] = 0x45;
    uint16_t tot = (uint16_t)(40 + mss);
    ip[2] = (uint8_t)(tot >> 8); ip[3] = (uint8_t)tot;
    ip[4] = (uint8_t)(id >> 8); ip[5] = (uint8_t)id;
    ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
    ip[12] = 192; ip[14] = 2; ip[15] = 1; ip[16] = 192; ip[18] = 2; ip[19] = 2;
    tcp[0] = 0x14; tcp[1] = 0x51; tcp[2] = 0x9c; tcp[3] = 0x40;
    tcp[4] = (uint8_t)(seq >> 24); tcp[5] = (uint8_t)(seq >> 16); tcp[6] = (uint8_t)(seq >> 8); tcp[7] = (uint8_t)seq;
    tcp[12] = 0x50; tcp[13] = 0x10;                 /* ACK */
    memset(f + 54, 0x5a, mss);
}

double vnic_bench_coalesce(int segs, int rounds)
{
    const uint32_t mss = 1448, buf = 4096;
    uint32_t frame_len = VNIC_NET_HDR_LEN + 54 + mss;
    size_t rings = 16 * BENCH_QSIZE + 8192 + 8192;
    size_t size = rings + (size_t)buf * BENCH_QSIZE;
    if (segs < 2 || segs * mss > 65535 - 40 || rounds < 1)
        return -EINVAL;
    uint8_t *mem = aligned_alloc(4096, size);
    uint8_t *frames = malloc((size_t)frame_len * (size_t)segs);
    struct vnic_dev *dev = vnic_dev_new(1);
    if (!mem || !dev || !frames) {
        free(mem);
        free(frames);
        vnic_dev_free(dev);
        return -ENOMEM;
    }
    memset(mem, 0, size);
    for (int i = 0; i < segs; i++)
        make_segment(frames + (size_t)frame_len * (size_t)i, 1000 + (uint32_t)i * mss, (uint16_t)(7 + i), mss);
    vnic_mem_add(dev, BENCH_IOVA, size, mem, 1);
    uint64_t desc = BENCH_IOVA, avail = desc + 16 * BENCH_QSIZE, used = avail + 8192;
    vnic_dev_set_features(dev, 1ull << 32 | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_NET_F_MRG_RXBUF |
                                   1ull << VIRTIO_NET_F_GUEST_CSUM | 1ull << VIRTIO_NET_F_GUEST_TSO4);
    vnic_queue_setup(dev, 0, BENCH_QSIZE, desc, avail, used);
    struct qpair *qp = &dev->qp[0];
    qp->rx.enabled = true;
    vq_map(&qp->rx);
    qp->bench_frames = frames;
    qp->bench_len = qp->bench_stride = frame_len;
    qp->bench_count = (uint32_t)segs;

    struct vring_desc *d = (struct vring_desc *)mem;
    uint16_t *av = (uint16_t *)(mem + (avail - BENCH_IOVA));
    for (int i = 0; i < BENCH_QSIZE; i++) {
        d[i] = (struct vring_desc){ BENCH_IOVA + rings + (size_t)buf * (size_t)i, buf, VRING_DESC_F_WRITE, 0 };
        av[2 + i] = (uint16_t)i;
    }
    uint16_t posted = BENCH_QSIZE;
    __atomic_store_n(&av[1], posted, __ATOMIC_RELEASE);
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        uint16_t before = qp->rx.last_avail;
        qp->bench_left = (uint32_t)segs;
        double t0 = now_ns();
        while (rx_process(qp) > 0)
            ;
        total += now_ns() - t0;
        for (uint16_t u = before; u != qp->rx.last_avail; u++, posted++)
            av[2 + posted % BENCH_QSIZE] = (uint16_t)(u % BENCH_QSIZE);
        __atomic_store_n(&av[1], posted, __ATOMIC_RELEASE);
    }
    uint64_t merged = dev->stats[0].rx_coalesced_segments;
    vnic_dev_free(dev);
    free(mem);
    free(frames);
    if (merged != (uint64_t)segs * (uint64_t)rounds)
        return -EIO;
    return total / rounds;
}
