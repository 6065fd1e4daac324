/* headers.c - parsing and checksum helpers for Ethernet/IP/TCP/UDP. */
#include <string.h>
#include "headers.h"

/* The L3 offset after the Ethernet header and up to VLAN_MAX_TAGS tags,
 * with the ethertype there in *type.  0 when truncated. */
static uint32_t eth_parse(const uint8_t *t, uint32_t have, uint16_t *type)
{
    uint32_t type_off = offsetof(struct eth_hdr, type);
    if (unlikely(have < sizeof(struct eth_hdr)))
        return 0;
    *type = rd16(t + type_off);
    for (int tags = 0; is_vlan_tpid(*type) && tags < VLAN_MAX_TAGS; tags++) {
        type_off += sizeof(struct vlan_hdr);
        if (unlikely(have < type_off + sizeof(*type)))
            return 0;
        *type = rd16(t + type_off);
    }
    return type_off + (uint32_t)sizeof(*type);
}

/* IPv4 at off: the L4 offset, or 0 when truncated or a fragment. */
static uint32_t ipv4_parse(const uint8_t *t, uint32_t have, uint32_t off, struct layout *lo)
{
    const struct ipv4_hdr *ip = HDR_AT(const struct ipv4_hdr, t, off);
    if (unlikely(have < off + sizeof(*ip) || ip_version(ip) != IPV4_VERSION))
        return 0;
    uint32_t ihl = ipv4_hdr_len(ip);
    if (unlikely(ihl < sizeof(*ip) || have < off + ihl))
        return 0;
    if (rd16(ip->frag_off) & (IP_MF | IP_OFFMASK))
        return 0;                  /* already a fragment */
    lo->ipv6 = false;
    lo->ipv6_ext = false;
    lo->proto = ip->protocol;
    return off + ihl;
}

/* IPv6 at off: the L4 offset, or 0 when truncated.  Hop-by-hop, routing
 * and destination options can be walked; a fragment header (or anything
 * else) ends the walk and is left as the protocol. */
static uint32_t ipv6_parse(const uint8_t *t, uint32_t have, uint32_t off, struct layout *lo)
{
    const struct ipv6_hdr *ip = HDR_AT(const struct ipv6_hdr, t, off);
    if (unlikely(have < off + sizeof(*ip) || ip_version(ip) != IPV6_VERSION))
        return 0;
    uint8_t next = ip->nexthdr;
    lo->ipv6 = true;
    lo->ipv6_ext = false;
    off += sizeof(*ip);
    for (int ext = 0; ipv6_walkable_ext(next); ext++) {
        const struct ipv6_opt_hdr *o = HDR_AT(const struct ipv6_opt_hdr, t, off);
        if (unlikely(ext == IPV6_EXT_MAX || have < off + sizeof(*o)))
            return 0;
        next = o->nexthdr;
        off += ipv6_opt_len(o);
        lo->ipv6_ext = true;
    }
    lo->proto = next;
    return off;
}

/* TCP or UDP at off: the offset after its header, or 0. */
static uint32_t l4_parse(const uint8_t *t, uint32_t have, uint32_t off, uint8_t proto)
{
    if (proto == IPPROTO_TCP) {
        const struct tcp_hdr *tcp = HDR_AT(const struct tcp_hdr, t, off);
        if (unlikely(have < off + sizeof(*tcp)))
            return 0;
        uint32_t doff = tcp_hdr_len(tcp);
        if (unlikely(doff < sizeof(*tcp) || have < off + doff))
            return 0;
        return off + doff;
    }
    if (proto == IPPROTO_UDP)
        return have < off + sizeof(struct udp_hdr) ? 0 : off + (uint32_t)sizeof(struct udp_hdr);
    return 0;
}

int hdr_parse(const uint8_t *t, uint32_t have, struct layout *lo)
{
    uint16_t type;
    uint32_t off = eth_parse(t, have, &type);
    if (!off)
        return -1;
    lo->l3 = (uint16_t)off;
    if (type == ETH_P_IPV4)
        off = ipv4_parse(t, have, off, lo);
    else if (type == ETH_P_IPV6)
        off = ipv6_parse(t, have, off, lo);
    else
        return -1;
    if (!off)
        return -1;
    lo->l4 = (uint16_t)off;
    off = l4_parse(t, have, off, lo->proto);
    if (!off)
        return -1;
    lo->hdr_len = (uint16_t)off;
    return 0;
}

int hdr_parse_ip(const uint8_t *t, uint32_t have, struct layout *lo)
{
    uint16_t type;
    uint32_t off = eth_parse(t, have, &type);
    if (!off || (type != ETH_P_IPV4 && type != ETH_P_IPV6))
        return -1;
    lo->l3 = (uint16_t)off;
    lo->ipv6 = type == ETH_P_IPV6;
    lo->hdr_len = 0;
    uint32_t l4 = lo->ipv6 ? ipv6_parse(t, have, off, lo) : ipv4_parse(t, have, off, lo);
    lo->l4 = (uint16_t)l4;
    if (l4) {
        lo->hdr_len = (uint16_t)l4_parse(t, have, l4, lo->proto);
        return 0;
    }
    /* a fragment, or extension headers cut short: the addresses may still do */
    uint32_t ip_len = lo->ipv6 ? sizeof(struct ipv6_hdr) : sizeof(struct ipv4_hdr);
    const void *ip = t + off;
    bool whole = have >= off + ip_len &&
                 ip_version(ip) == (lo->ipv6 ? IPV6_VERSION : IPV4_VERSION);
    return whole ? 0 : -1;
}

uint16_t csum_finish(uint64_t sum, bool udp)
{
    uint16_t c = (uint16_t)~csum_fold(sum);
    /* UDP sends a computed 0 as 0xffff (0 means "no checksum", RFC 768);
     * TCP sends it as it is (RFC 1624: 0xffff cannot come out of a sum) */
    return c || !udp ? c : 0xffff;
}

void ipv4_header_csum(uint8_t *p)
{
    struct ipv4_hdr *ip = (struct ipv4_hdr *)p;
    memset(ip->check, 0, sizeof(ip->check));
    uint16_t c = (uint16_t)~csum_fold(csum_partial(ip, ipv4_hdr_len(ip), 0));
    memcpy(ip->check, &c, sizeof(c));   /* host-order sum stored as-is is network order */
}

void ip_set_len(uint8_t *frame, const struct layout *lo, uint32_t l4_len)
{
    uint32_t ip_hdrs = lo->l4 - lo->l3;
    if (lo->ipv6) {
        struct ipv6_hdr *ip = HDR_AT(struct ipv6_hdr, frame, lo->l3);
        wr16(ip->payload_len, (uint16_t)(ip_hdrs - sizeof(*ip) + l4_len));
    } else {
        struct ipv4_hdr *ip = HDR_AT(struct ipv4_hdr, frame, lo->l3);
        wr16(ip->tot_len, (uint16_t)(ip_hdrs + l4_len));
        ipv4_header_csum((uint8_t *)ip);
    }
}

/* Source and destination address: adjacent in both IP versions. */
static uint64_t addr_sum(const uint8_t *ip, bool ipv6)
{
    if (ipv6)
        return csum_partial(((const struct ipv6_hdr *)ip)->saddr, 2 * FIELD_SIZE(struct ipv6_hdr, saddr), 0);
    return csum_partial(((const struct ipv4_hdr *)ip)->saddr, 2 * FIELD_SIZE(struct ipv4_hdr, saddr), 0);
}

uint64_t hdr_pseudo_sum(const uint8_t *tpl, const struct layout *lo, uint32_t l4_len)
{
    uint64_t sum = addr_sum(tpl + lo->l3, lo->ipv6);
    sum = csum_add(sum, be16_word(lo->proto));
    sum = csum_add(sum, be16_word((uint16_t)l4_len));
    if (lo->ipv6)
        sum = csum_add(sum, be16_word((uint16_t)(l4_len >> 16)));
    return sum;
}
