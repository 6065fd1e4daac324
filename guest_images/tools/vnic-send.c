/* vnic-send - send UDP traffic that exercises a NIC's transmit offloads.
 *
 * Runs inside the test guest (linked statically on the host by
 * vnic/lab/image.py).  Every payload follows a known pattern so the
 * receiving side can check each byte:
 *
 *     byte i of buffer seq = (i * 7 + seq) & 0xff
 *
 * where i counts from the first UDP payload byte of the whole buffer (for
 * USO and UFO: of the unsegmented super-buffer) and seq numbers the
 * buffers a run sends (0, 1, ...).
 *
 *   vnic-send uso DST_IP PORT TOTAL_BYTES GSO_SIZE [COUNT]
 *       UDP socket with UDP_SEGMENT = GSO_SIZE; COUNT super-buffers of
 *       TOTAL_BYTES each (the kernel hands them to the NIC as USO frames
 *       when it offers tx-udp-segmentation).
 *   vnic-send ufo IFNAME DST_MAC SRC_IP DST_IP PORT TOTAL_BYTES FRAG_SIZE
 *       One Ethernet + IPv4/IPv6 + UDP frame with a TOTAL_BYTES payload,
 *       written to an AF_PACKET socket with a virtio_net_hdr that asks for
 *       UDP fragmentation (NEEDS_CSUM, GSO_UDP, gso_size FRAG_SIZE) and the
 *       pseudo-header sum in the UDP checksum field, as a UFO sender does.
 *       Source and destination port are both PORT.
 *   vnic-send udp DST_IP PORT BYTES [COUNT]
 *       COUNT plain datagrams of BYTES.
 *
 * IPv4 or IPv6 is chosen by the address syntax.  On success one line on
 * stdout says what was sent; on failure a message with the errno text goes
 * to stderr and the exit status is 1 (2 for usage errors). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef PACKET_VNET_HDR
#define PACKET_VNET_HDR 15
#endif

#define MAX_UDP_PAYLOAD (65535 - 8)   /* what a UDP length field can describe */

static const char *prog = "vnic-send";

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* perror with context: "vnic-send: what: strerror(errno)" and exit 1 */
static void die_errno(const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, ": %s\n", strerror(err));
    va_end(ap);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s uso DST_IP PORT TOTAL_BYTES GSO_SIZE [COUNT]\n"
            "       %s ufo IFNAME DST_MAC SRC_IP DST_IP PORT TOTAL_BYTES FRAG_SIZE\n"
            "       %s udp DST_IP PORT BYTES [COUNT]\n"
            "payload byte i of buffer seq is (i*7 + seq) & 0xff\n", prog, prog, prog);
    exit(2);
}

static unsigned long number(const char *what, const char *s, unsigned long min, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "%s: bad %s '%s' (want %lu..%lu)\n", prog, what, s, min, max);
        exit(2);
    }
    return v;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seq)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + seq);
}

/* An IPv4 or IPv6 socket address from text. */
struct addr {
    int family;
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    socklen_t len;
};

static void parse_addr(const char *text, unsigned port, struct addr *a)
{
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, text, &a->sa.v4.sin_addr) == 1) {
        a->family = AF_INET;
        a->sa.v4.sin_family = AF_INET;
        a->sa.v4.sin_port = htons((uint16_t)port);
        a->len = sizeof(a->sa.v4);
    } else if (inet_pton(AF_INET6, text, &a->sa.v6.sin6_addr) == 1) {
        a->family = AF_INET6;
        a->sa.v6.sin6_family = AF_INET6;
        a->sa.v6.sin6_port = htons((uint16_t)port);
        a->len = sizeof(a->sa.v6);
    } else {
        fprintf(stderr, "%s: '%s' is not an IPv4 or IPv6 address\n", prog, text);
        exit(2);
    }
}

static uint8_t *alloc_or_die(size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        die_errno("cannot allocate %zu bytes", len);
    return p;
}

/* ---- uso / udp: through an ordinary UDP socket ------------------------------ */

static int udp_socket(const struct addr *dst)
{
    int fd = socket(dst->family, SOCK_DGRAM, IPPROTO_UDP);
    if (fd < 0)
        die_errno("socket(%s, SOCK_DGRAM)", dst->family == AF_INET ? "AF_INET" : "AF_INET6");
    return fd;
}

static void send_buffers(int fd, const struct addr *dst, const char *dst_text,
                         size_t len, unsigned long count)
{
    uint8_t *buf = alloc_or_die(len);
    for (unsigned long seq = 0; seq < count; seq++) {
        fill_pattern(buf, len, (unsigned)seq);
        ssize_t n = sendto(fd, buf, len, 0, (const struct sockaddr *)&dst->sa, dst->len);
        if (n < 0)
            die_errno("sendto %s (buffer %lu of %lu, %zu bytes)", dst_text, seq + 1, count, len);
        if ((size_t)n != len)
            die("sendto %s sent %zd of %zu bytes", dst_text, n, len);
    }
    free(buf);
}

static int cmd_uso(int argc, char **argv)
{
    if (argc != 6 && argc != 7)
        usage();
    unsigned port = (unsigned)number("port", argv[3], 1, 65535);
    size_t total = number("TOTAL_BYTES", argv[4], 1, MAX_UDP_PAYLOAD);
    int gso = (int)number("GSO_SIZE", argv[5], 1, 65535);
    unsigned long count = argc == 7 ? number("COUNT", argv[6], 1, 1000000) : 1;
    struct addr dst;
    parse_addr(argv[2], port, &dst);
    int fd = udp_socket(&dst);
    if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof(gso)) < 0)
        die_errno("setsockopt(SOL_UDP, UDP_SEGMENT, %d)", gso);
    send_buffers(fd, &dst, argv[2], total, count);
    close(fd);
    printf("uso: sent %lu buffer(s) of %zu bytes to %s port %u, gso_size %d (%zu segments each)\n",
           count, total, argv[2], port, gso, (total + (size_t)gso - 1) / (size_t)gso);
    return 0;
}

static int cmd_udp(int argc, char **argv)
{
    if (argc != 5 && argc != 6)
        usage();
    unsigned port = (unsigned)number("port", argv[3], 1, 65535);
    size_t bytes = number("BYTES", argv[4], 0, MAX_UDP_PAYLOAD);
    unsigned long count = argc == 6 ? number("COUNT", argv[5], 1, 1000000) : 1;
    struct addr dst;
    parse_addr(argv[2], port, &dst);
    int fd = udp_socket(&dst);
    send_buffers(fd, &dst, argv[2], bytes, count);
    close(fd);
    printf("udp: sent %lu datagram(s) of %zu bytes to %s port %u\n", count, bytes, argv[2], port);
    return 0;
}

/* ---- ufo: one GSO_UDP frame through a packet socket ------------------------- */

static uint32_t sum16(const void *data, size_t len, uint32_t sum)
{
    const uint8_t *p = data;
    for (; len > 1; p += 2, len -= 2)
        sum += (uint32_t)(p[0] << 8 | p[1]);
    if (len)
        sum += (uint32_t)(p[0] << 8);
    return sum;
}

static uint16_t fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static void parse_mac(const char *text, uint8_t mac[6])
{
    unsigned b[6];
    char tail;
    if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
               &tail) != 6) {
        fprintf(stderr, "%s: bad MAC address '%s' (want xx:xx:xx:xx:xx:xx)\n", prog, text);
        exit(2);
    }
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
}

static int cmd_ufo(int argc, char **argv)
{
    if (argc != 9)
        usage();
    const char *ifname = argv[2];
    uint8_t dst_mac[6], src_mac[6];
    parse_mac(argv[3], dst_mac);
    unsigned port = (unsigned)number("port", argv[6], 1, 65535);
    struct addr src, dst;
    parse_addr(argv[4], port, &src);
    parse_addr(argv[5], port, &dst);
    if (src.family != dst.family)
        die("SRC_IP %s and DST_IP %s are not the same IP version", argv[4], argv[5]);
    bool v6 = dst.family == AF_INET6;
    size_t ip_hlen = v6 ? 40 : 20;
    /* the IPv4 total length or IPv6 payload length must still fit in 16 bits */
    size_t total = number("TOTAL_BYTES", argv[7], 1, 65535 - 8 - (v6 ? 0 : ip_hlen));
    unsigned frag = (unsigned)number("FRAG_SIZE", argv[8], 8, 65535);

    unsigned ifindex = if_nametoindex(ifname);
    if (!ifindex)
        die_errno("interface %s", ifname);
    int fd = socket(AF_PACKET, SOCK_RAW, htons(v6 ? ETH_P_IPV6 : ETH_P_IP));
    if (fd < 0)
        die_errno("socket(AF_PACKET, SOCK_RAW)");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
        die_errno("SIOCGIFHWADDR %s", ifname);
    memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0)
        die_errno("setsockopt(SOL_PACKET, PACKET_VNET_HDR)");

    size_t l3 = ETH_HLEN, l4 = l3 + ip_hlen, hdr_len = l4 + 8;
    size_t vlen = sizeof(struct virtio_net_hdr), flen = hdr_len + total;
    uint8_t *buf = alloc_or_die(vlen + flen);
    memset(buf, 0, vlen + hdr_len);
    uint8_t *eth = buf + vlen, *ip = eth + l3, *udp = eth + l4;
    fill_pattern(udp + 8, total, 0);

    memcpy(eth, dst_mac, 6);
    memcpy(eth + 6, src_mac, 6);
    put16(eth + 12, v6 ? ETH_P_IPV6 : ETH_P_IP);
    uint16_t udp_len = (uint16_t)(8 + total);
    uint16_t ip_id = (uint16_t)(getpid() * 2654435761u >> 16);
    uint32_t pseudo;
    if (v6) {
        ip[0] = 0x60;
        put16(ip + 4, udp_len);                 /* payload length */
        ip[6] = IPPROTO_UDP;
        ip[7] = 64;
        memcpy(ip + 8, &src.sa.v6.sin6_addr, 16);
        memcpy(ip + 24, &dst.sa.v6.sin6_addr, 16);
        pseudo = sum16(ip + 8, 32, 0);
    } else {
        ip[0] = 0x45;
        put16(ip + 2, (uint16_t)(20 + udp_len));
        put16(ip + 4, ip_id);
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        memcpy(ip + 12, &src.sa.v4.sin_addr, 4);
        memcpy(ip + 16, &dst.sa.v4.sin_addr, 4);
        put16(ip + 10, (uint16_t)~fold(sum16(ip, 20, 0)));
        pseudo = sum16(ip + 12, 8, 0);
    }
    pseudo += IPPROTO_UDP + udp_len;            /* (for IPv6 the 32-bit length's high half is 0) */
    put16(udp, (uint16_t)port);
    put16(udp + 2, (uint16_t)port);
    put16(udp + 4, udp_len);
    /* CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header
     * sum (not inverted); whoever completes it sums from csum_start on. */
    put16(udp + 6, fold(pseudo));

    struct virtio_net_hdr vh = {
        .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
        .gso_type = VIRTIO_NET_HDR_GSO_UDP,
        .hdr_len = (uint16_t)hdr_len,
        .gso_size = (uint16_t)frag,
        .csum_start = (uint16_t)l4,
        .csum_offset = 6,
    };
    memcpy(buf, &vh, vlen);

    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)ifindex;
    sll.sll_protocol = htons(v6 ? ETH_P_IPV6 : ETH_P_IP);
    sll.sll_halen = 6;
    memcpy(sll.sll_addr, dst_mac, 6);
    ssize_t n = sendto(fd, buf, vlen + flen, 0, (struct sockaddr *)&sll, sizeof(sll));
    if (n < 0)
        die_errno("sendto %s (%zu-byte GSO_UDP frame, gso_size %u)", ifname, flen, frag);
    if ((size_t)n != vlen + flen)
        die("sendto %s sent %zd of %zu bytes", ifname, n, vlen + flen);
    close(fd);
    free(buf);
    printf("ufo: sent one %zu-byte %s frame on %s: UDP payload %zu, gso_size %u",
           flen, v6 ? "IPv6" : "IPv4", ifname, total, frag);
    if (!v6)
        printf(", ip id %u", ip_id);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "uso"))
        return cmd_uso(argc, argv);
    if (!strcmp(argv[1], "ufo"))
        return cmd_ufo(argc, argv);
    if (!strcmp(argv[1], "udp"))
        return cmd_udp(argc, argv);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage();
    }
    fprintf(stderr, "%s: unknown mode '%s'\n", prog, argv[1]);
    usage();
    return 2;
}
