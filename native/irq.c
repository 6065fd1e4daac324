/* irq.c - interrupts: the MSI-X vectors (eventfds QEMU gave us, masked
 * and pending state), the ISR, the configuration-change interrupt, and the
 * per-queue decision whether a batch's used buffers deserve an interrupt.
 * Workers fire vectors; the control plane programs them; irq_lock keeps the
 * two apart. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

#define EVENTFD_LINK "anon_inode:[eventfd]"   /* what /proc/self/fd shows for one */

int eventfd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t w;
    do {
        w = write(fd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    if (w == sizeof(one) || (w < 0 && errno == EAGAIN))
        return 0;              /* EAGAIN: the counter is full, a wake is pending anyway */
    return w < 0 ? -errno : -EIO;
}

/* Signal v now, or remember it for when it gets an fd or is unmasked.
 * Called with irq_lock held. */
static void signal_vector(struct irq_vector *v)
{
    if (v->masked || v->fd < 0 || eventfd_signal(v->fd) < 0)
        v->pending = true;
    else
        v->pending = false;
}

static void fire_vector(struct vnic_dev *dev, uint16_t vector)
{
    if (vector >= VNIC_MAX_VECTORS)
        return;                    /* VNIC_NO_VECTOR: the driver wants none */
    pthread_mutex_lock(&dev->irq_lock);
    signal_vector(&dev->vec[vector]);
    pthread_mutex_unlock(&dev->irq_lock);
}

/* A vector that became deliverable: fire what it held back. */
static void release_pending(struct irq_vector *v)
{
    if (v->pending)
        signal_vector(v);
}

void dev_notify_queue(struct vnic_dev *dev, struct vq *vq, uint64_t *counter)
{
    if (!vq_should_interrupt(vq))
        return;
    atomic_fetch_or(&dev->isr, VNIC_ISR_QUEUE);
    fire_vector(dev, vq->vector);
    (*counter)++;
}

static bool is_eventfd(int fd)
{
    char path[40], link[sizeof(EVENTFD_LINK) + 1];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    return n == (ssize_t)strlen(EVENTFD_LINK) && memcmp(link, EVENTFD_LINK, (size_t)n) == 0;
}

int vnic_irq_check_fd(int fd)
{
    if (unlikely(fd < 0 || !is_eventfd(fd)))
        return -EINVAL;            /* a pipe or socket could block a worker's write */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        return -errno;
    return 0;
}

int vnic_irq_set_fd(struct vnic_dev *dev, int vector, int fd)
{
    if (vector < 0 || vector >= VNIC_MAX_VECTORS)
        return -EINVAL;
    if (fd >= 0) {
        int err = vnic_irq_check_fd(fd);
        if (err)
            return err;
    }
    pthread_mutex_lock(&dev->irq_lock);
    struct irq_vector *v = &dev->vec[vector];
    if (v->fd >= 0)
        close(v->fd);
    v->fd = fd;
    release_pending(v);            /* fired while it had no eventfd */
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
    release_pending(v);
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
    atomic_fetch_or(&dev->isr, VNIC_ISR_CONFIG);
    fire_vector(dev, dev->config_vector);
}

uint8_t vnic_dev_read_isr(struct vnic_dev *dev)
{
    return atomic_exchange(&dev->isr, 0);
}

void irq_init(struct vnic_dev *dev)
{
    pthread_mutex_init(&dev->irq_lock, NULL);
    for (int v = 0; v < VNIC_MAX_VECTORS; v++)
        dev->vec[v].fd = -1;
    dev->config_vector = VNIC_NO_VECTOR;
}

void irq_destroy(struct vnic_dev *dev)
{
    for (int v = 0; v < VNIC_MAX_VECTORS; v++)
        if (dev->vec[v].fd >= 0)
            close(dev->vec[v].fd);
    pthread_mutex_destroy(&dev->irq_lock);
}
