/* fuzz_chan.c - the vfio-user channel's framing (chan.c), as the client
 * side of its socket: the input is the byte stream a client sends (headers
 * with any size and flags, bodies cut short, doorbell writes, replies to
 * DMA requests never made), with an eventfd riding on the first message
 * when the input says.  The reader thread takes it apart; everything it
 * queues is received and freed as the Python session would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include "harness.h"

#define MAX_MSG (1u << 20)        /* the session's receive buffer */

static uint64_t messages;          /* taken apart by the reader, over the run */
static struct vnic_dev *dev;

/* libFuzzer counts inputs; a campaign is measured in messages too. */
static void report(void)
{
    fprintf(stderr, "vnic-fuzz: messages: %llu\n",
            (unsigned long long)messages);
}

/* The first message goes out with an eventfd in SCM_RIGHTS. */
static void send_with_fd(int fd, const uint8_t *data, size_t len)
{
    int efd = eventfd(0, EFD_CLOEXEC);
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    struct iovec iov = { (void *)data, len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &efd, sizeof(int));
    sendmsg(fd, &m, MSG_NOSIGNAL);
    close(efd);
}

static void drain(struct vnic_chan *ch)
{
    static uint8_t buf[MAX_MSG];
    int fds[VFIO_USER_MAX_MSG_FDS], nfds;
    while (vnic_chan_recv(ch, buf, MAX_MSG, fds, VFIO_USER_MAX_MSG_FDS, &nfds) != VNIC_CHAN_CLOSED) {
        messages++;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dev) {
        dev = vnic_dev_new(2);
        atexit(report);
    }
    if (size < 1)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct vnic_chan *ch = vnic_chan_new(sv[0], MAX_MSG);
    /* doorbells: BAR 4 at 0x3000, 4 bytes per queue, as the Python side sets them */
    vnic_chan_set_notify(ch, dev, 4, 0x3000, 4, 5);
    size_t first = size > 17 ? 17 : size - 1;
    if (data[0] & 1)
        send_with_fd(sv[1], data + 1, first);
    else
        send(sv[1], data + 1, first, MSG_NOSIGNAL);
    for (size_t off = 1 + first; off < size;) {
        ssize_t n = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    drain(ch);
    messages += vnic_chan_fast_kicks(ch);      /* doorbells never reach the queue */
    vnic_chan_free(ch);
    close(sv[1]);
    return 0;
}
