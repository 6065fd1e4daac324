/* tap.c - the TAP backend: a host network interface whose fd carries one
 * frame per read()/writev(), each behind a 12-byte virtio-net header
 * (IFF_VNET_HDR), so offloads pass both ways: the kernel segments what
 * passthrough hands it, and hands us super-frames and partial checksums
 * as far as the guest's receive features (TUNSETOFFLOAD) allow.  The fd
 * belongs to the control plane, which opens it with vnic_tap_open(). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include "backend.h"

#ifndef TUN_F_USO4              /* Linux 6.2; Debian 12's headers are older */
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

int vnic_tap_open(const char *ifname, char *actual_name, int actual_len, int gro)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    /* the vnet header carries offload metadata both ways, 12 bytes like the guest's */
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    /* NAPI: frames we write pass the host's GRO, which merges the wire
     * segments of a TCP stream again (as a receiving NIC's GRO would), so
     * the host stack handles one packet, and sends one ACK, per burst */
    if (gro)
        ifr.ifr_flags |= IFF_NAPI;
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    int hdr = VNIC_NET_HDR_SIZE;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (actual_name && actual_len > 0) {
        strncpy(actual_name, ifr.ifr_name, (size_t)actual_len - 1);
        actual_name[actual_len - 1] = 0;
    }
    return fd;
}

static int tap_set_offload(struct vnic_dev *dev, uint64_t f)
{
    int fd = dev->backend_fd;
    unsigned long flags = 0;
    if (f >> VNIC_F_GUEST_CSUM & 1) {      /* the others build on checksums */
        flags |= TUN_F_CSUM;
        if (f >> VNIC_F_GUEST_TSO4 & 1) flags |= TUN_F_TSO4;
        if (f >> VNIC_F_GUEST_TSO6 & 1) flags |= TUN_F_TSO6;
        if ((f >> VNIC_F_GUEST_ECN & 1) && (flags & (TUN_F_TSO4 | TUN_F_TSO6)))
            flags |= TUN_F_TSO_ECN;
        if (f >> VNIC_F_GUEST_UFO & 1) flags |= TUN_F_UFO;
        if (f >> VNIC_F_GUEST_USO4 & 1) flags |= TUN_F_USO4;
        if (f >> VNIC_F_GUEST_USO6 & 1) flags |= TUN_F_USO6;
    }
    if (ioctl(fd, TUNSETOFFLOAD, flags) == 0)
        return 0;
    /* a kernel before 6.2 knows no USO: keep the rest */
    flags &= ~(unsigned long)(TUN_F_USO4 | TUN_F_USO6);
    return ioctl(fd, TUNSETOFFLOAD, flags) < 0 ? -errno : 0;
}

static int tap_open(struct vnic_dev *dev, int fd)
{
    return fd < 0 ? -EBADF : 0;
}

static int tap_poll_fd(const struct qpair *qp)
{
    return qp->dev->backend_fd;
}

static int tap_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    ssize_t n;
    do {
        n = read(qp->dev->backend_fd, qp->rx_frame, VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n < 0) {
        st->rx_drops_backend++;
        return -1;
    }
    if (unlikely(n <= VNIC_NET_HDR_SIZE)) {    /* runt frame: dropped */
        st->rx_drops_backend++;
        return 1;
    }
    qp->rx_frame_len = (uint32_t)n;
    return 1;
}

static int tap_write(struct qpair *qp, const struct iovec *iov, int n)
{
    ssize_t w;
    do {
        w = writev(qp->dev->backend_fd, iov, n);
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -1 : 0;
}

const struct backend_ops tap_backend = {
    .name = "tap",
    .caps = BACKEND_CAP_GSO_PASSTHROUGH | BACKEND_CAP_RX_OFFLOADS,
    .open = tap_open,
    .poll_fd = tap_poll_fd,
    .read = tap_read,
    .write = tap_write,
    .set_offload = tap_set_offload,
};
