/* csum.c - the Internet checksum (RFC 1071), 64 bits at a time.
 *
 * Sums are kept in host (little-endian) word order: a ones' complement sum
 * is byte-order independent, so folding and storing the result as a host
 * u16 yields the checksum in network order.  A piece that starts at an odd
 * offset of the checksummed range contributes its sum byte-swapped. */
#include <string.h>
#include "internal.h"

static inline uint64_t add_carry(uint64_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s + (s < a);
}

uint64_t csum_add(uint64_t sum, uint64_t v)
{
    return add_carry(sum, v);
}

uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

uint64_t csum_partial(const void *buf, size_t len, uint64_t sum)
{
    const uint8_t *p = buf;
    /* four independent accumulators let the adds overlap */
    uint64_t a = 0, b = 0, c = 0, d = 0;
    while (len >= 32) {
        uint64_t w[4];
        memcpy(w, p, 32);
        a = add_carry(a, w[0]);
        b = add_carry(b, w[1]);
        c = add_carry(c, w[2]);
        d = add_carry(d, w[3]);
        p += 32;
        len -= 32;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        a = add_carry(a, w);
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, len);          /* little-endian: missing bytes are zero */
    a = add_carry(a, tail);
    sum = add_carry(sum, add_carry(add_carry(a, b), add_carry(c, d)));
    return sum;
}

uint64_t csum_copy(void *dst, const void *src, size_t len, uint64_t sum)
{
    uint8_t *o = dst;
    const uint8_t *p = src;
    uint64_t a = 0, b = 0;
    while (len >= 16) {
        uint64_t w[2];
        memcpy(w, p, 16);
        memcpy(o, w, 16);
        a = add_carry(a, w[0]);
        b = add_carry(b, w[1]);
        p += 16;
        o += 16;
        len -= 16;
    }
    uint64_t tail[2] = { 0, 0 };
    memcpy(tail, p, len);
    memcpy(o, tail, len);
    a = add_carry(a, tail[0]);
    b = add_carry(b, tail[1]);
    return add_carry(sum, add_carry(a, b));
}

uint64_t csum_shift(uint64_t piece_sum, uint64_t offset)
{
    if (!(offset & 1))
        return piece_sum;
    uint16_t f = csum_fold(piece_sum);
    return (uint16_t)(f << 8 | f >> 8);
}
