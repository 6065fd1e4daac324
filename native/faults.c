/* faults.c - fault injection: the network between the device and its
 * backend misbehaving on purpose (drops, duplicates, corrupted payloads,
 * checksums the device lies about), so users can watch what a guest stack
 * does about it.  Each pair's worker decides per frame from its own
 * generator, seeded per pair and direction: the same seed, rates and
 * traffic replay the same decisions.  Every fault is counted where it is
 * made (fault_* counters).  No allocation per frame: the copies go to the
 * pair's fault_copy and fault_dup buffers, allocated with the pair. */
#include <errno.h>
#include <string.h>
#include "backend.h"
#include "headers.h"

/* ---- the generator (splitmix64: small, fast, good enough to roll dice) -- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The worker's generator, reseeded if the control plane set a new seed. */
uint64_t fault_random(struct qpair *qp, struct fault_dir *f)
{
    unsigned gen = atomic_load_explicit(&f->seed_gen, memory_order_acquire);
    if (unlikely(gen != f->rng_gen)) {
        uint64_t s = atomic_load_explicit(&f->seed, memory_order_relaxed);
        f->rng = s ^ ((uint64_t)qp->index << 8) ^ (uint64_t)(f - qp->fault);
        f->rng_gen = gen;
    }
    return splitmix(&f->rng);
}

/* Does a fault of this rate (parts per million) strike?  No draw for a
 * rate of zero, so faults not asked for do not shift the others. */
static bool strikes(struct qpair *qp, struct fault_dir *f, _Atomic uint32_t *rate)
{
    uint32_t ppm = atomic_load_explicit(rate, memory_order_relaxed);
    return ppm && fault_random(qp, f) % VNIC_FAULT_PPM_MAX < ppm;
}

/* Where a changed byte must go for a checksum to catch it: the payload
 * behind the headers, or anything behind the Ethernet header when the
 * frame has none the device knows. */
static uint32_t corrupt_offset(const uint8_t *frame, uint32_t len, uint64_t r)
{
    struct layout lo;
    uint32_t from = sizeof(struct eth_hdr);
    if (hdr_parse(frame, len, &lo) == 0 && lo.hdr_len < len)
        from = lo.hdr_len;
    return from + (uint32_t)(r % (len - from));
}

/* One byte changed (never to itself: x ^ (1..255)). */
static void corrupt(uint8_t *frame, uint32_t len, uint64_t r)
{
    frame[corrupt_offset(frame, len, r)] ^= (uint8_t)(1 + (r >> 32) % 255);
}

/* ---- transmit ------------------------------------------------------------ */

int fault_tx(struct qpair *qp, struct iovec *iov, int *n, uint32_t len)
{
    struct fault_dir *f = &qp->fault[FAULT_TX];
    struct vnic_queue_stats *st = &qp->dev->stats[qp->index];
    if (strikes(qp, f, &f->drop)) {
        st->fault_tx_drops++;
        return 0;
    }
    if (len > sizeof(struct eth_hdr) && len <= VNIC_MAX_FRAME && strikes(qp, f, &f->corrupt)) {
        /* the guest's buffer stays as it is: the copy is what goes out */
        iov_gather(qp->fault_copy, iov + 1, *n, len);
        corrupt(qp->fault_copy, len, fault_random(qp, f));
        iov[1] = (struct iovec){ qp->fault_copy, len };
        *n = 1;
        st->fault_tx_corruptions++;
    }
    if (strikes(qp, f, &f->duplicate)) {
        st->fault_tx_duplicates++;
        return 2;
    }
    return 1;
}

/* ---- receive ------------------------------------------------------------- */

/* A partial checksum finished, so that a changed byte shows. */
static void finish_partial(struct virtio_net_hdr *h, uint8_t *frame, uint32_t len)
{
    uint32_t field = (uint32_t)h->csum_start + h->csum_offset;
    if (!(h->flags & VNIC_HDR_F_NEEDS_CSUM) || h->csum_start >= len || field + CSUM_SIZE > len)
        return;
    uint16_t c = csum_finish(csum_partial(frame + h->csum_start, len - h->csum_start, 0),
                             h->csum_offset == CSUM_OFFSET_UDP);
    memcpy(frame + field, &c, sizeof(c));
    h->flags &= (uint8_t)~VNIC_HDR_F_NEEDS_CSUM;
}

static void rx_corrupt(struct qpair *qp, struct fault_dir *f)
{
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)qp->rx_frame;
    uint8_t *frame = qp->rx_frame + VNIC_NET_HDR_SIZE;
    uint32_t len = qp->rx_frame_len - VNIC_NET_HDR_SIZE;
    if (h->gso_type != VNIC_GSO_NONE || len <= sizeof(struct eth_hdr))
        return;                 /* a super-frame's checksum is nobody's to verify */
    finish_partial(h, frame, len);
    corrupt(frame, len, fault_random(qp, f));
    qp->dev->stats[qp->index].fault_rx_corruptions++;
}

bool fault_rx(struct qpair *qp)
{
    struct fault_dir *f = &qp->fault[FAULT_RX];
    struct vnic_queue_stats *st = &qp->dev->stats[qp->index];
    if (strikes(qp, f, &f->drop)) {
        st->fault_rx_drops++;
        return false;
    }
    if (strikes(qp, f, &f->corrupt))
        rx_corrupt(qp, f);
    if (!qp->fault_dup_len && strikes(qp, f, &f->duplicate)) {
        memcpy(qp->fault_dup, qp->rx_frame, qp->rx_frame_len);
        qp->fault_dup_len = qp->rx_frame_len;
        st->fault_rx_duplicates++;
    }
    return true;
}

bool fault_take_duplicate(struct qpair *qp)
{
    if (!qp->fault_dup_len)
        return false;
    memcpy(qp->rx_frame, qp->fault_dup, qp->fault_dup_len);
    qp->rx_frame_len = qp->fault_dup_len;
    qp->fault_dup_len = 0;
    return true;
}

void fault_rx_lie(struct qpair *qp)
{
    struct fault_dir *f = &qp->fault[FAULT_RX];
    struct virtio_net_hdr *h = (struct virtio_net_hdr *)qp->rx_frame;
    uint8_t *frame = qp->rx_frame + VNIC_NET_HDR_SIZE;
    struct layout lo;
    if (!(rx_features(qp->dev) >> VNIC_F_GUEST_CSUM & 1) || h->gso_type != VNIC_GSO_NONE ||
        hdr_parse(frame, qp->rx_frame_len - VNIC_NET_HDR_SIZE, &lo) < 0 ||
        (lo.proto != IPPROTO_TCP && lo.proto != IPPROTO_UDP) || !strikes(qp, f, &f->bad_csum))
        return;
    uint8_t *check = lo.proto == IPPROTO_TCP ? HDR_AT(struct tcp_hdr, frame, lo.l4)->check
                                             : HDR_AT(struct udp_hdr, frame, lo.l4)->check;
    check[0] ^= 0x5a;           /* wrong, and not the other zero of ones' complement */
    h->flags = VNIC_HDR_F_DATA_VALID;
    qp->dev->stats[qp->index].fault_rx_bad_csums++;
}

/* ---- the delay line's callers ---------------------------------------------- */

/* Into f's delay line unless reorder lets it skip: true if held (or lost
 * to a full line), each outcome counted where the caller says. */
static bool hold(struct qpair *qp, struct fault_dir *f, const struct iovec *iov, int n, uint32_t len,
                 uint64_t *reordered, uint64_t *delayed, uint64_t *queue_drops)
{
    if (!fault_delays(f))
        return false;
    if (strikes(qp, f, &f->reorder)) {
        (*reordered)++;                   /* out now, ahead of those held */
        return false;
    }
    (*(fault_hold(qp, f, iov, n, len) ? delayed : queue_drops))++;
    return true;
}

bool fault_tx_hold(struct qpair *qp, const struct iovec *iov, int n, uint32_t len)
{
    struct vnic_queue_stats *st = &qp->dev->stats[qp->index];
    return hold(qp, &qp->fault[FAULT_TX], iov, n, len, &st->fault_tx_reordered, &st->fault_tx_delayed,
                &st->fault_tx_queue_drops);
}

bool fault_rx_hold(struct qpair *qp)
{
    struct vnic_queue_stats *st = &qp->dev->stats[qp->index];
    struct iovec whole = { qp->rx_frame, qp->rx_frame_len };
    return hold(qp, &qp->fault[FAULT_RX], &whole, 1, qp->rx_frame_len, &st->fault_rx_reordered,
                &st->fault_rx_delayed, &st->fault_rx_queue_drops);
}

bool fault_rx_take_due(struct qpair *qp)
{
    struct fault_dir *f = &qp->fault[FAULT_RX];
    uint32_t len;
    const uint8_t *held = fault_due(f, &len, fault_now_ns());
    if (!held)
        return false;
    memcpy(qp->rx_frame, held, len);
    qp->rx_frame_len = len;
    fault_release(f);
    return true;
}

/* ---- configuration ------------------------------------------------------- */

static bool faults_valid(uint32_t directions, const struct vnic_faults *f)
{
    if (!directions || (directions & ~(uint32_t)VNIC_CAPTURE_BOTH))
        return false;
    if (f->drop_ppm > VNIC_FAULT_PPM_MAX || f->duplicate_ppm > VNIC_FAULT_PPM_MAX ||
        f->corrupt_ppm > VNIC_FAULT_PPM_MAX || f->bad_csum_ppm > VNIC_FAULT_PPM_MAX ||
        f->reorder_ppm > VNIC_FAULT_PPM_MAX)
        return false;
    if (f->delay_us > VNIC_FAULT_DELAY_US_MAX || f->jitter_us > VNIC_FAULT_DELAY_US_MAX ||
        f->rate_kbps > VNIC_FAULT_RATE_KBPS_MAX || (f->reorder_ppm && !f->delay_us))
        return false;
    return !(f->bad_csum_ppm && (directions & VNIC_CAPTURE_TX));
}

static void set_dir(struct fault_dir *d, const struct vnic_faults *f)
{
    atomic_store(&d->drop, f->drop_ppm);
    atomic_store(&d->duplicate, f->duplicate_ppm);
    atomic_store(&d->corrupt, f->corrupt_ppm);
    atomic_store(&d->bad_csum, f->bad_csum_ppm);
    atomic_store(&d->reorder, f->reorder_ppm);
    atomic_store(&d->delay_us, f->delay_us);
    atomic_store(&d->jitter_us, f->jitter_us);
    atomic_store(&d->rate_kbps, f->rate_kbps);
    atomic_store(&d->seed, f->seed);
    atomic_fetch_add_explicit(&d->seed_gen, 1, memory_order_release);
}

static bool dir_active(const struct fault_dir *d)
{
    return atomic_load(&d->drop) || atomic_load(&d->duplicate) || atomic_load(&d->corrupt) ||
           atomic_load(&d->bad_csum) || atomic_load(&d->reorder) || fault_delays(d);
}

static bool any_active(const struct vnic_dev *dev)
{
    for (int i = 0; i < dev->nqp; i++)
        if (dir_active(&dev->qp[i].fault[FAULT_RX]) || dir_active(&dev->qp[i].fault[FAULT_TX]))
            return true;
    return false;
}

int vnic_faults_set(struct vnic_dev *dev, int pair, uint32_t directions, const struct vnic_faults *f)
{
    if (pair < -1 || pair >= dev->nqp || !faults_valid(directions, f))
        return -EINVAL;
    for (int i = pair < 0 ? 0 : pair; i < (pair < 0 ? dev->nqp : pair + 1); i++) {
        if (directions & VNIC_CAPTURE_RX)
            set_dir(&dev->qp[i].fault[FAULT_RX], f);
        if (directions & VNIC_CAPTURE_TX)
            set_dir(&dev->qp[i].fault[FAULT_TX], f);
    }
    atomic_store(&dev->faults, any_active(dev));
    return 0;
}

int vnic_faults_get(struct vnic_dev *dev, int pair, uint32_t direction, struct vnic_faults *out)
{
    if (pair < 0 || pair >= dev->nqp || (direction != VNIC_CAPTURE_RX && direction != VNIC_CAPTURE_TX))
        return -EINVAL;
    const struct fault_dir *d = &dev->qp[pair].fault[direction == VNIC_CAPTURE_RX ? FAULT_RX : FAULT_TX];
    *out = (struct vnic_faults){ atomic_load(&d->drop), atomic_load(&d->duplicate), atomic_load(&d->corrupt),
                                 atomic_load(&d->bad_csum), atomic_load(&d->reorder), atomic_load(&d->delay_us),
                                 atomic_load(&d->jitter_us), atomic_load(&d->rate_kbps), atomic_load(&d->seed) };
    return 0;
}

int vnic_faults_rx_starve(struct vnic_dev *dev, int on)
{
    bool was = atomic_exchange(&dev->rx_starve, on != 0);
    if (on && !was)
        dev->stats[0].fault_rx_starves++;
    int err = 0;
    for (int i = 0; !on && was && i < dev->nqp; i++)
        if (dev->qp[i].thread_started && !err)
            err = eventfd_signal(dev->qp[i].stop_fd);
    return err;
}

void vnic_faults_count_flap(struct vnic_dev *dev)
{
    dev->stats[0].fault_link_flaps++;
}
