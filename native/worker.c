/* worker.c - the device object, interrupts, and one worker thread per queue
 * pair.  A worker sleeps in epoll on its kick eventfds and the backend fd,
 * drains TX and RX in batches, and re-arms notifications before sleeping.
 * It never takes the GIL: Python only starts and stops it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include "internal.h"

/* ---- interrupts ----------------------------------------------------------- */

static void fire_vector(struct vnic_dev *dev, uint16_t vector)
{
    if (vector >= VNIC_MAX_VECTORS)
        return;                    /* VIRTIO_MSI_NO_VECTOR: the driver wants none */
    pthread_mutex_lock(&dev->irq_lock);
    struct irq_vector *v = &dev->vec[vector];
    if (v->masked || v->fd < 0) {
        v->pending = true;
    } else {
        uint64_t one = 1;
        ssize_t r = write(v->fd, &one, sizeof(one));
        (void)r;                   /* a full eventfd already means "interrupt" */
    }
    pthread_mutex_unlock(&dev->irq_lock);
}

void dev_notify_queue(struct vnic_dev *dev, struct vq *vq, uint64_t *counter)
{
    if (!vq_should_interrupt(vq))
        return;
    atomic_fetch_or(&dev->isr, 1);
    fire_vector(dev, vq->vector);
    (*counter)++;
}

void dev_fail(struct vnic_dev *dev, int reason, struct vnic_queue_stats *st)
{
    if (st) {
        if (reason == VNIC_ERR_DMA || reason == VNIC_ERR_RING_DMA)
            st->dma_errors++;
        else
            st->chain_errors++;
    }
    int none = VNIC_ERR_NONE;
    if (atomic_compare_exchange_strong(&dev->error, &none, reason))
        vnic_irq_config_changed(dev);
}

int vnic_irq_set_fd(struct vnic_dev *dev, int vector, int fd)
{
    if (vector < 0 || vector >= VNIC_MAX_VECTORS)
        return -EINVAL;
    pthread_mutex_lock(&dev->irq_lock);
    struct irq_vector *v = &dev->vec[vector];
    if (v->fd >= 0)
        close(v->fd);
    v->fd = fd;
    if (fd >= 0 && !v->masked && v->pending) {  /* fired while it had no eventfd */
        uint64_t one = 1;
        v->pending = false;
        ssize_t r = write(fd, &one, sizeof(one));
        (void)r;
    }
    pthread_mutex_unlock(&dev->irq_lock);
    return 0;
}

int vnic_irq_set_masked(struct vnic_dev *dev, int vector, int masked)
{
    if (vector < 0 || vector >= VNIC_MAX_VECTORS)
        return -EINVAL;
    pthread_mutex_lock(&dev->irq_lock);
    struct irq_vector *v = &dev->vec[vector];
    v->masked = masked != 0;
    bool fire = !v->masked && v->pending && v->fd >= 0;
    if (fire) {
        uint64_t one = 1;
        v->pending = false;
        ssize_t r = write(v->fd, &one, sizeof(one));
        (void)r;
    }
    pthread_mutex_unlock(&dev->irq_lock);
    return 0;
}

void vnic_irq_trigger(struct vnic_dev *dev, int vector)
{
    if (vector >= 0)
        fire_vector(dev, (uint16_t)vector);
}

void vnic_irq_set_config_vector(struct vnic_dev *dev, uint16_t vector)
{
    dev->config_vector = vector;
}

void vnic_irq_config_changed(struct vnic_dev *dev)
{
    atomic_fetch_or(&dev->isr, 2);
    fire_vector(dev, dev->config_vector);
}

uint8_t vnic_dev_read_isr(struct vnic_dev *dev)
{
    return atomic_exchange(&dev->isr, 0);
}

/* ---- queues ------------------------------------------------------------- */

static struct vq *queue(struct vnic_dev *dev, int q)
{
    if (q == 2 * dev->nqp)
        return &dev->ctrl;
    if (q < 0 || q >= 2 * dev->nqp)
        return NULL;
    struct qpair *qp = &dev->qp[q / 2];
    return q % 2 ? &qp->tx : &qp->rx;
}

int vnic_queue_setup(struct vnic_dev *dev, int q, uint16_t size, uint64_t desc, uint64_t avail, uint64_t used)
{
    struct vq *vq = queue(dev, q);
    if (!vq || dev->running)
        return -EINVAL;
    if (size == 0 || size > VNIC_MAX_RING_SIZE || (size & (size - 1)))
        return -EINVAL;        /* split rings: a power of two, or indices break at wrap */
    vq->size = size;
    vq->desc_addr = desc;
    vq->avail_addr = avail;
    vq->used_addr = used;
    vq->configured = true;
    return 0;
}

int vnic_queue_set_vector(struct vnic_dev *dev, int q, uint16_t vector)
{
    struct vq *vq = queue(dev, q);
    if (!vq)
        return -EINVAL;
    vq->vector = vector;
    return 0;
}

int vnic_queue_enable(struct vnic_dev *dev, int q, int enabled)
{
    struct vq *vq = queue(dev, q);
    if (!vq || dev->running)
        return -EINVAL;
    if (enabled && !vq->configured)
        return -EINVAL;
    vq->enabled = enabled != 0;
    return 0;
}

int vnic_queue_kick(struct vnic_dev *dev, int q)
{
    struct vq *vq = queue(dev, q);
    if (!vq)
        return -EINVAL;
    uint64_t one = 1;
    ssize_t r = write(vq->kick_fd, &one, sizeof(one));
    (void)r;
    return 0;
}

int vnic_queue_kick_fd(struct vnic_dev *dev, int q)
{
    struct vq *vq = queue(dev, q);
    return vq ? vq->kick_fd : -EINVAL;
}

/* Forget a queue's ring state.  kick_fd, dev and index stay: the channel
 * thread may kick the queue at any moment. */
static void vq_clear(struct vq *vq)
{
    vq->size = 0;
    vq->desc_addr = vq->avail_addr = vq->used_addr = 0;
    vq->desc = NULL;
    vq->avail = vq->used = NULL;
    vq->configured = vq->enabled = false;
    vq->last_avail = vq->avail_seen = vq->used_idx = vq->signalled_used = 0;
    vq->signalled_valid = false;
    vq->vector = VNIC_NO_VECTOR;
}

/* ---- worker ------------------------------------------------------------- */

static void drain_eventfd(int fd, uint64_t *counter)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) == sizeof(v) && counter)
        (*counter)++;
}

static void epoll_set(int ep, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

void *worker_main(void *arg)
{
    struct qpair *qp = arg;
    struct vnic_dev *dev = qp->dev;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    bool tap = dev->backend_kind == VNIC_BACKEND_TAP;
    bool ctrl = qp->index == 0;       /* pair 0 also serves the control queue */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int fds[5] = { qp->stop_fd, qp->tx.kick_fd, qp->rx.kick_fd, tap ? dev->backend_fd : -1,
                   ctrl ? dev->ctrl.kick_fd : -1 };
    for (int i = 0; i < 5; i++) {
        if (fds[i] < 0)
            continue;
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    bool backend_watched = true;

    while (!atomic_load(&dev->stopping)) {
        flows_batch_begin(&qp->flows);       /* between batches: clock, requests, growth */
        int more = 0;
        if (!atomic_load(&dev->error)) {
            if (ctrl && dev->ctrl.enabled)
                more |= ctrl_process(dev, qp->chain, st);
            if (qp->tx.enabled)
                more |= tx_process(qp);
            if (qp->rx.enabled && !qp->backend_paused)
                more |= rx_process(qp);
        }
        if (more)
            continue;
        if (qp->tx.enabled && !atomic_load(&dev->error) && vq_enable_notify(&qp->tx))
            continue;
        if (ctrl && dev->ctrl.enabled && !atomic_load(&dev->error) && vq_enable_notify(&dev->ctrl))
            continue;
        /* while the guest has no RX buffers, don't wake for backend data */
        bool want_backend = tap && qp->rx.enabled && !qp->backend_paused &&
                            !atomic_load(&dev->error);
        if (tap && want_backend != backend_watched) {
            epoll_set(ep, dev->backend_fd, want_backend ? EPOLLIN : 0);
            backend_watched = want_backend;
        }
        struct epoll_event evs[5];
        int n = epoll_wait(ep, evs, 5, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == qp->tx.kick_fd) {
                drain_eventfd(fd, &st->tx_kicks);
            } else if (fd == qp->rx.kick_fd) {
                drain_eventfd(fd, &st->rx_kicks);
                qp->backend_paused = false;
            } else if (fd == qp->stop_fd || (ctrl && fd == dev->ctrl.kick_fd)) {
                drain_eventfd(fd, NULL);
            }
        }
    }
    close(ep);
    return NULL;
}

/* ---- device lifetime ------------------------------------------------------- */

struct vnic_dev *vnic_dev_new(int queue_pairs)
{
    if (queue_pairs < 1 || queue_pairs > VNIC_MAX_QUEUE_PAIRS)
        return NULL;
    struct vnic_dev *dev = calloc(1, sizeof(*dev));
    if (!dev)
        return NULL;
    dev->nqp = queue_pairs;
    dev->backend_kind = VNIC_BACKEND_NULL;
    dev->backend_fd = -1;
    dev->config_vector = VNIC_NO_VECTOR;
    atomic_store(&dev->rx_coalesce, true);
    pthread_mutex_init(&dev->irq_lock, NULL);
    for (int v = 0; v < VNIC_MAX_VECTORS; v++)
        dev->vec[v].fd = -1;
    dev->ctrl.dev = dev;
    dev->ctrl.index = 2 * queue_pairs;
    dev->ctrl.kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    vq_clear(&dev->ctrl);
    rx_filter_reset(&dev->filter, dev->mac);
    dev->ctrl_last_error = -1;
    for (int i = 0; i < queue_pairs; i++) {
        struct qpair *qp = &dev->qp[i];
        qp->dev = dev;
        qp->index = i;
        qp->rx.dev = qp->tx.dev = dev;
        qp->rx.index = 2 * i;
        qp->tx.index = 2 * i + 1;
        qp->rx.kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        qp->tx.kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        qp->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        int flows_err = flows_init(&qp->flows, &dev->stats[i]);
        qp->rx_frame = malloc(VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX);
        qp->tx_bounce = malloc(VNIC_MAX_FRAME);
        qp->chain = malloc(sizeof(struct chain));
        qp->txc = calloc(1, sizeof(struct tx_ctx));
        qp->gro = calloc(1, sizeof(struct gro));
        if (qp->rx.kick_fd < 0 || qp->tx.kick_fd < 0 || qp->stop_fd < 0 || flows_err ||
            !qp->rx_frame || !qp->tx_bounce || !qp->chain || !qp->txc || !qp->gro) {
            dev->nqp = i + 1;
            vnic_dev_free(dev);
            return NULL;
        }
        qp->txc->frag_id = &dev->frag_id;
        qp->txc->st = &dev->stats[i];
        qp->txc->sink = qp;
        vq_clear(&qp->rx);
        vq_clear(&qp->tx);
    }
    return dev;
}

void vnic_dev_free(struct vnic_dev *dev)
{
    if (!dev)
        return;
    vnic_dev_stop(dev);
    if (dev->ctrl.kick_fd >= 0)
        close(dev->ctrl.kick_fd);
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        if (qp->rx.kick_fd >= 0) close(qp->rx.kick_fd);
        if (qp->tx.kick_fd >= 0) close(qp->tx.kick_fd);
        if (qp->stop_fd >= 0) close(qp->stop_fd);
        free(qp->rx_frame);
        free(qp->tx_bounce);
        free(qp->chain);
        free(qp->txc);
        gro_free(qp->gro);
        flows_destroy(&qp->flows);
    }
    for (int v = 0; v < VNIC_MAX_VECTORS; v++)
        if (dev->vec[v].fd >= 0)
            close(dev->vec[v].fd);
    free(dev);
}

int vnic_dev_set_features(struct vnic_dev *dev, uint64_t features)
{
    if (dev->running)
        return -EBUSY;          /* the workers read these without a lock */
    dev->features = features;
    dev->guest_offloads = features & GUEST_OFFLOAD_MASK;
    dev->event_idx = features >> VNIC_F_RING_EVENT_IDX & 1;
    dev->indirect = features >> VNIC_F_RING_INDIRECT_DESC & 1;
    dev->mrg_rxbuf = features >> VNIC_F_MRG_RXBUF & 1;
    return 0;
}

int vnic_dev_set_backend(struct vnic_dev *dev, int kind, int fd)
{
    if (dev->running || (kind != VNIC_BACKEND_NULL && kind != VNIC_BACKEND_TAP))
        return -EINVAL;
    if (kind == VNIC_BACKEND_TAP && fd < 0)
        return -EBADF;
    dev->backend_kind = kind;
    dev->backend_fd = fd;
    return 0;
}

void vnic_dev_set_rx_coalesce(struct vnic_dev *dev, int on)
{
    atomic_store(&dev->rx_coalesce, on != 0);
}

int vnic_dev_set_tx_mode(struct vnic_dev *dev, int mode)
{
    if (mode != VNIC_TX_SEGMENT && mode != VNIC_TX_PASSTHROUGH)
        return -EINVAL;
    if (mode == VNIC_TX_PASSTHROUGH && dev->backend_kind != VNIC_BACKEND_TAP)
        return -ENOTSUP;
    dev->tx_mode = mode;       /* read once per frame by the workers */
    return 0;
}

int vnic_dev_start(struct vnic_dev *dev)
{
    if (dev->running)
        return 0;
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
    if (dev->backend_kind == VNIC_BACKEND_TAP && tap_set_offload(dev->backend_fd, rx_features(dev)) < 0)
        tap_set_offload(dev->backend_fd, 0);     /* an old kernel: plain frames only */
    atomic_store(&dev->stopping, false);
    dev->running = true;
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        if (!qp->rx.enabled && !qp->tx.enabled && !(i == 0 && dev->ctrl.enabled))
            continue;
        if (pthread_create(&qp->thread, NULL, worker_main, qp) != 0) {
            vnic_dev_stop(dev);
            return -EAGAIN;
        }
        qp->thread_started = true;
    }
    return 0;
}

void vnic_dev_stop(struct vnic_dev *dev)
{
    if (!dev->running)
        return;
    atomic_store(&dev->stopping, true);
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        if (!qp->thread_started)
            continue;
        uint64_t one = 1;
        ssize_t r = write(qp->stop_fd, &one, sizeof(one));
        (void)r;
        pthread_join(qp->thread, NULL);
        qp->thread_started = false;
    }
    dev->running = false;
}

void vnic_dev_reset(struct vnic_dev *dev)
{
    vnic_dev_stop(dev);
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        vq_clear(&qp->rx);
        vq_clear(&qp->tx);
        qp->rx_frame_len = 0;
        qp->backend_paused = false;
        gro_reset(qp->gro);
    }
    vq_clear(&dev->ctrl);
    rx_filter_reset(&dev->filter, dev->mac);
    atomic_store(&dev->announce, false);
    dev->ctrl_last_error = -1;
    vnic_dev_set_features(dev, 0);
    if (dev->backend_kind == VNIC_BACKEND_TAP)
        tap_set_offload(dev->backend_fd, 0);
    dev->config_vector = VNIC_NO_VECTOR;
    atomic_store(&dev->error, VNIC_ERR_NONE);
    atomic_store(&dev->isr, 0);
}

int vnic_dev_running(struct vnic_dev *dev) { return dev->running; }
int vnic_dev_error(struct vnic_dev *dev) { return atomic_load(&dev->error); }
struct vnic_queue_stats *vnic_dev_stats(struct vnic_dev *dev) { return dev->stats; }
int vnic_dev_queue_pairs(struct vnic_dev *dev) { return dev->nqp; }

/* ---- MAC, filter, announce ------------------------------------------------ */

void vnic_dev_set_mac(struct vnic_dev *dev, const uint8_t *mac)
{
    memcpy(dev->mac, mac, 6);
    memcpy(dev->filter.mac, mac, 6);
}

void vnic_dev_get_mac(struct vnic_dev *dev, uint8_t *mac)
{
    memcpy(mac, dev->filter.mac, 6);
}

void vnic_dev_filter_state(struct vnic_dev *dev, struct vnic_filter_state *out)
{
    const struct rx_filter *f = &dev->filter;   /* a snapshot; the worker may be changing it */
    *out = (struct vnic_filter_state){
        f->promisc, f->allmulti, f->alluni, f->nomulti, f->nouni, f->nobcast, { 0 },
        f->n_uc, f->n_mc, f->uc_overflow, f->mc_overflow, 0,
        dev->guest_offloads, atomic_load(&dev->announce), dev->ctrl_last_error,
    };
    memcpy(out->mac, f->mac, 6);
    for (int i = 0; i < 4096 / 32; i++)
        out->vlans += __builtin_popcount(f->vlans[i]);
}

void vnic_dev_announce(struct vnic_dev *dev)
{
    atomic_store(&dev->announce, true);
    vnic_irq_config_changed(dev);
}

int vnic_dev_announce_pending(struct vnic_dev *dev)
{
    return atomic_load(&dev->announce);
}
