/* harness.c - the fuzz targets' shared device, guest memory and backend
 * (see harness.h). */
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static uint8_t *guest;
static struct vnic_dev *device;
static struct fuzz_in *feed;
static volatile uint64_t sink;         /* keeps the byte reads of write() */

uint8_t fuzz_u8(struct fuzz_in *in)
{
    uint8_t v = 0;
    fuzz_take(in, &v, 1);
    return v;
}

uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t v = 0;
    fuzz_take(in, &v, 2);
    return v;
}

uint64_t fuzz_u64(struct fuzz_in *in)
{
    uint64_t v = 0;
    fuzz_take(in, &v, 8);
    return v;
}

size_t fuzz_take(struct fuzz_in *in, void *dst, size_t want)
{
    size_t n = want < in->n ? want : in->n;
    memcpy(dst, in->p, n);
    in->p += n;
    in->n -= n;
    return n;
}

/* ---- the backend: frames from the input, writes read ---------------------- */

static int fuzz_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    if (!feed || feed->n == 0)
        return 0;
    uint32_t want = fuzz_u16(feed) % (VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX + 1);
    uint32_t got = (uint32_t)fuzz_take(feed, qp->rx_frame, want);
    if (got <= VNIC_NET_HDR_SIZE) {     /* a runt, as tap.c drops it */
        st->rx_drops_backend++;
        return 1;
    }
    qp->rx_frame_len = got;
    return 1;
}

/* The same frame scattered over iov, as the TAP's readv() does it: the
 * one-copy receive path's way in. */
static int fuzz_read_iov(struct qpair *qp, const struct iovec *iov, int n, struct vnic_queue_stats *st)
{
    if (!feed || feed->n == 0)
        return 0;
    uint32_t want = fuzz_u16(feed) % (VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX + 1);
    size_t got = 0;
    for (int i = 0; i < n && got < want; i++) {
        size_t k = iov[i].iov_len < want - got ? iov[i].iov_len : want - got;
        size_t took = fuzz_take(feed, iov[i].iov_base, k);
        got += took;
        if (took < k)
            break;
    }
    return (int)got;
}

static int fuzz_write(struct qpair *qp, const struct iovec *iov, int n)
{
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < iov[i].iov_len; j++)
            sum += ((const uint8_t *)iov[i].iov_base)[j];
    sink += sum;
    return 0;
}

static int fuzz_poll_fd(const struct qpair *qp)
{
    return -1;
}

static const struct backend_ops fuzz_backend = {
    .name = "fuzz",
    .caps = BACKEND_CAP_GSO_PASSTHROUGH | BACKEND_CAP_RX_OFFLOADS,
    .poll_fd = fuzz_poll_fd,
    .read = fuzz_read,
    .read_iov = fuzz_read_iov,
    .write = fuzz_write,
};

/* ---- device and rings -------------------------------------------------------- */

static const uint8_t fuzz_mac[ETH_ALEN] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

struct vnic_dev *fuzz_device(uint64_t features, struct fuzz_in *frames)
{
    if (device)
        vnic_dev_free(device);
    if (!guest)
        guest = aligned_alloc(4096, FUZZ_MEM);
    if (!guest)
        abort();
    memset(guest, 0, FUZZ_MEM);
    device = vnic_dev_new(features >> VNIC_F_MQ & 1 ? 4 : 1);
    if (!device || dev_use_backend(device, &fuzz_backend, (const int[]){ -1 }, 1) < 0)
        abort();
    vnic_dev_set_mac(device, fuzz_mac);
    vnic_dev_set_features(device, features | 1ull << VNIC_F_VERSION_1);
    vnic_mem_add(device, 0, FUZZ_MEM, guest, 1);
    feed = frames;
    return device;
}

uint8_t *fuzz_guest(void)
{
    return guest;
}

struct vq *fuzz_queue(struct vnic_dev *dev, int q, uint16_t size)
{
    if (vnic_queue_setup(dev, q, size, FUZZ_DESC, FUZZ_AVAIL, FUZZ_USED) < 0 ||
        vnic_queue_enable(dev, q, 1) < 0)
        return NULL;
    int pairs = dev->features >> VNIC_F_MQ & 1 ? dev->nqp : 1;
    struct vq *vq = q == 2 * pairs ? &dev->ctrl : q % 2 ? &dev->qp[q / 2].tx : &dev->qp[q / 2].rx;
    return vq_map(vq) < 0 ? NULL : vq;
}

void fuzz_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct vring_desc d = { addr, len, flags, next };
    memcpy(guest + FUZZ_DESC + sizeof(d) * i, &d, sizeof(d));
}

void fuzz_avail(uint16_t slot, uint16_t head, uint16_t size)
{
    memcpy(guest + FUZZ_AVAIL + 4 + 2 * (slot % size), &head, 2);
}

void fuzz_avail_idx(uint16_t idx)
{
    memcpy(guest + FUZZ_AVAIL + 2, &idx, 2);
}

uint16_t fuzz_post_chains(struct fuzz_in *in, uint16_t size,
                          uint16_t (*post)(struct fuzz_in *in, uint16_t desc, uint64_t *at))
{
    uint64_t at = FUZZ_BUFS;
    uint16_t desc = 0, chains = 0, n;
    while ((n = post(in, desc, &at)) > 0) {
        fuzz_avail(chains++, desc, size);
        desc = (uint16_t)(desc + n);
    }
    fuzz_avail_idx(chains);
    return chains;
}
