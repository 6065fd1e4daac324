/* vnic_test.h - test and benchmark interface, not used by the device.
 *
 * The TX offload engine run on a buffer, and the TX/RX paths timed against
 * a synthetic driver, for the engine tests and `vnic bench engine`.  Like
 * vnic.h, the part between the cdef markers is fed verbatim to cffi (after
 * vnic.h's, so it may use vnic.h's types): plain declarations only. */
#ifndef VNIC_TEST_H
#define VNIC_TEST_H

#include "vnic.h"

/* cdef-begin */

struct vnic_tx_engine;

/* --- the TX offload engine on its own ----------------------------------- */
/* An engine for the negotiated features; NULL when memory is short. */
struct vnic_tx_engine *vnic_tx_engine_new(uint64_t features);
void vnic_tx_engine_free(struct vnic_tx_engine *e);
/* pkt is a virtio_net_hdr (12 bytes) followed by the frame.  The frame is
 * split at the cut offsets into separate pieces, as a guest's scattered
 * buffers would be.  Output frames are concatenated into out (if not NULL)
 * with their lengths in frame_lens.  The whole run repeats `repeat` times.
 * Returns the frames of the last run, or -(enum vnic_tx_drop) with the
 * counter in st incremented: -VNIC_TX_DROP_HEADERS also for a pkt shorter
 * than the header or cuts out of order, -VNIC_TX_DROP_BACKEND when out,
 * out_cap or max_frames is too small. */
int vnic_tx_engine_run(struct vnic_tx_engine *e, const uint8_t *pkt, uint32_t len,
                       const uint32_t *cuts, int ncuts, uint8_t *out, uint32_t out_cap,
                       uint32_t *frame_lens, int max_frames, int repeat,
                       struct vnic_queue_stats *st);

/* --- receive-side scaling on its own ---------------------------------- */
/* The Toeplitz hash of in[0, len) (len <= 36: IPv6 addresses and ports)
 * under a key of VNIC_RSS_KEY_SIZE bytes; bytes past 36 are not hashed.
 * tables != 0: by the nibble tables; 0: the way the device hashes on this
 * CPU (carry-less multiplies where it has them).  Cannot fail. */
uint32_t vnic_test_toeplitz(const uint8_t *key, const uint8_t *in, uint32_t len, int tables);
/* 1 if the device hashes by carry-less multiplies on this CPU, else 0. */
int vnic_test_toeplitz_clmul(void);

/* --- the data paths timed without a guest ----------------------------- */
/* Each returns a time in ns (> 0), or a negative errno as a double:
 * -EINVAL for arguments out of range, -ENOMEM when memory is short, -EIO
 * when not every frame came through (a data-plane bug). */

/* The TX queue path (descriptors in, null backend out): ns per frame of
 * frame_size (14..9000) bytes, posted batch (1..256) at a time, on a split
 * ring or (packed != 0) a packed one. */
double vnic_bench_tx_path(int frame_size, int batch, int rounds, int packed);
/* The TX path on a split ring with a wire capture of every frame into fd
 * (whole frames; /dev/null measures the copy into the ring, the writer
 * thread running beside it).  -EBADF for a negative fd. */
double vnic_bench_tx_capture_path(int frame_size, int batch, int rounds, int fd);
/* The TX path on a split ring with faults: mode 1 drops 1 % of the frames
 * (seeded: every frame takes a decision), mode 2 had that set and then
 * cleared before the rounds (what clearing leaves behind), mode 0 never
 * had any.  ns per frame offered; -EINVAL for another mode. */
double vnic_bench_tx_faults_path(int frame_size, int batch, int rounds, int mode);
/* The RX path the same way: frames from the benchmark source into posted
 * 1536-byte mergeable buffers, ns per frame. */
double vnic_bench_rx_path(int frame_size, int batch, int rounds, int packed);
/* The same through the bounce buffer (read there, copied into the
 * guest's buffers), as every frame went before the one-copy path. */
double vnic_bench_rx_bounce_path(int frame_size, int batch, int rounds);
/* The same with RSS and HASH_REPORT on (every hash type, a one-entry
 * table): what hashing, the table look-up and the hash header add. */
double vnic_bench_rx_rss_path(int frame_size, int batch, int rounds);
/* Receive coalescing: `segs` 1448-byte TCP segments of one flow, read from
 * the benchmark source, merged and delivered as one super-frame into 4 KiB
 * mergeable buffers.  ns per super-frame. */
double vnic_bench_coalesce(int segs, int rounds);
/* The same through the bounce buffer (read there, merged in the flow's
 * own buffer, copied into the guest's), as before coalescing in guest
 * buffers. */
double vnic_bench_coalesce_bounce(int segs, int rounds);
/* The copy floor of vnic_bench_coalesce(): only the memcpy of each
 * segment's payload into the same 4 KiB buffers of a ring of
 * BENCH_QSIZE, going round it as the flows do.  ns per super-frame, or
 * -errno. */
double vnic_bench_coalesce_floor(int segs, int rounds);
/* Copies per delivered byte (1: each landed where the source's read put
 * it) of a short RX path run with frame_size-byte frames, or of the
 * coalescing benchmark if coalescing; -errno on failure. */
double vnic_bench_rx_copies(int frame_size, int coalescing);
/* Scaling: `threads` threads, each driving its own queue pair of one
 * device (TX with rx 0: posted chains to the null sink; RX with rx 1:
 * benchmark-source frames into 1536-byte mergeable buffers), 64-frame
 * batches, `rounds` each, all started at once.  Frames per second of all
 * threads together (> 0), or -EINVAL (frame_size 14..1524, threads 1..16),
 * -ENOMEM, -EAGAIN (a thread could not start), -EIO (frames missing). */
double vnic_bench_scale(int rx, int frame_size, int threads, int rounds);

/* cdef-end */

#endif
