/* headers.c - parsing and checksum helpers for Ethernet/IP/TCP/UDP. */
#include <string.h>
#include "headers.h"

int hdr_parse(const uint8_t *t, uint32_t have, struct layout *lo)
{
    uint32_t off = 12;
    if (have < 14)
        return -1;
    uint16_t type = rd16(t + off);
    for (int tags = 0; (type == ETH_P_8021Q || type == ETH_P_8021AD) && tags < 2; tags++) {
        off += 4;
        if (have < off + 2)
            return -1;
        type = rd16(t + off);
    }
    off += 2;
    lo->l3 = (uint16_t)off;
    if (type == ETH_P_IPV4) {
        if (have < off + 20 || t[off] >> 4 != 4)
            return -1;
        uint32_t ihl = (t[off] & 15) * 4u;
        if (ihl < 20 || have < off + ihl)
            return -1;
        if (rd16(t + off + 6) & (IP_MF | IP_OFFMASK))
            return -1;             /* already a fragment */
        lo->ipv6 = false;
        lo->ipv6_ext = false;
        lo->proto = t[off + 9];
        off += ihl;
    } else if (type == ETH_P_IPV6) {
        if (have < off + 40 || t[off] >> 4 != 6)
            return -1;
        uint8_t next = t[off + 6];
        lo->ipv6 = true;
        lo->ipv6_ext = false;
        off += 40;
        /* hop-by-hop, routing and destination options can be walked;
         * a fragment header (or anything else) cannot be segmented */
        for (int ext = 0; next == 0 || next == 43 || next == 60; ext++) {
            if (ext == 4 || have < off + 8)
                return -1;
            next = t[off];
            off += (t[off + 1] + 1u) * 8;
            lo->ipv6_ext = true;
        }
        lo->proto = next;
    } else {
        return -1;
    }
    lo->l4 = (uint16_t)off;
    if (lo->proto == IPPROTO_TCP_) {
        if (have < off + 20)
            return -1;
        uint32_t doff = (t[off + 12] >> 4) * 4u;
        if (doff < 20 || have < off + doff)
            return -1;
        off += doff;
    } else if (lo->proto == IPPROTO_UDP_) {
        if (have < off + 8)
            return -1;
        off += 8;
    } else {
        return -1;
    }
    lo->hdr_len = (uint16_t)off;
    return 0;
}

uint16_t csum_finish(uint64_t sum, bool udp)
{
    uint16_t c = (uint16_t)~csum_fold(sum);
    /* UDP sends a computed 0 as 0xffff (0 means "no checksum", RFC 768);
     * TCP sends it as it is (RFC 1624: 0xffff cannot come out of a sum) */
    return c || !udp ? c : 0xffff;
}

void ipv4_header_csum(uint8_t *ip)
{
    uint32_t ihl = (ip[0] & 15) * 4u;
    ip[10] = ip[11] = 0;
    uint16_t c = (uint16_t)~csum_fold(csum_partial(ip, ihl, 0));
    memcpy(ip + 10, &c, 2);      /* host-order sum stored as-is is network order */
}

uint64_t hdr_pseudo_sum(const uint8_t *tpl, const struct layout *lo, uint32_t l4_len)
{
    const uint8_t *ip = tpl + lo->l3;
    uint64_t sum = lo->ipv6 ? csum_partial(ip + 8, 32, 0) : csum_partial(ip + 12, 8, 0);
    sum = csum_add(sum, be16_word(lo->proto));
    sum = csum_add(sum, be16_word((uint16_t)l4_len));
    if (lo->ipv6)
        sum = csum_add(sum, be16_word((uint16_t)(l4_len >> 16)));
    return sum;
}

