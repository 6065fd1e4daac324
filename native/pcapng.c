/* pcapng.c - the capture's writer: turns the records the workers left in
 * their rings (capture.c) into a pcapng file (IETF draft-ietf-opsawg-pcapng)
 * that tshark, Wireshark and scapy read.
 *
 * Why pcapng and not pcap: each enhanced packet block carries its direction
 * (epb_flags: inbound = toward the guest), its queue pair (epb_queue) and,
 * for frames with a virtio-net header, that header spelled out in a
 * comment, so a reader sees what gso_type/gso_size/flags the guest or the
 * backend asked for.  Timestamps are in nanoseconds (if_tsresol 9).
 *
 * The writer thread merges the rings by timestamp as it drains them,
 * batches blocks in one buffer and writes when it is full or the rings are
 * empty, every millisecond, so the file is current within a few. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

enum pcapng_block {
    PCAPNG_SHB = 0x0A0D0D0A,
    PCAPNG_IDB = 0x00000001,
    PCAPNG_EPB = 0x00000006
};

enum pcapng_option {
    OPT_END = 0,
    OPT_COMMENT = 1,
    SHB_USERAPPL = 4,
    IF_NAME = 2,
    IF_DESCRIPTION = 3,
    IF_TSRESOL = 9,
    EPB_FLAGS = 2,
    EPB_QUEUE = 6
};

enum {
    PCAPNG_MAGIC = 0x1A2B3C4D,
    LINKTYPE_ETHERNET = 1,
    TSRESOL_NS = 9,
    EPB_INBOUND = 1,
    EPB_OUTBOUND = 2,
    COMMENT_MAX = 192,
    WRITER_NAP_NS = 1000000,     /* the writer's nap between drains: 1 ms of frames */
    WRITE_POLL_MS = 100,         /* a full pipe: how long one wait for its reader lasts */
    STOP_WAITS = 20              /* ... and how many of them a stopping capture allows */
};

struct block_hdr {
    uint32_t type;
    uint32_t total_len;
};

struct shb_body {
    uint32_t magic;
    uint16_t major, minor;
    int64_t section_len;         /* -1: not given */
};

struct idb_body {
    uint16_t linktype;
    uint16_t reserved;
    uint32_t snaplen;
};

struct epb_body {
    uint32_t interface;
    uint32_t ts_high, ts_low;
    uint32_t caplen, origlen;
};

struct opt_hdr {
    uint16_t code, len;
};

static uint32_t pad4(uint32_t n)
{
    return (n + 3u) & ~3u;
}

/* ---- building blocks in the output buffer -------------------------------- */

static void put(struct capture *c, const void *p, uint32_t n)
{
    if (n)                        /* an option without a value passes NULL */
        memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void put_padded(struct capture *c, const void *p, uint32_t n)
{
    static const uint8_t zero[4];
    put(c, p, n);
    put(c, zero, pad4(n) - n);
}

static void put_option(struct capture *c, uint16_t code, const void *value, uint32_t n)
{
    struct opt_hdr o = { code, (uint16_t)n };
    put(c, &o, sizeof(o));
    put_padded(c, value, n);
}

static void put_string_option(struct capture *c, uint16_t code, const char *s)
{
    if (*s)
        put_option(c, code, s, (uint32_t)strlen(s));
}

/* Open a block at the buffer's end; block_close() fills its lengths. */
static uint32_t block_open(struct capture *c, uint32_t type)
{
    uint32_t start = c->out_len;
    struct block_hdr h = { type, 0 };
    put(c, &h, sizeof(h));
    return start;
}

static void block_close(struct capture *c, uint32_t start)
{
    put_option(c, OPT_END, NULL, 0);
    uint32_t total = c->out_len - start + (uint32_t)sizeof(uint32_t);
    put(c, &total, sizeof(total));
    memcpy(c->out + start + offsetof(struct block_hdr, total_len), &total, sizeof(total));
}

/* ---- the file ------------------------------------------------------------ */

/* A pipe or FIFO that is full (the fd is non-blocking): wait for its
 * reader, but not for ever once the capture is stopping.  false: give up. */
static bool wait_writable(struct capture *c, int *waits)
{
    struct pollfd p = { .fd = c->cfg.fd, .events = POLLOUT };
    if (atomic_load(&c->stopping) && ++*waits > STOP_WAITS)
        return false;
    poll(&p, 1, WRITE_POLL_MS);
    return true;
}

static int write_all(struct capture *c, const uint8_t *p, uint32_t n)
{
    int waits = 0;
    while (n) {
        ssize_t w = write(c->cfg.fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN && wait_writable(c, &waits))
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (uint32_t)w;
    }
    return 0;
}

/* Write the buffer out; the first error sticks and ends writing. */
static void flush(struct capture *c)
{
    if (c->out_len && !c->status.write_errno) {
        int err = write_all(c, c->out, c->out_len);
        if (err)
            c->status.write_errno = -err;
        else
            c->status.bytes_written += c->out_len;
    }
    c->out_len = 0;
}

static const char *side_description(uint32_t what)
{
    return what == VNIC_CAPTURE_GUEST
               ? "vnic virtio-net, guest side: frames as the guest handed them over and was given them"
               : "vnic virtio-net, wire side: frames to and from the backend";
}

int capture_write_head(struct capture *c)
{
    uint32_t at = block_open(c, PCAPNG_SHB);
    struct shb_body shb = { PCAPNG_MAGIC, 1, 0, -1 };
    put(c, &shb, sizeof(shb));
    put_string_option(c, SHB_USERAPPL, "vnic");
    block_close(c, at);

    at = block_open(c, PCAPNG_IDB);
    struct idb_body idb = { LINKTYPE_ETHERNET, 0, c->cfg.snaplen };
    put(c, &idb, sizeof(idb));
    put_string_option(c, IF_NAME, c->cfg.ifname);
    put_string_option(c, IF_DESCRIPTION, side_description(c->cfg.what));
    uint8_t resol = TSRESOL_NS;
    put_option(c, IF_TSRESOL, &resol, sizeof(resol));
    block_close(c, at);
    int err = write_all(c, c->out, c->out_len);
    if (!err)
        c->status.bytes_written = c->out_len;
    c->out_len = 0;
    return err;
}

/* ---- packet blocks ------------------------------------------------------- */

static const char *gso_name(uint8_t gso_type)
{
    switch (gso_type & (uint8_t)~VNIC_GSO_ECN) {
    case VNIC_GSO_NONE: return "none";
    case VNIC_GSO_TCPV4: return "tcpv4";
    case VNIC_GSO_UDP: return "udp";
    case VNIC_GSO_TCPV6: return "tcpv6";
    case VNIC_GSO_UDP_L4: return "udp_l4";
    default: return "unknown";
    }
}

/* The record's virtio-net header as words a reader can take apart. */
static int describe_hdr(const struct cap_rec *rec, char *s, size_t n)
{
    const struct virtio_net_hdr *h = &rec->hdr;
    int k = snprintf(s, n,
                     "virtio_net_hdr flags=0x%02x gso_type=%s%s gso_size=%u hdr_len=%u "
                     "csum_start=%u csum_offset=%u",
                     h->flags, gso_name(h->gso_type), h->gso_type & VNIC_GSO_ECN ? "|ecn" : "",
                     h->gso_size, h->hdr_len, h->csum_start, h->csum_offset);
    if (rec->kind & CAP_GUEST_RX)          /* what the guest was given says how many */
        k += snprintf(s + k, n - (size_t)k, " num_buffers=%u", h->num_buffers);
    if (rec->report != VNIC_HASH_REPORT_NONE)
        k += snprintf(s + k, n - (size_t)k, " hash=0x%08x hash_report=%u", rec->hash, rec->report);
    return k;
}

static void put_packet(struct capture *c, const struct cap_rec *rec, uint32_t queue)
{
    uint32_t at = block_open(c, PCAPNG_EPB);
    struct epb_body b = { 0, (uint32_t)(rec->ts_ns >> 32), (uint32_t)rec->ts_ns, rec->caplen,
                          rec->origlen };
    put(c, &b, sizeof(b));
    put_padded(c, rec + 1, rec->caplen);
    uint32_t flags = rec->kind & (CAP_WIRE_RX | CAP_GUEST_RX) ? EPB_INBOUND : EPB_OUTBOUND;
    put_option(c, EPB_FLAGS, &flags, sizeof(flags));
    put_option(c, EPB_QUEUE, &queue, sizeof(queue));
    if (rec->has_hdr) {
        char text[COMMENT_MAX];
        int k = describe_hdr(rec, text, sizeof(text));
        put_option(c, OPT_COMMENT, text, (uint32_t)(k < (int)sizeof(text) ? k : (int)sizeof(text) - 1));
    }
    block_close(c, at);
}

/* The most a packet block takes: headers, data, options. */
static uint32_t packet_block_max(const struct cap_rec *rec)
{
    return (uint32_t)(sizeof(struct block_hdr) + sizeof(struct epb_body)) + pad4(rec->caplen) +
           4 * (uint32_t)sizeof(struct opt_hdr) + 2 * (uint32_t)sizeof(uint32_t) + pad4(COMMENT_MAX) +
           (uint32_t)sizeof(uint32_t);
}

/* ---- draining the rings -------------------------------------------------- */

/* The ring's next record (padding skipped), or NULL if it is empty. */
static const struct cap_rec *next_record(struct cap_ring *r)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    while (tail < head) {
        const struct cap_rec *rec = (const struct cap_rec *)(r->buf + ((uint32_t)tail & r->mask));
        if (rec->kind)
            return rec;
        tail += rec->size;
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
    return NULL;
}

static void take(struct capture *c, int queue, const struct cap_rec *rec)
{
    if (c->status.write_errno) {
        c->status.write_drops++;
        return;
    }
    if (c->out_len + packet_block_max(rec) > CAPTURE_OUT_BYTES)
        flush(c);
    put_packet(c, rec, (uint32_t)queue);
    c->status.packets_written++;
}

/* Write every record the rings hold, oldest first across the pairs;
 * returns how many there were. */
static int drain(struct capture *c)
{
    int n = 0;
    for (;; n++) {
        int best = -1;
        const struct cap_rec *oldest = NULL;
        for (int i = 0; i < c->nring; i++) {
            const struct cap_rec *rec = next_record(&c->ring[i]);
            if (rec && (!oldest || rec->ts_ns < oldest->ts_ns)) {
                oldest = rec;
                best = i;
            }
        }
        if (!oldest)
            return n;
        take(c, best, oldest);
        struct cap_ring *r = &c->ring[best];
        atomic_store_explicit(&r->tail, atomic_load_explicit(&r->tail, memory_order_relaxed) + oldest->size,
                              memory_order_release);
    }
}

void *capture_writer(void *arg)
{
    struct capture *c = arg;
    for (;;) {
        bool last = atomic_load(&c->stopping);     /* the workers are out: this drain is the last */
        drain(c);
        flush(c);
        if (last)
            return NULL;
        /* a nap after every drain, busy or not: the rings fill meanwhile and
         * are read in bulk, not record by record under the workers' feet */
        nanosleep(&(struct timespec){ 0, WRITER_NAP_NS }, NULL);
    }
}
