/* tap.c - the TAP backend: a host network interface whose fd carries one
 * frame per read()/writev(), each behind a 12-byte virtio-net header
 * (IFF_VNET_HDR), so offloads pass both ways: the kernel segments what
 * passthrough hands it, and hands us super-frames and partial checksums
 * as far as the guest's receive features (TUNSETOFFLOAD) allow.  The fds
 * belong to the control plane, which opens them with vnic_tap_open().
 *
 * Multiqueue: one fd per queue pair (IFF_MULTI_QUEUE), pair i reading and
 * writing fd i.  The kernel spreads received frames over the attached
 * queues by flow hash, one flow to one queue.  While the driver uses fewer
 * pairs than there are queues, a steering program (TUNSETSTEERINGEBPF, a
 * three-instruction socket filter: skb->hash modulo the pairs in use) keeps
 * frames off the queues given up, which stay attached, so that nothing
 * queued on them is purged.  Where the kernel refuses the program, the
 * queues given up are detached instead (TUNSETQUEUE): the kernel then
 * drops what was still queued on them when they go. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/bpf.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include "backend.h"

#ifndef TUN_F_USO4              /* Linux 6.2; Debian 12's headers are older */
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

int vnic_tap_open(const char *ifname, char *actual_name, int actual_len, int gro, int multi_queue)
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
    if (multi_queue)
        ifr.ifr_flags |= IFF_MULTI_QUEUE;
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

static unsigned long tun_offload_flags(uint64_t f)
{
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
    return flags;
}

static int set_offload_fd(int fd, unsigned long flags)
{
    if (ioctl(fd, TUNSETOFFLOAD, flags) == 0)
        return 0;
    /* a kernel before 6.2 knows no USO: keep the rest */
    flags &= ~(unsigned long)(TUN_F_USO4 | TUN_F_USO6);
    return ioctl(fd, TUNSETOFFLOAD, flags) < 0 ? -errno : 0;
}

/* The offloads are the TAP's, not a queue's: set through the first queue,
 * which is always attached (a detached one refuses ioctls with EBADFD). */
static int tap_set_offload(struct vnic_dev *dev, uint64_t f)
{
    return set_offload_fd(dev->backend_fds[0], tun_offload_flags(f));
}

static int tap_open(struct vnic_dev *dev, const int *fds, int nfds)
{
    if (nfds != dev->nqp)
        return -EINVAL;           /* a queue per pair: pairs never share a TAP queue */
    for (int i = 0; i < nfds; i++)
        if (fds[i] < 0)
            return -EBADF;
    return 0;
}

/* ---- steering over the queues in use ------------------------------------------ */

/* A socket filter returning skb->hash % n: the queue index for
 * TUNSETSTEERINGEBPF (the kernel takes it modulo the queues).  Its fd, or
 * -errno. */
static int steering_program(int n)
{
    struct bpf_insn prog[] = {
        { .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_1,
          .off = offsetof(struct __sk_buff, hash) },
        { .code = BPF_ALU64 | BPF_MOD | BPF_K, .dst_reg = BPF_REG_0, .imm = n },
        { .code = BPF_JMP | BPF_EXIT },
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)prog;
    attr.insn_cnt = sizeof(prog) / sizeof(prog[0]);
    attr.license = (uint64_t)(uintptr_t)"GPL";
    int fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
    return fd < 0 ? -errno : fd;
}

/* The program over n queues, loaded once per device: its fd or -errno. */
static int cached_program(struct vnic_dev *dev, int n)
{
    if (dev->steer_prog[n] < 0)
        dev->steer_prog[n] = steering_program(n);
    int prog = dev->steer_prog[n];
    if (prog < 0)
        dev->steer_prog[n] = -1;  /* refused (EPERM after the drop): ask again next time */
    return prog;
}

static void forget_programs(struct vnic_dev *dev)
{
    for (int n = 0; n <= VNIC_MAX_QUEUE_PAIRS; n++) {
        if (dev->steer_prog[n] >= 0)
            close(dev->steer_prog[n]);
        dev->steer_prog[n] = -1;
    }
}

/* Steer with a program over n queues, or (n == all) by the kernel's own
 * flow steering.  0 or -errno. */
static int steer_by_program(struct vnic_dev *dev, int n)
{
    int prog = -1;                /* -1: no program, the kernel's own steering */
    if (n < dev->nbackend_fds) {
        prog = cached_program(dev, n);
        if (prog < 0)
            return prog;          /* -EPERM is -1 too: never mistake it for "none" */
    }
    return ioctl(dev->backend_fds[0], TUNSETSTEERINGEBPF, &prog) < 0 ? -errno : 0;
}

static int set_queue(int fd, bool attached)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    if (ioctl(fd, TUNSETQUEUE, &ifr) == 0 || errno == EINVAL)   /* EINVAL: already so */
        return 0;
    return -errno;
}

/* Without a program: only the first n queues attached. */
static int steer_by_attaching(struct vnic_dev *dev, int n)
{
    for (int i = 0; i < dev->nbackend_fds; i++) {
        int err = set_queue(dev->backend_fds[i], i < n);
        if (err)
            return err;
    }
    return 0;
}

static int tap_steer(struct vnic_dev *dev, int n)
{
    if (dev->nbackend_fds == 1)
        return 0;                 /* one queue serves every pair: nothing to steer */
    int err;
    if (steer_by_program(dev, n) == 0) {
        err = steer_by_attaching(dev, dev->nbackend_fds);    /* all attached */
        if (!err)
            dev->steering = n < dev->nbackend_fds ? VNIC_STEER_PROGRAM : VNIC_STEER_NONE;
        return err;
    }
    int none = -1;                /* an earlier program must not steer over detached queues */
    ioctl(dev->backend_fds[0], TUNSETSTEERINGEBPF, &none);
    err = steer_by_attaching(dev, n);
    if (!err)
        dev->steering = n < dev->nbackend_fds ? VNIC_STEER_DETACH : VNIC_STEER_NONE;
    return err;
}

static int tap_poll_fd(const struct qpair *qp)
{
    return qp->backend_fd;
}

/* One frame into iov: its length, 0 nothing to read, -1 error (counted).
 * The kernel reports a frame's whole length even when iov was shorter. */
static int tap_read_iov(struct qpair *qp, const struct iovec *iov, int n, struct vnic_queue_stats *st)
{
    ssize_t got;
    do {
        got = readv(qp->backend_fd, iov, n);
    } while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (got < 0) {
        st->rx_drops_backend++;
        return -1;
    }
    return (int)got;
}

static int tap_read(struct qpair *qp, struct vnic_queue_stats *st)
{
    const uint32_t room = VNIC_NET_HDR_SIZE + VNIC_RX_FRAME_MAX;
    struct iovec iov = { qp->rx_frame, room };
    int n = tap_read_iov(qp, &iov, 1, st);
    if (n <= 0)
        return n;
    if (unlikely(n <= VNIC_NET_HDR_SIZE || (uint32_t)n > room)) {   /* a runt, or cut short */
        st->rx_drops_backend += n <= VNIC_NET_HDR_SIZE;
        st->rx_drops_too_big += n > VNIC_NET_HDR_SIZE;
        return 1;
    }
    qp->rx_frame_len = (uint32_t)n;
    return 1;
}

static int tap_write(struct qpair *qp, const struct iovec *iov, int n)
{
    ssize_t w;
    do {
        w = writev(qp->backend_fd, iov, n);
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -1 : 0;
}

/* The programs for every count of pairs short of all, loaded while bpf()
 * is still allowed.  0 or the first load's -errno. */
static int tap_prepare(struct vnic_dev *dev)
{
    for (int n = 1; n < dev->nbackend_fds; n++) {
        int prog = cached_program(dev, n);
        if (prog < 0)
            return prog;
    }
    return 0;
}

/* A persistent TAP keeps its steering program after our fds close: the
 * next user of the TAP would find its frames steered over our count of
 * pairs.  Take it off while the fd is still ours. */
static void tap_release(struct vnic_dev *dev)
{
    int none = -1;
    if (dev->steering == VNIC_STEER_PROGRAM)
        ioctl(dev->backend_fds[0], TUNSETSTEERINGEBPF, &none);   /* best effort: the fd may be gone */
    dev->steering = VNIC_STEER_NONE;
    forget_programs(dev);
}

const struct backend_ops tap_backend = {
    .name = "tap",
    .caps = BACKEND_CAP_GSO_PASSTHROUGH | BACKEND_CAP_RX_OFFLOADS,
    .open = tap_open,
    .release = tap_release,
    .prepare = tap_prepare,
    .steer = tap_steer,
    .poll_fd = tap_poll_fd,
    .read = tap_read,
    .read_iov = tap_read_iov,
    .write = tap_write,
    .set_offload = tap_set_offload,
};
