/* flow_key.c - which flow a frame belongs to: direction, ethertype and the
 * IP 5-tuple, read from the frame's first bytes.
 *
 * Every read is checked against the bytes at hand, and each header byte
 * that decides an offset is read once, so a guest rewriting its buffer
 * while we look can change the answer but never the bounds.  Whatever
 * cannot be read stays zero: a non-IP frame (or a truncated IP header) is
 * keyed by its ethertype alone, a fragment by its addresses and protocol
 * (only the first fragment would carry ports: keying all of them without
 * keeps a fragmented datagram in one flow). */
#include <string.h>
#include "headers.h"

/* The fields that share the key's last word, gathered before it is written. */
struct meta {
    uint16_t sport, dport, ethertype;
    uint8_t proto;
};

static inline void read_ports(struct meta *m, const uint8_t *t, uint32_t have, uint32_t l4)
{
    /* source and destination port lead both TCP and UDP headers */
    const struct udp_hdr *ports = HDR_AT(const struct udp_hdr, t, l4);
    if ((m->proto == IPPROTO_TCP || m->proto == IPPROTO_UDP) &&
        have >= l4 + sizeof(ports->source) + sizeof(ports->dest)) {
        m->sport = rd16(ports->source);
        m->dport = rd16(ports->dest);
    }
}

/* ::ffff:a.b.c.d (RFC 4291 2.5.5.2), composed whole and stored at once */
static void set_v4_mapped(uint8_t *dst, const uint8_t *v4)
{
    uint8_t a[16] = { [10] = 0xff, [11] = 0xff };
    memcpy(a + 12, v4, 4);
    memcpy(dst, a, sizeof(a));
}

static void parse_ipv4(struct flow_key *k, struct meta *m, const uint8_t *t, uint32_t have, uint32_t off)
{
    const struct ipv4_hdr *ip = HDR_AT(const struct ipv4_hdr, t, off);
    if (have < off + sizeof(*ip))
        return;
    uint8_t version_ihl = ip->version_ihl;
    uint32_t ihl = (version_ihl & 15) * 4u;
    if (version_ihl >> 4 != IPV4_VERSION || ihl < sizeof(*ip))
        return;
    set_v4_mapped(k->src, ip->saddr);
    set_v4_mapped(k->dst, ip->daddr);
    m->proto = ip->protocol;
    if (rd16(ip->frag_off) & (IP_MF | IP_OFFMASK))
        return;
    read_ports(m, t, have, off + ihl);
}

static void parse_ipv6(struct flow_key *k, struct meta *m, const uint8_t *t, uint32_t have, uint32_t off)
{
    const struct ipv6_hdr *ip = HDR_AT(const struct ipv6_hdr, t, off);
    if (have < off + sizeof(*ip) || ip_version(ip) != IPV6_VERSION)
        return;
    memcpy(k->src, ip->saddr, sizeof(ip->saddr));
    memcpy(k->dst, ip->daddr, sizeof(ip->daddr));
    uint8_t next = ip->nexthdr;
    off += sizeof(*ip);
    for (int ext = 0; ipv6_walkable_ext(next) || next == IPPROTO_FRAGMENT; ext++) {
        const struct ipv6_opt_hdr *o = HDR_AT(const struct ipv6_opt_hdr, t, off);
        if (ext == IPV6_EXT_MAX || have < off + sizeof(*o)) {
            m->proto = next;                 /* the transport lies beyond what we read */
            return;
        }
        uint8_t after = o->nexthdr, units = o->hdrlen;   /* a fragment header starts alike */
        if (next == IPPROTO_FRAGMENT) {
            m->proto = after;
            return;
        }
        next = after;
        off += (units + 1u) * 8;
    }
    m->proto = next;
    read_ports(m, t, have, off);
}

/* The ethertype after up to VLAN_MAX_TAGS tags (a truncated tag is keyed
 * by its TPID), and in *l3 where its header starts. */
static inline uint16_t ethertype(const uint8_t *t, uint32_t have, uint32_t *l3)
{
    uint32_t off = offsetof(struct eth_hdr, type);
    uint16_t type = rd16(t + off);
    for (int tags = 0; is_vlan_tpid(type) && tags < VLAN_MAX_TAGS; tags++) {
        if (have < off + sizeof(struct vlan_hdr) + sizeof(type))
            break;
        off += sizeof(struct vlan_hdr);
        type = rd16(t + off);
    }
    *l3 = off + (uint32_t)sizeof(type);
    return type;
}

/* inlined into both entry points: it runs for every packet */
static inline void parse(struct flow_key *k, int dir, const uint8_t *t, uint32_t have)
{
    struct meta m = { 0 };
    memset(k->src, 0, sizeof(k->src));
    memset(k->dst, 0, sizeof(k->dst));
    if (have > FLOW_HEAD)
        have = FLOW_HEAD;
    if (have >= sizeof(struct eth_hdr)) {
        uint32_t off;
        uint16_t type = ethertype(t, have, &off);
        m.ethertype = type >= ETH_P_802_3_MIN ? type : 0;   /* below: an 802.3 length */
        if (type == ETH_P_IPV4)
            parse_ipv4(k, &m, t, have, off);
        else if (type == ETH_P_IPV6)
            parse_ipv6(k, &m, t, have, off);
    }
    k->meta = FLOW_META(m.sport, m.dport, m.ethertype, m.proto, dir);
}

void flow_key_parse(struct flow_key *k, int dir, const uint8_t *frame, uint32_t have)
{
    parse(k, dir, frame, have);
}

void flow_key_from_iov(struct flow_key *k, int dir, const struct iovec *iov, int n, uint32_t len)
{
    uint32_t want = len < FLOW_HEAD ? len : FLOW_HEAD;
    if (n > 0 && iov[0].iov_len >= want) {   /* the usual case: headers in the first piece */
        parse(k, dir, iov[0].iov_base, want);
        return;
    }
    uint8_t head[FLOW_HEAD];
    uint32_t got = 0;
    for (int i = 0; i < n && got < want; i++) {
        uint32_t c = iov[i].iov_len < want - got ? (uint32_t)iov[i].iov_len : want - got;
        memcpy(head + got, iov[i].iov_base, c);
        got += c;
    }
    parse(k, dir, head, got);
}
