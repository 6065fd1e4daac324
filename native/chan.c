/* chan.c - the vfio-user socket, owned by C.
 *
 * A reader thread takes every message off the socket.  Doorbell writes
 * (REGION_WRITE to the virtio notify area) are turned into eventfd writes
 * right here, so a guest kick never waits for Python.  Replies to the
 * DMA_READ/DMA_WRITE requests the data plane sends for message-based guest
 * memory are matched to their waiter.  Everything else is queued for the
 * Python session, which blocks in vnic_chan_recv() with the GIL released. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include "internal.h"

#define HDR_SIZE        ((uint32_t)sizeof(struct vfio_user_header))
#define DMA_CHUNK       (64 * 1024)
#define NS_PER_S        1000000000ull
#define DMA_TIMEOUT_NS  (2 * NS_PER_S)     /* a live client answers in microseconds */

_Static_assert(DMA_CHUNK <= VFIO_USER_MAX_DATA_XFER, "DMA requests within the peer's limit");

/* The body of REGION_READ/REGION_WRITE (data follows for a write). */
struct region_access {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
};

/* The body of DMA_READ/DMA_WRITE (data follows for a write or a read reply). */
struct dma_access {
    uint64_t addr;
    uint64_t count;
};

struct node {
    struct node *next;
    int status;            /* 0, or enum vnic_chan_status */
    int nfds;
    int fds[VFIO_USER_MAX_MSG_FDS];
    uint32_t len;
    uint8_t data[];
};

struct dma_wait {
    bool active, done;
    uint16_t id, cmd;
    int err;
    uint8_t *dst;
    uint64_t len;
};

struct vnic_chan {
    int fd;
    uint32_t max_msg;
    pthread_t reader;
    pthread_mutex_t send_lock;
    pthread_mutex_t lock;          /* queue, closed, notify routing, dma wait */
    pthread_cond_t cond;
    struct node *head, *tail;
    bool closed;
    struct vnic_dev *notify_dev;
    uint32_t notify_region, notify_mult, notify_nq;
    uint64_t notify_off;
    pthread_mutex_t dma_lock;      /* one data-plane request in flight */
    struct dma_wait dma;
    uint64_t dma_give_up;          /* CLOCK_MONOTONIC ns: requests fail from then on; 0: never */
    uint16_t next_id;
    atomic_uint_fast64_t fast_kicks;
};

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, MSG_WAITALL);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int discard(int fd, size_t len)
{
    uint8_t sink[4096];
    while (len) {
        size_t n = len < sizeof(sink) ? len : sizeof(sink);
        if (read_full(fd, sink, n) < 0)
            return -1;
        len -= n;
    }
    return 0;
}

/* Read one header and the fds that ride on it.  *ctrunc is set when the
 * peer sent more fds than we accept (the kernel closed the excess). */
static int read_header(int fd, struct vfio_user_header *h, int *fds, int *nfds, bool *ctrunc)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * VFIO_USER_MAX_MSG_FDS)];
    } ctl;
    struct iovec iov = { h, sizeof(*h) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
    ssize_t n;
    do {
        n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    *nfds = 0;
    *ctrunc = (m.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && *nfds < VFIO_USER_MAX_MSG_FDS; i++)
            memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if ((size_t)n < sizeof(*h) && read_full(fd, (uint8_t *)h + n, sizeof(*h) - (size_t)n) < 0) {
        close_fds(fds, *nfds);
        return -1;
    }
    return 0;
}

static int send_msg(struct vnic_chan *ch, const struct iovec *iov, int niov, const int *fds, int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * VFIO_USER_MAX_MSG_FDS)];
    } ctl;
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)niov };
    if (nfds > VFIO_USER_MAX_MSG_FDS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = ctl.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    size_t total = 0;
    for (int i = 0; i < niov; i++)
        total += iov[i].iov_len;
    pthread_mutex_lock(&ch->send_lock);
    ssize_t n;
    do {
        n = sendmsg(ch->fd, &m, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    /* a short write on a stream socket: send the rest without fds */
    size_t sent = n > 0 ? (size_t)n : 0;
    int err = n < 0 ? -errno : 0;
    if (!err && sent < total) {
        uint8_t *flat = malloc(total);
        if (!flat) {
            err = -ENOMEM;
        } else {
            size_t off = 0;
            for (int i = 0; i < niov; i++) {
                memcpy(flat + off, iov[i].iov_base, iov[i].iov_len);
                off += iov[i].iov_len;
            }
            while (sent < total) {
                n = send(ch->fd, flat + sent, total - sent, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0) {
                    err = -EPIPE;
                    break;
                }
                sent += (size_t)n;
            }
            free(flat);
        }
    }
    pthread_mutex_unlock(&ch->send_lock);
    return err;
}

int vnic_chan_send(struct vnic_chan *ch, const uint8_t *buf, uint32_t len, const int *fds, int nfds)
{
    struct iovec iov = { (void *)buf, len };
    return send_msg(ch, &iov, 1, fds, nfds);
}

/* ---- doorbells -------------------------------------------------------------- */

/* The queue a doorbell write names, or -1 if it is no doorbell.  Called
 * with ch->lock held; the write's bytes are the peer's word, checked here. */
static int doorbell_queue(const struct vnic_chan *ch, const struct region_access *a,
                          const uint8_t *data, uint32_t data_len)
{
    if (!ch->notify_dev || a->region != ch->notify_region || a->offset < ch->notify_off)
        return -1;
    if (unlikely((a->count != 2 && a->count != 4) || data_len < a->count))
        return -1;
    uint64_t rel = a->offset - ch->notify_off;
    int q = -1;
    if (ch->notify_mult == 0) {
        uint16_t v;               /* shared doorbell: the value names the queue */
        memcpy(&v, data, sizeof(v));
        q = v;
    } else if (rel % ch->notify_mult == 0) {
        q = (int)(rel / ch->notify_mult);
    }
    return q >= 0 && (uint32_t)q < ch->notify_nq ? q : -1;
}

/* A REGION_WRITE inside the notify area: kick the queue, answer if asked. */
static bool fast_kick(struct vnic_chan *ch, const struct vfio_user_header *h, const uint8_t *p, uint32_t plen)
{
    struct region_access a;
    if (h->command != VFIO_USER_REGION_WRITE || plen < sizeof(a))
        return false;
    memcpy(&a, p, sizeof(a));
    pthread_mutex_lock(&ch->lock);
    int q = doorbell_queue(ch, &a, p + sizeof(a), plen - (uint32_t)sizeof(a));
    if (q >= 0)
        vnic_queue_kick(ch->notify_dev, q);
    pthread_mutex_unlock(&ch->lock);
    if (q < 0)
        return false;
    atomic_fetch_add(&ch->fast_kicks, 1);
    if (!(h->flags & VFIO_USER_F_NO_REPLY)) {
        /* a failed reply means the peer is gone: the reader sees the end */
        struct vfio_user_header r = { h->id, h->command, HDR_SIZE + sizeof(a), VFIO_USER_F_REPLY, 0 };
        struct iovec iov[2] = { { &r, sizeof(r) }, { (void *)p, sizeof(a) } };
        send_msg(ch, iov, 2, NULL, 0);
    }
    return true;
}

void vnic_chan_set_notify(struct vnic_chan *ch, struct vnic_dev *dev, uint32_t region,
                          uint64_t offset, uint32_t multiplier, uint32_t nqueues)
{
    pthread_mutex_lock(&ch->lock);
    ch->notify_dev = dev;
    ch->notify_region = region;
    ch->notify_off = offset;
    ch->notify_mult = multiplier;
    ch->notify_nq = nqueues;
    pthread_mutex_unlock(&ch->lock);
}

uint64_t vnic_chan_fast_kicks(struct vnic_chan *ch)
{
    return atomic_load(&ch->fast_kicks);
}

/* ---- replies to our own DMA requests --------------------------------------- */

static void complete_dma(struct vnic_chan *ch, const struct vfio_user_header *h, const uint8_t *p, uint32_t plen)
{
    pthread_mutex_lock(&ch->lock);
    struct dma_wait *w = &ch->dma;
    if (w->active && !w->done && w->id == h->id && w->cmd == h->command) {
        w->err = 0;
        if (h->flags & VFIO_USER_F_ERROR)
            w->err = -(int)(h->error ? h->error : EIO);
        else if (h->command == VFIO_USER_DMA_READ) {
            if (plen < sizeof(struct dma_access) + w->len)
                w->err = -EPROTO;
            else
                memcpy(w->dst, p + sizeof(struct dma_access), w->len);
        }
        w->done = true;
        pthread_cond_broadcast(&ch->cond);
    }
    pthread_mutex_unlock(&ch->lock);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * NS_PER_S + (uint64_t)t.tv_nsec;
}

/* With ch->lock held: -ECANCELED if the device gave up on requests. */
static int dma_cancelled(const struct vnic_chan *ch, uint64_t now)
{
    return ch->dma_give_up && now >= ch->dma_give_up ? -ECANCELED : 0;
}

/* Wait, with ch->lock held, until the reply came (its status), the channel
 * closed (-EPIPE), the device gave up (-ECANCELED) or timeout_at passed
 * (-ETIMEDOUT).  chan_dma_cancel() wakes us to look again. */
static int dma_wait_reply(struct vnic_chan *ch, uint64_t timeout_at)
{
    for (;;) {
        uint64_t now = now_ns();
        if (ch->dma.done)
            return ch->dma.err;
        if (ch->closed)
            return -EPIPE;
        int err = dma_cancelled(ch, now);
        if (err)
            return err;
        if (now >= timeout_at)
            return -ETIMEDOUT;
        uint64_t until = ch->dma_give_up && ch->dma_give_up < timeout_at ? ch->dma_give_up : timeout_at;
        struct timespec ts = { (time_t)(until / NS_PER_S), (long)(until % NS_PER_S) };
        pthread_cond_timedwait(&ch->cond, &ch->lock, &ts);
    }
}

/* Start a request: its id, or -EPIPE/-ECANCELED with nothing sent. */
static int dma_begin(struct vnic_chan *ch, uint16_t cmd, uint8_t *buf, uint64_t len)
{
    pthread_mutex_lock(&ch->lock);
    int err = ch->closed ? -EPIPE : dma_cancelled(ch, now_ns());
    uint16_t id = ch->next_id++;
    if (!err)
        ch->dma = (struct dma_wait){ true, false, id, cmd, 0, buf, len };
    pthread_mutex_unlock(&ch->lock);
    return err ? err : id;
}

static int dma_request(struct vnic_chan *ch, uint16_t cmd, uint64_t iova, uint8_t *buf, uint64_t len)
{
    pthread_mutex_lock(&ch->dma_lock);
    int id = dma_begin(ch, cmd, buf, len);
    if (id < 0) {
        pthread_mutex_unlock(&ch->dma_lock);
        return id;
    }
    struct dma_access body = { iova, len };
    bool write = cmd == VFIO_USER_DMA_WRITE;
    struct vfio_user_header h = { (uint16_t)id, cmd, (uint32_t)(HDR_SIZE + sizeof(body) + (write ? len : 0)), 0, 0 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { &body, sizeof(body) }, { buf, write ? len : 0 } };
    int err = send_msg(ch, iov, write ? 3 : 2, NULL, 0);

    pthread_mutex_lock(&ch->lock);
    if (!err)
        err = dma_wait_reply(ch, now_ns() + DMA_TIMEOUT_NS);
    ch->dma.active = false;            /* a late reply is dropped */
    pthread_mutex_unlock(&ch->lock);
    pthread_mutex_unlock(&ch->dma_lock);
    return err;
}

void chan_dma_cancel(struct vnic_chan *ch, uint64_t grace_ns)
{
    pthread_mutex_lock(&ch->lock);
    ch->dma_give_up = now_ns() + grace_ns;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
}

void chan_dma_resume(struct vnic_chan *ch)
{
    pthread_mutex_lock(&ch->lock);
    ch->dma_give_up = 0;
    pthread_mutex_unlock(&ch->lock);
}

/* A transfer of any length as DMA_CHUNK-sized requests. */
static int dma_transfer(struct vnic_chan *ch, uint16_t cmd, uint64_t iova, uint8_t *buf, uint64_t len)
{
    for (uint64_t off = 0; off < len; off += DMA_CHUNK) {
        uint64_t n = len - off < DMA_CHUNK ? len - off : DMA_CHUNK;
        int err = dma_request(ch, cmd, iova + off, buf + off, n);
        if (err)
            return err;
    }
    return 0;
}

int chan_dma_read(struct vnic_chan *ch, uint64_t iova, void *dst, uint64_t len)
{
    return dma_transfer(ch, VFIO_USER_DMA_READ, iova, dst, len);
}

int chan_dma_write(struct vnic_chan *ch, uint64_t iova, const void *src, uint64_t len)
{
    return dma_transfer(ch, VFIO_USER_DMA_WRITE, iova, (uint8_t *)src, len);   /* only read from */
}

void vnic_chan_attach_dma(struct vnic_chan *ch, struct vnic_dev *dev)
{
    dev->mem.chan = ch;
}

/* ---- reader thread ------------------------------------------------------- */

static void enqueue(struct vnic_chan *ch, struct node *n)
{
    pthread_mutex_lock(&ch->lock);
    n->next = NULL;
    if (ch->tail)
        ch->tail->next = n;
    else
        ch->head = n;
    ch->tail = n;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
}

static void *reader_main(void *arg)
{
    struct vnic_chan *ch = arg;
    for (;;) {
        struct vfio_user_header h;
        int fds[VFIO_USER_MAX_MSG_FDS], nfds;
        bool ctrunc;
        if (read_header(ch->fd, &h, fds, &nfds, &ctrunc) < 0)
            break;
        if (h.size < HDR_SIZE) {           /* the stream can't be resynchronised */
            close_fds(fds, nfds);
            break;
        }
        uint32_t plen = h.size - HDR_SIZE;
        bool oversize = h.size > ch->max_msg;
        struct node *n = malloc(sizeof(*n) + HDR_SIZE + (oversize ? 0 : plen));
        if (!n) {
            close_fds(fds, nfds);
            break;
        }
        memcpy(n->data, &h, HDR_SIZE);
        n->len = HDR_SIZE;
        n->nfds = 0;
        n->status = 0;
        if (oversize) {
            close_fds(fds, nfds);
            n->status = VNIC_CHAN_TOO_BIG;
            if (discard(ch->fd, plen) < 0) {
                free(n);
                break;
            }
            enqueue(ch, n);
            continue;
        }
        if (read_full(ch->fd, n->data + HDR_SIZE, plen) < 0) {
            close_fds(fds, nfds);
            free(n);
            break;
        }
        n->len += plen;
        /* Only the server sends DMA_READ/DMA_WRITE requests, so replies to
         * those are the data plane's (late ones are dropped).  Any other
         * reply is a client error that Python answers with EINVAL. */
        if ((h.flags & VFIO_USER_F_REPLY) && (h.command == VFIO_USER_DMA_READ || h.command == VFIO_USER_DMA_WRITE)) {
            complete_dma(ch, &h, n->data + HDR_SIZE, plen);
            close_fds(fds, nfds);
            free(n);
            continue;
        }
        if (!(h.flags & VFIO_USER_F_REPLY) && nfds == 0 && !ctrunc &&
            fast_kick(ch, &h, n->data + HDR_SIZE, plen)) {
            free(n);
            continue;
        }
        if (ctrunc) {
            close_fds(fds, nfds);
            n->status = VNIC_CHAN_TOO_MANY_FDS;
        } else {
            memcpy(n->fds, fds, sizeof(int) * (size_t)nfds);
            n->nfds = nfds;
        }
        enqueue(ch, n);
    }
    pthread_mutex_lock(&ch->lock);
    ch->closed = true;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
    return NULL;
}

struct vnic_chan *vnic_chan_new(int fd, uint32_t max_msg_size)
{
    struct vnic_chan *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    ch->fd = fd;
    ch->max_msg = max_msg_size;
    ch->next_id = 0x8000;          /* keep clear of the client's ids in logs */
    pthread_mutex_init(&ch->send_lock, NULL);
    pthread_mutex_init(&ch->lock, NULL);
    pthread_mutex_init(&ch->dma_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);   /* DMA deadlines ignore clock steps */
    pthread_cond_init(&ch->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&ch->reader, NULL, reader_main, ch) != 0) {
        free(ch);
        return NULL;
    }
    return ch;
}

int vnic_chan_recv(struct vnic_chan *ch, uint8_t *buf, uint32_t bufsize, int *fds, int maxfds, int *nfds)
{
    pthread_mutex_lock(&ch->lock);
    while (!ch->head && !ch->closed)
        pthread_cond_wait(&ch->cond, &ch->lock);
    struct node *n = ch->head;
    if (n) {
        ch->head = n->next;
        if (!ch->head)
            ch->tail = NULL;
    }
    pthread_mutex_unlock(&ch->lock);
    if (!n)
        return VNIC_CHAN_CLOSED;
    int status = n->status;
    *nfds = 0;
    if (!status && (n->len > bufsize || n->nfds > maxfds))
        status = VNIC_CHAN_TOO_BIG;
    memcpy(buf, n->data, HDR_SIZE);
    if (status) {
        close_fds(n->fds, n->nfds);
    } else {
        memcpy(buf, n->data, n->len);
        memcpy(fds, n->fds, sizeof(int) * (size_t)n->nfds);
        *nfds = n->nfds;
        status = (int)n->len;
    }
    free(n);
    return status;
}

void vnic_chan_shutdown(struct vnic_chan *ch)
{
    shutdown(ch->fd, SHUT_RDWR);
}

void vnic_chan_free(struct vnic_chan *ch)
{
    vnic_chan_shutdown(ch);
    pthread_join(ch->reader, NULL);
    close(ch->fd);
    for (struct node *n = ch->head, *next; n; n = next) {
        next = n->next;
        close_fds(n->fds, n->nfds);
        free(n);
    }
    free(ch);
}
