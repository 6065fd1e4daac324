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

#define IPV6_HOP_BY_HOP 0
#define IPV6_ROUTING    43
#define IPV6_FRAGMENT   44
#define IPV6_DEST_OPTS  60
#define IPV6_EXT_MAX    4         /* extension headers walked before giving up on ports */

/* The fields that share the key's last word, gathered before it is written. */
struct meta {
    uint16_t sport, dport, ethertype;
    uint8_t proto;
};

static inline void read_ports(struct meta *m, const uint8_t *t, uint32_t have, uint32_t l4)
{
    if ((m->proto == IPPROTO_TCP_ || m->proto == IPPROTO_UDP_) && have >= l4 + 4) {
        m->sport = rd16(t + l4);
        m->dport = rd16(t + l4 + 2);
    }
}

/* ::ffff:a.b.c.d, composed whole and stored at once */
static void set_v4_mapped(uint8_t *dst, const uint8_t *v4)
{
    uint8_t a[16] = { [10] = 0xff, [11] = 0xff };
    memcpy(a + 12, v4, 4);
    memcpy(dst, a, 16);
}

static void parse_ipv4(struct flow_key *k, struct meta *m, const uint8_t *t, uint32_t have, uint32_t off)
{
    if (have < off + 20)
        return;
    uint8_t version_ihl = t[off];
    uint32_t ihl = (version_ihl & 15) * 4u;
    if (version_ihl >> 4 != 4 || ihl < 20)
        return;
    set_v4_mapped(k->src, t + off + 12);
    set_v4_mapped(k->dst, t + off + 16);
    m->proto = t[off + 9];
    if (rd16(t + off + 6) & (IP_MF | IP_OFFMASK))
        return;
    read_ports(m, t, have, off + ihl);
}

static void parse_ipv6(struct flow_key *k, struct meta *m, const uint8_t *t, uint32_t have, uint32_t off)
{
    if (have < off + 40 || t[off] >> 4 != 6)
        return;
    memcpy(k->src, t + off + 8, 16);
    memcpy(k->dst, t + off + 24, 16);
    uint8_t next = t[off + 6];
    off += 40;
    for (int ext = 0; next == IPV6_HOP_BY_HOP || next == IPV6_ROUTING || next == IPV6_DEST_OPTS ||
                      next == IPV6_FRAGMENT; ext++) {
        if (ext == IPV6_EXT_MAX || have < off + 8) {
            m->proto = next;                 /* the transport lies beyond what we read */
            return;
        }
        uint8_t after = t[off], units = t[off + 1];
        if (next == IPV6_FRAGMENT) {
            m->proto = after;
            return;
        }
        next = after;
        off += (units + 1u) * 8;
    }
    m->proto = next;
    read_ports(m, t, have, off);
}

/* inlined into both entry points: it runs for every packet */
static inline void parse(struct flow_key *k, int dir, const uint8_t *t, uint32_t have)
{
    struct meta m = { 0 };
    memset(k->src, 0, sizeof(k->src));
    memset(k->dst, 0, sizeof(k->dst));
    if (have > FLOW_HEAD)
        have = FLOW_HEAD;
    if (have >= 14) {
        uint32_t off = 12;
        uint16_t type = rd16(t + off);
        for (int tags = 0; (type == ETH_P_8021Q || type == ETH_P_8021AD) && tags < 2; tags++) {
            if (have < off + 6)
                break;                       /* keyed by the tag's type */
            off += 4;
            type = rd16(t + off);
        }
        off += 2;
        m.ethertype = type >= 0x600 ? type : 0;   /* below 0x600 it is an 802.3 length */
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
