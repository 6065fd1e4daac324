/* headers.h - Ethernet/IP/TCP/UDP header access shared by the TX engine
 * and the RX path: byte-order helpers, parsing, pseudo-header sums. */
#ifndef VNIC_HEADERS_H
#define VNIC_HEADERS_H

#include <stddef.h>
#include <netinet/in.h>      /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ROUTING, ... */
#include "internal.h"

/* Headers as the wire has them: byte arrays, so any offset is aligned and
 * multi-byte fields are read with rd16/rd32 (network order). */
struct eth_hdr {             /* IEEE 802.3 */
    uint8_t dst[6];
    uint8_t src[6];
    uint8_t type[2];         /* ethertype, or the TPID of a VLAN tag */
};

struct vlan_hdr {            /* IEEE 802.1Q: follows the TPID */
    uint8_t tci[2];          /* priority, DEI, VLAN ID */
    uint8_t type[2];         /* the ethertype inside (or the next TPID) */
};

struct ipv4_hdr {            /* RFC 791 */
    uint8_t version_ihl;     /* version << 4 | header length in 32-bit words */
    uint8_t tos;
    uint8_t tot_len[2];
    uint8_t id[2];
    uint8_t frag_off[2];     /* flags (IP_DF, IP_MF) and offset in 8-byte units */
    uint8_t ttl;
    uint8_t protocol;
    uint8_t check[2];
    uint8_t saddr[4];
    uint8_t daddr[4];
};

struct ipv6_hdr {            /* RFC 8200 */
    uint8_t version_class_flow[4];
    uint8_t payload_len[2];  /* everything after this header */
    uint8_t nexthdr;
    uint8_t hop_limit;
    uint8_t saddr[16];
    uint8_t daddr[16];
};

/* Hop-by-hop, routing and destination options: a common start. */
struct ipv6_opt_hdr {
    uint8_t nexthdr;
    uint8_t hdrlen;          /* in 8-byte units, not counting the first 8 */
    uint8_t data[6];
};

struct ipv6_frag_hdr {       /* RFC 8200 4.5 */
    uint8_t nexthdr;
    uint8_t reserved;
    uint8_t frag_off[2];     /* offset in 8-byte units << 3 | IP6_MF */
    uint8_t identification[4];
};

struct tcp_hdr {             /* RFC 9293 */
    uint8_t source[2];
    uint8_t dest[2];
    uint8_t seq[4];
    uint8_t ack_seq[4];
    uint8_t doff;            /* header length in 32-bit words << 4 */
    uint8_t flags;           /* enum tcp_flag */
    uint8_t window[2];
    uint8_t check[2];
    uint8_t urg_ptr[2];
};

struct udp_hdr {             /* RFC 768 */
    uint8_t source[2];
    uint8_t dest[2];
    uint8_t len[2];
    uint8_t check[2];
};

_Static_assert(sizeof(struct eth_hdr) == 14 && sizeof(struct vlan_hdr) == 4, "L2 headers");
_Static_assert(sizeof(struct ipv4_hdr) == 20 && sizeof(struct ipv6_hdr) == 40, "IP headers");
_Static_assert(sizeof(struct ipv6_opt_hdr) == 8 && sizeof(struct ipv6_frag_hdr) == 8, "IPv6 ext");
_Static_assert(sizeof(struct tcp_hdr) == 20 && sizeof(struct udp_hdr) == 8, "L4 headers");

#define ETH_P_802_3_MIN   0x0600   /* type fields below are 802.3 lengths */
#define ETH_P_IPV4        0x0800
#define ETH_P_IPV6        0x86DD
#define ETH_P_8021Q       0x8100
#define ETH_P_8021AD      0x88A8
#define VLAN_VID_MASK     0x0fff
#define VLAN_N_VID        4096
_Static_assert(sizeof(((struct rx_filter *)0)->vlans) * 8 == VLAN_N_VID, "a bit per VLAN ID");
#define VLAN_MAX_TAGS     2        /* QinQ: an outer and an inner tag */
#define IPV4_VERSION      4
#define IPV6_VERSION      6
#define IP_MF             0x2000
#define IP_DF             0x4000
#define IP_OFFMASK        0x1fff
#define IP_MAX_LEN        65535    /* IPv4 total length, IPv6 payload length */
#define IP6_MF            0x0001   /* in ipv6_frag_hdr.frag_off */
#define IPV6_EXT_MAX      4        /* extension headers walked before giving up */

enum tcp_flag {
    TCP_FIN = 0x01,
    TCP_SYN = 0x02,
    TCP_RST = 0x04,
    TCP_PSH = 0x08,
    TCP_ACK = 0x10,
    TCP_URG = 0x20,
    TCP_ECE = 0x40,
    TCP_CWR = 0x80,
};

#define CSUM_SIZE         2        /* bytes of a checksum field */

/* Offsets of the checksum fields from csum_start, as virtio names them. */
#define CSUM_OFFSET_TCP   offsetof(struct tcp_hdr, check)
#define CSUM_OFFSET_UDP   offsetof(struct udp_hdr, check)

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) << 16 | rd16(p + 2); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)(v >> 16)); wr16(p + 2, (uint16_t)v); }
/* a big-endian 16-bit value as it sits in memory, for host-order sums */
static inline uint64_t be16_word(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }

/* Field readers: lengths in bytes, decoded. */
static inline unsigned ip_version(const void *ip) { return *(const uint8_t *)ip >> 4; }
static inline uint32_t ipv4_hdr_len(const struct ipv4_hdr *ip) { return (ip->version_ihl & 15) * 4u; }
static inline uint32_t tcp_hdr_len(const struct tcp_hdr *tcp) { return (tcp->doff >> 4) * 4u; }
static inline uint32_t ipv6_opt_len(const struct ipv6_opt_hdr *o) { return (o->hdrlen + 1u) * 8; }
static inline bool ipv6_walkable_ext(uint8_t next)
{
    return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS;
}
static inline bool is_vlan_tpid(uint16_t type) { return type == ETH_P_8021Q || type == ETH_P_8021AD; }
static inline bool ether_addr_is_group(const uint8_t *mac) { return mac[0] & 1; }

/* The size of field f of struct type T. */
#define FIELD_SIZE(T, f) sizeof(((T *)0)->f)
/* The header of type T at offset off of frame t. */
#define HDR_AT(T, t, off) ((T *)((t) + (off)))


static inline const struct tcp_hdr *tcp_at(const uint8_t *frame, const struct layout *lo)
{
    return HDR_AT(const struct tcp_hdr, frame, lo->l4);
}

/* The IP packet's length as its header claims it (IPv6: header included):
 * the sender's word, to be checked against the frame. */
static inline uint32_t ip_claimed_len(const uint8_t *frame, const struct layout *lo)
{
    if (lo->ipv6)
        return sizeof(struct ipv6_hdr) + rd16(HDR_AT(const struct ipv6_hdr, frame, lo->l3)->payload_len);
    return rd16(HDR_AT(const struct ipv4_hdr, frame, lo->l3)->tot_len);
}

/* Store the IP length fields for an L4 part of l4_len bytes (IPv4: and
 * the header checksum). */
void ip_set_len(uint8_t *frame, const struct layout *lo, uint32_t l4_len);

/* Parse Ethernet (up to two VLAN tags), IPv4/IPv6 and TCP/UDP from the
 * first `have` bytes of a frame.  0, or -1 when truncated or unsupported
 * (IP fragments, IPv6 fragment headers, other protocols). */
int hdr_parse(const uint8_t *t, uint32_t have, struct layout *lo);
/* Ethernet and IP only, for hashing: 0 when the IP addresses are there
 * (l3, ipv6 set); l4 is 0 for a fragment or headers cut short, else
 * proto is set, and hdr_len is 0 unless the TCP/UDP header is whole.
 * -1 for anything else. */
int hdr_parse_ip(const uint8_t *t, uint32_t have, struct layout *lo);
/* Sum of the IPv4/IPv6 pseudo-header for an L4 length. */
uint64_t hdr_pseudo_sum(const uint8_t *frame, const struct layout *lo, uint32_t l4_len);
/* Complement of a folded sum; for UDP a 0 is sent as 0xffff. */
uint16_t csum_finish(uint64_t sum, bool udp);
void ipv4_header_csum(uint8_t *ip);

#endif
