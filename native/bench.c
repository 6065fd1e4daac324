/* bench.c - the data plane measured without a guest: a synthetic driver in
 * host memory (one ring and its buffers, registered as guest memory) feeds
 * the same tx_process()/rx_process() the workers run, with the benchmark
 * source as backend (bench_source.c), between the same per-batch
 * housekeeping.  Frames are UDP/IPv4 of BENCH_FLOWS flows, so the flow
 * statistics (at the default bound) are measured too.  Used by `vnic bench engine`; never on the data path. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "backend.h"
#include "headers.h"
#include "vnic_test.h"

#define BENCH_QSIZE 256
#define BENCH_IOVA  0x100000000ull
#define RING_ROOM   8192        /* room for the avail ring, and for the used ring */
#define DESC_BYTES  (sizeof(struct vring_desc) * BENCH_QSIZE)
#define RINGS_BYTES (DESC_BYTES + 2 * RING_ROOM)
#define BENCH_FLOWS 64

static const uint8_t bench_mac[ETH_ALEN] = { 0x52, 0x54, 0x00, 0x00, 0x00, 0x01 };

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* One device, one queue of BENCH_QSIZE single-descriptor buffers of
 * buf_size bytes, all posted, the ring under our control: split (an avail
 * ring of heads) or packed (descriptors rewritten and flagged available). */
struct bench {
    struct vnic_dev *dev;
    bool owns_dev;                /* the scaling runs share one device among pairs */
    bool packed;
    struct qpair *qp;
    struct vq *vq;
    uint8_t *mem;
    uint64_t bufs_iova;           /* buffer i at bufs_iova + buf_size * i */
    size_t buf_size;
    uint32_t desc_len;            /* what each descriptor offers */
    uint16_t desc_flags;          /* VRING_DESC_F_WRITE for RX */
    uint16_t *avail;
    uint16_t posted;              /* chains made available, free running */
    uint16_t first_flags;         /* packed: the batch's first flags, held back */
};

/* One worker loop iteration: housekeeping between batches, then a batch. */
static int bench_batch(struct qpair *qp, int (*process)(struct qpair *))
{
    flows_batch_begin(&qp->flows);
    return process(qp);
}

static const uint8_t bench_peer_mac[ETH_ALEN] = { 0x52, 0x54, 0x00, 0x00, 0x00, 0x02 };
static const uint8_t bench_src_ip[4] = { 192, 0, 2, 1 }, bench_dst_ip[4] = { 192, 0, 2, 2 };
#define BENCH_TTL      64
#define BENCH_PORT     5201        /* iperf3's */
#define BENCH_SPORT    40000       /* flow n sends from BENCH_SPORT + n */

/* Ethernet (peer to device) and an option-less IPv4 header of tot_len
 * bytes carrying proto, at the start of f. */
static struct ipv4_hdr *bench_ipv4(uint8_t *f, uint16_t tot_len, uint8_t proto)
{
    struct eth_hdr *eth = (struct eth_hdr *)f;
    memcpy(eth->dst, bench_mac, ETH_ALEN);
    memcpy(eth->src, bench_peer_mac, ETH_ALEN);
    wr16(eth->type, ETH_P_IPV4);
    struct ipv4_hdr *ip = (struct ipv4_hdr *)(eth + 1);
    ip->version_ihl = IPV4_VERSION << 4 | sizeof(*ip) / 4;
    wr16(ip->tot_len, tot_len);
    ip->ttl = BENCH_TTL;
    ip->protocol = proto;
    memcpy(ip->saddr, bench_src_ip, sizeof(ip->saddr));
    memcpy(ip->daddr, bench_dst_ip, sizeof(ip->daddr));
    return ip;
}

#define UDP_FRAME_HDRS (sizeof(struct eth_hdr) + sizeof(struct ipv4_hdr) + sizeof(struct udp_hdr))

/* A UDP/IPv4 frame of `size` bytes (its first `size` bytes if shorter than
 * the headers) for the device's MAC, of flow `flow` (the source port). */
static void bench_frame(uint8_t *f, int size, int flow)
{
    uint8_t h[UDP_FRAME_HDRS] = { 0 };
    uint16_t ip_len = size > (int)sizeof(struct eth_hdr) ? (uint16_t)(size - sizeof(struct eth_hdr)) : 0;
    struct ipv4_hdr *ip = bench_ipv4(h, ip_len, IPPROTO_UDP);
    struct udp_hdr *udp = (struct udp_hdr *)(ip + 1);
    uint16_t udp_len = ip_len > sizeof(*ip) ? (uint16_t)(ip_len - sizeof(*ip)) : 0;
    wr16(udp->source, (uint16_t)(BENCH_SPORT + flow));
    wr16(udp->dest, BENCH_PORT);
    wr16(udp->len, udp_len);
    memset(f, 0xab, (size_t)size);
    memcpy(f, h, size < (int)sizeof(h) ? (size_t)size : sizeof(h));
}

static void bench_free(struct bench *b)
{
    if (b->owns_dev)
        vnic_dev_free(b->dev);
    free(b->mem);
}

/* A device of `pairs` queue pairs on the benchmark source.  NULL if short
 * of memory. */
static struct vnic_dev *bench_device(int pairs, uint64_t features)
{
    struct vnic_dev *dev = vnic_dev_new(pairs);
    /* RX reads the benchmark source; TX discards, as the null backend does */
    if (!dev || dev_use_backend(dev, &bench_source_backend, (const int[]){ -1 }, 1) < 0) {
        vnic_dev_free(dev);
        return NULL;
    }
    vnic_dev_set_mac(dev, bench_mac);
    vnic_dev_set_features(dev, features | 1ull << VNIC_F_VERSION_1 | 1ull << VNIC_F_RING_EVENT_IDX |
                          (pairs > 1 ? 1ull << VNIC_F_MQ : 0));
    return dev;
}

/* b drives queue `queue` (2*pair for RX, 2*pair+1 for TX) of dev, in guest
 * memory of its own. */
static int bench_attach(struct bench *b, struct vnic_dev *dev, int queue, size_t buf_size)
{
    size_t size = (RINGS_BYTES + buf_size * BENCH_QSIZE + 4095) & ~(size_t)4095;
    uint64_t base = BENCH_IOVA * (uint64_t)(1 + queue / 2);   /* a region per pair */
    b->dev = dev;
    b->mem = aligned_alloc(4096, size);
    if (!b->mem)
        return -ENOMEM;
    memset(b->mem, 0, size);
    vnic_mem_add(dev, base, size, b->mem, 1);
    uint64_t desc = base, avail = desc + DESC_BYTES, used = avail + RING_ROOM;
    vnic_queue_setup(dev, queue, BENCH_QSIZE, desc, avail, used);
    b->qp = &dev->qp[queue / 2];
    b->vq = queue % 2 ? &b->qp->tx : &b->qp->rx;
    b->vq->enabled = true;
    vq_map(b->vq);
    b->packed = b->vq->packed;
    b->bufs_iova = base + RINGS_BYTES;
    b->buf_size = buf_size;
    b->desc_len = (uint32_t)buf_size;
    b->desc_flags = queue % 2 ? 0 : VRING_DESC_F_WRITE;
    struct vring_desc *d = (struct vring_desc *)b->mem;
    for (int i = 0; !b->packed && i < BENCH_QSIZE; i++)
        d[i] = (struct vring_desc){ b->bufs_iova + buf_size * (size_t)i, b->desc_len, b->desc_flags, 0 };
    b->avail = (uint16_t *)(b->mem + (avail - base));
    return 0;
}

static int bench_init(struct bench *b, int queue, uint64_t features, size_t buf_size)
{
    memset(b, 0, sizeof(*b));
    struct vnic_dev *dev = bench_device(1, features);
    if (!dev)
        return -ENOMEM;
    b->owns_dev = true;
    int err = bench_attach(b, dev, queue, buf_size);
    if (err)
        bench_free(b);
    return err;
}

static uint8_t *bench_buffer(struct bench *b, size_t buf_size, int i)
{
    return b->mem + RINGS_BYTES + buf_size * (size_t)i;
}

/* packed: the n-th chain's descriptor (slot n % size) written again for
 * the driver's next lap; its flags are returned, not stored */
static uint16_t packed_offer(struct bench *b, uint16_t n)
{
    struct vring_packed_desc *d = (struct vring_packed_desc *)b->mem + n % BENCH_QSIZE;
    bool wrap = (n / BENCH_QSIZE) % 2 == 0;    /* the ring's first lap: wrap counter 1 */
    d->addr = b->bufs_iova + b->buf_size * (n % BENCH_QSIZE);
    d->len = b->desc_len;
    d->id = n % BENCH_QSIZE;
    return (uint16_t)(b->desc_flags | (wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED));
}

/* Write n more chains as the driver would, all but what makes them
 * visible (split: the avail index; packed: the first one's flags). */
static void bench_prepare(struct bench *b, int n)
{
    for (int i = 0; i < n; i++) {
        uint16_t k = (uint16_t)(b->posted + i);
        if (!b->packed) {
            b->avail[2 + k % BENCH_QSIZE] = k % BENCH_QSIZE;
            continue;
        }
        uint16_t flags = packed_offer(b, k);
        struct vring_packed_desc *d = (struct vring_packed_desc *)b->mem + k % BENCH_QSIZE;
        if (i == 0)
            b->first_flags = flags;
        else
            __atomic_store_n(&d->flags, flags, __ATOMIC_RELEASE);
    }
}

/* Make the n prepared chains visible to the device. */
static void bench_publish(struct bench *b, int n)
{
    uint16_t first = b->posted;
    b->posted = (uint16_t)(b->posted + n);
    if (!b->packed)
        __atomic_store_n(&b->avail[1], b->posted, __ATOMIC_RELEASE);
    else if (n)
        __atomic_store_n(&((struct vring_packed_desc *)b->mem + first % BENCH_QSIZE)->flags,
                         b->first_flags, __ATOMIC_RELEASE);
}

/* Post n descriptors, in ring order, as the driver would. */
static void bench_post(struct bench *b, int n)
{
    bench_prepare(b, n);
    bench_publish(b, n);
}

/* Run process() until idle, timed; then give back what it consumed. */
static double bench_round(struct bench *b, int (*process)(struct qpair *))
{
    uint16_t before = b->vq->last_avail;
    double t0 = now_ns();
    while (bench_batch(b->qp, process) > 0)
        ;
    double dt = now_ns() - t0;
    bench_post(b, (uint16_t)(b->vq->last_avail - before));
    return dt;
}

/* Feed `count` frames of frame_len bytes (taken in turn) through RX,
 * per_round frames a round, buffers given back after each; total ns. */
static double bench_rx_rounds(struct bench *b, const uint8_t *frames, uint32_t frame_len,
                              uint32_t count, uint32_t per_round, int rounds)
{
    bench_source_load(b->qp, frames, frame_len, frame_len, count);
    bench_post(b, BENCH_QSIZE);
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        bench_source_refill(b->qp, per_round);
        total += bench_round(b, rx_process);
    }
    return total;
}

static size_t tx_slot(int frame_size)
{
    return (size_t)(VNIC_NET_HDR_SIZE + frame_size + 63) & ~(size_t)63;
}

/* Fill every TX buffer with a zero header and a frame of frame_size bytes. */
static void tx_frames(struct bench *b, int frame_size)
{
    size_t slot = tx_slot(frame_size);
    struct vring_desc *d = (struct vring_desc *)b->mem;
    b->desc_len = (uint32_t)(VNIC_NET_HDR_SIZE + frame_size);
    for (int i = 0; i < BENCH_QSIZE; i++) {
        bench_frame(bench_buffer(b, slot, i) + VNIC_NET_HDR_SIZE, frame_size, i % BENCH_FLOWS);
        if (!b->packed)
            d[i].len = b->desc_len;
    }
}

/* rounds of: the driver posts batch chains, the TX path sends them.  ns
 * spent in the TX path. */
static double tx_rounds(struct bench *b, int batch, int rounds)
{
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        /* the driver posts a batch; the consumed ones are not re-posted */
        bench_prepare(b, batch);
        double t0 = now_ns();
        bench_publish(b, batch);
        while (bench_batch(b->qp, tx_process) > 0)
            ;
        total += now_ns() - t0;
    }
    return total;
}

static uint64_t layout(int packed)
{
    return packed ? 1ull << VNIC_F_RING_PACKED : 0;
}

/* A wire capture of both directions into fd, for the rounds to come. */
static int bench_capture(struct bench *b, int fd)
{
    struct vnic_capture_config cfg = { .fd = fd, .snaplen = VNIC_CAPTURE_SNAPLEN_MAX,
                                       .directions = VNIC_CAPTURE_BOTH, .what = VNIC_CAPTURE_WIRE,
                                       .ring_bytes = VNIC_CAPTURE_RING_DEFAULT };
    return fd < 0 ? 0 : vnic_capture_start(b->dev, &cfg);
}

/* The TX path, with a capture into capture_fd unless it is -1. */
static double tx_path(int frame_size, int batch, int rounds, int packed, int capture_fd)
{
    if (frame_size < 14 || frame_size > 9000 || batch < 1 || batch > BENCH_QSIZE || rounds < 1)
        return -EINVAL;
    struct bench b;
    if (bench_init(&b, 1, layout(packed), tx_slot(frame_size)) < 0)
        return -ENOMEM;
    int err = bench_capture(&b, capture_fd);
    if (err) {
        bench_free(&b);
        return err;
    }
    tx_frames(&b, frame_size);
    double total = tx_rounds(&b, batch, rounds);
    uint64_t sent = b.dev->stats[0].tx_packets;
    if (capture_fd >= 0)
        vnic_capture_stop(b.dev, NULL);
    bench_free(&b);
    return sent == (uint64_t)batch * (uint64_t)rounds ? total / (double)sent : -EIO;
}

double vnic_bench_tx_path(int frame_size, int batch, int rounds, int packed)
{
    return tx_path(frame_size, batch, rounds, packed, -1);
}

/* 1 % of frames dropped, a fixed seed; cleared again unless keep. */
static int bench_faults(struct bench *b, bool keep)
{
    struct vnic_faults on = { .drop_ppm = VNIC_FAULT_PPM_MAX / 100, .seed = 2026 }, off = { 0 };
    int err = vnic_faults_set(b->dev, -1, VNIC_CAPTURE_TX, &on);
    return err || keep ? err : vnic_faults_set(b->dev, -1, VNIC_CAPTURE_TX, &off);
}

double vnic_bench_tx_faults_path(int frame_size, int batch, int rounds, int mode)
{
    if (mode < 0 || mode > 2 || frame_size < 14 || frame_size > 9000 || batch < 1 ||
        batch > BENCH_QSIZE || rounds < 1)
        return -EINVAL;
    struct bench b;
    if (bench_init(&b, 1, 0, tx_slot(frame_size)) < 0)
        return -ENOMEM;
    int err = mode ? bench_faults(&b, mode == 1) : 0;
    if (err) {
        bench_free(&b);
        return err;
    }
    tx_frames(&b, frame_size);
    double total = tx_rounds(&b, batch, rounds);
    const struct vnic_queue_stats *st = &b.dev->stats[0];
    uint64_t offered = st->tx_packets + st->fault_tx_drops;
    bool right = offered == (uint64_t)batch * (uint64_t)rounds && (mode == 1) == (st->fault_tx_drops > 0);
    bench_free(&b);
    return right ? total / (double)offered : -EIO;
}

double vnic_bench_tx_capture_path(int frame_size, int batch, int rounds, int fd)
{
    return fd < 0 ? -EBADF : tx_path(frame_size, batch, rounds, 0, fd);
}

/* RSS over every hash type, one table entry: every frame is hashed,
 * looked up and its hash reported, and stays on the pair it came in on. */
static int bench_rss_config(struct vnic_dev *dev)
{
    uint8_t cmd[8 + 2 + 3 + VNIC_RSS_KEY_SIZE] = { VNIC_HASH_SUPPORTED };   /* mask 0, queue 0 */
    cmd[10] = 1;                                   /* max_tx_vq */
    cmd[12] = VNIC_RSS_KEY_SIZE;
    for (int i = 0; i < VNIC_RSS_KEY_SIZE; i++)
        cmd[13 + i] = (uint8_t)(0x6d + 37 * i);
    return rss_set_config(dev, cmd, sizeof(cmd), true);
}

/* Copies each delivered byte took: the read's one, and the device's own. */
static double copies_per_byte(const struct vnic_queue_stats *st)
{
    return st->rx_bytes ? 1.0 + (double)st->rx_copied_bytes / (double)st->rx_bytes : -1;
}

static double rx_path(int frame_size, int batch, int rounds, bool rss, int packed, double *copies,
                      bool bounce)
{
    const size_t buf = 1536;                /* Linux's usual mergeable buffer */
    size_t per_frame = (VNIC_NET_HDR_HASH_SIZE + (size_t)frame_size + buf - 1) / buf;
    if (frame_size < 14 || frame_size > 9000 || batch < 1 || rounds < 1 ||
        (size_t)batch * per_frame > BENCH_QSIZE)
        return -EINVAL;
    uint32_t frame_len = VNIC_NET_HDR_SIZE + (uint32_t)frame_size;
    uint8_t *frames = calloc(BENCH_FLOWS, frame_len);    /* zero headers + frames */
    uint64_t features = 1ull << VNIC_F_MRG_RXBUF |
                        (rss ? 1ull << VNIC_F_RSS | 1ull << VNIC_F_HASH_REPORT : 0) | layout(packed);
    struct bench b;
    if (!frames || bench_init(&b, 0, features, buf) < 0) {
        free(frames);
        return -ENOMEM;
    }
    for (int i = 0; i < BENCH_FLOWS; i++)
        bench_frame(frames + (size_t)frame_len * (size_t)i + VNIC_NET_HDR_SIZE, frame_size, i);
    vnic_dev_set_rx_copy(b.dev, bounce ? VNIC_RX_COPY_BOUNCE : VNIC_RX_COPY_DIRECT);
    double total = rss && bench_rss_config(b.dev) < 0 ? -1
                 : bench_rx_rounds(&b, frames, frame_len, BENCH_FLOWS, (uint32_t)batch, rounds);
    uint64_t want = (uint64_t)batch * (uint64_t)rounds;
    const struct vnic_queue_stats *st = &b.dev->stats[0];
    bool all = st->rx_packets == want && (!rss || st->rx_rss_hashed == want);
    if (copies)
        *copies = copies_per_byte(st);
    bench_free(&b);
    free(frames);
    return total >= 0 && all ? total / (double)want : -EIO;
}

double vnic_bench_rx_path(int frame_size, int batch, int rounds, int packed)
{
    return rx_path(frame_size, batch, rounds, false, packed, NULL, false);
}

double vnic_bench_rx_rss_path(int frame_size, int batch, int rounds)
{
    return rx_path(frame_size, batch, rounds, true, 0, NULL, false);
}

#define TCP_FRAME_HDRS (sizeof(struct eth_hdr) + sizeof(struct ipv4_hdr) + sizeof(struct tcp_hdr))

/* A TCP/IPv4 segment with the virtio header a local sender's TAP gives:
 * partial checksum, so coalescing is measured without verification. */
static void make_segment(uint8_t *buf, uint32_t seq, uint16_t id, uint32_t mss)
{
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)buf;
    memset(h, 0, sizeof(*h));
    h->flags = VNIC_HDR_F_NEEDS_CSUM;
    h->csum_start = sizeof(struct eth_hdr) + sizeof(struct ipv4_hdr);
    h->csum_offset = CSUM_OFFSET_TCP;
    uint8_t *f = buf + VNIC_NET_HDR_SIZE;
    memset(f, 0, TCP_FRAME_HDRS);
    struct ipv4_hdr *ip = bench_ipv4(f, (uint16_t)(sizeof(*ip) + sizeof(struct tcp_hdr) + mss), IPPROTO_TCP);
    wr16(ip->id, id);
    wr16(ip->frag_off, IP_DF);
    struct tcp_hdr *tcp = (struct tcp_hdr *)(ip + 1);
    wr16(tcp->source, BENCH_PORT);
    wr16(tcp->dest, BENCH_SPORT);
    wr32(tcp->seq, seq);
    tcp->doff = sizeof(*tcp) / 4 << 4;
    tcp->flags = TCP_ACK;
    memset(f + TCP_FRAME_HDRS, 0x5a, mss);
}

static double coalesce(int segs, int rounds, double *copies, bool bounce)
{
    const uint32_t mss = 1448;
    uint32_t frame_len = VNIC_NET_HDR_SIZE + (uint32_t)TCP_FRAME_HDRS + mss;
    if (segs < 2 || segs * mss > IP_MAX_LEN - sizeof(struct ipv4_hdr) - sizeof(struct tcp_hdr) || rounds < 1)
        return -EINVAL;
    uint8_t *frames = malloc((size_t)frame_len * (size_t)segs);
    struct bench b;
    uint64_t features = 1ull << VNIC_F_MRG_RXBUF | 1ull << VNIC_F_GUEST_CSUM |
                        1ull << VNIC_F_GUEST_TSO4;
    if (!frames || bench_init(&b, 0, features, 4096) < 0) {
        free(frames);
        return -ENOMEM;
    }
    for (int i = 0; i < segs; i++)
        make_segment(frames + (size_t)frame_len * (size_t)i, 1000 + (uint32_t)i * mss, (uint16_t)(7 + i), mss);
    vnic_dev_set_rx_copy(b.dev, bounce ? VNIC_RX_COPY_BOUNCE : VNIC_RX_COPY_DIRECT);
    double total = bench_rx_rounds(&b, frames, frame_len, (uint32_t)segs, (uint32_t)segs, rounds);
    uint64_t merged = b.dev->stats[0].rx_coalesced_segments;
    if (copies)
        *copies = copies_per_byte(&b.dev->stats[0]);
    bench_free(&b);
    free(frames);
    return merged == (uint64_t)segs * (uint64_t)rounds ? total / rounds : -EIO;
}

double vnic_bench_coalesce(int segs, int rounds)
{
    return coalesce(segs, rounds, NULL, false);
}

double vnic_bench_coalesce_bounce(int segs, int rounds)
{
    return coalesce(segs, rounds, NULL, true);
}

#define FLOOR_BUF 4096                     /* coalesce()'s guest buffers */

/* One round of the copy floor: each segment's payload behind the one
 * before, from where the flow's headers end in the buffer at `at`. */
static double floor_round(uint8_t *ring, size_t at, const uint8_t *frames, uint32_t frame_len, int segs,
                          uint32_t mss)
{
    uint8_t *dst = ring + at + VNIC_NET_HDR_SIZE + TCP_FRAME_HDRS;
    double t0 = now_ns();
    for (int i = 0; i < segs; i++)
        memcpy(dst + (size_t)i * mss, frames + (size_t)frame_len * (size_t)i + VNIC_NET_HDR_SIZE + TCP_FRAME_HDRS,
               mss);
    return now_ns() - t0;
}

double vnic_bench_coalesce_floor(int segs, int rounds)
{
    const uint32_t mss = 1448;
    uint32_t frame_len = VNIC_NET_HDR_SIZE + (uint32_t)TCP_FRAME_HDRS + mss;
    size_t per_round = (VNIC_NET_HDR_SIZE + TCP_FRAME_HDRS + (size_t)segs * mss + FLOOR_BUF - 1) / FLOOR_BUF;
    if (segs < 2 || per_round > BENCH_QSIZE || rounds < 1)
        return -EINVAL;
    size_t ring_len = (size_t)FLOOR_BUF * BENCH_QSIZE;
    uint8_t *ring = calloc(1, ring_len + FLOOR_BUF * per_round);  /* a flow near the end runs past it */
    uint8_t *frames = calloc((size_t)segs, frame_len);
    double total = ring && frames ? 0 : -ENOMEM;
    for (int r = 0; r < rounds && total >= 0; r++)     /* the flows go round the ring as coalesce()'s */
        total += floor_round(ring, (size_t)r * per_round % BENCH_QSIZE * FLOOR_BUF, frames, frame_len, segs, mss);
    free(ring);
    free(frames);
    return total < 0 ? total : total / rounds;
}

double vnic_bench_rx_bounce_path(int frame_size, int batch, int rounds)
{
    return rx_path(frame_size, batch, rounds, false, 0, NULL, true);
}

double vnic_bench_rx_copies(int frame_size, int coalescing)
{
    double copies = -1;
    double r = coalescing ? coalesce(44, 20, &copies, false) : rx_path(frame_size, 64, 20, false, 0, &copies, false);
    return r < 0 ? r : copies;
}

/* ---- scaling: one thread per queue pair of one device ---------------------- */

#define SCALE_BATCH 64
#define SCALE_RX_BUF 1536

struct scale_job {
    struct bench b;
    bool rx;
    int rounds;
    const uint8_t *frames;        /* RX: what the benchmark source hands out */
    uint32_t frame_len;
    atomic_int *go;               /* 0: wait, 1: run, -1: give up (a thread did not start) */
};

static void *scale_thread(void *arg)
{
    struct scale_job *j = arg;
    int go;
    while ((go = atomic_load(j->go)) == 0)
        sched_yield();
    if (go < 0)
        return NULL;
    if (j->rx)
        bench_rx_rounds(&j->b, j->frames, j->frame_len, BENCH_FLOWS, SCALE_BATCH, j->rounds);
    else
        tx_rounds(&j->b, SCALE_BATCH, j->rounds);
    return NULL;
}

/* Every pair's frames counted, or 0 if one pair fell short. */
static uint64_t scale_frames(const struct vnic_dev *dev, int threads, bool rx, int rounds)
{
    uint64_t all = 0;
    for (int i = 0; i < threads; i++) {
        uint64_t n = rx ? dev->stats[i].rx_packets : dev->stats[i].tx_packets;
        if (n != (uint64_t)SCALE_BATCH * (uint64_t)rounds)
            return 0;
        all += n;
    }
    return all;
}

/* Run the jobs on their threads from one start; wall-clock ns, or -EAGAIN
 * if a thread could not be started (the others are told to give up). */
static double scale_run(struct scale_job *jobs, int threads)
{
    pthread_t tid[VNIC_MAX_QUEUE_PAIRS];
    atomic_int go = 0;
    int started = 0;
    for (; started < threads; started++) {
        jobs[started].go = &go;
        if (pthread_create(&tid[started], NULL, scale_thread, &jobs[started]))
            break;
    }
    double t0 = now_ns();
    atomic_store(&go, started == threads ? 1 : -1);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    return started == threads ? now_ns() - t0 : -EAGAIN;
}

static int scale_prepare(struct scale_job *jobs, struct vnic_dev *dev, int threads, bool rx,
                         int frame_size, const uint8_t *frames, int rounds)
{
    for (int i = 0; i < threads; i++) {
        struct scale_job *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        int err = bench_attach(&j->b, dev, 2 * i + (rx ? 0 : 1), rx ? SCALE_RX_BUF : tx_slot(frame_size));
        if (err)
            return err;
        j->rx = rx;
        j->rounds = rounds;
        j->frames = frames;
        j->frame_len = VNIC_NET_HDR_SIZE + (uint32_t)frame_size;
        if (!rx)
            tx_frames(&j->b, frame_size);
    }
    return 0;
}

double vnic_bench_scale(int rx, int frame_size, int threads, int rounds)
{
    if (frame_size < 14 || frame_size > SCALE_RX_BUF - VNIC_NET_HDR_SIZE || threads < 1 ||
        threads > VNIC_MAX_QUEUE_PAIRS || rounds < 1)
        return -EINVAL;
    uint32_t frame_len = VNIC_NET_HDR_SIZE + (uint32_t)frame_size;
    uint8_t *frames = calloc(BENCH_FLOWS, frame_len);         /* RX: zero headers + frames */
    struct scale_job *jobs = calloc((size_t)threads, sizeof(*jobs));
    struct vnic_dev *dev = bench_device(threads, rx ? 1ull << VNIC_F_MRG_RXBUF : 0);
    double result = -ENOMEM;
    if (frames && jobs && dev) {
        for (int i = 0; i < BENCH_FLOWS; i++)
            bench_frame(frames + (size_t)frame_len * (size_t)i + VNIC_NET_HDR_SIZE, frame_size, i);
        result = scale_prepare(jobs, dev, threads, rx, frame_size, frames, rounds);
        if (result == 0)
            result = scale_run(jobs, threads);
        if (result > 0) {
            uint64_t n = scale_frames(dev, threads, rx, rounds);
            result = n ? (double)n * 1e9 / result : -EIO;
        }
    }
    for (int i = 0; jobs && i < threads; i++)
        bench_free(&jobs[i].b);   /* each frees its memory; the device is shared */
    vnic_dev_free(dev);
    free(jobs);
    free(frames);
    return result;
}
