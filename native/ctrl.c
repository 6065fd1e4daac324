/* ctrl.c - the virtio-net control queue and the receive filter it programs
 * (virtio 1.2, 5.1.6.5).  Commands are handled on the control queue's own
 * thread (worker.c); the pairs' workers read the filter without a lock.  A
 * frame that arrives while the driver rewrites a table may be judged by
 * the old or the new one, as on a hardware NIC, but never out of bounds:
 * every count is kept within its table.  Every malformed command gets
 * VIRTIO_NET_ERR and a counter; none puts the device in NEEDS_RESET, since
 * a driver bug in a control command harms nothing but its own
 * configuration. */
#include <string.h>
#include "backend.h"
#include "headers.h"

#define CLASS_RX 0
#define CLASS_MAC 1
#define CLASS_VLAN 2
#define CLASS_ANNOUNCE 3
#define CLASS_MQ 4
#define CLASS_GUEST_OFFLOADS 5
#define RX_PROMISC 0
#define RX_ALLMULTI 1
#define RX_ALLUNI 2
#define RX_NOMULTI 3
#define RX_NOUNI 4
#define RX_NOBCAST 5
#define MAC_TABLE_SET 0
#define MAC_ADDR_SET 1
#define VLAN_ADD 0
#define VLAN_DEL 1
#define ANNOUNCE_ACK 0
#define OFFLOADS_SET 0
#define MQ_VQ_PAIRS_SET 0
#define MQ_RSS_CONFIG 1
#define MQ_HASH_CONFIG 2
#define NET_OK 0
#define NET_ERR 1

#define CTRL_MAX_CMD 4096     /* larger than any table we keep */
#define CTRL_NO_COMMAND 0xffff /* ctrl_last_error of a command too short to name one */

/* struct virtio_net_ctrl_hdr: what every command starts with; the data
 * follows, the ack byte is the chain's last writable byte. */
struct ctrl_hdr {
    uint8_t cls;
    uint8_t cmd;
};

void rx_filter_reset(struct rx_filter *f, const uint8_t mac[ETH_ALEN])
{
    memset(f, 0, sizeof(*f));
    memcpy(f->mac, mac, ETH_ALEN);
    f->promisc = true;            /* until the driver says otherwise, as QEMU does */
}

static bool has(const struct vnic_dev *dev, int bit)
{
    return dev->features >> bit & 1;
}

static int set_rx_mode(struct vnic_dev *dev, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    struct rx_filter *f = &dev->filter;
    if (unlikely(len != 1 || !has(dev, VNIC_F_CTRL_RX)))   /* one byte: on or off */
        return NET_ERR;
    bool on = data[0] != 0;
    if (cmd > RX_ALLMULTI && !has(dev, VNIC_F_CTRL_RX_EXTRA))
        return NET_ERR;
    switch (cmd) {
    case RX_PROMISC: f->promisc = on; break;
    case RX_ALLMULTI: f->allmulti = on; break;
    case RX_ALLUNI: f->alluni = on; break;
    case RX_NOMULTI: f->nomulti = on; break;
    case RX_NOUNI: f->nouni = on; break;
    case RX_NOBCAST: f->nobcast = on; break;
    default: return NET_ERR;
    }
    return NET_OK;
}

/* One table of MAC_TABLE_SET (struct virtio_net_ctrl_mac): le32 entries,
 * then entries addresses.  Returns the bytes it used, or -1. */
static int mac_table(const uint8_t *data, uint32_t len, uint8_t (*out)[ETH_ALEN], int *n, bool *overflow)
{
    uint32_t entries;
    if (unlikely(len < sizeof(entries)))
        return -1;
    memcpy(&entries, data, sizeof(entries));
    if (unlikely(entries > (len - sizeof(entries)) / ETH_ALEN))
        return -1;
    /* more than we keep: accept them all rather than drop wanted frames */
    *overflow = entries > RX_FILTER_MACS;
    *n = *overflow ? 0 : (int)entries;
    memcpy(out, data + sizeof(entries), ETH_ALEN * (size_t)*n);
    return (int)(sizeof(entries) + ETH_ALEN * entries);
}

static int set_mac(struct vnic_dev *dev, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    struct rx_filter *f = &dev->filter;
    if (cmd == MAC_ADDR_SET) {
        if (unlikely(len != ETH_ALEN || !has(dev, VNIC_F_CTRL_MAC_ADDR) || ether_addr_is_group(data)))
            return NET_ERR;
        memcpy(f->mac, data, ETH_ALEN);
        return NET_OK;
    }
    if (cmd != MAC_TABLE_SET || !has(dev, VNIC_F_CTRL_RX))
        return NET_ERR;
    struct rx_filter next = *f;
    int used = mac_table(data, len, next.uc, &next.n_uc, &next.uc_overflow);
    if (used < 0)
        return NET_ERR;
    int used2 = mac_table(data + used, len - (uint32_t)used, next.mc, &next.n_mc, &next.mc_overflow);
    if (used2 < 0 || (uint32_t)(used + used2) != len)
        return NET_ERR;
    *f = next;                     /* all or nothing */
    return NET_OK;
}

static int set_vlan(struct vnic_dev *dev, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    uint16_t vid;
    if (unlikely(len != sizeof(vid) || !has(dev, VNIC_F_CTRL_VLAN)))
        return NET_ERR;
    memcpy(&vid, data, sizeof(vid));
    if (unlikely(vid >= VLAN_N_VID))
        return NET_ERR;
    uint32_t bit = 1u << (vid % 32);
    if (cmd == VLAN_ADD)
        dev->filter.vlans[vid / 32] |= bit;
    else if (cmd == VLAN_DEL)
        dev->filter.vlans[vid / 32] &= ~bit;
    else
        return NET_ERR;
    return NET_OK;
}

static int set_offloads(struct vnic_dev *dev, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    uint64_t want;
    if (unlikely(cmd != OFFLOADS_SET || len != sizeof(want) || !has(dev, VNIC_F_CTRL_GUEST_OFFLOADS)))
        return NET_ERR;
    memcpy(&want, data, sizeof(want));
    /* only receive offloads the driver negotiated can be switched on; Linux
     * also lists GUEST_HDRLEN among them, which changes nothing here */
    uint64_t valid = GUEST_OFFLOAD_MASK | 1ull << VNIC_F_GUEST_HDRLEN;
    if (want & ~(dev->features & valid))
        return NET_ERR;
    want &= GUEST_OFFLOAD_MASK;
    /* the backend first: what it refuses, the guest must not count on */
    if (backend_set_offload(dev, (dev->features & ~GUEST_OFFLOAD_MASK) | want) < 0)
        return NET_ERR;
    dev->guest_offloads = want;
    return NET_OK;
}

/* VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: a le16 pair count, 1 to max_virtqueue_pairs. */
static int set_pairs(struct vnic_dev *dev, const uint8_t *data, uint32_t len)
{
    uint16_t n;
    if (unlikely(len != sizeof(n) || !has(dev, VNIC_F_MQ)))
        return NET_ERR;
    memcpy(&n, data, sizeof(n));
    if (unlikely(n < 1 || n > dev->nqp))
        return NET_ERR;
    return dev_set_active_pairs(dev, n) == 0 ? NET_OK : NET_ERR;
}

/* The MQ class: pair count, RSS (rss.c) or hash reporting alone. */
static int set_mq(struct vnic_dev *dev, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    switch (cmd) {
    case MQ_VQ_PAIRS_SET: return set_pairs(dev, data, len);
    case MQ_RSS_CONFIG:
        if (unlikely(!has(dev, VNIC_F_RSS)))
            return NET_ERR;
        return rss_set_config(dev, data, len, true) == 0 ? NET_OK : NET_ERR;
    case MQ_HASH_CONFIG:
        if (unlikely(!has(dev, VNIC_F_HASH_REPORT)))
            return NET_ERR;
        return rss_set_config(dev, data, len, false) == 0 ? NET_OK : NET_ERR;
    default: return NET_ERR;
    }
}

static int execute(struct vnic_dev *dev, uint8_t cls, uint8_t cmd, const uint8_t *data, uint32_t len)
{
    switch (cls) {
    case CLASS_RX: return set_rx_mode(dev, cmd, data, len);
    case CLASS_MAC: return set_mac(dev, cmd, data, len);
    case CLASS_VLAN: return set_vlan(dev, cmd, data, len);
    case CLASS_ANNOUNCE:
        if (cmd != ANNOUNCE_ACK || len || !has(dev, VNIC_F_GUEST_ANNOUNCE))
            return NET_ERR;
        atomic_store(&dev->announce, false);
        return NET_OK;
    case CLASS_GUEST_OFFLOADS: return set_offloads(dev, cmd, data, len);
    case CLASS_MQ: return set_mq(dev, cmd, data, len);
    default: return NET_ERR;
    }
}

/* Copy the readable part of a chain (class, command, data) into buf. */
static int chain_gather(struct vnic_dev *dev, const struct chain *c, uint8_t *buf, uint32_t cap)
{
    uint32_t n = 0;
    for (int i = 0; i < c->nout; i++) {
        const struct seg *s = &c->seg[i];
        if (s->len > cap - n)          /* no wrap: a piece may be 4 GiB long */
            return -1;
        if (s->host)
            memcpy(buf + n, s->host, s->len);
        else if (mem_copy_from(&dev->mem, s->iova, buf + n, s->len) < 0)
            return -1;
        n += s->len;
    }
    return (int)n;
}

int ctrl_process(struct vnic_dev *dev, struct chain *c, struct vnic_queue_stats *st)
{
    static __thread uint8_t buf[CTRL_MAX_CMD];
    struct vq *vq = &dev->ctrl;
    uint16_t done = 0;
    while (done < VNIC_BATCH) {
        int r = vq_pop(vq, c);
        if (r == 0)
            break;
        if (r < 0) {
            dev_fail(dev, -r, st);
            break;
        }
        if (!c->nin) {                      /* nowhere to put the ack */
            dev_fail(dev, VNIC_ERR_DESC_DIRECTION, st);
            break;
        }
        int len = chain_gather(dev, c, buf, sizeof(buf));
        const struct ctrl_hdr *ch = (const struct ctrl_hdr *)buf;
        bool whole = len >= (int)sizeof(*ch);
        uint8_t ack = unlikely(!whole) ? NET_ERR
                                       : (uint8_t)execute(dev, ch->cls, ch->cmd, buf + sizeof(*ch),
                                                          (uint32_t)len - (uint32_t)sizeof(*ch));
        st->ctrl_commands++;
        if (ack != NET_OK) {
            st->ctrl_errors++;
            dev->ctrl_last_error = whole ? ch->cls << 8 | ch->cmd : CTRL_NO_COMMAND;
        }
        /* the ack is the last writable byte of the chain */
        const struct seg *last = &c->seg[c->nout + c->nin - 1];
        uint64_t at = last->iova + last->len - 1;
        if (last->host)
            last->host[last->len - 1] = ack;
        else
            mem_copy_to(&dev->mem, at, &ack, 1);
        vq_push_used(vq, c->head, 1, done);
        done++;
    }
    if (done) {
        vq_publish_used(vq, done);
        dev_notify_queue(dev, vq, &st->ctrl_interrupts);
    }
    return done == VNIC_BATCH;
}

/* Does the VLAN filter let an 802.1Q-tagged frame through?  Untagged
 * frames (and others) always pass. */
static bool vlan_accepts(const struct rx_filter *f, const uint8_t *frame, uint32_t len)
{
    const struct eth_hdr *eth = (const struct eth_hdr *)frame;
    const struct vlan_hdr *tag = (const struct vlan_hdr *)(frame + sizeof(*eth));
    if (rd16(eth->type) != ETH_P_8021Q || len < sizeof(*eth) + sizeof(tag->tci))
        return true;
    uint16_t vid = rd16(tag->tci) & VLAN_VID_MASK;
    return f->vlans[vid / 32] >> (vid % 32) & 1;
}

/* Would the guest's receive filter take this frame?  (QEMU's order:
 * promiscuous first, then VLAN, then broadcast/multicast/unicast.) */
bool rx_filter_accepts(const struct vnic_dev *dev, const uint8_t *frame, uint32_t len,
                       struct vnic_queue_stats *st)
{
    const struct rx_filter *f = &dev->filter;
    const struct eth_hdr *eth = (const struct eth_hdr *)frame;
    if (f->promisc || len < sizeof(*eth))
        return true;
    if (has(dev, VNIC_F_CTRL_VLAN) && !vlan_accepts(f, frame, len)) {
        st->rx_filtered_vlan++;
        return false;
    }
    bool accept;
    if (ether_addr_is_group(eth->dst)) {
        static const uint8_t bcast[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
        if (!memcmp(eth->dst, bcast, ETH_ALEN)) {
            accept = !f->nobcast;
        } else if (f->nomulti) {
            accept = false;
        } else {
            accept = f->allmulti || f->mc_overflow;
            for (int i = 0; i < f->n_mc && !accept; i++)
                accept = !memcmp(eth->dst, f->mc[i], ETH_ALEN);
        }
    } else if (f->nouni) {
        accept = false;
    } else {
        accept = f->alluni || f->uc_overflow || !memcmp(eth->dst, f->mac, ETH_ALEN);
        for (int i = 0; i < f->n_uc && !accept; i++)
            accept = !memcmp(eth->dst, f->uc[i], ETH_ALEN);
    }
    if (!accept)
        st->rx_filtered_mac++;
    return accept;
}

/* ---- the control plane's side: MAC, filter state, announce ------------------- */

void vnic_dev_set_mac(struct vnic_dev *dev, const uint8_t *mac)
{
    memcpy(dev->mac, mac, ETH_ALEN);
    memcpy(dev->filter.mac, mac, ETH_ALEN);
}

void vnic_dev_get_mac(struct vnic_dev *dev, uint8_t *mac)
{
    memcpy(mac, dev->filter.mac, ETH_ALEN);
}

void vnic_dev_filter_state(struct vnic_dev *dev, struct vnic_filter_state *out)
{
    const struct rx_filter *f = &dev->filter;   /* a snapshot; the worker may be changing it */
    *out = (struct vnic_filter_state){
        f->promisc, f->allmulti, f->alluni, f->nomulti, f->nouni, f->nobcast, { 0 },
        f->n_uc, f->n_mc, f->uc_overflow, f->mc_overflow, 0,
        dev->guest_offloads, atomic_load(&dev->announce), dev->ctrl_last_error,
    };
    memcpy(out->mac, f->mac, ETH_ALEN);
    for (size_t i = 0; i < sizeof(f->vlans) / sizeof(f->vlans[0]); i++)
        out->vlans += __builtin_popcount(f->vlans[i]);
}

void vnic_dev_announce(struct vnic_dev *dev)
{
    atomic_store(&dev->announce, true);
    vnic_irq_config_changed(dev);
}

int vnic_dev_announce_pending(struct vnic_dev *dev)
{
    return atomic_load(&dev->announce);
}
