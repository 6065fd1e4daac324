/* null.c - the null backend: TX frames are discarded (tx.c counts them as
 * sent), RX is silent.  A device without a host network, and the sink of
 * the TX benchmark. */
#include "backend.h"

static int null_poll_fd(const struct qpair *qp)
{
    return -1;
}

static int null_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    return 0;
}

static int null_write(struct qpair *qp, const struct iovec *iov, int n)
{
    return 0;
}

const struct backend_ops null_backend = {
    .name = "null",
    .poll_fd = null_poll_fd,
    .read = null_read,
    .write = null_write,
};
