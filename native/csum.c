/* csum.c - the Internet checksum (RFC 1071), 64 bits at a time.
 *
 * Sums are kept in host (little-endian) word order: a ones' complement sum
 * is byte-order independent, so folding and storing the result as a host
 * u16 yields the checksum in network order.  A piece that starts at an odd
 * offset of the checksummed range contributes its sum byte-swapped. */
#include <string.h>
#include <immintrin.h>
#include "internal.h"

#define add_carry csum_add

/* AVX2: 32 bytes per step, each 32-bit word zero-extended into 64-bit
 * lanes, so nothing overflows for any length; the ones' complement sum of
 * 32-bit words folds to the same 16-bit checksum. */
__attribute__((target("avx2")))
static uint64_t csum_avx2(const uint8_t *p, size_t len, uint64_t *rest_sum)
{
    const __m256i low32 = _mm256_set1_epi64x(0xffffffff);
    /* four independent accumulators: the adds do not wait on each other */
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    __m256i c = _mm256_setzero_si256(), d = _mm256_setzero_si256();
    size_t done = 0;
    for (; done + 64 <= len; done += 64) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + done));
        __m256i w = _mm256_loadu_si256((const __m256i *)(p + done + 32));
        a = _mm256_add_epi64(a, _mm256_and_si256(v, low32));
        b = _mm256_add_epi64(b, _mm256_srli_epi64(v, 32));
        c = _mm256_add_epi64(c, _mm256_and_si256(w, low32));
        d = _mm256_add_epi64(d, _mm256_srli_epi64(w, 32));
    }
    a = _mm256_add_epi64(a, c);
    b = _mm256_add_epi64(b, d);
    if (done + 32 <= len) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + done));
        a = _mm256_add_epi64(a, _mm256_and_si256(v, low32));
        b = _mm256_add_epi64(b, _mm256_srli_epi64(v, 32));
        done += 32;
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi64(a, b));
    uint64_t s = 0;
    for (int i = 0; i < 4; i++)
        s = add_carry(s, lanes[i]);
    *rest_sum = s;
    return done;
}

static uint64_t csum_scalar(const void *buf, size_t len, uint64_t sum);

uint64_t csum_partial(const void *buf, size_t len, uint64_t sum)
{
    static int have_avx2 = -1;
    if (have_avx2 < 0)
        have_avx2 = __builtin_cpu_supports("avx2");
    if (have_avx2 && len >= 64) {
        uint64_t vec;
        size_t done = csum_avx2(buf, len, &vec);
        return csum_scalar((const uint8_t *)buf + done, len - done, add_carry(sum, vec));
    }
    return csum_scalar(buf, len, sum);
}

static uint64_t csum_scalar(const void *buf, size_t len, uint64_t sum)
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

