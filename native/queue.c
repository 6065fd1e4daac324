/* queue.c - the virtqueues as the control plane programs them (size, ring
 * addresses, vector, enable) and their doorbells.  Queue index 2*i is RX
 * of pair i, 2*i+1 its TX; the control queue is 2*pairs once the driver
 * negotiated MQ, else 2 (virtio 1.2, 5.1.2: without MQ the driver sees one
 * pair).  The ring engine itself is virtq.c. */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "internal.h"

static int data_queues(const struct vnic_dev *dev)
{
    return dev->features >> VNIC_F_MQ & 1 ? 2 * dev->nqp : 2;
}

static struct vq *queue(struct vnic_dev *dev, int q)
{
    if (q == data_queues(dev))
        return &dev->ctrl;
    if (q < 0 || q >= data_queues(dev))
        return NULL;
    struct qpair *qp = &dev->qp[q / 2];
    return q % 2 ? &qp->tx : &qp->rx;
}

int vnic_queue_setup(struct vnic_dev *dev, int q, uint16_t size, uint64_t desc, uint64_t avail, uint64_t used)
{
    struct vq *vq = queue(dev, q);
    if (!vq || dev->running)
        return -EINVAL;
    if (size == 0 || size > VNIC_MAX_RING_SIZE)
        return -EINVAL;
    if (!(dev->features >> VNIC_F_RING_PACKED & 1) && (size & (size - 1)))
        return -EINVAL;        /* split rings: a power of two, or indices break at wrap (2.7) */
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
    return eventfd_signal(vq->kick_fd);
}

int vnic_queue_kick_fd(struct vnic_dev *dev, int q)
{
    struct vq *vq = queue(dev, q);
    return vq ? vq->kick_fd : -EINVAL;
}

/* Forget a queue's ring state.  kick_fd, dev and index stay: the channel
 * thread may kick the queue at any moment. */
void vq_clear(struct vq *vq)
{
    vq->size = 0;
    vq->desc_addr = vq->avail_addr = vq->used_addr = 0;
    vq->desc = NULL;
    vq->avail = vq->used = NULL;
    vq->configured = vq->enabled = false;
    vq->packed = false;
    vq->last_avail = vq->avail_seen = vq->used_idx = vq->signalled_used = 0;
    vq->signalled_valid = false;
    /* both wrap counters back to 1 (2.8.1); the flight array is kept */
    vq->next_avail = vq->next_used = vq->seen_empty = 0;
    vq->flight_head = 0;
    vq->vector = VNIC_NO_VECTOR;
}

int vq_init(struct vq *vq, struct vnic_dev *dev, int index)
{
    vq->dev = dev;
    vq->index = index;
    vq_clear(vq);
    vq->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return vq->kick_fd < 0 ? -errno : 0;
}

void vq_destroy(struct vq *vq)
{
    free(vq->flight);
    vq->flight = NULL;
    vq->flight_size = 0;
    if (vq->kick_fd >= 0)
        close(vq->kick_fd);
    vq->kick_fd = -1;
}
