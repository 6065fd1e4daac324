/* headers.h - Ethernet/IP/TCP/UDP header access shared by the TX engine
 * and the RX path: byte-order helpers, parsing, pseudo-header sums. */
#ifndef VNIC_HEADERS_H
#define VNIC_HEADERS_H

#include "internal.h"

#define ETH_ALEN     6
#define ETH_P_IPV4   0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
#define IP_MF   0x2000
#define IP_DF   0x4000
#define IP_OFFMASK 0x1fff

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) << 16 | rd16(p + 2); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)(v >> 16)); wr16(p + 2, (uint16_t)v); }
/* a big-endian 16-bit value as it sits in memory, for host-order sums */
static inline uint64_t be16_word(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }


/* Parse Ethernet (up to two VLAN tags), IPv4/IPv6 and TCP/UDP from the
 * first `have` bytes of a frame.  0, or -1 when truncated or unsupported
 * (IP fragments, IPv6 fragment headers, other protocols). */
int hdr_parse(const uint8_t *t, uint32_t have, struct layout *lo);
/* Sum of the IPv4/IPv6 pseudo-header for an L4 length. */
uint64_t hdr_pseudo_sum(const uint8_t *frame, const struct layout *lo, uint32_t l4_len);
/* Complement of a folded sum; for UDP a 0 is sent as 0xffff. */
uint16_t csum_finish(uint64_t sum, bool udp);
/* The checksum field at this offset from csum_start is UDP's (TCP's is 16). */
#define CSUM_OFFSET_UDP 6
void ipv4_header_csum(uint8_t *ip);

#endif
