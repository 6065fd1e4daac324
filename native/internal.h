/* internal.h - structures shared by the data-plane C files.  Python never
 * sees these; it only holds opaque pointers (see vnic.h). */
#ifndef VNIC_INTERNAL_H
#define VNIC_INTERNAL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>
#include "vnic.h"

/* for checks of guest- and peer-controlled values: the failure is rare */
#define unlikely(x) __builtin_expect(!!(x), 0)
#define likely(x)   __builtin_expect(!!(x), 1)

#define ETH_ALEN           6           /* bytes of a MAC address */

#define VNIC_MAX_QUEUES    (2 * VNIC_MAX_QUEUE_PAIRS)
#define VNIC_CACHE_LINE    64
#define VNIC_MAX_VECTORS   (VNIC_MAX_QUEUES + 2)   /* config, the pairs' queues, control */
#define VNIC_MAX_FRAME     65535       /* largest frame the guest may transmit */
#define VNIC_RX_FRAME_MAX  (65536 + 4096) /* largest GSO frame a TAP hands us, with slack */
#define VNIC_MAX_SEGS      1024        /* guest memory pieces in one chain */
#define VNIC_MAX_INDIRECT  1024        /* descriptors in one indirect table */
#define VNIC_BATCH         64          /* chains handled before notifying */

#define VNIC_IOV_MAX       1024        /* UIO_MAXIOV: pieces in one writev() */
#define VNIC_TPL_MAX       256         /* headers the TX engine rewrites per segment */

_Static_assert(sizeof(struct virtio_net_hdr) == VNIC_NET_HDR_SIZE, "virtio_net_hdr_mrg_rxbuf");
_Static_assert(sizeof(struct vfio_user_header) == 16, "vfio-user header");

#define VRING_DESC_F_NEXT      1
#define VRING_DESC_F_WRITE     2
#define VRING_DESC_F_INDIRECT  4
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* ---- guest memory ------------------------------------------------------ */
struct mem_region {
    uint64_t iova;
    uint64_t len;
    uint8_t *host;         /* NULL: reached through DMA_READ/DMA_WRITE messages */
    bool writable;
};

struct vnic_mem {
    int count;
    struct mem_region region[VNIC_MAX_DMA_REGIONS];   /* sorted by iova */
    struct vnic_chan *chan;                        /* for message regions */
};

/* One piece of guest memory in a descriptor chain. */
struct seg {
    uint64_t iova;
    uint8_t *host;         /* NULL for message-based memory */
    uint32_t len;
};

/* Translate the longest prefix of [iova, iova+len) that lies in one region.
 * Returns its length (0: not mapped or not writable when write is set). */
uint64_t mem_piece(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write, uint8_t **host);
int mem_copy_from(struct vnic_mem *mem, uint64_t iova, void *dst, uint64_t len);
int mem_copy_to(struct vnic_mem *mem, uint64_t iova, const void *src, uint64_t len);
/* A host pointer covering the whole range, or NULL (unmapped or message). */
void *mem_direct(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write);

/* ---- channel DMA (message fallback) -------------------------------------- */
int chan_dma_read(struct vnic_chan *ch, uint64_t iova, void *dst, uint64_t len);
int chan_dma_write(struct vnic_chan *ch, uint64_t iova, const void *src, uint64_t len);
/* The device stops: a request outstanding or made from grace_ns on fails
 * at once with -ECANCELED (a live client answers within the grace). */
void chan_dma_cancel(struct vnic_chan *ch, uint64_t grace_ns);
/* The workers are stopped: requests may be made again. */
void chan_dma_resume(struct vnic_chan *ch);

/* ---- virtqueues (virtq.c: the interface; split.c, packed.c: the layouts) -- */
#define VQ_DESC_SIZE 16
/* split ring descriptor (virtio 1.2, 2.7.5) */
struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
/* packed ring descriptor (2.8.13): same flags, plus AVAIL and USED */
struct vring_packed_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t id;                  /* buffer ID, in the chain's last descriptor */
    uint16_t flags;
};
#define VRING_PACKED_DESC_F_AVAIL  (1 << 7)
#define VRING_PACKED_DESC_F_USED   (1 << 15)
#define VRING_PACKED_EVENT_FLAG_ENABLE  0
#define VRING_PACKED_EVENT_FLAG_DISABLE 1
#define VRING_PACKED_EVENT_FLAG_DESC    2   /* only with EVENT_IDX */

/* packed: a chain popped and not yet published */
struct vq_flight {
    uint16_t id;                  /* its buffer ID */
    uint16_t ndesc;               /* ring descriptors it occupies */
    uint32_t len;                 /* bytes written, once pushed */
};

struct vq {
    struct vnic_dev *dev;
    int index;
    uint16_t size;
    bool packed;                  /* the layout, from the features at vq_map */
    /* split: descriptor table, avail ring, used ring; packed: descriptor
     * ring, driver and device event suppression */
    uint64_t desc_addr, avail_addr, used_addr;
    /* Direct pointers when the rings sit in mapped memory, else NULL and
     * every ring access goes through mem_copy_*. */
    void *desc;
    uint16_t *avail;
    uint16_t *used;
    bool configured;
    bool enabled;
    uint16_t last_avail;   /* chains popped, free running */
    uint16_t used_idx;     /* chains published used, free running */
    uint16_t avail_seen;   /* split: avail->idx at the last look */
    uint16_t signalled_used;   /* split: used_idx, packed: next_used, at the last interrupt check */
    bool signalled_valid;
    /* packed: ring counters (packed.c) and the chains held */
    uint32_t next_avail, next_used, seen_empty;
    struct vq_flight *flight;  /* flight_size entries, from flight_head */
    uint16_t flight_head, flight_size;
    uint16_t vector;
    int kick_fd;           /* eventfd the driver's doorbell writes */
};

/* A descriptor chain popped from the avail ring. */
struct chain {
    uint16_t head;                  /* split: head index; packed: buffer ID */
    int nout, nin;                  /* readable pieces first, then writable */
    uint64_t out_len, in_len;
    struct seg seg[VNIC_MAX_SEGS];
};

/* Check the ring addresses of the negotiated layout, take direct pointers.
 * 0, -EINVAL (misaligned), -EFAULT (not guest memory), -ENOMEM. */
int vq_map(struct vq *vq);
/* Pop the next chain; 1 popped, 0 ring empty, <0 -enum vnic_error. */
int vq_pop(struct vq *vq, struct chain *c);
/* Give the last n popped chains back: they are popped again later. */
void vq_rewind(struct vq *vq, uint16_t n);
/* Record the offset-th chain popped since the last publish as used, len
 * bytes written; the driver sees nothing until vq_publish_used. */
void vq_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset);
/* Hand the first count recorded chains to the driver. */
void vq_publish_used(struct vq *vq, uint16_t count);
/* After draining: ask for the next kick (EVENT_IDX or flags), then
 * re-check for buffers added since the last look: true if there are. */
bool vq_enable_notify(struct vq *vq);
void vq_disable_notify(struct vq *vq);
/* Does the driver want an interrupt for what was published? */
bool vq_should_interrupt(struct vq *vq);

/* shared by the layouts (virtq.c) */
void vq_ring_dma_failed(struct vq *vq);
/* Ring memory at base (mapped) or addr (through messages), off into it;
 * a failed message fails the device (VNIC_ERR_RING_DMA). */
static inline uint16_t vq_load16(struct vq *vq, void *base, uint64_t addr, size_t off, bool acquire);
static inline void vq_store16(struct vq *vq, void *base, uint64_t addr, size_t off, uint16_t v, bool release);
static inline void vq_store(struct vq *vq, void *base, uint64_t addr, size_t off, const void *src, size_t n);
/* Copy descriptor i of a table (direct, or through messages at table_addr). */
static inline int vq_desc_copy(struct vq *vq, const void *table, uint64_t table_addr, uint32_t i, void *out);
void vq_chain_start(struct chain *c, uint16_t head);
/* Append a buffer, split where it crosses mapped regions; -enum vnic_error. */
int vq_chain_add(struct vq *vq, struct chain *c, uint64_t addr, uint32_t len, bool write);
/* An indirect table's checks (negotiated, size); *table NULL if unmapped. */
int vq_indirect_table(struct vq *vq, uint64_t addr, uint32_t len, const void **table, uint32_t *entries);
/* the layouts, as virtq.c dispatches to them */
int split_map(struct vq *vq);
int split_pop(struct vq *vq, struct chain *c);
void split_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset);
void split_publish_used(struct vq *vq, uint16_t count);
bool split_enable_notify(struct vq *vq);
void split_disable_notify(struct vq *vq);
bool split_should_interrupt(struct vq *vq);
int packed_map(struct vq *vq);
int packed_pop(struct vq *vq, struct chain *c);
void packed_rewind(struct vq *vq, uint16_t n);
void packed_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset);
void packed_publish_used(struct vq *vq, uint16_t count);
bool packed_enable_notify(struct vq *vq);
void packed_disable_notify(struct vq *vq);
bool packed_should_interrupt(struct vq *vq);

/* ---- checksums (csum.c) ------------------------------------------------------ */
uint64_t csum_partial(const void *buf, size_t len, uint64_t sum);
uint64_t csum_copy(void *dst, const void *src, size_t len, uint64_t sum);

/* ones' complement addition with end-around carry */
static inline uint64_t csum_add(uint64_t sum, uint64_t v)
{
    uint64_t s = sum + v;
    return s + (s < v);
}

static inline uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

/* a piece's sum, adjusted for starting at an odd offset of the summed range */
static inline uint64_t csum_shift(uint64_t piece_sum, uint64_t offset)
{
    if (!(offset & 1))
        return piece_sum;
    uint16_t f = csum_fold(piece_sum);
    return (uint16_t)(f << 8 | f >> 8);
}

/* ---- TX offload engine (gso.c) ----------------------------------------------- */
/* The frame after the virtio header, as pieces of host memory. */
struct tx_frame {
    const struct iovec *iov;
    int n;
    uint32_t len;
};


/* Per-queue scratch of the TX engine: allocated once, reused per frame. */
struct tx_ctx {
    uint64_t features;
    atomic_uint *frag_id;             /* IPv6 fragment identification */
    struct vnic_queue_stats *st;
    /* Hand one frame to the backend.  iov[0] is free for the backend's own
     * header; the frame is iov[1..n], len bytes.  0, or -1 if refused. */
    int (*emit)(struct tx_ctx *ctx, struct iovec *iov, int n, uint32_t len);
    void *sink;
    uint8_t tpl[VNIC_TPL_MAX];
    uint8_t udp_hdr[8];
    struct iovec iov[VNIC_IOV_MAX];   /* frames handed to emit */
    struct iovec frame[VNIC_IOV_MAX]; /* the guest frame's pieces */
};

/* Count a drop reason (enum vnic_tx_drop; VNIC_TX_SENT counts nothing). */
void tx_count_drop(struct vnic_queue_stats *st, int reason);
int tx_check_negotiated(uint64_t features, const struct virtio_net_hdr *h);
int tx_offload(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f);
/* What tx_offload would refuse, for a frame handed to the host whole
 * (passthrough): the host kernel is not the only guard.  0 or VNIC_TX_DROP_. */
int tx_check_whole(struct tx_ctx *ctx, const struct virtio_net_hdr *h, const struct tx_frame *f);

/* Where the headers of a frame are. */
struct layout {
    uint16_t l3;          /* IP header offset (after any VLAN tags) */
    uint16_t l4;          /* TCP/UDP header offset */
    uint16_t hdr_len;     /* l4 + TCP/UDP header length */
    uint8_t proto;        /* IPPROTO_TCP or IPPROTO_UDP */
    bool ipv6;
    bool ipv6_ext;        /* extension headers between IPv6 and L4 */
};

/* ---- receive-side scaling (rss.c) and hand-off between pairs (handoff.c) ---- */
struct qpair;

/* What goes with a received frame besides its bytes. */
struct rx_meta {
    uint32_t offloads;            /* VNIC_FLOW_* bits the device applied */
    uint32_t hash;                /* RSS hash, when report != NONE */
    uint16_t report;              /* enum vnic_hash_report */
};

#define RSS_INPUT_MAX 36          /* IPv6 source, destination and ports: the longest input */
#define RSS_CHUNK 8               /* input bytes in a word of it */
#define RSS_CHUNKS ((RSS_INPUT_MAX + RSS_CHUNK - 1) / RSS_CHUNK)
#define RSS_NIBBLES (2 * RSS_INPUT_MAX)
#define RSS_NIBBLE_VALUES 16

/* A Toeplitz key expanded both ways toeplitz.c hashes (toeplitz.c). */
struct toeplitz_key {
    bool use_clmul;               /* this CPU has PCLMULQDQ: hash by clmul */
    /* input word t's key bits 64t .. 64t+95, bit-reversed */
    uint64_t clmul[RSS_CHUNKS][2] __attribute__((aligned(16)));
    /* per input nibble and value, what it adds to the hash: 4.5 KiB that
     * stay in L1 (a table per byte would be 36 KiB) */
    uint32_t lut[RSS_NIBBLES][RSS_NIBBLE_VALUES];
};

/* Expand key for toeplitz_hash(), choosing the way this CPU hashes fastest. */
void toeplitz_expand(struct toeplitz_key *k, const uint8_t key[VNIC_RSS_KEY_SIZE]);
/* The Toeplitz hash of len (<= RSS_INPUT_MAX) input bytes, given as
 * RSS_CHUNKS words of 8 (the first byte in the top bits, zero past len).
 * Cannot fail. */
uint32_t toeplitz_hash(const struct toeplitz_key *k, const uint64_t *w, uint32_t len);

/* The driver's RSS_CONFIG or HASH_CONFIG.  Written by the control thread
 * while workers read it: a frame may meet the old or the new setting, as
 * on a hardware NIC, but every index stays within its table (mask is
 * kept below VNIC_RSS_TABLE_MAX and every entry below the pair count). */
struct rss_config {
    _Atomic uint32_t hash_types;  /* enum vnic_hash_type bits; 0: nothing hashed */
    atomic_bool steering;         /* RSS_CONFIG: the table picks the queue */
    _Atomic uint16_t mask;        /* table length - 1 */
    _Atomic uint16_t unclassified;
    _Atomic uint16_t table[VNIC_RSS_TABLE_MAX];
    uint8_t key[VNIC_RSS_KEY_SIZE];
    struct toeplitz_key expanded;
};

void rss_reset(struct rss_config *c);
/* VIRTIO_NET_CTRL_MQ_RSS_CONFIG / HASH_CONFIG data: applied whole, or not
 * at all.  0, or -EINVAL for a malformed or out-of-range config. */
int rss_set_config(struct vnic_dev *dev, const uint8_t *data, uint32_t len, bool rss);
/* Hash the frame after its virtio header into meta (report NONE if no
 * enabled type covers it) and return the pair RSS picks for it. */
int rss_classify(struct vnic_dev *dev, const uint8_t *frame, uint32_t len, struct rx_meta *meta);

/* A single-producer single-consumer ring of frames from pair `from`'s
 * worker to pair `to`'s: the producer owns tail, the consumer head. */
#define HANDOFF_RING_BYTES (2 * 1024 * 1024)   /* ~30 of the TAP's 64 KiB super-frames */
struct handoff_ring {
    _Alignas(VNIC_CACHE_LINE) _Atomic uint64_t tail;
    atomic_bool waiting;          /* the producer holds a frame that did not fit */
    _Alignas(VNIC_CACHE_LINE) _Atomic uint64_t head;
    uint8_t *buf;                 /* HANDOFF_RING_BYTES, in dev->handoff_mem */
    int from;                     /* the producing pair, to wake when there is room */
};

int handoff_init(struct vnic_dev *dev);
void handoff_destroy(struct vnic_dev *dev);
void handoff_reset(struct vnic_dev *dev);
/* Queue qp's rx_frame for pair `to`.  When its ring is full the frame is
 * held (qp->held) and the backend not read until it went: 0 handed over,
 * 1 held. */
int handoff_push(struct qpair *qp, int to);
/* Queue a frame of len bytes (virtio header first) gathered from its n
 * pieces, with qp->rx_meta, for pair `to`: true, or false if its ring has
 * no room now (nothing held: the caller moves the frame to rx_frame and
 * calls handoff_push()). */
bool handoff_push_pieces(struct qpair *qp, int to, const struct iovec *piece, int n, uint32_t len);
/* Try the held frame again: true if none is held any more. */
bool handoff_retry(struct qpair *qp);
bool handoff_holding(const struct qpair *qp);
/* Wake the pairs this batch handed frames to, if they sleep. */
void handoff_wake(struct qpair *qp);
/* Take the next frame another pair handed to qp into qp->rx_frame and
 * qp->rx_meta: 1, or 0 if none waits. */
int handoff_pop(struct qpair *qp);
bool handoff_pending(struct qpair *qp);

/* ---- receive coalescing (gro.c) ------------------------------------------- */
#define GRO_FLOWS_MAX 64          /* bound of the flow table */

enum gro_state { GRO_FREE, GRO_OPEN, GRO_READY };

/* One TCP flow's super-frame being assembled in host memory. */
struct gro_flow {
    enum gro_state state;
    uint8_t *buf;                 /* virtio header + frame; allocated on first use */
    uint32_t len;                 /* bytes in buf, virtio header included */
    struct layout lo;
    uint32_t next_seq;
    uint16_t next_id;             /* IPv4 ID the next segment must carry */
    uint16_t mss;                 /* payload of the first segment */
    uint16_t segs;
    uint64_t touched;             /* batch of the last append: eviction order */
    struct rx_meta meta;          /* the first segment's hash */
    uint8_t mask[VNIC_TPL_MAX];   /* header bits its segments share */
};

struct gro {
    struct gro_flow flow[GRO_FLOWS_MAX];
    int allocated;                /* slots with a buffer: grows with load */
    int ready[GRO_FLOWS_MAX];     /* closed flows waiting for guest buffers, FIFO */
    int ready_head, ready_n;
    int nopen;                    /* flows GRO_OPEN */
    uint64_t batch;
};

enum gro_result { GRO_STUCK = 0, GRO_MERGED = 1, GRO_PASS = 2 };   /* errors are < 0 */

/* Offer qp->rx_frame to the flow table.  GRO_MERGED: it joined (or opened)
 * a flow; GRO_PASS: deliver it as it is; GRO_STUCK: a flow it breaks could
 * not be delivered for lack of buffers, the frame must wait. */
int gro_receive(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st);
/* Close every open flow (end of batch).  1, or 0 if some wait for buffers. */
int gro_flush_all(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st);
/* Deliver flows waiting for buffers, in order.  1 all done, 0 still waiting. */
int gro_deliver_ready(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st);
/* Would this frame (its first have bytes of len) open or join a flow? */
bool gro_candidate(const struct vnic_dev *dev, const struct virtio_net_hdr *h, const uint8_t *frame,
                   uint32_t have, uint32_t len);
/* No flow open or waiting for buffers. */
bool gro_idle(const struct gro *g);
/* Rewrite a closed flow's headers in f->buf for the guest (lengths,
 * checksums, the GSO header), counting it; a lone segment is left as it came. */
void gro_finish(struct gro_flow *f, struct vnic_queue_stats *st);
/* What the flow statistics learn of a closed flow beyond its header. */
const struct rx_meta *gro_flow_meta(struct gro_flow *f);
/* Coalescing in the guest's buffers (gro_direct.c) keeps only headers in
 * f->buf (virtio header + VNIC_TPL_MAX bytes), the payload elsewhere.
 * Open f with a frame (its first have bytes in frame, h its fixed header,
 * qp->rx_meta its hash) if it may start a flow; false if not. */
bool gro_direct_open(struct qpair *qp, struct gro_flow *f, const struct virtio_net_hdr *h, const uint8_t *frame,
                     uint32_t have, uint32_t len);
/* Does the frame continue f?  If so f counts its payload (placed by the
 * caller) and *close says whether the burst ends with it; false: it
 * does not (f unchanged). */
bool gro_direct_extend(struct qpair *qp, struct gro_flow *f, const struct virtio_net_hdr *h, const uint8_t *frame,
                       uint32_t have, uint32_t len, bool *close);
void gro_reset(struct gro *g);
/* Forget every open or waiting flow; returns the segments they held. */
int gro_discard(struct gro *g);
void gro_free(struct gro *g);

/* Put one frame (virtio header included) into the guest's RX buffers.
 * meta: its hash for the header (with HASH_REPORT), and in offloads the
 * VNIC_FLOW_* bits for what the device did to the frame that its header
 * does not show (coalesced, checksum completed), for the flow statistics.  1 delivered (or dropped, counted), 0 not enough buffers,
 * <0 error. */
int rx_deliver(struct qpair *qp, const uint8_t *buf, uint32_t total, const struct rx_meta *meta,
               uint16_t *pending, struct vnic_queue_stats *st);

/* ---- one-copy receive (rx_direct.c) ------------------------------------------- */
#define RXC_CHAINS 256                  /* chains popped ahead of the frames they take */
#define RXC_SEGS   (VNIC_IOV_MAX - 2)   /* their pieces: one readv() with the header and the spill */

/* A chain popped ahead: its writable pieces are seg[first, first + nseg). */
struct rxc_chain {
    uint16_t head;
    uint16_t first, nseg;
    uint32_t cap;                 /* writable bytes */
};

/* The chains popped ahead, oldest first: frames take them in pop order (the
 * packed ring's used descriptors follow it), and those left at the end of
 * the batch are given back, so nothing outlives rx_process(). */
struct rx_cache {
    int first, n;                 /* ch[first, first + n) */
    int seg_end;                  /* seg[ch[first].first, seg_end) in use */
    uint64_t cap;                 /* writable bytes of the chains held */
    uint32_t expect;              /* frame size to pop ahead for: recent frames' largest */
    bool off;                     /* this batch goes through the bounce buffer */
    bool predict_merge;           /* the last frame was a segment coalescing merged */
    bool steering;                /* RSS steers this batch's frames between pairs */
    int seek_i;                   /* the piece the last seek ended in (-1: none), */
    uint64_t seek_base;           /* and the run offset it starts at */
    struct gro_flow df;           /* a flow coalesced in the chains held (gro_direct.c) */
    uint8_t df_hdrs[VNIC_NET_HDR_SIZE + VNIC_TPL_MAX];   /* df.buf: its headers */
    struct rxc_chain ch[RXC_CHAINS];
    struct seg seg[RXC_SEGS];
};

/* Where a received frame's bytes are: qp NULL, all len of them in bytes (a
 * bounce buffer, or the one piece of guest memory it landed in); else
 * bytes [0, split) in bytes and the rest in the guest pieces qp's
 * rx_direct read them into, from offset at of the chains held, and
 * bytes[0, have) a copy of the frame's first bytes for parsing. */
struct rx_ref {
    uint8_t *bytes;
    uint32_t have, len;
    struct qpair *qp;
    uint32_t split;
    uint64_t at;
};

/* The ones' complement sum of bytes [from, from + n) of the frame. */
uint64_t rx_ref_csum(const struct rx_ref *f, uint32_t from, uint32_t n, uint64_t sum);
/* Overwrite bytes [at, at + n) of the frame (and of its header copy). */
void rx_ref_write(const struct rx_ref *f, uint32_t at, const void *src, uint32_t n);
/* Turn the backend's header h into the one the guest negotiated for, the
 * frame being f (rx.c).  true: deliver; false: dropped (counted). */
bool rx_fix_header(struct qpair *qp, struct virtio_net_hdr *h, const struct rx_ref *f,
                   struct vnic_queue_stats *st);
/* Would rx_fix_header() leave this backend header as it is, but for its
 * buffer count (a partial checksum or one the backend verified, no GSO,
 * a guest with GUEST_CSUM)?  Then a segment joining a flow needs no fixing. */
bool rx_header_stays(const struct vnic_dev *dev, const struct virtio_net_hdr *h);
/* Count a frame the guest was given in bufs buffers (rx.c). */
void rx_count_delivered(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f,
                        const struct rx_meta *meta, uint16_t bufs, struct vnic_queue_stats *st);
/* Does RSS look at received frames: to steer them, or to report hashes? */
bool rx_rss_active(struct vnic_dev *dev);
/* Hash a frame (its first len bytes suffice) into qp->rx_meta, counting
 * an unhashable one; the pair RSS picks for it (rx.c). */
int rx_rss_hash(struct qpair *qp, const uint8_t *frame, uint32_t len, struct vnic_queue_stats *st);
/* Hand qp->rx_frame (filtered, its header fixed) to pair `to`, counted;
 * held if that pair's inbox is full (rx.c). */
void rx_rss_hand_off(struct qpair *qp, int to, struct vnic_queue_stats *st);
/* Count a frame of len bytes handed to another pair's inbox (rx.c). */
void rx_rss_count_handed(uint32_t len, struct vnic_queue_stats *st);
/* Hash qp->rx_frame and, if RSS names another pair, hand it there (rx.c).
 * 1: the frame stays with this pair; 0: it went to another (or is held
 * for it). */
int rx_rss_steer(struct qpair *qp, struct vnic_queue_stats *st);
/* The pair RSS's pick `to` sends a frame of qp's to: -1 this one (no
 * steering, or a pair that cannot take it) (rx.c). */
int rx_rss_away(struct qpair *qp, int to);

enum rx_direct_result {
    RX_DIRECT_EMPTY = 0,          /* nothing to read */
    RX_DIRECT_DONE = 1,           /* a frame delivered, or dropped (counted) */
    RX_DIRECT_BOUNCE = 2,         /* a frame for the bounce way (too large for the buffers
                                   * posted, not for the flow held, or for gro.c's table):
                                   * it waits in qp->rx_frame, filtered, its header fixed,
                                   * hashed and kept by RSS */
    RX_DIRECT_OFF = 3,            /* memory it cannot use: read the bounce way (the
                                   * chains given back) */
    RX_DIRECT_NO_BUFFERS = 4,     /* none posted: nothing read, the frame stays with
                                   * the backend until the guest posts */
};
/* At a batch's start: may this batch's frames be read straight into guest
 * buffers?  (A backend with read_iov, host-mapped guest memory, no
 * capture or faults in the way.)  Settings the control path changes
 * meanwhile apply from the next batch. */
void rx_direct_begin(struct qpair *qp);
/* Can the next frame be read straight into guest buffers?  (The batch
 * may, no frame held back by a fault or for another pair, none handed
 * over waiting, no flow in gro.c's own table.) */
bool rx_direct_possible(struct qpair *qp, bool coalescing);
/* Read one frame into the chains popped ahead and deliver it there (while
 * a flow is coalesced there: its next segments, up to budget frames).
 * *frames grows by the frames read.  enum rx_direct_result for the last,
 * or -enum vnic_error (the chains given back). */
int rx_direct(struct qpair *qp, bool coalescing, int budget, int *frames, uint16_t *pending,
              struct vnic_queue_stats *st);
/* Give back the chains popped ahead (end of batch, or before the bounce
 * path pops for itself); a flow coalesced in them is forgotten. */
void rx_direct_release(struct qpair *qp);

/* What rx_direct.c offers gro_direct.c: the chains held as one run of
 * bytes from the oldest chain's first (the guest's header there). */
/* Pop ahead until the chains held take want bytes.  1 enough, 0 not,
 * 2 (POP_BOUNCE) a chain the cache cannot hold, -enum vnic_error. */
int rxc_fill(struct qpair *qp, uint64_t want);
/* The piece holding byte *at of the run; *at becomes the offset in it. */
int rxc_seek(struct rx_cache *rc, uint64_t *at);
void rxc_write(struct rx_cache *rc, uint64_t at, const uint8_t *src, uint64_t n);
void rxc_read(struct rx_cache *rc, uint64_t at, uint8_t *dst, uint64_t n);
void rxc_clear(struct rx_cache *rc, uint64_t at, uint64_t n);
/* Hand the frame f (h its header, meta its hash) in the oldest chains to
 * the guest: used entries, header, num_buffers; the chains are gone. */
void rxc_deliver(struct qpair *qp, struct virtio_net_hdr *h, const struct rx_ref *f, const struct rx_meta *meta,
                 uint16_t *pending, struct vnic_queue_stats *st);

/* ---- receive coalescing in the guest's buffers (gro_direct.c) ---------------- */
enum { GRO_DIRECT_CLOSED = 17 };  /* beside enum rx_direct_result: the flow closed, nothing read */
/* Is a flow held in the guest's buffers? */
bool gro_direct_held(const struct qpair *qp);
/* Start a flow with the frame f just read into the oldest chains (h its
 * fixed header): true if it is held there, false if it is no segment to
 * coalesce. */
bool gro_direct_start(struct qpair *qp, const struct virtio_net_hdr *h, const struct rx_ref *f);
/* Read the next frames, their payload behind the flow's, while they
 * continue it, up to budget frames; *frames grows by the frames read.
 * enum rx_direct_result for the last, GRO_DIRECT_CLOSED (the flow closed
 * before a frame was read), or -enum vnic_error. */
int gro_direct_next(struct qpair *qp, int budget, int *frames, uint16_t *pending, struct vnic_queue_stats *st);
/* Deliver the flow held, if any: its headers patched in place. */
void gro_direct_close(struct qpair *qp, uint16_t *pending, struct vnic_queue_stats *st);

/* ---- control queue and receive filter (ctrl.c) -------------------------------- */
#define RX_FILTER_MACS 64         /* table entries kept; more means "accept all" */

struct rx_filter {
    bool promisc, allmulti, alluni, nomulti, nouni, nobcast;
    uint8_t mac[ETH_ALEN];
    int n_uc, n_mc;
    bool uc_overflow, mc_overflow;
    uint8_t uc[RX_FILTER_MACS][ETH_ALEN], mc[RX_FILTER_MACS][ETH_ALEN];
    uint32_t vlans[4096 / 32];    /* VLAN IDs (all 4096 of 802.1Q) the driver added */
};

/* the guest receive features a driver may switch at run time */
#define GUEST_OFFLOAD_MASK (1ull << VNIC_F_GUEST_CSUM | 1ull << VNIC_F_GUEST_TSO4 | \
                            1ull << VNIC_F_GUEST_TSO6 | 1ull << VNIC_F_GUEST_ECN | \
                            1ull << VNIC_F_GUEST_UFO | 1ull << VNIC_F_GUEST_USO4 | \
                            1ull << VNIC_F_GUEST_USO6)

void rx_filter_reset(struct rx_filter *f, const uint8_t mac[ETH_ALEN]);
int ctrl_process(struct vnic_dev *dev, struct chain *c, struct vnic_queue_stats *st);
bool rx_filter_accepts(const struct vnic_dev *dev, const uint8_t *frame, uint32_t len,
                       struct vnic_queue_stats *st);

/* ---- per-flow statistics (flow_key.c, flows.c) ------------------------------ */
#define FLOW_HEAD      128        /* frame bytes read to find the flow: the headers */
#define FLOW_NONE      UINT32_MAX /* end of a bucket chain */

/* Direction, ethertype and 5-tuple: five words, hashed and compared as
 * such.  The small fields share one word, assembled in a register so that
 * the hash reads it back whole (no store-forwarding stall per packet). */
struct flow_key {
    uint8_t src[16], dst[16];     /* IPv4 as v4-mapped IPv6 */
    uint64_t meta;                /* FLOW_META() */
};
#define FLOW_META(sport, dport, ethertype, proto, dir) \
    ((uint64_t)(sport) | (uint64_t)(dport) << 16 | (uint64_t)(ethertype) << 32 | \
     (uint64_t)(proto) << 48 | (uint64_t)(dir) << 56)
#define FLOW_SPORT(meta)     ((uint16_t)(meta))
#define FLOW_DPORT(meta)     ((uint16_t)((meta) >> 16))
#define FLOW_ETHERTYPE(meta) ((uint16_t)((meta) >> 32))
#define FLOW_PROTO(meta)     ((uint8_t)((meta) >> 48))
#define FLOW_DIR(meta)       ((uint8_t)((meta) >> 56))

struct flow_entry {
    struct flow_key key;
    /* odd while the worker rewrites the key (eviction): readers retry */
    atomic_uint seq;
    uint32_t next;                /* bucket chain: worker only */
    uint32_t hash;
    uint32_t offloads;
    uint64_t packets, bytes;
    uint64_t first_ns, last_ns;
};

/* One queue pair's flows.  Its worker is the only writer; the control plane
 * reads entries racily (statistics) but under `lock`, which the worker takes
 * only to replace or empty the arrays, so no array is freed under a reader.
 * Entries sit densely in entry[0, used) and never move except then. */
struct flow_table {
    pthread_mutex_t lock;
    struct flow_entry *entry;
    uint32_t *bucket;             /* nbuckets chain heads */
    uint32_t capacity, nbuckets;
    atomic_uint used;             /* release-stored after a new entry's key */
    uint32_t max;                 /* bound in force (0: off) */
    uint32_t hand;                /* where the next eviction sample starts */
    uint64_t now;                 /* CLOCK_MONOTONIC ns, once per batch */
    uint64_t secret[6];           /* hash key: flows are chosen by guests and peers */
    struct vnic_queue_stats *st;  /* flow_evictions, flow_table_grows */
    /* requests from the control plane, served between batches: the
     * requester takes a ticket from `asked` and waits for `served` */
    atomic_uint max_wanted;
    atomic_bool clear_wanted;
    atomic_uint asked, served;
};

/* The flow of a frame from its first `have` bytes (at most FLOW_HEAD are read). */
void flow_key_parse(struct flow_key *k, int dir, const uint8_t *frame, uint32_t have);
/* The same for a frame in pieces (a guest TX chain), len bytes in all. */
void flow_key_from_iov(struct flow_key *k, int dir, const struct iovec *iov, int n, uint32_t len);

int flows_init(struct flow_table *t, struct vnic_queue_stats *st);
void flows_destroy(struct flow_table *t);
/* Between batches, on the worker: the batch's time, control-plane requests
 * (bound, clear), and growth while below the bound. */
void flows_batch_begin(struct flow_table *t);
/* Count packets/bytes and offload bits for the flow (created if new). */
void flows_add(struct flow_table *t, const struct flow_key *k, uint64_t packets, uint64_t bytes,
               uint32_t offloads);

static inline bool flows_on(const struct flow_table *t)
{
    return t->max != 0;
}

/* ---- device ------------------------------------------------------------- */
struct backend_ops;              /* backend.h */
struct irq_vector {
    int fd;
    bool masked;
    bool pending;
};

/* One direction of one pair: the rates (written by the control plane at
 * any time) and the generator (the worker's own, reseeded when seed_gen
 * moves). */
struct fault_dir {
    _Atomic uint32_t drop, duplicate, corrupt, bad_csum, reorder;   /* parts per million */
    _Atomic uint32_t delay_us, jitter_us, rate_kbps;
    _Atomic uint64_t seed;
    atomic_uint seed_gen;
    unsigned rng_gen;
    uint64_t rng;
    /* the delay line (delay.c): frames held until due, the worker's own */
    uint8_t *line;
    uint64_t line_head, line_tail;   /* bytes ever put in, taken out */
    uint64_t last_due_ns;            /* frames leave in order: none before this */
    uint64_t link_free_ns;           /* with a rate: when the link has sent what it holds */
};

enum { FAULT_LINE_BYTES = 1 << 21 };   /* each delay line: 2 MiB of frames */

enum { FAULT_RX = 0, FAULT_TX = 1 };

struct qpair {
    struct vnic_dev *dev;
    int index;
    struct vq rx, tx;
    pthread_t thread;
    bool thread_started;
    int stop_fd;                 /* eventfd: wake the worker to stop, or to serve a flow request */
    uint8_t *rx_frame;           /* one frame read from the backend */
    uint32_t rx_frame_len;       /* 0: none pending */
    uint8_t *tx_bounce;          /* gather buffer for message-based memory */
    struct tx_ctx *txc;          /* TX engine scratch */
    struct gro *gro;             /* receive coalescing state */
    struct chain *chain;         /* scratch chain (large, so on the heap) */
    struct rx_cache *rxc;        /* RX chains popped ahead (one-copy receive) */
    bool backend_paused;         /* RX: no guest buffers, backend not polled */
    bool backend_down;           /* the backend's peer is gone: not polled until re-attached */
    bool tx_blocked;             /* TX waits until the backend can take more (flush()) */
    struct rx_meta rx_meta;      /* rx_frame's offloads and hash */
    /* frames from other pairs' workers (RSS): inbox[i] from pair i */
    struct handoff_ring *inbox[VNIC_MAX_QUEUE_PAIRS];
    int inbox_next;              /* where the next look for handed frames starts */
    bool inbox_turn;             /* next_frame(): the inbox's turn, then the backend's */
    atomic_bool sleeping;        /* in epoll_wait: a producer must wake it */
    uint32_t handed_to;          /* bit i: frames went to pair i this batch */
    uint8_t *held;               /* a frame for pair held_to whose ring was full */
    uint32_t held_len;
    struct rx_meta held_meta;
    int held_to;                 /* -1: nothing held */
    struct flow_table flows;     /* per-flow statistics of this pair */
    void *backend_priv;          /* the backend's own state for this pair */
    int backend_fd;              /* the backend's fd for this pair, or -1 */
    int epoll_fd;                /* the worker's: kicks, stop_fd, the backend */
    /* set by the worker once it has left the pair idle because the driver
     * stopped using it (index >= active_pairs): its TX ring drained, what
     * it held for the guest delivered */
    atomic_bool parked;
    /* the driver has had the pair in use since it last parked (set when
     * MQ_VQ_PAIRS_SET takes it in): only then does parking finish its
     * queues; a pair never in use is not read at all */
    atomic_bool in_use;
    struct fault_dir fault[2];   /* FAULT_RX, FAULT_TX */
    uint8_t *fault_copy;         /* TX: the corrupted copy of a wire frame */
    uint8_t *fault_dup;          /* RX: a duplicate waiting to be delivered */
    uint32_t fault_dup_len;      /* 0: none waiting */
    /* a gap of a whole line before the next pair: its worker writes its
     * queues' indices there, this one reads the fields above per frame */
    char gap[VNIC_CACHE_LINE];
};

/* The control queue's own thread: commands never wait behind a data
 * queue's batch, and MQ_VQ_PAIRS_SET can wait for the pairs' workers. */
struct ctrl_worker {
    pthread_t thread;
    bool started;
    int stop_fd;                 /* eventfd: wake to stop */
    int park_fd;                 /* eventfd: a pair's worker parked */
    int epoll_fd;
    struct chain *chain;         /* scratch chain */
};

struct vnic_dev {
    int nqp;
    struct qpair qp[VNIC_MAX_QUEUE_PAIRS];
    struct vq ctrl;              /* control queue: index 2 * nqp */
    struct rx_filter filter;
    uint64_t guest_offloads;     /* receive offloads in force (CTRL_GUEST_OFFLOADS) */
    atomic_bool announce;        /* VIRTIO_NET_S_ANNOUNCE until the driver acks */
    int ctrl_last_error;         /* class << 8 | command of the last refused command, or -1 */
    uint8_t mac[ETH_ALEN];       /* the configured address, restored at reset */
    struct vnic_mem mem;
    uint64_t features;
    bool event_idx, mrg_rxbuf, indirect;
    uint32_t hdr_len;            /* the guest's virtio-net header: 12, or 20 with HASH_REPORT
                                  * (then the hash is reported in it) */
    struct rss_config rss;
    uint8_t *handoff_mem;        /* the rings between pairs (nqp * nqp, mapped on use) */
    struct handoff_ring *rings;
    const struct backend_ops *backend;   /* never NULL: null_backend by default */
    int backend_fds[VNIC_MAX_QUEUE_PAIRS];  /* what vnic_dev_set_backend() gave */
    int nbackend_fds;            /* 1 (shared by all pairs) or nqp */
    /* queue pairs the driver uses (MQ_VQ_PAIRS_SET): workers of the pairs
     * at and beyond it park; written by the control thread */
    atomic_int active_pairs;
    int steered_pairs;           /* what the backend steers received frames over */
    int steering;                /* enum vnic_steering, as the backend last set it */
    /* tap.c: steering programs loaded, by pair count (-1: none yet), kept so
     * that a guest repeating MQ_VQ_PAIRS_SET costs no BPF verifier runs */
    int steer_prog[VNIC_MAX_QUEUE_PAIRS + 1];
    struct ctrl_worker ctrlw;
    pthread_mutex_t irq_lock;
    struct irq_vector vec[VNIC_MAX_VECTORS];
    uint16_t config_vector;
    atomic_uchar isr;
    atomic_int error;
    atomic_bool stopping;
    atomic_uint frag_id;
    atomic_int tx_mode;          /* enum vnic_tx_mode, switched while workers run */
    atomic_bool rx_coalesce;     /* coalesce TCP segments for TSO-capable guests */
    atomic_bool rx_bounce_only;  /* every frame through the bounce buffer (vnic_dev_set_rx_copy) */
    atomic_uint capture_kinds;   /* enum cap_kind bits a capture takes (0: none is on) */
    atomic_bool faults;          /* some pair has a fault rate set (vnic_faults_set) */
    atomic_bool rx_starve;       /* receive stopped on purpose (vnic_faults_rx_starve) */
    struct capture *capture;     /* the capture's rings, while capture_kinds may be set */
    bool running;
    struct vnic_queue_stats stats[VNIC_MAX_QUEUE_PAIRS];
};

/* The bytes in iov[0..n) (UINT32_MAX if more). */
static inline uint32_t iov_bytes(const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    return len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
}

/* The first len bytes of iov[0..n) into dst (room for len): the copy
 * capture, fault injection and the delay line make of a frame. */
static inline void iov_gather(uint8_t *dst, const struct iovec *iov, int n, uint32_t len)
{
    for (int i = 0; i < n && len; i++) {
        size_t k = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(dst, iov[i].iov_base, k);
        dst += k;
        len -= (uint32_t)k;
    }
}

/* ---- fault injection (faults.c) ------------------------------------------ */

/* TX: how many times to send the wire frame in iov[1..*n] (0 dropped, 1,
 * or 2 duplicated), counted; a corrupted frame is copied first and iov /
 * *n then point at the copy.  iov has room for two entries at least. */
int fault_tx(struct qpair *qp, struct iovec *iov, int *n, uint32_t len);
/* RX, on the frame in qp->rx_frame: false if it is dropped (counted);
 * may change it, or keep a copy that fault_take_duplicate() hands out next. */
bool fault_rx(struct qpair *qp);
/* RX, after the header was fixed for the guest: maybe lie about the
 * checksum (bad_csum). */
void fault_rx_lie(struct qpair *qp);
/* A duplicate waiting: copy it into qp->rx_frame.  false if none. */
bool fault_take_duplicate(struct qpair *qp);
/* The next number of the direction's seeded generator. */
uint64_t fault_random(struct qpair *qp, struct fault_dir *f);
/* TX: true if the wire frame went into the delay line (or was lost to a
 * full one): the caller sends nothing now.  Counted. */
bool fault_tx_hold(struct qpair *qp, const struct iovec *iov, int n, uint32_t len);
/* RX: true if qp->rx_frame went into the delay line (or was lost to a
 * full one); counted. */
bool fault_rx_hold(struct qpair *qp);
/* RX: a held frame that is due, copied into qp->rx_frame.  false if none. */
bool fault_rx_take_due(struct qpair *qp);
/* Forget what the delay lines hold (a device reset). */
void fault_lines_clear(struct qpair *qp);
/* delay.c: does this direction hold frames back (delay, jitter or rate)? */
bool fault_delays(const struct fault_dir *f);
/* Hold the frame in iov[0..n) (len bytes) in the direction's line until
 * due; false if the line is full (the caller counts the drop). */
bool fault_hold(struct qpair *qp, struct fault_dir *f, const struct iovec *iov, int n, uint32_t len);
/* The oldest held frame if it is due: its bytes and length (valid until
 * the next fault_release()), or NULL. */
const uint8_t *fault_due(struct fault_dir *f, uint32_t *len, uint64_t now_ns);
void fault_release(struct fault_dir *f);
/* ms until the pair's next held frame is due (0: now), -1 if none. */
int fault_next_due_ms(struct qpair *qp);
/* TX: write every due frame to the backend. */
void fault_tx_flush(struct qpair *qp);
/* Current CLOCK_MONOTONIC in ns. */
uint64_t fault_now_ns(void);

/* ---- packet capture (capture.c, pcapng.c) --------------------------------- */
/* What a captured frame is: a direction on one side of the device. */
enum cap_kind {
    CAP_WIRE_RX = VNIC_CAPTURE_RX,
    CAP_WIRE_TX = VNIC_CAPTURE_TX,
    CAP_GUEST_RX = VNIC_CAPTURE_RX << 2,
    CAP_GUEST_TX = VNIC_CAPTURE_TX << 2
};

/* One record in a pair's ring, its data behind it; size 0 mod 8.  kind 0
 * pads the ring's end (the next record starts at the beginning). */
struct cap_rec {
    uint32_t size;               /* the whole record, header and data */
    uint32_t caplen;             /* data bytes kept */
    uint32_t origlen;            /* the frame's length */
    uint8_t kind;                /* enum cap_kind, or 0: padding */
    uint8_t has_hdr;             /* hdr (and the hash fields) describe the frame */
    uint16_t report;             /* enum vnic_hash_report, with has_hdr */
    uint64_t ts_ns;              /* CLOCK_REALTIME when it was copied */
    uint32_t hash;
    struct virtio_net_hdr hdr;
};

/* The writer's output buffer: a whole packet block of the largest snaplen fits. */
#define CAPTURE_OUT_BYTES (1u << 20)

/* A single-producer ring: the pair's worker writes, the writer reads. */
struct cap_ring {
    uint8_t *buf;
    uint32_t mask;               /* size - 1, size a power of two */
    _Atomic uint64_t head;       /* bytes ever written (the worker's) */
    atomic_int busy;             /* the worker is inside capture_frame() */
    char gap[VNIC_CACHE_LINE];
    _Atomic uint64_t tail;       /* bytes ever read (the writer's) */
};

struct capture {
    struct vnic_capture_config cfg;
    struct cap_ring ring[VNIC_MAX_QUEUE_PAIRS];
    int nring;
    pthread_t writer;
    atomic_bool stopping;        /* the writer drains what is left and ends */
    struct vnic_capture_status status;   /* the writer's; read under no lock (racy counts) */
    uint8_t *out;                /* the writer's output buffer */
    uint32_t out_len;
};

/* What a hook knows of a frame beyond its bytes (NULL: nothing). */
struct cap_meta {
    const struct virtio_net_hdr *hdr;
    uint16_t num_buffers;
    uint16_t report;
    uint32_t hash;
};

/* Does a capture take frames of this kind?  One relaxed load: the hooks'
 * whole cost while no capture is on. */
static inline bool capture_wants(const struct vnic_dev *dev, unsigned kind)
{
    return unlikely(atomic_load_explicit(&dev->capture_kinds, memory_order_relaxed) & kind);
}

/* Copy up to snaplen bytes of the frame in iov[0..n) (len bytes) into the
 * pair's ring; counted as capture_packets or capture_drops.  Only the
 * pair's worker calls it, never waiting. */
void capture_frame(struct qpair *qp, unsigned kind, const struct iovec *iov, int n, uint32_t len,
                   const struct cap_meta *m);
static inline void capture_buf(struct qpair *qp, unsigned kind, const uint8_t *buf, uint32_t len,
                               const struct cap_meta *m)
{
    struct iovec one = { (void *)buf, len };
    capture_frame(qp, kind, &one, 1, len, m);
}

/* pcapng.c: the section and interface blocks at the file's start, then the
 * writer thread (arg: struct capture *) that turns records into packet
 * blocks.  capture_write_head: 0 or -errno. */
int capture_write_head(struct capture *c);
void *capture_writer(void *arg);
/* Stop a capture left on (vnic_dev_free). */
void capture_destroy(struct vnic_dev *dev);

/* Is receiving stopped on purpose?  The workers neither read the
 * backend nor watch it meanwhile. */
static inline bool rx_starving(const struct vnic_dev *dev)
{
    return unlikely(atomic_load_explicit(&dev->rx_starve, memory_order_relaxed));
}

/* Does a delay line hold frames?  They leave when due even after the
 * faults were cleared. */
static inline bool fault_holding(const struct fault_dir *f)
{
    return unlikely(f->line_head != f->line_tail);
}

/* Is any fault rate set?  One relaxed load: the hooks' cost while none is. */
static inline bool faults_on(const struct vnic_dev *dev)
{
    return unlikely(atomic_load_explicit(&dev->faults, memory_order_relaxed));
}

/* ---- device (dev.c), interrupts (irq.c), queues (queue.c), worker (worker.c) ---- */
#define VNIC_ISR_QUEUE  0x1      /* ISR bit: a queue interrupt */
#define VNIC_ISR_CONFIG 0x2      /* ISR bit: the configuration changed */

/* Put the device in NEEDS_RESET for reason (enum vnic_error), counted in
 * st if given; the first reason sticks and raises the config interrupt. */
void dev_fail(struct vnic_dev *dev, int reason, struct vnic_queue_stats *st);

/* Features as the receive path sees them: the GUEST_* ones the driver
 * currently wants (CTRL_GUEST_OFFLOADS can turn them off and on). */
static inline uint64_t rx_features(const struct vnic_dev *dev)
{
    return (dev->features & ~GUEST_OFFLOAD_MASK) | dev->guest_offloads;
}

/* Add one to an eventfd's counter.  0 (also when it is full: a wake is
 * pending anyway) or -errno. */
int eventfd_signal(int fd);
/* Interrupt the driver for vq's used buffers if it wants one (counted). */
void dev_notify_queue(struct vnic_dev *dev, struct vq *vq, uint64_t *counter);
void irq_init(struct vnic_dev *dev);
void irq_destroy(struct vnic_dev *dev);

/* A queue with no ring and a new kick eventfd.  0 or -errno. */
int vq_init(struct vq *vq, struct vnic_dev *dev, int index);
void vq_destroy(struct vq *vq);
/* Forget the ring state (reset); kick_fd stays. */
void vq_clear(struct vq *vq);

/* per-direction processing, run on the worker thread */
int tx_process(struct qpair *qp);        /* >0: more work pending */
int rx_process(struct qpair *qp);        /* >0: more work pending */
/* The pair's worker: its epoll set first (0 or -errno), then the thread. */
int worker_prepare(struct qpair *qp);
void worker_release(struct qpair *qp);
void *worker_main(void *arg);
/* The control queue's thread (ctrl.c's commands run there). */
int ctrl_worker_prepare(struct vnic_dev *dev);
void ctrl_worker_release(struct vnic_dev *dev);
void *ctrl_worker_main(void *arg);
/* Use n queue pairs from now on (MQ_VQ_PAIRS_SET, on the control thread):
 * the backend steers received frames over the first n, workers beyond
 * park once they have finished what they hold.  0 or -errno (steering
 * refused: nothing changed). */
int dev_set_active_pairs(struct vnic_dev *dev, int n);
static inline bool pair_active(const struct qpair *qp)
{
    return qp->index < atomic_load_explicit(&qp->dev->active_pairs, memory_order_acquire);
}

/* ---- guarded threads (guard.c) ------------------------------------------ */
/* Catch SIGBUS from vanished guest memory, once per process. */
void guard_install(void);
/* From now on a SIGBUS on this thread jumps to env (set with sigsetjmp(env, 1)). */
void guard_enter(sigjmp_buf *env);
void guard_leave(void);

/* ---- ring access, inline on the per-packet path (declared with struct vq) */
static inline uint16_t vq_load16(struct vq *vq, void *base, uint64_t addr, size_t off, bool acquire)
{
    uint16_t v = 0;
    if (base)
        v = __atomic_load_n((uint16_t *)((uint8_t *)base + off), acquire ? __ATOMIC_ACQUIRE : __ATOMIC_RELAXED);
    else if (mem_copy_from(&vq->dev->mem, addr + off, &v, 2) < 0)
        vq_ring_dma_failed(vq);
    return v;
}

static inline void vq_store16(struct vq *vq, void *base, uint64_t addr, size_t off, uint16_t v, bool release)
{
    if (base)
        __atomic_store_n((uint16_t *)((uint8_t *)base + off), v, release ? __ATOMIC_RELEASE : __ATOMIC_RELAXED);
    else if (mem_copy_to(&vq->dev->mem, addr + off, &v, 2) < 0)
        vq_ring_dma_failed(vq);
}

static inline void vq_store(struct vq *vq, void *base, uint64_t addr, size_t off, const void *src, size_t n)
{
    if (base)
        memcpy((uint8_t *)base + off, src, n);
    else if (mem_copy_to(&vq->dev->mem, addr + off, src, n) < 0)
        vq_ring_dma_failed(vq);
}

static inline int vq_desc_copy(struct vq *vq, const void *table, uint64_t table_addr, uint32_t i, void *out)
{
    if (table) {
        /* one copy: the guest may rewrite the descriptor under us */
        memcpy(out, (const uint8_t *)table + (size_t)VQ_DESC_SIZE * i, VQ_DESC_SIZE);
        return 0;
    }
    if (mem_copy_from(&vq->dev->mem, table_addr + (uint64_t)VQ_DESC_SIZE * i, out, VQ_DESC_SIZE) < 0)
        return -VNIC_ERR_DMA;
    return 0;
}

#endif
