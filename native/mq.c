/* mq.c - how many queue pairs the driver uses: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
 * (virtio 1.2, 5.1.6.5.5), applied on the control queue's thread.
 *
 * Growing, the backend first steers received frames over the new pairs
 * too (they wait in the backend's queues until the pairs' workers wake),
 * then the workers start.  Shrinking, the backend first stops steering
 * frames to the pairs given up; each of their workers then finishes what
 * it holds (transmits what the guest posted, delivers what it read to the
 * guest's buffers of that pair, counts in rx_drops_inactive what no buffer
 * took) and parks.  The command is answered once they all have, so after
 * the driver sees the answer no frame lands on a queue it gave up. */
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include "backend.h"

#define PARK_WAIT_MS 2000        /* a worker stuck longer is not waited for */

int backend_steer(struct vnic_dev *dev, int n)
{
    if (dev->steered_pairs == n || !dev->backend->steer)
        return 0;
    int err = dev->backend->steer(dev, n);
    dev->steered_pairs = err ? 0 : n;     /* after a failure: unknown, steer again next time */
    return err;
}

static void wake_pairs(struct vnic_dev *dev, int from, int to)
{
    for (int i = from; i < to; i++)
        if (dev->qp[i].thread_started)
            eventfd_signal(dev->qp[i].stop_fd);   /* the device's own eventfd */
}

static bool parked_from(const struct vnic_dev *dev, int from)
{
    for (int i = from; i < dev->nqp; i++)
        if (dev->qp[i].thread_started && !atomic_load(&dev->qp[i].parked))
            return false;
    return true;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Until every worker from `from` on has parked, the device stops, or the
 * wait is over. */
static void wait_parked(struct vnic_dev *dev, int from)
{
    int64_t deadline = now_ms() + PARK_WAIT_MS;
    /* the stop eventfd too: a device stopping is not kept waiting */
    struct pollfd p[2] = { { .fd = dev->ctrlw.park_fd, .events = POLLIN },
                           { .fd = dev->ctrlw.stop_fd, .events = POLLIN } };
    while (!parked_from(dev, from) && !atomic_load(&dev->stopping)) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return;
        if (poll(p, 2, left < 100 ? (int)left : 100) > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            if (read(p[0].fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                return;
        }
    }
}

int dev_set_active_pairs(struct vnic_dev *dev, int n)
{
    int old = atomic_load(&dev->active_pairs);
    if (unlikely(n < 1 || n > dev->nqp))
        return -EINVAL;
    int err = backend_steer(dev, n);
    if (err)
        return err;
    /* pairs given up now count as not parked until their worker says so:
     * a flag left from an earlier shrink must not answer for this one */
    for (int i = n; i < old; i++)
        atomic_store(&dev->qp[i].parked, false);
    for (int i = old; i < n; i++)
        atomic_store(&dev->qp[i].in_use, true);     /* parking will finish what it posts */
    atomic_store_explicit(&dev->active_pairs, n, memory_order_release);
    if (n > old) {
        wake_pairs(dev, old, n);
    } else if (n < old) {
        wake_pairs(dev, n, old);
        wait_parked(dev, n);
    }
    dev->stats[0].mq_pairs_changes++;
    return 0;
}
