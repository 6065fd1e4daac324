/* worker.c - one worker thread per queue pair.  A worker sleeps in epoll on
 * its kick eventfds, its stop eventfd and the backend's fd, drains TX and
 * RX in batches, and re-arms notifications before sleeping.  It never
 * takes the GIL: Python only starts and stops it (dev.c). */
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include "backend.h"

#define WORKER_FDS 5              /* stop, TX kick, RX kick, backend, control kick */

static bool serves_ctrl(const struct qpair *qp)
{
    return qp->index == 0;        /* pair 0 also serves the control queue */
}

static int epoll_watch(int ep, int op, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(ep, op, fd, &ev) < 0 ? -errno : 0;
}

int worker_prepare(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    int fds[WORKER_FDS] = { qp->stop_fd, qp->tx.kick_fd, qp->rx.kick_fd,
                            dev->backend->poll_fd(qp), serves_ctrl(qp) ? dev->ctrl.kick_fd : -1 };
    qp->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (qp->epoll_fd < 0)
        return -errno;
    for (int i = 0; i < WORKER_FDS; i++) {
        int err = fds[i] < 0 ? 0 : epoll_watch(qp->epoll_fd, EPOLL_CTL_ADD, fds[i], EPOLLIN);
        if (err) {
            worker_release(qp);
            return err;
        }
    }
    return 0;
}

void worker_release(struct qpair *qp)
{
    if (qp->epoll_fd >= 0)
        close(qp->epoll_fd);
    qp->epoll_fd = -1;
}

static void drain_eventfd(int fd, uint64_t *counter)
{
    uint64_t v;
    /* EAGAIN: another wake drained it first; nothing else can fail */
    if (read(fd, &v, sizeof(v)) == sizeof(v) && counter)
        (*counter)++;
}

static bool device_ok(const struct vnic_dev *dev)
{
    return !atomic_load(&dev->error);
}

/* One round of work: >0 if some queue has more right away. */
static int work(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct vnic_dev *dev = qp->dev;
    int more = 0;
    if (!device_ok(dev))
        return 0;
    if (serves_ctrl(qp) && dev->ctrl.enabled)
        more |= ctrl_process(dev, qp->chain, st);
    if (qp->tx.enabled)
        more |= tx_process(qp);
    if (qp->rx.enabled && !qp->backend_paused)
        more |= rx_process(qp);
    return more;
}

/* Ask for the next kicks; false if buffers came meanwhile (work again). */
static bool arm_notifications(struct qpair *qp)
{
    struct vnic_dev *dev = qp->dev;
    if (qp->tx.enabled && device_ok(dev) && vq_enable_notify(&qp->tx))
        return false;
    if (serves_ctrl(qp) && dev->ctrl.enabled && device_ok(dev) && vq_enable_notify(&dev->ctrl))
        return false;
    return true;
}

/* While the guest has no RX buffers, don't wake for backend data.  A
 * failed change is retried before the next sleep. */
static void watch_backend(struct qpair *qp, int backend_fd, bool *watched)
{
    bool want = qp->rx.enabled && !qp->backend_paused && device_ok(qp->dev);
    if (backend_fd < 0 || want == *watched)
        return;
    if (!epoll_watch(qp->epoll_fd, EPOLL_CTL_MOD, backend_fd, want ? EPOLLIN : 0))
        *watched = want;
}

static void sleep_for_events(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct epoll_event evs[WORKER_FDS];
    int n = epoll_wait(qp->epoll_fd, evs, WORKER_FDS, -1);
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == qp->tx.kick_fd) {
            drain_eventfd(fd, &st->tx_kicks);
        } else if (fd == qp->rx.kick_fd) {
            drain_eventfd(fd, &st->rx_kicks);
            qp->backend_paused = false;
        } else if (fd == qp->stop_fd || (serves_ctrl(qp) && fd == qp->dev->ctrl.kick_fd)) {
            drain_eventfd(fd, NULL);
        }
    }
}

void *worker_main(void *arg)
{
    struct qpair *qp = arg;
    struct vnic_dev *dev = qp->dev;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    int backend_fd = dev->backend->poll_fd(qp);
    bool backend_watched = true;

    while (!atomic_load(&dev->stopping)) {
        flows_batch_begin(&qp->flows);       /* between batches: clock, requests, growth */
        if (work(qp, st) || !arm_notifications(qp))
            continue;
        watch_backend(qp, backend_fd, &backend_watched);
        sleep_for_events(qp, st);
    }
    return NULL;
}
