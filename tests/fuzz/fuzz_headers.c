/* fuzz_headers.c - the header parsers every path shares, on any bytes:
 * hdr_parse (Ethernet, VLAN tags, IPv4 options, IPv6 extension headers,
 * TCP/UDP), the flow key both directions use, and RSS classification with
 * every hash type enabled.  The frame is copied into a buffer of exactly
 * its size, so that any read past its end is an ASan report. */
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vnic_dev *dev;
    if (!dev) {
        dev = vnic_dev_new(4);
        vnic_dev_set_features(dev, 1ull << VNIC_F_VERSION_1 | 1ull << VNIC_F_MQ |
                              1ull << VNIC_F_RSS | 1ull << VNIC_F_HASH_REPORT);
        dev->rss.hash_types = VNIC_HASH_SUPPORTED;
        for (int i = 0; i < VNIC_RSS_KEY_SIZE; i++)
            dev->rss.key[i] = (uint8_t)(37 * i + 1);     /* any key but all zeros */
        toeplitz_expand(&dev->rss.expanded, dev->rss.key);
    }
    if (size > VNIC_RX_FRAME_MAX)
        return 0;
    uint8_t *frame = malloc(size ? size : 1);     /* exactly size bytes: ASan bounds */
    memcpy(frame, data, size);
    struct layout lo;
    hdr_parse(frame, (uint32_t)size, &lo);
    hdr_parse_ip(frame, (uint32_t)size, &lo);
    struct flow_key k;
    flow_key_parse(&k, 0, frame, (uint32_t)size);
    struct rx_meta meta = { 0 };
    rss_classify(dev, frame, (uint32_t)size, &meta);
    free(frame);
    return 0;
}
