/* worker.c - the data plane's threads: one worker per queue pair and one
 * for the control queue.  A pair's worker sleeps in epoll on its kick
 * eventfds, its stop eventfd and the backend's fd, drains TX and RX in
 * batches, and re-arms notifications before sleeping; when the driver
 * stops using its pair (MQ_VQ_PAIRS_SET, mq.c) it finishes what it holds
 * and parks.  The control worker runs the control queue's commands.  No
 * thread takes the GIL: Python only starts and stops them (dev.c). */
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include "backend.h"

#define WORKER_FDS 4              /* stop, TX kick, RX kick, backend */
#define CTRL_FDS 2                /* stop, control kick */
#define PARK_ROUNDS 64            /* batches a parking worker may still move */

static int epoll_watch(int ep, int op, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(ep, op, fd, &ev) < 0 ? -errno : 0;
}

/* A new epoll set watching fds (those < 0 skipped): the fd or -errno. */
static int epoll_set(const int *fds, int n)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        int err = fds[i] < 0 ? 0 : epoll_watch(ep, EPOLL_CTL_ADD, fds[i], EPOLLIN);
        if (err) {
            close(ep);
            return err;
        }
    }
    return ep;
}

int worker_prepare(struct qpair *qp)
{
    int fds[WORKER_FDS] = { qp->stop_fd, qp->tx.kick_fd, qp->rx.kick_fd,
                            qp->dev->backend->poll_fd(qp) };
    int ep = epoll_set(fds, WORKER_FDS);
    if (ep < 0)
        return ep;
    qp->epoll_fd = ep;
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
static int work(struct qpair *qp)
{
    int more = 0;
    if (!device_ok(qp->dev))
        return 0;
    if (qp->tx_blocked)
        backend_flush(qp);               /* the backend's fd became writable, or not yet */
    if (qp->tx.enabled && !qp->tx_blocked)
        more |= tx_process(qp);
    if (qp->rx.enabled && !qp->backend_paused && !rx_starving(qp->dev))
        more |= rx_process(qp);
    return more;
}

/* Ask for the next kicks; false if buffers came meanwhile (work again). */
static bool arm_notifications(struct qpair *qp)
{
    if (qp->tx_blocked)
        return true;                     /* the backend's room wakes us, not the guest */
    return !(qp->tx.enabled && device_ok(qp->dev) && vq_enable_notify(&qp->tx));
}

/* What to wake for on the backend's fd: its frames unless the guest has
 * no RX buffers (or the peer is gone), its room while TX waits for it. */
static uint32_t backend_events(struct qpair *qp)
{
    if (qp->backend_down || !device_ok(qp->dev))
        return 0;
    bool rx = qp->rx.enabled && !qp->backend_paused && !handoff_holding(qp) && !rx_starving(qp->dev);
    return (rx ? EPOLLIN : 0) | (qp->tx_blocked ? EPOLLOUT : 0);
}

/* Watch the backend's fd for backend_events().  A failed change is
 * retried before the next sleep. */
static void watch_backend(struct qpair *qp, int backend_fd, volatile uint32_t *watched)
{
    uint32_t want = backend_events(qp);
    if (backend_fd < 0 || want == *watched)
        return;
    if (!epoll_watch(qp->epoll_fd, EPOLL_CTL_MOD, backend_fd, want))
        *watched = want;
}

/* Frames other pairs handed over wake the worker only when it says it
 * sleeps; false if some came meanwhile (work again). */
static bool announce_sleep(struct qpair *qp)
{
    atomic_store(&qp->sleeping, true);
    bool room = handoff_holding(qp) && handoff_retry(qp);   /* made while we looked away */
    if (room || (qp->rx.enabled && !qp->backend_paused && !rx_starving(qp->dev) && handoff_pending(qp))) {
        atomic_store(&qp->sleeping, false);
        return false;
    }
    return true;
}

static void sleep_for_events(struct qpair *qp, struct vnic_queue_stats *st)
{
    struct epoll_event evs[WORKER_FDS];
    /* frames held by fault injection wake the worker when they are due */
    bool held = fault_holding(&qp->fault[FAULT_TX]) || fault_holding(&qp->fault[FAULT_RX]);
    int n = epoll_wait(qp->epoll_fd, evs, WORKER_FDS, held ? fault_next_due_ms(qp) : -1);
    atomic_store(&qp->sleeping, false);
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == qp->tx.kick_fd) {
            drain_eventfd(fd, &st->tx_kicks);
        } else if (fd == qp->rx.kick_fd) {
            drain_eventfd(fd, &st->rx_kicks);
            qp->backend_paused = false;
        } else if (fd == qp->stop_fd) {
            drain_eventfd(fd, NULL);
        }
    }
}

/* ---- parking: the driver stopped using this pair ---------------------------- */

/* Drop (counted) every frame the backend, or another pair, still has for
 * this pair. */
static void drop_backend_frames(struct qpair *qp, struct vnic_queue_stats *st)
{
    for (int i = 0; i < VNIC_BATCH * PARK_ROUNDS && qp->dev->backend->read(qp, st) > 0; i++) {
        if (qp->rx_frame_len)
            st->rx_drops_inactive++;
        qp->rx_frame_len = 0;
    }
    for (int i = 0; i < VNIC_BATCH * PARK_ROUNDS && handoff_pop(qp); i++)
        st->rx_drops_inactive++;
    qp->rx_frame_len = 0;
    if (handoff_holding(qp) && !handoff_retry(qp)) {
        st->rx_drops_inactive++;          /* its pair never made room */
        qp->held_to = -1;
    }
}

/* What the pair holds goes out while its queues are still the driver's:
 * posted TX chains are sent, frames read (or still queued in the backend)
 * go into its RX buffers; what no buffer takes is dropped and counted. */
static void finish_pair(struct qpair *qp, struct vnic_queue_stats *st)
{
    for (int i = 0; i < PARK_ROUNDS && qp->tx.enabled && device_ok(qp->dev) && tx_process(qp); i++)
        ;
    qp->backend_paused = false;
    for (int i = 0; i < PARK_ROUNDS && qp->rx.enabled && device_ok(qp->dev) && rx_process(qp); i++)
        ;
    st->rx_drops_inactive += (uint64_t)gro_discard(qp->gro) + (qp->rx_frame_len != 0) + (qp->fault_dup_len != 0);
    qp->rx_frame_len = qp->fault_dup_len = 0;
    drop_backend_frames(qp, st);
    qp->backend_paused = false;       /* parked, the backend is drained, not paused */
}

/* Leave the pair idle.  One the driver had in use first finishes its
 * queues; one it never used (beyond the pairs in use from the start) is
 * not read: only what its backend queue holds is dropped, counted. */
static void park(struct qpair *qp, struct vnic_queue_stats *st)
{
    if (atomic_exchange(&qp->in_use, false)) {
        finish_pair(qp, st);
    } else {
        drop_backend_frames(qp, st);
        qp->backend_paused = false;
    }
    atomic_store(&qp->parked, true);
    eventfd_signal(qp->dev->ctrlw.park_fd);    /* the device's own eventfd */
}

/* One turn of a parked worker: kicks are not served, frames the backend
 * still steers here are dropped (counted), then sleep. */
static void idle_parked(struct qpair *qp, struct vnic_queue_stats *st)
{
    flows_batch_begin(&qp->flows);       /* flow-table requests are served here too */
    drop_backend_frames(qp, st);
    sleep_for_events(qp, st);
}

/* Back here from a SIGBUS in guest memory (guard.c): the device fails
 * and the thread waits for the reset. */
static void memory_vanished(struct vnic_dev *dev, struct vnic_queue_stats *st)
{
    dev_fail(dev, VNIC_ERR_MEM_FAULT, st);
}

void *worker_main(void *arg)
{
    struct qpair *qp = arg;
    struct vnic_dev *dev = qp->dev;
    struct vnic_queue_stats *st = &dev->stats[qp->index];
    int backend_fd = dev->backend->poll_fd(qp);
    volatile uint32_t backend_watched = EPOLLIN;   /* kept across a jump back from SIGBUS */
    sigjmp_buf env;

    if (sigsetjmp(env, 1))
        memory_vanished(dev, st);
    guard_enter(&env);
    while (!atomic_load(&dev->stopping)) {
        if (!pair_active(qp)) {
            if (!atomic_load(&qp->parked))
                park(qp, st);
            watch_backend(qp, backend_fd, &backend_watched);
            idle_parked(qp, st);
            continue;
        }
        atomic_store(&qp->parked, false);
        flows_batch_begin(&qp->flows);       /* between batches: clock, requests, growth */
        if (work(qp) || !arm_notifications(qp))
            continue;
        watch_backend(qp, backend_fd, &backend_watched);
        if (announce_sleep(qp))
            sleep_for_events(qp, st);
    }
    guard_leave();
    return NULL;
}

/* ---- the control queue's worker ----------------------------------------------- */

int ctrl_worker_prepare(struct vnic_dev *dev)
{
    int fds[CTRL_FDS] = { dev->ctrlw.stop_fd, dev->ctrl.kick_fd };
    int ep = epoll_set(fds, CTRL_FDS);
    if (ep < 0)
        return ep;
    dev->ctrlw.epoll_fd = ep;
    return 0;
}

void ctrl_worker_release(struct vnic_dev *dev)
{
    if (dev->ctrlw.epoll_fd >= 0)
        close(dev->ctrlw.epoll_fd);
    dev->ctrlw.epoll_fd = -1;
}

static void ctrl_sleep(struct vnic_dev *dev)
{
    struct epoll_event evs[CTRL_FDS];
    int n = epoll_wait(dev->ctrlw.epoll_fd, evs, CTRL_FDS, -1);
    for (int i = 0; i < n; i++)
        drain_eventfd(evs[i].data.fd, NULL);
}

void *ctrl_worker_main(void *arg)
{
    struct vnic_dev *dev = arg;
    sigjmp_buf env;

    if (sigsetjmp(env, 1))
        memory_vanished(dev, &dev->stats[0]);
    guard_enter(&env);
    while (!atomic_load(&dev->stopping)) {
        /* the control queue's commands are counted with pair 0 */
        if (device_ok(dev) && ctrl_process(dev, dev->ctrlw.chain, &dev->stats[0]))
            continue;
        if (device_ok(dev) && vq_enable_notify(&dev->ctrl))
            continue;                        /* commands came meanwhile */
        ctrl_sleep(dev);
    }
    guard_leave();
    return NULL;
}
