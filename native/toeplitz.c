/* toeplitz.c - the Toeplitz hash RSS picks a receive queue with (virtio
 * 1.2, 5.1.6.4.3.1; Microsoft's "RSS hashing functions"), two ways.
 *
 * Each input bit i that is set adds the 32 key bits from bit i.  That is a
 * carry-less product: the input (first bit the top one) times the key
 * with its bit order reversed holds the hash in 32 of its bits (see
 * clmul_chunk).  Where the CPU has PCLMULQDQ the hash is two such
 * multiplies per 8 input bytes, some 20 instructions for an IPv4 TCP
 * frame; elsewhere it is two table loads per input byte from the key
 * expanded per nibble (4.5 KiB, kept in L1).  Both come from one key
 * expansion, done when the driver sets the key, never per frame.
 *
 * The input comes as 64-bit words, each 8 input bytes with the first in
 * the top bits, as rss.c loads them from the frame's headers: no byte
 * buffer between (a word read back from smaller stores would wait for
 * them, longer than the multiplies take).
 *
 * Security model: the input is what rss.c gathered from a frame, at most
 * RSS_INPUT_MAX bytes in RSS_CHUNKS words that are zero past them;
 * nothing here reads past those words or the expanded key. */
#include <string.h>
#include "backend.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_CLMUL_BUILD 1
#endif

/* Has this CPU the carry-less multiply toeplitz_hash() uses? */
static bool toeplitz_has_clmul(void);

#define CHUNK_BITS 64
#define WINDOW_BITS 32

/* Key bit b (bit 0: the first byte's top bit); 0 past the key. */
static uint32_t key_bit(const uint8_t *key, uint32_t b)
{
    return b / 8 < VNIC_RSS_KEY_SIZE ? key[b / 8] >> (7 - b % 8) & 1 : 0;
}

/* n (<= 64) key bits from bit `from`, reversed: key bit from in bit 0. */
static uint64_t key_reversed(const uint8_t *key, uint32_t from, uint32_t n)
{
    uint64_t w = 0;
    for (uint32_t m = 0; m < n; m++)
        w |= (uint64_t)key_bit(key, from + m) << m;
    return w;
}

/* The 32 key bits from bit `from` (bit 0: the first byte's top bit). */
static uint32_t key_window(const uint8_t *key, uint32_t from)
{
    uint32_t w = 0;
    for (uint32_t m = 0; m < WINDOW_BITS; m++)
        w = w << 1 | key_bit(key, from + m);
    return w;
}

static void expand_nibbles(struct toeplitz_key *k, const uint8_t *key)
{
    for (uint32_t n = 0; n < RSS_NIBBLES; n++) {
        uint32_t window[4];             /* window[b]: for the nibble's bit of value 1 << b */
        for (uint32_t b = 0; b < 4; b++)
            window[b] = key_window(key, 4 * n + (3 - b));
        k->lut[n][0] = 0;
        for (uint32_t v = 1; v < RSS_NIBBLE_VALUES; v++)   /* v's lowest bit, added to the rest */
            k->lut[n][v] = k->lut[n][v & (v - 1)] ^ window[__builtin_ctz(v)];
    }
}

/* Chunk t of the input (bytes 8t..8t+7) meets key bits 64t .. 64t+94. */
static void expand_chunks(struct toeplitz_key *k, const uint8_t *key)
{
    for (uint32_t t = 0; t < RSS_CHUNKS; t++) {
        k->clmul[t][0] = key_reversed(key, CHUNK_BITS * t, CHUNK_BITS);
        k->clmul[t][1] = key_reversed(key, CHUNK_BITS * t + CHUNK_BITS, WINDOW_BITS);
    }
}

void toeplitz_expand(struct toeplitz_key *k, const uint8_t key[VNIC_RSS_KEY_SIZE])
{
    expand_nibbles(k, key);
    expand_chunks(k, key);
    k->use_clmul = toeplitz_has_clmul();
}

/* ---- two table loads per byte ---------------------------------------------- */

static uint8_t input_byte(const uint64_t *w, uint32_t i)
{
    return (uint8_t)(w[i / RSS_CHUNK] >> (8 * (RSS_CHUNK - 1 - i % RSS_CHUNK)));
}

/* By the nibble tables alone (any CPU). */
static uint32_t toeplitz_by_tables(const struct toeplitz_key *k, const uint64_t *w, uint32_t len)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < len && i < RSS_INPUT_MAX; i++) {
        uint8_t b = input_byte(w, i);
        h ^= k->lut[2 * i][b >> 4] ^ k->lut[2 * i + 1][b & 0xf];
    }
    return h;
}

/* ---- carry-less multiplies --------------------------------------------------- */

#ifdef HAVE_CLMUL_BUILD
static uint32_t reverse_bits32(uint32_t x)
{
    x = (x >> 1 & 0x55555555u) | (x & 0x55555555u) << 1;
    x = (x >> 2 & 0x33333333u) | (x & 0x33333333u) << 2;
    x = (x >> 4 & 0x0f0f0f0fu) | (x & 0x0f0f0f0fu) << 4;
    return __builtin_bswap32(x);
}

/* Word t's share of the hash, output bit j in bit j (reversed).  The
 * word A (its first input bit the top one) times the 96 key bits
 * from 64t reversed (W, key bit 64t + m in bit m) has in bit 63 + j the
 * sum over i of input bit i times key bit 64t + i + j: output bit j.
 * W = lo + hi x^64, so bits 63..94 are those of A lo, and those of A hi
 * moved up 64. */
__attribute__((target("pclmul,sse4.1")))
static inline uint64_t clmul_chunk(const struct toeplitz_key *k, uint64_t word, uint32_t t)
{
    __m128i a = _mm_cvtsi64_si128((long long)word);
    __m128i w = _mm_loadu_si128((const __m128i *)k->clmul[t]);
    __m128i by_lo = _mm_clmulepi64_si128(a, w, 0x00);
    __m128i by_hi = _mm_clmulepi64_si128(a, w, 0x10);
    uint64_t lo_low = (uint64_t)_mm_cvtsi128_si64(by_lo), lo_high = (uint64_t)_mm_extract_epi64(by_lo, 1);
    uint64_t hi_low = (uint64_t)_mm_cvtsi128_si64(by_hi);
    return lo_low >> (CHUNK_BITS - 1) | (lo_high ^ hi_low) << 1;
}

__attribute__((target("pclmul,sse4.1")))
static inline uint32_t clmul_n(const struct toeplitz_key *k, const uint64_t *w, uint32_t chunks)
{
    uint64_t v = 0;
    for (uint32_t t = 0; t < chunks; t++)
        v ^= clmul_chunk(k, w[t], t);
    return reverse_bits32((uint32_t)v);
}

__attribute__((target("pclmul,sse4.1")))
static uint32_t toeplitz_by_clmul(const struct toeplitz_key *k, const uint64_t *w, uint32_t len)
{
    switch ((len + RSS_CHUNK - 1) / RSS_CHUNK) {   /* the lengths a frame gives: 1, 2, 4, 5 */
    case 1: return clmul_n(k, w, 1);
    case 2: return clmul_n(k, w, 2);
    case 4: return clmul_n(k, w, 4);
    default: return clmul_n(k, w, RSS_CHUNKS);     /* zero past len: the rest adds nothing */
    }
}

static bool toeplitz_has_clmul(void)
{
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}
#else
static uint32_t toeplitz_by_clmul(const struct toeplitz_key *k, const uint64_t *w, uint32_t len)
{
    return toeplitz_by_tables(k, w, len);
}

static bool toeplitz_has_clmul(void)
{
    return false;
}
#endif

uint32_t toeplitz_hash(const struct toeplitz_key *k, const uint64_t *w, uint32_t len)
{
    return k->use_clmul ? toeplitz_by_clmul(k, w, len) : toeplitz_by_tables(k, w, len);
}

uint32_t vnic_test_toeplitz(const uint8_t *key, const uint8_t *in, uint32_t len, int tables)
{
    static struct toeplitz_key k;              /* tests only: one caller at a time */
    uint64_t w[RSS_CHUNKS] = { 0 };
    len = len < RSS_INPUT_MAX ? len : RSS_INPUT_MAX;
    for (uint32_t i = 0; i < len; i++)
        w[i / RSS_CHUNK] |= (uint64_t)in[i] << (8 * (RSS_CHUNK - 1 - i % RSS_CHUNK));
    toeplitz_expand(&k, key);
    if (tables)
        k.use_clmul = false;
    return toeplitz_hash(&k, w, len);
}

int vnic_test_toeplitz_clmul(void)
{
    return toeplitz_has_clmul();
}
