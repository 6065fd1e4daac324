/* dev.c - the device object's lifetime: creation with its queue pairs,
 * the negotiated features, the backend and TX/RX modes, start (DRIVER_OK:
 * map the rings, spawn the workers), stop, reset and free.  Everything
 * here runs on the control plane's thread, with the workers stopped unless
 * said otherwise. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "backend.h"

/* How long a quiesce (vnic_dev_stop) lets an outstanding DMA request run. */
#define DMA_QUIESCE_GRACE_NS 200000000ull

/* The backends Python can choose, by enum vnic_backend_kind. */
static const struct backend_ops *const backends[] = {
    [VNIC_BACKEND_NULL] = &null_backend,
    [VNIC_BACKEND_TAP] = &tap_backend,
    [VNIC_BACKEND_STREAM] = &stream_backend,
    [VNIC_BACKEND_DGRAM] = &dgram_backend,
};

void dev_fail(struct vnic_dev *dev, int reason, struct vnic_queue_stats *st)
{
    if (st) {
        if (reason == VNIC_ERR_MEM_FAULT)
            st->mem_faults++;
        else if (reason == VNIC_ERR_DMA || reason == VNIC_ERR_RING_DMA)
            st->dma_errors++;
        else
            st->chain_errors++;
    }
    int none = VNIC_ERR_NONE;
    if (atomic_compare_exchange_strong(&dev->error, &none, reason))
        vnic_irq_config_changed(dev);
}

/* ---- creation and destruction --------------------------------------------- */

/* Every fd closed-safe before anything is created, so a half-built
 * device can be freed. */
static void qpair_preinit(struct vnic_dev *dev, int i)
{
    struct qpair *qp = &dev->qp[i];
    qp->dev = dev;
    qp->index = i;
    qp->rx.kick_fd = qp->tx.kick_fd = qp->stop_fd = qp->epoll_fd = qp->backend_fd = -1;
    qp->held_to = -1;
}

static int ctrl_worker_init(struct ctrl_worker *w)
{
    w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->park_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->chain = malloc(sizeof(struct chain));
    if (w->stop_fd < 0 || w->park_fd < 0)
        return -errno;
    return w->chain ? 0 : -ENOMEM;
}

static void ctrl_worker_destroy(struct ctrl_worker *w)
{
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    if (w->park_fd >= 0)
        close(w->park_fd);
    free(w->chain);
}

static int qpair_init(struct vnic_dev *dev, int i)
{
    struct qpair *qp = &dev->qp[i];
    int err;
    if ((err = vq_init(&qp->rx, dev, 2 * i)) || (err = vq_init(&qp->tx, dev, 2 * i + 1)))
        return err;
    qp->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (qp->stop_fd < 0)
        return -errno;
    if ((err = flows_init(&qp->flows, &dev->stats[i])))
        return err;
    qp->rx_frame = malloc(VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX);
    qp->held = malloc(VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX);
    qp->tx_bounce = malloc(VNIC_MAX_FRAME);
    qp->fault_copy = malloc(VNIC_MAX_FRAME);
    qp->fault_dup = malloc(VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX);
    qp->fault[FAULT_RX].line = malloc(FAULT_LINE_BYTES);
    qp->fault[FAULT_TX].line = malloc(FAULT_LINE_BYTES);
    qp->chain = malloc(sizeof(struct chain));
    qp->txc = calloc(1, sizeof(struct tx_ctx));
    qp->gro = calloc(1, sizeof(struct gro));
    qp->rxc = calloc(1, sizeof(struct rx_cache));
    if (!qp->rxc || !qp->rx_frame || !qp->held || !qp->tx_bounce || !qp->fault_copy || !qp->fault_dup || !qp->chain ||
        !qp->txc || !qp->gro || !qp->fault[FAULT_RX].line || !qp->fault[FAULT_TX].line)
        return -ENOMEM;
    qp->txc->frag_id = &dev->frag_id;
    qp->txc->st = &dev->stats[i];
    qp->txc->sink = qp;
    return 0;
}

static void qpair_destroy(struct qpair *qp)
{
    vq_destroy(&qp->rx);
    vq_destroy(&qp->tx);
    if (qp->stop_fd >= 0)
        close(qp->stop_fd);
    free(qp->rx_frame);
    free(qp->held);
    free(qp->tx_bounce);
    free(qp->fault_copy);
    free(qp->fault_dup);
    free(qp->fault[FAULT_RX].line);
    free(qp->fault[FAULT_TX].line);
    free(qp->chain);
    free(qp->txc);
    gro_free(qp->gro);
    free(qp->rxc);
    flows_destroy(&qp->flows);
}

struct vnic_dev *vnic_dev_new(int queue_pairs)
{
    if (queue_pairs < 1 || queue_pairs > VNIC_MAX_QUEUE_PAIRS)
        return NULL;
    guard_install();             /* before any worker can touch guest memory */
    /* aligned: each pair's state on cache lines of its own (aligned_alloc
     * wants the size a multiple of the alignment) */
    size_t size = (sizeof(struct vnic_dev) + VNIC_CACHE_LINE - 1) & ~(size_t)(VNIC_CACHE_LINE - 1);
    struct vnic_dev *dev = aligned_alloc(VNIC_CACHE_LINE, size);
    if (!dev)
        return NULL;
    memset(dev, 0, size);
    dev->nqp = queue_pairs;
    dev->backend = &null_backend;
    dev->backend_fds[0] = -1;
    dev->nbackend_fds = 1;
    for (int n = 0; n <= VNIC_MAX_QUEUE_PAIRS; n++)
        dev->steer_prog[n] = -1;
    atomic_store(&dev->active_pairs, 1);
    dev->ctrlw.stop_fd = dev->ctrlw.park_fd = dev->ctrlw.epoll_fd = -1;
    atomic_store(&dev->rx_coalesce, true);
    irq_init(dev);
    rx_filter_reset(&dev->filter, dev->mac);
    dev->ctrl_last_error = -1;
    dev->hdr_len = VNIC_NET_HDR_SIZE;
    rss_reset(&dev->rss);
    for (int i = 0; i < queue_pairs; i++)
        qpair_preinit(dev, i);
    bool ok = vq_init(&dev->ctrl, dev, 2 * queue_pairs) == 0 && ctrl_worker_init(&dev->ctrlw) == 0 &&
              handoff_init(dev) == 0;
    for (int i = 0; i < queue_pairs && ok; i++)
        ok = qpair_init(dev, i) == 0;
    if (!ok) {
        vnic_dev_free(dev);
        return NULL;
    }
    return dev;
}

void vnic_dev_free(struct vnic_dev *dev)
{
    if (!dev)
        return;
    vnic_dev_stop(dev);
    capture_destroy(dev);
    dev_use_backend(dev, &null_backend, (const int[]){ -1 }, 1);   /* detach: null needs nothing */
    vq_destroy(&dev->ctrl);
    ctrl_worker_destroy(&dev->ctrlw);
    handoff_destroy(dev);
    for (int i = 0; i < dev->nqp; i++)
        qpair_destroy(&dev->qp[i]);
    irq_destroy(dev);
    free(dev);
}

/* ---- configuration ------------------------------------------------------- */

int vnic_dev_set_features(struct vnic_dev *dev, uint64_t features)
{
    if (dev->running)
        return -EBUSY;          /* the workers read these without a lock */
    dev->features = features;
    dev->guest_offloads = features & GUEST_OFFLOAD_MASK;
    dev->event_idx = features >> VNIC_F_RING_EVENT_IDX & 1;
    dev->indirect = features >> VNIC_F_RING_INDIRECT_DESC & 1;
    dev->mrg_rxbuf = features >> VNIC_F_MRG_RXBUF & 1;
    dev->hdr_len = features >> VNIC_F_HASH_REPORT & 1 ? VNIC_NET_HDR_HASH_SIZE : VNIC_NET_HDR_SIZE;
    return 0;
}

static void detach_pairs(struct vnic_dev *dev, int n)
{
    for (int i = 0; i < n; i++)
        if (dev->backend->detach)
            dev->backend->detach(&dev->qp[i]);
}

static int attach_pairs(struct vnic_dev *dev)
{
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        qp->backend_fd = dev->backend_fds[dev->nbackend_fds == 1 ? 0 : i];
        qp->backend_down = qp->tx_blocked = false;
        int err = dev->backend->attach ? dev->backend->attach(qp) : 0;
        if (err) {
            detach_pairs(dev, i + 1);
            return err;
        }
    }
    return 0;
}

static void keep_fds(struct vnic_dev *dev, const int *fds, int nfds)
{
    memcpy(dev->backend_fds, fds, (size_t)nfds * sizeof(*fds));
    dev->nbackend_fds = nfds;
    dev->steered_pairs = 0;      /* unknown: steer again at the next start */
}

int dev_use_backend(struct vnic_dev *dev, const struct backend_ops *ops, const int *fds, int nfds)
{
    if (nfds != 1 && nfds != dev->nqp)
        return -EINVAL;
    int err = ops->open ? ops->open(dev, fds, nfds) : 0;
    if (err)
        return err;
    if (dev->backend->release)
        dev->backend->release(dev);
    detach_pairs(dev, dev->nqp);
    dev->backend = ops;
    keep_fds(dev, fds, nfds);
    err = attach_pairs(dev);
    if (err) {
        dev->backend = &null_backend;
        keep_fds(dev, (const int[]){ -1 }, 1);
        attach_pairs(dev);       /* null needs nothing: cannot fail */
    }
    return err;
}

int vnic_dev_prepare_steering(struct vnic_dev *dev)
{
    return dev->backend->prepare ? dev->backend->prepare(dev) : 0;
}

int vnic_dev_set_backend(struct vnic_dev *dev, int kind, const int *fds, int nfds)
{
    if (dev->running || kind < 0 || (size_t)kind >= sizeof(backends) / sizeof(backends[0]) ||
        !backends[kind] || !fds)
        return -EINVAL;
    return dev_use_backend(dev, backends[kind], fds, nfds);
}

void vnic_dev_set_rx_copy(struct vnic_dev *dev, int mode)
{
    atomic_store(&dev->rx_bounce_only, mode == VNIC_RX_COPY_BOUNCE);
}

void vnic_dev_set_rx_coalesce(struct vnic_dev *dev, int on)
{
    atomic_store(&dev->rx_coalesce, on != 0);
}

int vnic_dev_set_tx_mode(struct vnic_dev *dev, int mode)
{
    if (mode != VNIC_TX_SEGMENT && mode != VNIC_TX_PASSTHROUGH)
        return -EINVAL;
    if (mode == VNIC_TX_PASSTHROUGH && !backend_can(dev, BACKEND_CAP_GSO_PASSTHROUGH))
        return -ENOTSUP;
    dev->tx_mode = mode;       /* read once per frame by the workers */
    return 0;
}

/* ---- start and stop ------------------------------------------------------ */

/* Direct pointers to every enabled ring.  0, or -EFAULT with the device
 * failed (VNIC_ERR_RING_DMA). */
static int map_rings(struct vnic_dev *dev)
{
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        if ((qp->rx.enabled && vq_map(&qp->rx) < 0) || (qp->tx.enabled && vq_map(&qp->tx) < 0)) {
            dev_fail(dev, VNIC_ERR_RING_DMA, &dev->stats[i]);
            return -EFAULT;
        }
    }
    if (dev->ctrl.enabled && vq_map(&dev->ctrl) < 0) {
        dev_fail(dev, VNIC_ERR_RING_DMA, &dev->stats[0]);
        return -EFAULT;
    }
    return 0;
}

/* The backend's receive offloads as the guest negotiated them, or none
 * (an old kernel knows some of them not).  0 or -errno. */
static int offer_rx_offloads(struct vnic_dev *dev)
{
    if (backend_set_offload(dev, rx_features(dev)) == 0)
        return 0;
    return backend_set_offload(dev, 0);
}

static bool pair_has_work(const struct vnic_dev *dev, int i)
{
    const struct qpair *qp = &dev->qp[i];
    return qp->rx.enabled || qp->tx.enabled;
}

static int start_ctrl_worker(struct vnic_dev *dev)
{
    int err = ctrl_worker_prepare(dev);
    if (err)
        return err;
    err = pthread_create(&dev->ctrlw.thread, NULL, ctrl_worker_main, dev);
    if (err) {
        ctrl_worker_release(dev);
        return -err;
    }
    dev->ctrlw.started = true;
    return 0;
}

static void stop_ctrl_worker(struct vnic_dev *dev)
{
    if (!dev->ctrlw.started)
        return;
    eventfd_signal(dev->ctrlw.stop_fd);      /* ours, drained at every wake: cannot fail */
    pthread_join(dev->ctrlw.thread, NULL);
    dev->ctrlw.started = false;
    ctrl_worker_release(dev);
}

static int start_worker(struct qpair *qp)
{
    int err = worker_prepare(qp);
    if (err)
        return err;
    err = pthread_create(&qp->thread, NULL, worker_main, qp);
    if (err) {
        worker_release(qp);
        return -err;
    }
    qp->thread_started = true;
    return 0;
}

int vnic_dev_start(struct vnic_dev *dev)
{
    if (dev->running)
        return 0;
    int err = map_rings(dev);
    if (!err)
        err = offer_rx_offloads(dev);
    if (!err)
        err = backend_steer(dev, atomic_load(&dev->active_pairs));
    if (err)
        return err;
    atomic_store(&dev->stopping, false);
    dev->running = true;
    for (int i = 0; i < dev->nqp && !err; i++)
        if (pair_has_work(dev, i))
            err = start_worker(&dev->qp[i]);
    if (!err && dev->ctrl.enabled)
        err = start_ctrl_worker(dev);
    if (err)
        vnic_dev_stop(dev);
    return err;
}

/* Stop every worker.  One waiting for a DMA_READ/DMA_WRITE reply gets
 * grace_ns to receive it, then its request fails (and the device with it). */
static void stop_workers(struct vnic_dev *dev, uint64_t grace_ns)
{
    if (!dev->running)
        return;
    atomic_store(&dev->stopping, true);
    if (dev->mem.chan)
        chan_dma_cancel(dev->mem.chan, grace_ns);
    stop_ctrl_worker(dev);       /* first: it may be waiting for a pair's worker */
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        if (!qp->thread_started)
            continue;
        /* stop_fd is ours and drained at every wake: this cannot fail, and
         * the worker reads `stopping` before it sleeps again */
        eventfd_signal(qp->stop_fd);
        pthread_join(qp->thread, NULL);
        qp->thread_started = false;
        worker_release(qp);
    }
    if (dev->mem.chan)
        chan_dma_resume(dev->mem.chan);
    dev->running = false;
}

void vnic_dev_stop(struct vnic_dev *dev)
{
    stop_workers(dev, DMA_QUIESCE_GRACE_NS);
}

void vnic_dev_reset(struct vnic_dev *dev)
{
    stop_workers(dev, 0);              /* what a request would fetch is forgotten anyway */
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        vq_clear(&qp->rx);
        vq_clear(&qp->tx);
        qp->rx_frame_len = 0;
        qp->fault_dup_len = 0;
        fault_lines_clear(qp);
        qp->backend_paused = false;
        atomic_store(&qp->parked, false);
        atomic_store(&qp->in_use, false);
        gro_reset(qp->gro);
    }
    atomic_store(&dev->active_pairs, 1);     /* until the driver asks for more */
    handoff_reset(dev);
    rss_reset(&dev->rss);
    vq_clear(&dev->ctrl);
    rx_filter_reset(&dev->filter, dev->mac);
    atomic_store(&dev->announce, false);
    dev->ctrl_last_error = -1;
    vnic_dev_set_features(dev, 0);
    /* plain frames until the next start; a refusal then fails that start */
    backend_set_offload(dev, 0);
    dev->config_vector = VNIC_NO_VECTOR;
    atomic_store(&dev->error, VNIC_ERR_NONE);
    atomic_store(&dev->isr, 0);
}

int vnic_dev_running(struct vnic_dev *dev) { return dev->running; }
int vnic_dev_error(struct vnic_dev *dev) { return atomic_load(&dev->error); }
struct vnic_queue_stats *vnic_dev_stats(struct vnic_dev *dev) { return dev->stats; }
int vnic_dev_queue_pairs(struct vnic_dev *dev) { return dev->nqp; }
int vnic_dev_active_pairs(struct vnic_dev *dev) { return atomic_load(&dev->active_pairs); }
int vnic_dev_steering(struct vnic_dev *dev) { return dev->steering; }
