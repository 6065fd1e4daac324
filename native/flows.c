/* flows.c - per-flow statistics: one table per queue pair, written by its
 * worker only, read by the control plane.
 *
 * A chained hash: bucket heads index a dense entry array whose entries
 * never move, so a reader can copy entry[0, used) while the worker counts.
 * Growth doubles both arrays between batches, never inside one (no
 * allocation per packet), while fewer than a batch's worth of free entries
 * remain, up to the bound.  At the bound a new flow takes the place of the
 * least recently seen of FLOW_SAMPLE neighbouring entries, a sweep of the
 * table that approximates LRU at constant cost.
 *
 * Readers and the worker share one mutex, taken by the worker only to swap
 * or empty the arrays and by readers around their copy.  An evicted entry's
 * key is rewritten under a sequence count, so a copy never reports half a
 * key; counters are read racily, like the device counters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include "headers.h"

#define FLOW_INITIAL 256
#define FLOW_SAMPLE  8
/* The most flows one worker batch can create: a TX batch, an RX batch and
 * the coalesced flows waiting from the one before. */
#define FLOW_BATCH_NEW (2 * VNIC_BATCH + GRO_FLOWS_MAX)

/* ---- hashing ------------------------------------------------------------------- */

/* 64x64->128 multiply folded: the mixing step of wyhash-like hashes. */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
}

static inline uint64_t word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

/* Keyed by a secret: guests and peers choose the flows, so they must not
 * be able to choose collisions.  The first two products are independent,
 * which keeps the per-packet latency short. */
static uint32_t flow_hash(const struct flow_key *k, const uint64_t *s)
{
    uint64_t a = mum(word(k->src) ^ s[0], word(k->src + 8) ^ s[1]);
    uint64_t b = mum(word(k->dst) ^ s[2], word(k->dst + 8) ^ s[3]);
    uint64_t h = mum(a ^ b ^ s[4], k->meta ^ s[5]);
    return (uint32_t)(h ^ h >> 32);
}

static inline bool same_key(const struct flow_key *a, const struct flow_key *b)
{
    return !((word(a->src) ^ word(b->src)) | (word(a->src + 8) ^ word(b->src + 8)) |
             (word(a->dst) ^ word(b->dst)) | (word(a->dst + 8) ^ word(b->dst + 8)) |
             (a->meta ^ b->meta));
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- arrays ---------------------------------------------------------------------- */

static void link_entry(struct flow_table *t, uint32_t i)
{
    uint32_t *head = &t->bucket[t->entry[i].hash & (t->nbuckets - 1)];
    t->entry[i].next = *head;
    *head = i;
}

static void unlink_entry(struct flow_table *t, uint32_t i)
{
    uint32_t *p = &t->bucket[t->entry[i].hash & (t->nbuckets - 1)];
    while (*p != i)
        p = &t->entry[*p].next;
    *p = t->entry[i].next;
}

/* Replace the arrays with ones of `capacity` entries holding the first
 * `keep` flows.  false (nothing changed) if memory is short. */
static bool resize(struct flow_table *t, uint32_t capacity, uint32_t keep)
{
    uint32_t nbuckets = 1;
    while (nbuckets < capacity)
        nbuckets <<= 1;
    struct flow_entry *entry = capacity ? malloc(sizeof(*entry) * capacity) : NULL;
    uint32_t *bucket = capacity ? malloc(sizeof(*bucket) * nbuckets) : NULL;
    if (capacity && (!entry || !bucket)) {
        free(entry);
        free(bucket);
        return false;
    }
    if (keep)                                /* readers may be copying the old ones: only read */
        memcpy(entry, t->entry, sizeof(*entry) * keep);
    pthread_mutex_lock(&t->lock);
    struct flow_entry *old_entry = t->entry;
    uint32_t *old_bucket = t->bucket;
    t->entry = entry;
    t->bucket = bucket;
    t->capacity = capacity;
    t->nbuckets = capacity ? nbuckets : 0;
    for (uint32_t b = 0; b < t->nbuckets; b++)
        t->bucket[b] = FLOW_NONE;
    for (uint32_t i = 0; i < keep; i++)
        link_entry(t, i);
    atomic_store_explicit(&t->used, keep, memory_order_release);
    t->hand = 0;
    pthread_mutex_unlock(&t->lock);
    free(old_entry);
    free(old_bucket);
    return true;
}

static void empty(struct flow_table *t)
{
    pthread_mutex_lock(&t->lock);
    atomic_store_explicit(&t->used, 0, memory_order_release);
    for (uint32_t b = 0; b < t->nbuckets; b++)
        t->bucket[b] = FLOW_NONE;
    t->hand = 0;
    pthread_mutex_unlock(&t->lock);
}

/* Take a new bound: 0 frees the table, a bound below the flows held starts
 * it over, one below the capacity shrinks it; otherwise growth follows. */
static void apply_max(struct flow_table *t, uint32_t max)
{
    uint32_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    uint32_t initial = max < FLOW_INITIAL ? max : FLOW_INITIAL;
    bool ok = true;
    if (used > max)
        ok = resize(t, initial, 0);
    else if (t->capacity == 0)
        ok = resize(t, initial, 0);
    else if (t->capacity > max)
        ok = resize(t, max, used);
    if (ok)
        t->max = max;                        /* else memory is short: retried next batch */
}

/* Control-plane requests, served by the only writer: the worker, or the
 * control plane itself while no worker runs. */
static void serve_requests(struct flow_table *t)
{
    unsigned asked = atomic_load_explicit(&t->asked, memory_order_acquire);
    apply_max(t, atomic_load_explicit(&t->max_wanted, memory_order_relaxed));
    if (atomic_exchange_explicit(&t->clear_wanted, false, memory_order_relaxed))
        empty(t);
    atomic_store_explicit(&t->served, asked, memory_order_release);
}

/* ---- the worker's side --------------------------------------------------------- */

void flows_batch_begin(struct flow_table *t)
{
    /* a request, or a bound not taken for lack of memory: try (again) */
    if (atomic_load_explicit(&t->asked, memory_order_relaxed) !=
        atomic_load_explicit(&t->served, memory_order_relaxed) ||
        atomic_load_explicit(&t->max_wanted, memory_order_relaxed) != t->max)
        serve_requests(t);
    if (!t->max)
        return;
    uint32_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    if (t->capacity < t->max && t->capacity - used < FLOW_BATCH_NEW) {
        uint32_t want = t->capacity * 2 < t->max ? t->capacity * 2 : t->max;
        if (resize(t, want, used))
            t->st->flow_table_grows++;
    }
    t->now = monotonic_ns();
}

static struct flow_entry *lookup(struct flow_table *t, const struct flow_key *k, uint32_t hash)
{
    for (uint32_t i = t->bucket[hash & (t->nbuckets - 1)]; i != FLOW_NONE; i = t->entry[i].next) {
        struct flow_entry *e = &t->entry[i];
        if (e->hash == hash && same_key(&e->key, k))
            return e;
    }
    return NULL;
}

/* The least recently seen of FLOW_SAMPLE entries from the hand on. */
static uint32_t victim(struct flow_table *t, uint32_t used)
{
    uint32_t best = t->hand % used;
    for (uint32_t s = 1; s < FLOW_SAMPLE && s < used; s++) {
        uint32_t i = (t->hand + s) % used;
        if (t->entry[i].last_ns < t->entry[best].last_ns)
            best = i;
    }
    t->hand = (t->hand + FLOW_SAMPLE) % used;
    return best;
}

static void fill(struct flow_entry *e, const struct flow_key *k, uint32_t hash, uint64_t now)
{
    e->key = *k;
    e->hash = hash;
    e->offloads = 0;
    e->packets = e->bytes = 0;
    e->first_ns = e->last_ns = now;
}

static struct flow_entry *insert(struct flow_table *t, const struct flow_key *k, uint32_t hash)
{
    uint32_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    if (used < t->capacity && used < t->max) {
        struct flow_entry *e = &t->entry[used];   /* unseen by readers until used grows */
        atomic_store_explicit(&e->seq, 0, memory_order_relaxed);   /* fresh memory: make it even */
        fill(e, k, hash, t->now);
        link_entry(t, used);
        atomic_store_explicit(&t->used, used + 1, memory_order_release);
        return e;
    }
    if (!used)
        return NULL;                         /* no table (memory was short) */
    uint32_t i = victim(t, used);
    struct flow_entry *e = &t->entry[i];
    unlink_entry(t, i);
    unsigned seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    fill(e, k, hash, t->now);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
    link_entry(t, i);
    t->st->flow_evictions++;
    return e;
}

void flows_add(struct flow_table *t, const struct flow_key *k, uint64_t packets, uint64_t bytes,
               uint32_t offloads)
{
    uint32_t hash = flow_hash(k, t->secret);
    struct flow_entry *e = lookup(t, k, hash);
    if (!e && !(e = insert(t, k, hash)))
        return;
    e->packets += packets;
    e->bytes += bytes;
    e->offloads |= offloads;
    e->last_ns = t->now;
}

/* ---- lifetime -------------------------------------------------------------------- */

int flows_init(struct flow_table *t, struct vnic_queue_stats *st)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    t->st = st;
    if (getrandom(t->secret, sizeof(t->secret), GRND_NONBLOCK) != sizeof(t->secret)) {
        uint64_t x = monotonic_ns() ^ (uint64_t)(uintptr_t)t;   /* no entropy yet: still distinct */
        for (int i = 0; i < 6; i++)
            t->secret[i] = x = mum(x ^ 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull);
    }
    atomic_store(&t->max_wanted, VNIC_FLOW_TABLE_DEFAULT);
    serve_requests(t);                       /* no worker yet: allocated here */
    return t->max == VNIC_FLOW_TABLE_DEFAULT ? 0 : -ENOMEM;
}

void flows_destroy(struct flow_table *t)
{
    free(t->entry);
    free(t->bucket);
    t->entry = NULL;
    t->bucket = NULL;
    pthread_mutex_destroy(&t->lock);
}

/* ---- the control plane's side ------------------------------------------------------ */

/* Hand a request to each pair's writer and wait until it was served: at
 * once while no worker runs, else at the worker's next batch (woken from
 * epoll for it), microseconds away. */
static int request(struct vnic_dev *dev)
{
    int err = 0;
    for (int i = 0; i < dev->nqp; i++) {
        struct qpair *qp = &dev->qp[i];
        struct flow_table *t = &qp->flows;
        unsigned ticket = atomic_fetch_add(&t->asked, 1) + 1;
        if (!dev->running || !qp->thread_started) {
            serve_requests(t);
            continue;
        }
        int kicked = eventfd_signal(qp->stop_fd);    /* wake it from epoll */
        if (kicked < 0) {
            err = kicked;
            continue;
        }
        for (int waited = 0; (int)(atomic_load_explicit(&t->served, memory_order_acquire) - ticket) < 0;
             waited++) {
            if (waited == 10000) {                 /* a second: a worker that never came */
                err = -ETIMEDOUT;
                break;
            }
            usleep(100);
        }
    }
    return err;
}

int vnic_dev_set_flow_table_max(struct vnic_dev *dev, uint32_t max_entries)
{
    if (max_entries > VNIC_FLOW_TABLE_LIMIT)
        return -EINVAL;
    for (int i = 0; i < dev->nqp; i++)
        atomic_store(&dev->qp[i].flows.max_wanted, max_entries);
    return request(dev);
}

int vnic_flows_clear(struct vnic_dev *dev)
{
    for (int i = 0; i < dev->nqp; i++)
        atomic_store(&dev->qp[i].flows.clear_wanted, true);
    return request(dev);
}

/* Copy one entry unless the worker is rewriting its key meanwhile. */
static bool copy_entry(const struct flow_entry *e, int pair, struct vnic_flow_record *r)
{
    for (int tries = 0; tries < 4; tries++) {
        unsigned seq = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (seq & 1)
            continue;
        struct flow_key k = e->key;
        r->packets = e->packets;
        r->bytes = e->bytes;
        r->first_seen_ns = e->first_ns;
        r->last_seen_ns = e->last_ns;
        r->offloads = e->offloads;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) != seq)
            continue;
        memcpy(r->src_addr, k.src, sizeof(r->src_addr));
        memcpy(r->dst_addr, k.dst, sizeof(r->dst_addr));
        r->src_port = FLOW_SPORT(k.meta);
        r->dst_port = FLOW_DPORT(k.meta);
        r->ethertype = FLOW_ETHERTYPE(k.meta);
        r->ip_version = r->ethertype == ETH_P_IPV4 ? IPV4_VERSION : r->ethertype == ETH_P_IPV6 ? IPV6_VERSION : 0;
        r->protocol = FLOW_PROTO(k.meta);
        r->direction = FLOW_DIR(k.meta);
        r->queue_pair = (uint8_t)pair;
        r->reserved = 0;
        return true;
    }
    return false;
}

int vnic_flows_snapshot(struct vnic_dev *dev, struct vnic_flow_record *out, int max)
{
    int total = 0;
    for (int i = 0; i < dev->nqp; i++) {
        struct flow_table *t = &dev->qp[i].flows;
        pthread_mutex_lock(&t->lock);
        uint32_t used = atomic_load_explicit(&t->used, memory_order_acquire);
        for (uint32_t j = 0; j < used; j++) {
            if (total < max && !copy_entry(&t->entry[j], i, &out[total]))
                continue;
            total++;
        }
        pthread_mutex_unlock(&t->lock);
    }
    return total;
}

void vnic_flows_info(struct vnic_dev *dev, struct vnic_flow_table_info *out)
{
    memset(out, 0, sizeof(*out));
    out->max_entries = atomic_load(&dev->qp[0].flows.max_wanted);
    for (int i = 0; i < dev->nqp; i++) {
        struct flow_table *t = &dev->qp[i].flows;
        pthread_mutex_lock(&t->lock);
        out->entries += atomic_load_explicit(&t->used, memory_order_relaxed);
        out->capacity += t->capacity;
        pthread_mutex_unlock(&t->lock);
        out->evictions += dev->stats[i].flow_evictions;
        out->grows += dev->stats[i].flow_table_grows;
    }
}
