/* fuzz_socket.c - what a socket backend's peer can send: the input is the
 * byte stream a -netdev stream peer writes (lengths and frames, or
 * garbage) or, when its first byte is odd, datagrams whose lengths come
 * from the input, read through the stream or dgram backend into the
 * guest's posted RX buffers by rx_process().  The peer's end is a
 * socketpair written before the run; what the device sends back (none
 * here) and its hang-ups must never crash, hang or read out of bounds.
 * Input: u8 kind, u8 coalesce, then the stream (or u16 length + bytes per
 * datagram). */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "harness.h"

#define RX_QSIZE 256
#define BUF_LEN 2048

static const uint64_t fuzz_socket_features = 1ull << VNIC_F_GUEST_CSUM | 1ull << VNIC_F_GUEST_TSO4 |
    1ull << VNIC_F_GUEST_TSO6 | 1ull << VNIC_F_MRG_RXBUF | 1ull << VNIC_F_RING_EVENT_IDX;

static void post_buffers(void)
{
    for (uint16_t i = 0; i < RX_QSIZE && FUZZ_BUFS + (uint64_t)BUF_LEN * (i + 1) <= FUZZ_MEM; i++) {
        fuzz_desc(i, FUZZ_BUFS + (uint64_t)BUF_LEN * i, BUF_LEN, VRING_DESC_F_WRITE, 0);
        fuzz_avail(i, i, RX_QSIZE);
        fuzz_avail_idx((uint16_t)(i + 1));
    }
}

/* The peer's bytes into its end: one write for a stream, one datagram per
 * u16-prefixed piece otherwise. */
static void feed_peer(int fd, struct fuzz_in *in, bool dgram)
{
    static uint8_t piece[VNIC_SOCKET_FRAME_MAX + 16];
    while (in->n) {
        size_t want = dgram ? fuzz_u16(in) : sizeof(piece);
        size_t got = fuzz_take(in, piece, want);
        if (send(fd, piece, got, MSG_DONTWAIT) < 0 && !dgram)
            break;
    }
    if (!dgram)
        shutdown(fd, SHUT_WR);        /* the peer's end: the device reads EOF after it all */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    bool dgram = fuzz_u8(&in) & 1;
    bool coalesce = fuzz_u8(&in) & 1;
    int sv[2];
    if (socketpair(AF_UNIX, (dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int buf = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    struct vnic_dev *dev = fuzz_device(fuzz_socket_features, NULL);
    if (vnic_dev_set_backend(dev, dgram ? VNIC_BACKEND_DGRAM : VNIC_BACKEND_STREAM, &sv[0], 1) < 0)
        abort();
    vnic_dev_set_rx_coalesce(dev, coalesce);
    if (fuzz_queue(dev, 0, RX_QSIZE)) {
        post_buffers();
        feed_peer(sv[1], &in, dgram);
        struct qpair *qp = &dev->qp[0];
        for (int i = 0; i < 256 && rx_process(qp) > 0; i++)
            ;
    }
    vnic_dev_set_backend(dev, VNIC_BACKEND_NULL, (const int[]){ -1 }, 1);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
