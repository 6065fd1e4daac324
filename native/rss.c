/* rss.c - receive-side scaling (virtio 1.2, 5.1.6.4.3 and 5.1.6.5.7): the
 * Toeplitz hash of a received frame's addresses and ports, the receive
 * queue the driver's indirection table picks for it, and the driver's
 * RSS_CONFIG / HASH_CONFIG commands that set key, table and hash types
 * (the hash itself is toeplitz.c's).
 *
 * Security model: the configuration comes from the guest's control queue
 * and the frames from the backend's peers; neither is trusted.  Every
 * length of a command is checked against the bytes it came in before it
 * is used, every queue it names against the device's pairs, and a frame
 * is read only as far as hdr_parse_ip() found it whole.  A command that
 * fails a check changes nothing. */
#include <errno.h>
#include <string.h>
#include "backend.h"
#include "headers.h"
#include "vnic_test.h"

/* The fixed start of both commands' data (struct virtio_net_rss_config
 * and struct virtio_net_hash_config share it), little-endian. */
struct rss_cmd_head {
    uint32_t hash_types;
    uint16_t table_mask;          /* RSS_CONFIG: table length - 1; HASH_CONFIG: reserved */
    uint16_t unclassified_queue;  /* rss_rq_id: the receive queue's pair */
};

/* After RSS_CONFIG's table (HASH_CONFIG: after 4 more reserved bytes). */
struct rss_cmd_tail {
    uint16_t max_tx_vq;           /* RSS_CONFIG: the pairs in use from now on */
    uint8_t key_len;
} __attribute__((packed));

#define RSS_RQ_RESERVED 0x8000    /* rss_rq_id's top bit: must be zero */
#define LINUX_TRAILER_PAD 1       /* see rss_parse() */
#define HASH_KEY_LEN_AT 12        /* HASH_CONFIG: after hash_types and le16 reserved[4] */

_Static_assert(sizeof(struct rss_cmd_head) == 8 && sizeof(struct rss_cmd_tail) == 3, "RSS command");
_Static_assert(sizeof(((struct vnic_rss_state *)0)->table) / sizeof(uint16_t) == VNIC_RSS_TABLE_MAX,
               "vnic_rss_state table");
_Static_assert(sizeof(((struct vnic_rss_state *)0)->key) == VNIC_RSS_KEY_SIZE, "vnic_rss_state key");

/* ---- which fields a frame is hashed over ------------------------------------ */

struct hash_choice {
    uint32_t l4_type;             /* enum vnic_hash_type with ports */
    uint16_t l4_report;
    uint32_t ip_type;             /* ... with addresses only */
    uint16_t ip_report;
};

static struct hash_choice choice_for(const struct layout *lo)
{
    bool tcp = lo->proto == IPPROTO_TCP;
    if (lo->ipv6)
        return (struct hash_choice){ tcp ? VNIC_HASH_TCPV6 : VNIC_HASH_UDPV6,
                                     tcp ? VNIC_HASH_REPORT_TCPV6 : VNIC_HASH_REPORT_UDPV6,
                                     VNIC_HASH_IPV6, VNIC_HASH_REPORT_IPV6 };
    return (struct hash_choice){ tcp ? VNIC_HASH_TCPV4 : VNIC_HASH_UDPV4,
                                 tcp ? VNIC_HASH_REPORT_TCPV4 : VNIC_HASH_REPORT_UDPV4,
                                 VNIC_HASH_IPV4, VNIC_HASH_REPORT_IPV4 };
}

/* Input bytes p[0, 8) as a word of the hash input (the first on top). */
static uint64_t input_word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return __builtin_bswap64(w);
}

/* The addresses in words w (source then destination, as they lie in the
 * IP header): the input bytes they make. */
static uint32_t address_words(const uint8_t *frame, const struct layout *lo, uint64_t *w)
{
    if (!lo->ipv6) {
        w[0] = input_word(frame + lo->l3 + offsetof(struct ipv4_hdr, saddr));
        return 2 * FIELD_SIZE(struct ipv4_hdr, saddr);
    }
    const uint8_t *a = frame + lo->l3 + offsetof(struct ipv6_hdr, saddr);
    for (uint32_t i = 0; i < 2 * FIELD_SIZE(struct ipv6_hdr, saddr) / RSS_CHUNK; i++)
        w[i] = input_word(a + RSS_CHUNK * i);
    return 2 * FIELD_SIZE(struct ipv6_hdr, saddr);
}

/* The hash input (source and destination address, then source and
 * destination port when the type asks for them) in words w: its length in
 * bytes, 0 when no enabled type covers the frame; *report says which type.
 * Every word read lies within the headers hdr_parse_ip() found whole. */
static uint32_t hash_input(uint32_t types, const uint8_t *frame, uint32_t len, uint64_t *w,
                           uint16_t *report)
{
    struct layout lo;
    if (hdr_parse_ip(frame, len, &lo) < 0)
        return 0;
    struct hash_choice c = choice_for(&lo);
    bool ports = lo.l4 && lo.hdr_len && (lo.proto == IPPROTO_TCP || lo.proto == IPPROTO_UDP) &&
                 (types & c.l4_type);
    if (!ports && !(types & c.ip_type))
        return 0;
    uint32_t n = address_words(frame, &lo, w);
    *report = c.ip_report;
    if (!ports)
        return n;
    /* source then destination port: where TCP and UDP both keep them */
    w[n / RSS_CHUNK] = (uint64_t)rd32(frame + lo.l4 + offsetof(struct udp_hdr, source)) << 32;
    *report = c.l4_report;
    return n + 2 * (uint32_t)FIELD_SIZE(struct udp_hdr, source);
}

int rss_classify(struct vnic_dev *dev, const uint8_t *frame, uint32_t len, struct rx_meta *meta)
{
    struct rss_config *c = &dev->rss;
    uint64_t w[RSS_CHUNKS] = { 0 };
    uint16_t report = VNIC_HASH_REPORT_NONE;
    uint32_t n = hash_input(atomic_load_explicit(&c->hash_types, memory_order_relaxed), frame, len, w, &report);
    meta->report = (uint16_t)(n ? report : VNIC_HASH_REPORT_NONE);
    if (!n)
        return atomic_load_explicit(&c->unclassified, memory_order_relaxed);
    uint32_t hash = toeplitz_hash(&c->expanded, w, n);
    meta->hash = hash;
    uint16_t mask = atomic_load_explicit(&c->mask, memory_order_relaxed) & (VNIC_RSS_TABLE_MAX - 1);
    return atomic_load_explicit(&c->table[hash & mask], memory_order_relaxed);
}

/* ---- the driver's commands ------------------------------------------------------ */

void rss_reset(struct rss_config *c)
{
    atomic_store(&c->hash_types, 0);
    atomic_store(&c->steering, false);
    atomic_store(&c->mask, 0);
    atomic_store(&c->unclassified, 0);
    for (int i = 0; i < VNIC_RSS_TABLE_MAX; i++)
        atomic_store(&c->table[i], 0);
    memset(c->key, 0, sizeof(c->key));
    toeplitz_expand(&c->expanded, c->key);
}

/* A receive queue named by rss_rq_id: the pair, or -1 if there is none. */
static int rq_pair(const struct vnic_dev *dev, uint16_t id)
{
    return (id & RSS_RQ_RESERVED) || id >= dev->nqp ? -1 : id;
}

/* A validated command, ready to apply. */
struct rss_request {
    uint32_t hash_types;
    uint32_t table_len;           /* 0 for HASH_CONFIG */
    const uint8_t *table;         /* table_len le16 entries */
    uint16_t unclassified;
    uint16_t max_tx_vq;
    uint8_t key[VNIC_RSS_KEY_SIZE];   /* shorter keys padded with zeros */
};

static bool table_valid(const struct vnic_dev *dev, const struct rss_request *r)
{
    for (uint32_t i = 0; i < r->table_len; i++) {
        uint16_t q;
        memcpy(&q, r->table + 2 * i, sizeof(q));
        if (unlikely(rq_pair(dev, q) < 0))
            return false;
    }
    return true;
}

/* Parse and check a command's data: 0 or -EINVAL. */
static int rss_parse(const struct vnic_dev *dev, const uint8_t *data, uint32_t len, bool rss,
                     struct rss_request *r)
{
    struct rss_cmd_head head;
    struct rss_cmd_tail tail;
    if (unlikely(len < sizeof(head)))
        return -EINVAL;
    memcpy(&head, data, sizeof(head));
    memset(r, 0, sizeof(*r));
    r->hash_types = head.hash_types;
    r->table_len = rss ? (uint32_t)head.table_mask + 1 : 0;
    if (unlikely(r->hash_types & ~(uint32_t)VNIC_HASH_SUPPORTED))
        return -EINVAL;               /* a type we never offered */
    if (rss && unlikely(r->table_len > VNIC_RSS_TABLE_MAX || (r->table_len & (r->table_len - 1))))
        return -EINVAL;               /* not a power of two, or longer than offered */
    /* RSS_CONFIG: the table, then max_tx_vq; HASH_CONFIG: reserved bytes */
    uint32_t tail_at = rss ? (uint32_t)sizeof(head) + 2 * r->table_len
                           : HASH_KEY_LEN_AT - (uint32_t)offsetof(struct rss_cmd_tail, key_len);
    if (unlikely(len < tail_at + sizeof(tail)))
        return -EINVAL;
    memcpy(&tail, data + tail_at, sizeof(tail));
    uint32_t key_at = tail_at + (uint32_t)sizeof(tail);
    /* Linux 6.12 sends the trailer as a padded C struct: one byte more
     * between hash_key_length and its key (the key it shows in ethtool -x
     * is the one after that byte) */
    if (rss && len == key_at + tail.key_len + LINUX_TRAILER_PAD)
        key_at += LINUX_TRAILER_PAD;
    if (unlikely(tail.key_len > VNIC_RSS_KEY_SIZE || len != key_at + tail.key_len))
        return -EINVAL;
    memcpy(r->key, data + key_at, tail.key_len);
    if (!rss)
        return 0;
    r->table = data + sizeof(head);
    r->unclassified = head.unclassified_queue;
    r->max_tx_vq = tail.max_tx_vq;
    if (unlikely(rq_pair(dev, r->unclassified) < 0 || !table_valid(dev, r)))
        return -EINVAL;               /* a queue the device does not have */
    if (unlikely(r->max_tx_vq < 1 || r->max_tx_vq > dev->nqp))
        return -EINVAL;
    return 0;
}

/* Table and key first, the hash types last: a worker meeting the change
 * half-way sees old or new entries, never one out of range. */
static void rss_apply(struct vnic_dev *dev, const struct rss_request *r, bool rss)
{
    struct rss_config *c = &dev->rss;
    for (uint32_t i = 0; i < r->table_len; i++) {
        uint16_t q;
        memcpy(&q, r->table + 2 * i, sizeof(q));
        atomic_store_explicit(&c->table[i], q, memory_order_relaxed);
    }
    memcpy(c->key, r->key, sizeof(c->key));
    toeplitz_expand(&c->expanded, c->key);
    if (rss) {
        atomic_store(&c->mask, (uint16_t)(r->table_len - 1));
        atomic_store(&c->unclassified, r->unclassified);
    }
    atomic_store(&c->steering, rss);
    atomic_store(&c->hash_types, r->hash_types);
}

int rss_set_config(struct vnic_dev *dev, const uint8_t *data, uint32_t len, bool rss)
{
    struct rss_request r;
    int err = rss_parse(dev, data, len, rss, &r);
    if (err)
        return err;
    /* RSS_CONFIG also sets the pairs in use, as VQ_PAIRS_SET does */
    if (rss && (err = dev_set_active_pairs(dev, r.max_tx_vq)))
        return err;
    rss_apply(dev, &r, rss);
    return 0;
}

void vnic_dev_rss_state(struct vnic_dev *dev, struct vnic_rss_state *out)
{
    const struct rss_config *c = &dev->rss;
    memset(out, 0, sizeof(*out));
    out->hash_types = atomic_load(&c->hash_types);
    out->steering = atomic_load(&c->steering);
    out->report = dev->hdr_len == VNIC_NET_HDR_HASH_SIZE;
    out->table_len = atomic_load(&c->mask) + 1;
    out->unclassified_queue = atomic_load(&c->unclassified);
    for (int i = 0; i < VNIC_RSS_TABLE_MAX; i++)
        out->table[i] = atomic_load(&c->table[i]);
    memcpy(out->key, c->key, sizeof(out->key));
}
