/* backend.h - what the data plane needs of a backend, the host side of the
 * device: one table of operations per kind, one file per backend (tap.c,
 * null.c, bench_source.c).  rx.c, tx.c and worker.c reach a backend only
 * through this table, so a new backend is one new file and one entry in
 * dev.c's table (plus its enum vnic_backend_kind value, if Python picks
 * it).
 *
 * The per-packet operations (read, write) are called once per frame,
 * flush once per TX batch; the rest once per configuration change or
 * worker start. */
#ifndef VNIC_BACKEND_H
#define VNIC_BACKEND_H

#include "internal.h"

enum backend_cap {
    /* write() hands iov[0]'s virtio-net header to the host, which honours
     * its offload requests (TX passthrough needs it) */
    BACKEND_CAP_GSO_PASSTHROUGH = 0x1,
    /* read() frames may carry offloads (partial checksums, super-frames)
     * as set_offload() allowed */
    BACKEND_CAP_RX_OFFLOADS = 0x2,
};

struct backend_ops {
    const char *name;
    unsigned caps;                       /* enum backend_cap bits */
    /* The device takes this backend with these fds (nfds 1 or one per
     * pair; -1 where the backend needs none): check them before anything
     * changes.  0 or -errno.  NULL: anything goes. */
    int (*open)(struct vnic_dev *dev, const int *fds, int nfds);
    /* The device lets go of this backend (another replaces it, or the
     * device closes), its fds still open: undo what would outlive them.
     * NULL: nothing lasts. */
    void (*release)(struct vnic_dev *dev);
    /* While the process may still do anything (before vnic gives up
     * root): set up what steer() will need.  0 or -errno.  NULL: nothing. */
    int (*prepare)(struct vnic_dev *dev);
    /* Per queue pair, after open: set up qp->backend_priv.  0 or -errno.
     * detach undoes it (also after a failed attach).  NULL: nothing. */
    int (*attach)(struct qpair *qp);
    void (*detach)(struct qpair *qp);
    /* Receive into the first n pairs only (n >= 1); the others get no
     * new frames once this returns.  0 or -errno.  NULL: nothing to steer
     * (a backend that never receives). */
    int (*steer)(struct vnic_dev *dev, int n);
    /* The fd the pair's worker polls for received frames, or -1. */
    int (*poll_fd)(const struct qpair *qp);
    /* Read one frame (virtio-net header + packet) into qp->rx_frame and
     * set qp->rx_frame_len.  1: one read (rx_frame_len stays 0 for a runt,
     * dropped and counted), 0: nothing to read, -1: error (counted).  A
     * backend whose peer went away sets qp->backend_down (counted) and
     * is not polled again until attached anew. */
    int (*read)(struct qpair *qp, struct vnic_queue_stats *st);
    /* Read one frame (virtio-net header + packet) straight into iov (n
     * pieces, VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX bytes in all): one
     * copy, into guest memory.  The frame's length with its header (a
     * runt's too: the caller drops it), 0: nothing to read, -1: error
     * (counted); backend_down as read().  NULL: only read(). */
    int (*read_iov)(struct qpair *qp, const struct iovec *iov, int n, struct vnic_queue_stats *st);
    /* Send one frame: iov[0] is its virtio-net header (all zero unless TX
     * passthrough), iov[1..n-1] the frame.  0, or -1 if refused. */
    int (*write)(struct qpair *qp, const struct iovec *iov, int n);
    /* Send what write() kept back to send several frames at once.  0: all
     * sent; 1: some wait until poll_fd() is writable (qp->tx_blocked is
     * set, TX stops taking chains until a flush drains it); -1: the peer
     * is gone (counted).  NULL: write() sends at once. */
    int (*flush)(struct qpair *qp);
    /* Let received frames carry the offloads these guest receive features
     * (enum vnic_feature_bit mask) accept.  0 or -errno.  NULL: none. */
    int (*set_offload)(struct vnic_dev *dev, uint64_t features);
};

extern const struct backend_ops tap_backend;
extern const struct backend_ops null_backend;
extern const struct backend_ops bench_source_backend;
extern const struct backend_ops stream_backend;
extern const struct backend_ops dgram_backend;

/* The backend's flush(): 0, 1 or -1 as it says; 0 for one without. */
static inline int backend_flush(struct qpair *qp)
{
    return qp->dev->backend->flush ? qp->dev->backend->flush(qp) : 0;
}

/* Switch the device to ops with fds (workers stopped): open, detach the
 * old one from every pair, attach the new.  0 or -errno (a failed open
 * changes nothing; a failed attach leaves the null backend). */
int dev_use_backend(struct vnic_dev *dev, const struct backend_ops *ops, const int *fds, int nfds);

/* Steer received frames over the active pairs if the backend does not
 * already.  0 or -errno. */
int backend_steer(struct vnic_dev *dev, int n);

static inline bool backend_can(const struct vnic_dev *dev, unsigned cap)
{
    return (dev->backend->caps & cap) != 0;
}

/* The receive offloads of the backend set to features; 0 or -errno. */
static inline int backend_set_offload(struct vnic_dev *dev, uint64_t features)
{
    return dev->backend->set_offload ? dev->backend->set_offload(dev, features) : 0;
}

/* The benchmark source (bench_source.c): count frames of len bytes,
 * stride apart from frames on, handed out in turn by read(). */
void bench_source_load(struct qpair *qp, const uint8_t *frames, uint32_t len, uint32_t stride,
                       uint32_t count);
/* Let read() hand out n more frames, then report nothing to read. */
void bench_source_refill(struct qpair *qp, uint32_t n);

#endif
