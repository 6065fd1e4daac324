/* harness.h - what the data-plane fuzz targets share: the fuzzer's input
 * read as a stream of fields, a device over fake guest memory (one region
 * at IOVA 0, so that small addresses in the input are valid ones), rings
 * placed in it, and a backend whose frames come from the input and whose
 * writes are read byte by byte (so ASan sees any bad iovec).  Each target
 * drives the same functions the workers run (tx_process, rx_process,
 * ctrl_process, vq_pop), synchronously, with no thread. */
#ifndef VNIC_FUZZ_HARNESS_H
#define VNIC_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include "backend.h"

#define FUZZ_MEM        (256 * 1024)   /* bytes of guest memory at IOVA 0 */
#define FUZZ_DESC       0x0000         /* descriptor table */
#define FUZZ_AVAIL      0x1000         /* avail ring */
#define FUZZ_USED       0x2000         /* used ring */
#define FUZZ_BUFS       0x3000         /* buffers from here on */

/* The input, consumed front to back; reads past its end give zeros. */
struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

uint8_t fuzz_u8(struct fuzz_in *in);
uint16_t fuzz_u16(struct fuzz_in *in);
uint64_t fuzz_u64(struct fuzz_in *in);
/* Up to want bytes of the input (fewer at its end); how many. */
size_t fuzz_take(struct fuzz_in *in, void *dst, size_t want);

/* The one device of a target, its guest memory zeroed.  features are ORed
 * with VERSION_1; frames, if not NULL, feeds the backend's read(). */
struct vnic_dev *fuzz_device(uint64_t features, struct fuzz_in *frames);
uint8_t *fuzz_guest(void);

/* Queue q (2 RX, 1 TX, 2*pairs control) of `size` entries on the rings
 * at FUZZ_DESC/AVAIL/USED, enabled and mapped.  The vq, or NULL. */
struct vq *fuzz_queue(struct vnic_dev *dev, int q, uint16_t size);

/* Driver side: descriptor i, the avail ring's idx and entry. */
void fuzz_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
void fuzz_avail(uint16_t slot, uint16_t head, uint16_t size);
void fuzz_avail_idx(uint16_t idx);
/* Post chains made by post() (descriptors at desc, data at *at; it returns
 * how many descriptors it took, 0 when the input or room ran out), each
 * head on the avail ring of a `size` queue, then publish them; how many. */
uint16_t fuzz_post_chains(struct fuzz_in *in, uint16_t size,
                          uint16_t (*post)(struct fuzz_in *in, uint16_t desc, uint64_t *at));

#endif
